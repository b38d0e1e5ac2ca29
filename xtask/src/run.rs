//! Running a command with its output (stdout and stderr, merged as a terminal shows them) both
//! passed through and read line by line, and naming what it left running that still holds that
//! output; a deadline for the parts of the test-host pass.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot make a pipe for '{0}'")]
    Pipe(String, #[source] std::io::Error),
    #[error("cannot start '{0}'")]
    Spawn(String, #[source] std::io::Error),
    #[error("cannot read the output of '{0}'")]
    Read(String, #[source] std::io::Error),
}

/// A command's words, for messages and the tally's list of failed commands.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// The status as a shell reports it: the exit code, or 128 + the signal.
pub fn code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}

/// How long the output may stay open after the command itself has exited: a process it started
/// and left running still holds the pipe, and reading on would wait for that process's end.
const LINGER: Duration = Duration::from_secs(10);

/// A process a command left running that still holds the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftBehind {
    pub pid: u32,
    pub cmdline: String,
}

impl std::fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.cmdline)
    }
}

/// How a streamed command ended.
#[derive(Debug)]
pub struct Ended {
    /// The shell-style status.
    pub status: i32,
    /// Processes that still held the output `LINGER` after the command exited (each a leak of the
    /// command's: reported, never killed here).
    pub left_behind: Vec<LeftBehind>,
}

/// Runs `cmd` (stdin from /dev/null), copies each output line to this process's stdout and hands
/// it to `each`; returns the shell-style status and what the command left running.
pub fn streamed(cmd: Command, each: impl FnMut(&str)) -> Result<Ended, RunError> {
    streamed_with_linger(cmd, LINGER, each)
}

fn streamed_with_linger(mut cmd: Command, linger: Duration, mut each: impl FnMut(&str)) -> Result<Ended, RunError> {
    let what = describe(&cmd);
    let (reader, writer) = std::io::pipe().map_err(|e| RunError::Pipe(what.clone(), e))?;
    let writer2 = writer.try_clone().map_err(|e| RunError::Pipe(what.clone(), e))?;
    let pipe = std::fs::File::from(OwnedFd::from(writer.try_clone().map_err(|e| RunError::Pipe(what.clone(), e))?))
        .metadata()
        .map_err(|e| RunError::Pipe(what.clone(), e))?
        .ino();
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| RunError::Spawn(what.clone(), e))?;
    // The command holds the pipe's write ends until dropped: without this, no end of file.
    drop(cmd);
    let (tx, rx) = mpsc::channel();
    // The reader owns the pipe; if a left-behind process keeps it open, the thread is left blocked
    // and ends when that process does (or with this one).
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        loop {
            let mut buf = Vec::new();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    let mut out = std::io::stdout();
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut left_behind = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(buf)) => {
                let _ = out.write_all(&buf);
                let _ = out.flush();
                each(&String::from_utf8_lossy(&buf));
            }
            Ok(Err(e)) => return Err(RunError::Read(what, e)),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if exited.is_none() {
                    if let Some(status) = child.try_wait().map_err(|e| RunError::Read(what.clone(), e))? {
                        exited = Some((status, Instant::now()));
                    }
                }
                if exited.is_some_and(|(_, at)| at.elapsed() >= linger) {
                    left_behind = holders_of_pipe(pipe);
                    println!(
                        "xtask: '{what}' exited {} s ago, but its output is still held open by what it left running:",
                        linger.as_secs()
                    );
                    left_behind.iter().for_each(|p| println!("xtask:   {p}"));
                    break;
                }
            }
        }
    }
    let status = match exited {
        Some((status, _)) => status,
        None => child.wait().map_err(|e| RunError::Read(what.clone(), e))?,
    };
    Ok(Ended { status: code(status), left_behind })
}

/// Every process with a descriptor on the pipe `inode` (its write end: this process's reader is
/// the only other holder, and it is skipped).
fn holders_of_pipe(inode: u64) -> Vec<LeftBehind> {
    let target = format!("pipe:[{inode}]");
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end().to_string();
            found.push(LeftBehind { pid, cmdline });
        }
    }
    found
}

/// `cmd` under a deadline of `secs` seconds (coreutils `timeout`, TERM then KILL 10 s later).
pub fn bounded(secs: u64, cmd: &Command) -> Command {
    let mut b = Command::new("timeout");
    b.args(["-k", "10", &secs.to_string()]).arg(cmd.get_program()).args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        b.current_dir(dir);
    }
    b
}

/// True when `status` is `timeout`'s for a command it had to stop.
pub fn timed_out(status: i32) -> bool {
    status == 124 || status == 137
}

/// What the host was doing when a part overran: its processes, where each one stuck in
/// uninterruptible sleep waits in the kernel, and the kernel's last words.
pub fn show_stuck() {
    let _ = Command::new("sh")
        .args(["-c", "ps -eo pid,ppid,stat,wchan:24,etime,args --sort=start_time | tail -40"])
        .status();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let path = entry.path();
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
            // The state follows the command's closing parenthesis.
            let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').next());
            if state == Some("D") {
                let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                println!("D-state {}: {cmdline}", entry.file_name().to_string_lossy());
                println!("{}", std::fs::read_to_string(path.join("stack")).unwrap_or_default());
            }
        }
    }
    let _ = Command::new("sh").args(["-c", "dmesg | tail -30"]).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_both_streams_reaches_the_reader_and_the_status_is_kept() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; printf three; exit 3"]);
        let mut lines = Vec::new();
        let ended = streamed(cmd, |l| lines.push(l.to_string())).unwrap();
        assert_eq!(ended.status, 3);
        assert!(ended.left_behind.is_empty());
        assert_eq!(lines, ["one\n", "two\n", "three"]);
    }

    #[test]
    fn a_signal_is_reported_as_128_plus_it() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -TERM $$"]);
        assert_eq!(streamed(cmd, |_| {}).unwrap().status, 128 + 15);
    }

    #[test]
    fn a_bounded_command_that_overruns_is_stopped() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let status = streamed(bounded(1, &cmd), |_| {}).unwrap().status;
        assert!(timed_out(status), "status {status}");
    }

    #[test]
    fn a_process_left_holding_the_output_is_named_and_not_waited_for() {
        let mut cmd = Command::new("sh");
        // The shell exits at once; the sleep it started keeps the output open.
        cmd.args(["-c", "sleep 60 & echo started"]);
        let t = Instant::now();
        let ended = streamed_with_linger(cmd, Duration::from_secs(1), |_| {}).unwrap();
        for p in &ended.left_behind {
            // The sleep this test's own command started, by the pid just read from /proc.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(t.elapsed() < Duration::from_secs(30), "waited {:?} for the sleep", t.elapsed());
        assert_eq!(ended.status, 0);
        assert_eq!(ended.left_behind.len(), 1, "{:?}", ended.left_behind);
        assert_eq!(ended.left_behind[0].cmdline, "sleep 60");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = streamed(Command::new("/nonexistent/cvbench-xtask-test"), |_| {}).unwrap_err();
        assert!(matches!(err, RunError::Spawn(..)));
    }
}
