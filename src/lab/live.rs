//! A workload instance held up while a lab inspects it from the host
//! (`idle` until READY, then `/proc/<pid>/…`), and the host-side readings the
//! labs use: namespace inodes, the PID inside, interfaces, the root mount.

use crate::workload::Workload;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::backend::{Backend, BackendOptions, Instance, LaunchSpec};

/// Errors holding an instance up.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("creating the {0} pipe")]
    Pipe(&'static str, #[source] nix::Error),
    #[error("opening /dev/null for the instance's stderr")]
    DevNull(#[source] std::io::Error),
    #[error("launching {workload} on {backend}: {reason}")]
    Launch { backend: String, workload: String, reason: String },
    #[error("interrupted before {workload} was started on {backend}")]
    Interrupted { backend: String, workload: String },
    #[error("{workload} on {backend} never printed READY within {timeout:?}")]
    NotReady { backend: String, workload: String, timeout: Duration },
}

/// A running instance; dropping it closes its stdin, waits, and lets the
/// backend remove everything it made.
pub struct Held {
    inst: Option<Box<dyn Instance>>,
}

impl Held {
    /// Launch `workload` (normally `idle`) and wait for its READY line.
    pub fn start(
        b: &dyn Backend,
        workload: Workload,
        args: &[&str],
        options: &BackendOptions,
        timeout: Duration,
    ) -> Result<Held, LiveError> {
        if super::stopped() {
            return Err(LiveError::Interrupted { backend: b.name().to_string(), workload: workload.to_string() });
        }
        let (out_r, out_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LiveError::Pipe("stdout", e))?;
        let errf = std::fs::File::options().write(true).open("/dev/null").map_err(LiveError::DevNull)?;
        let spec = LaunchSpec {
            workload,
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin_pipe: true,
            stdout: out_w,
            stderr: errf.into(),
            timeout,
            options: options.clone(),
        };
        let (tx, rx) = mpsc::channel();
        // The reader ends when the instance's stdout closes (at its exit).
        std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(out_r)).lines() {
                let Ok(line) = line else { break };
                if crate::record::is_ready_line(&line) {
                    let _ = tx.send(());
                }
            }
        });
        let inst = b.launch(spec).map_err(|e| LiveError::Launch {
            backend: b.name().to_string(),
            workload: workload.to_string(),
            reason: error_chain(&e),
        })?;
        let held = Held { inst: Some(inst) };
        if rx.recv_timeout(timeout).is_err() {
            return Err(LiveError::NotReady { backend: b.name().to_string(), workload: workload.to_string(), timeout });
        }
        Ok(held)
    }

    /// Host pids of the instance.
    pub fn pids(&self) -> Vec<i32> {
        self.inst.as_ref().map(|i| i.pids()).unwrap_or_default()
    }

    /// The most deeply PID-namespaced process of the instance (the payload);
    /// on a tie the later one in the backend's list.
    pub fn payload_pid(&self) -> Option<i32> {
        self.pids()
            .into_iter()
            .rev()
            .filter_map(|p| nspid(p).map(|v| (p, v.len())))
            .max_by_key(|(_, depth)| *depth)
            .map(|(p, _)| p)
    }

    /// Notes the backend made.
    pub fn notes(&self) -> Vec<String> {
        self.inst.as_ref().map(|i| i.notes()).unwrap_or_default()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut inst) = self.inst.take() {
            inst.close_stdin();
            if inst.wait(Duration::from_secs(10)).is_err() {
                let _ = inst.stop();
            }
        }
    }
}

pub use crate::runner::chain as error_chain;

/// The `NSpid:` line of `/proc/<pid>/status`: the pid in each nested PID
/// namespace, outermost first.
pub fn nspid(pid: i32) -> Option<Vec<i64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_nspid(&status)
}

pub fn parse_nspid(status: &str) -> Option<Vec<i64>> {
    let rest = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let v: Vec<i64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (!v.is_empty()).then_some(v)
}

/// The `ns` link of `pid` (e.g. `net:[4026532177]`), `None` if unreadable.
pub fn ns_link(pid: &str, kind: &str) -> Option<String> {
    std::fs::read_link(Path::new("/proc").join(pid).join("ns").join(kind)).ok().map(|p| p.display().to_string())
}

/// Interface names in the network namespace of `pid` (from its `net/dev`).
pub fn interfaces(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(parse_net_dev(&text))
}

pub fn parse_net_dev(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// (filesystem type, mount options) of the `/` mount in `pid`'s mount namespace.
pub fn root_mount(pid: i32) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    parse_root_mount(&text)
}

pub fn parse_root_mount(mountinfo: &str) -> Option<(String, String)> {
    // Later mounts on / hide earlier ones: the last line for / is the root.
    mountinfo
        .lines()
        .rev()
        .filter(|l| l.split_whitespace().nth(4) == Some("/"))
        .filter_map(|l| {
            let (_, post) = l.split_once(" - ")?;
            let mut f = post.split_whitespace();
            let fstype = f.next()?.to_string();
            let _source = f.next();
            let opts = f.next().unwrap_or("").to_string();
            Some((fstype, opts))
        })
        .next()
}

/// The hostname in the UTS namespace of `pid`, read by a short-lived thread
/// that joins that namespace (a thread may change its own UTS namespace
/// without affecting the rest of the process).
pub fn hostname_of(pid: i32) -> Result<String, String> {
    let path = format!("/proc/{pid}/ns/uts");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWUTS).map_err(|e| format!("setns({path}): {e}"))?;
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).map_err(|e| format!("gethostname: {e}"))
    })
    .join()
    .map_err(|_| "the namespace reader thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lists_every_level() {
        let s = "Name:\tx\nNSpid:\t23456\t1\nNSsid:\t1\n";
        assert_eq!(parse_nspid(s), Some(vec![23456, 1]));
    }

    #[test]
    fn net_dev_names_skip_the_two_header_lines() {
        let t = "Inter-|   Receive\n face |bytes\n    lo: 0 0\n  eth0: 1 2\n";
        assert_eq!(parse_net_dev(t), ["lo", "eth0"]);
    }

    #[test]
    fn root_mount_is_the_last_mount_on_slash() {
        let mi = "20 1 0:5 / / rw - ext4 /dev/vda rw\n44 20 0:39 / / rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n45 44 0:40 / /proc rw - proc proc rw\n";
        let (fs, opts) = parse_root_mount(mi).unwrap();
        assert_eq!(fs, "overlay");
        assert!(opts.contains("lowerdir=/a:/b"));
    }

    #[test]
    fn own_hostname_is_readable_through_setns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: setns needs root");
            return;
        }
        let me = std::process::id() as i32;
        let expected = nix::unistd::gethostname().unwrap();
        assert_eq!(hostname_of(me).unwrap(), expected.to_string_lossy());
    }
}
