//! `clone3` of the container process: all namespace flags in one call, a pidfd for race-free
//! waiting and signalling, optional `CLONE_INTO_CGROUP`, and SIGCHLD blocked around the call.

use super::Error;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The parent's view of a started child.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// Clone a child with `flags` (namespace flags; `CLONE_PIDFD` is added) and run `child` in it.
///
/// SIGCHLD is blocked in the calling thread across the clone, so no SIGCHLD handler of the host
/// program can run (and reap) between the clone and our bookkeeping; the child receives the
/// pre-clone mask in `old_mask` so it can restore it before exec. Without a stack argument
/// clone3 behaves like fork: the child runs on a copy of this thread's stack.
///
/// # Safety
/// `child` runs in a copy of a possibly multi-threaded process: it must only make
/// async-signal-safe calls (no allocation, no locks) and must never return (exec or `_exit`).
pub unsafe fn spawn<F>(flags: u64, cgroup_fd: Option<RawFd>, child: F) -> Result<Child, Error>
where
    F: FnOnce(&libc::sigset_t),
{
    // SAFETY: zeroed sigset_t values are valid inputs to the sigset functions.
    let mut block: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to local sigsets.
    unsafe {
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
    }
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; with no stack the child
    // continues here on a private copy of the stack, like fork.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if ret == 0 {
        // In the child: hand over to the caller's code, which never returns.
        child(&old);
        // SAFETY: the child code is documented never to return; should it, leave at once.
        unsafe { libc::_exit(127) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: restores the mask saved above on this same thread.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if ret < 0 {
        return Err(Error::Clone {
            flags: args.flags,
            source: nix::Error::from_raw(err.raw_os_error().unwrap_or(libc::EINVAL)),
        });
    }
    Ok(Child {
        pid: ret as i32,
        // SAFETY: the kernel stored a fresh pidfd that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}
