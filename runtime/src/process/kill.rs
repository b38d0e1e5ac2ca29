//! Signalling a process through a pidfd: the runtime's one kill path. A [`Container`] signals
//! the pidfd `clone3` gave it; the OCI verbs, in a later process, open one from the recorded
//! pid and check its start time after opening, so a reused pid is never signalled.
//!
//! [`Container`]: crate::container::Container

use super::Error;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A pidfd for `pid`; `Ok(None)` if there is no such process.
pub fn pidfd_open(pid: i32) -> Result<Option<OwnedFd>, Error> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match nix::Error::last() {
            nix::Error::ESRCH => Ok(None),
            source => Err(Error::Signal { pid, source }),
        };
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Send `sig` to the process behind `pidfd` (`pid` names it in errors). `Ok(false)`: it has
/// exited already (and may be a zombie nobody reaped yet).
pub fn send(pidfd: BorrowedFd<'_>, pid: i32, sig: i32) -> Result<bool, Error> {
    // SAFETY: pidfd_send_signal(2) on a live pidfd, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if r < 0 {
        return match nix::Error::last() {
            nix::Error::ESRCH => Ok(false),
            source => Err(Error::Signal { pid, source }),
        };
    }
    Ok(true)
}

/// Signal `pid` if it is still the process that started at `start` (clock ticks since boot,
/// 0: any). `Ok(false)`: it is gone, or the pid now names another process.
pub fn send_to(pid: i32, start: u64, sig: i32) -> Result<bool, Error> {
    let Some(fd) = pidfd_open(pid)? else {
        return Ok(false);
    };
    // Checked after opening: the pidfd pins the process, so a match now means the fd is it.
    if !crate::state::alive(pid, start) {
        return Ok(false);
    }
    send(fd.as_fd(), pid, sig)
}
