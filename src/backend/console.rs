//! The serial-console relay shared by the VM backends (ours and QEMU): guest
//! console lines are forwarded to the harness's stdout pipe unchanged (so
//! READY and the JSON line reach the runner), while the relay remembers when
//! output started, the last lines, and the lines that say how far the guest got.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

const TAIL_LINES: usize = 12;
const MAX_MILESTONES: usize = 6;

/// What the relay saw.
#[derive(Default)]
pub struct Console {
    pub first_output: Option<Instant>,
    pub tail: VecDeque<String>,
    /// The first few lines that say how far the guest got (init, faults, panics).
    pub milestones: Vec<String>,
}

/// Console lines worth quoting in a record when the workload did not report.
pub fn is_milestone(line: &str) -> bool {
    const KEYS: [&str; 6] = ["Run /init", "segfault", "Kernel panic", "VFS:", "BUG:", "Oops"];
    KEYS.iter().any(|k| line.contains(k))
}

impl Console {
    fn see(&mut self, text: &str) {
        self.first_output.get_or_insert_with(Instant::now);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text.to_string());
        if self.milestones.len() < MAX_MILESTONES && is_milestone(text) {
            self.milestones.push(text.trim().to_string());
        }
    }

    /// The non-empty tail lines, joined for a record note.
    pub fn tail_text(&self) -> String {
        self.tail.iter().map(String::as_str).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" / ")
    }
}

/// How a VM backend ends an instance whose stdin the harness closes (`idle`): a guest has no
/// stdin, so closing it means stopping the VMM (SIGTERM), once; the backend then knows the end
/// was asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdinStop {
    /// The harness gave this instance a stdin to close.
    armed: bool,
    /// `close_stdin` stopped the VMM.
    requested: bool,
}

impl StdinStop {
    pub fn new(stdin_pipe: bool) -> StdinStop {
        StdinStop { armed: stdin_pipe, requested: false }
    }

    /// Stop the VMM `child` if the instance was given a stdin and has not been stopped yet.
    pub fn close_stdin(&mut self, child: &crate::backend::process::ChildProcess) {
        if self.armed && !self.requested {
            self.requested = true;
            child.signal(libc::SIGTERM);
        }
    }

    /// True once `close_stdin` stopped the VMM.
    pub fn requested(&self) -> bool {
        self.requested
    }
}

/// The line the guest's `/init` prints last (microvm/guest/init.sh), for VMMs without the
/// boot-timer device (QEMU) and as a cross-check for ours.
pub const EXIT_MARKER: &str = "cvbench-init: exit status ";

/// The workload's exit status as `/init` printed it on the console, if it did.
pub fn reported_status(tail: &VecDeque<String>) -> Option<i32> {
    tail.iter().rev().find_map(|l| l.trim().strip_prefix(EXIT_MARKER)?.trim().parse().ok())
}

/// Relay lines from `from` (the VMM's console pipe) to `to` (the harness's
/// stdout pipe) on a thread, recording them in the returned [`Console`].
pub fn relay(from: OwnedFd, to: OwnedFd) -> (Arc<Mutex<Console>>, JoinHandle<()>) {
    let console = Arc::new(Mutex::new(Console::default()));
    let seen = console.clone();
    let handle = std::thread::spawn(move || {
        let mut out = std::fs::File::from(to);
        for line in BufReader::new(std::fs::File::from(from)).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
            if let Ok(mut c) = seen.lock() {
                c.see(&text);
            }
            let _ = writeln!(out, "{text}");
        }
    });
    (console, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_keeps_a_bounded_tail_and_the_milestones() {
        let mut c = Console::default();
        c.see("Run /init as init process");
        for i in 0..20 {
            c.see(&format!("line {i}"));
        }
        assert_eq!(c.tail.len(), TAIL_LINES);
        assert_eq!(c.tail.back().map(String::as_str), Some("line 19"));
        assert_eq!(c.milestones, vec!["Run /init as init process".to_string()]);
        assert!(c.first_output.is_some());
    }

    #[test]
    fn relay_forwards_lines_and_strips_carriage_returns() {
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (console, h) = relay(in_r, out_w);
        std::fs::File::from(in_w).write_all(b"READY\r\n{\"x\":1}\n").unwrap();
        h.join().unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut got).unwrap();
        assert_eq!(got, "READY\n{\"x\":1}\n");
        assert_eq!(console.lock().unwrap().tail.len(), 2);
    }
}
