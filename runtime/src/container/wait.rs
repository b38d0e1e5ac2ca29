//! `wait`: block on the container's pidfd (with an optional deadline), reap it, and record
//! how it ended and its final cgroup statistics.

use super::{Container, ExitStatus};
use crate::process::channel::now_ns;
use crate::process::{self as proc};
use crate::state::Status;
use crate::{cleanup, Error};
use std::os::fd::AsRawFd;
use std::time::Duration;

impl Container {
    /// Wait for the container to exit. With a timeout, `Error::Timeout` leaves it running.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<ExitStatus, Error> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let Some(ch) = &self.child else {
            return Err(Error::NoSuchContainer(self.state.id.clone()));
        };
        let t = now_ns();
        let deadline = timeout.map(|d| std::time::Instant::now() + d);
        loop {
            let ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
                None => -1,
            };
            let mut pfd = libc::pollfd { fd: ch.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                break;
            }
            if r == 0 {
                return Err(Error::Timeout(timeout.unwrap_or_default()));
            }
            if cleanup::interrupted() {
                return Err(Error::Interrupted);
            }
        }
        // SAFETY: zeroed siginfo is a valid out-buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waitid on our pidfd (P_PIDFD = 3) into a valid siginfo.
            let r = unsafe { libc::waitid(3, ch.pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
            if r == 0 {
                break;
            }
            let e = nix::Error::last();
            if e != nix::Error::EINTR {
                return Err(proc::Error::Wait { pid: self.state.pid, source: e }.into());
            }
        }
        // SAFETY: waitid filled a SIGCHLD siginfo, for which si_status is valid.
        let status = unsafe { info.si_status() };
        let mut exit = if info.si_code == libc::CLD_EXITED {
            ExitStatus { code: Some(status), ..Default::default() }
        } else {
            ExitStatus { signal: Some(status), ..Default::default() }
        };
        if let Some(g) = &self.cgroup {
            if let Ok(st) = g.stats() {
                exit.oom_killed = st.oom_kills > 0;
                self.final_stats = Some(st);
            }
        }
        self.phase("run", t);
        self.exit = Some(exit);
        self.state.status = Status::Stopped;
        if let Some(slot) = self.pid_slot.take() {
            cleanup::unregister_pid(slot);
        }
        Ok(exit)
    }
}
