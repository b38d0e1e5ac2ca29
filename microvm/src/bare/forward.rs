//! The network and file calls the bare VM forwards to the host for the guest, each checked
//! against the run's grant ([`Forward`](super::syscalls::Forward)) before any host call:
//! files beneath the run directory ([`files`](super::files)), TCP to the run's one peer
//! ([`net`](super::net)). Data moves between the host descriptor and the guest's memory as
//! mapped in the VMM: no bounce buffer. Refusals are -EPERM and counted.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::files::{FileError, PATH_MAX};
use super::net::{check_connect, check_socket, check_sockopt};
use super::syscalls::{
    last_errno, neg_errno, Action, GuestFd, Service, SYS_CONNECT, SYS_OPENAT, SYS_PWRITE64, SYS_SETSOCKOPT,
    SYS_SHUTDOWN, SYS_SOCKET, SYS_UNLINKAT,
};
use crate::arch::x86_64::paging::PAGE;

impl Service {
    /// A NUL-terminated guest string of at most [`PATH_MAX`] bytes, read page by page so a
    /// string ending just before unmapped memory is still readable.
    fn read_path(&self, mut addr: u64) -> Result<Vec<u8>, i64> {
        let mut out = Vec::new();
        while out.len() < PATH_MAX {
            let chunk = (PAGE - addr % PAGE).min((PATH_MAX - out.len()) as u64) as usize;
            let mut buf = vec![0u8; chunk];
            if !self.read_user(addr, &mut buf) {
                return Err(neg_errno(libc::EFAULT));
            }
            if let Some(end) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..end]);
                return Ok(out);
            }
            out.extend_from_slice(&buf);
            addr += chunk as u64;
        }
        Err(neg_errno(libc::ENAMETOOLONG))
    }

    fn file_result<T>(&mut self, nr: u64, r: Result<T, FileError>) -> Result<T, i64> {
        r.map_err(|e| match e {
            FileError::Errno(e) => neg_errno(e),
            FileError::Refused(why) => self.refuse(nr, &why.0),
        })
    }

    pub(super) fn openat(&mut self, dirfd: i32, path: u64, flags: u64, mode: u64) -> i64 {
        let path = match self.read_path(path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let Some(dir) = self.forward.files.as_ref() else { return neg_errno(libc::ENOSYS) };
        let opened = dir.open_file(dirfd, &path, flags & 0xffff_ffff, mode);
        self.stats.forwarded += 1;
        match self.file_result(SYS_OPENAT, opened) {
            Ok(fd) => self.install_fd(GuestFd::File(fd)),
            Err(e) => e,
        }
    }

    pub(super) fn unlinkat(&mut self, dirfd: i32, path: u64, flags: u64) -> i64 {
        let path = match self.read_path(path) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let Some(dir) = self.forward.files.as_ref() else { return neg_errno(libc::ENOSYS) };
        let r = dir.unlink(dirfd, &path, flags);
        self.stats.forwarded += 1;
        match self.file_result(SYS_UNLINKAT, r) {
            Ok(()) => 0,
            Err(e) => e,
        }
    }

    fn file_fd(&self, fd: i32) -> Result<i32, i64> {
        match self.fds.get(&fd) {
            Some(GuestFd::File(f)) => Ok(f.as_raw_fd()),
            Some(GuestFd::Socket(_)) => Err(neg_errno(libc::ESPIPE)),
            Some(_) => Err(neg_errno(libc::EINVAL)),
            None => Err(neg_errno(libc::EBADF)),
        }
    }

    /// Refuse a write that would take the file past the run's size bound. `at` is the
    /// pwrite offset; None means the descriptor's own position (or the end with O_APPEND).
    pub(super) fn check_file_growth(&self, host: i32, at: Option<i64>, len: u64) -> Result<(), String> {
        let max = self.forward.files.as_ref().map_or(0, |d| d.max_file_bytes());
        let start = match at {
            Some(off) => off.max(0) as u64,
            None => {
                // SAFETY: fcntl(F_GETFL) and lseek on an open descriptor we own.
                let append = unsafe { libc::fcntl(host, libc::F_GETFL) } & libc::O_APPEND != 0;
                // SAFETY: as above; SEEK_CUR/SEEK_END with offset 0 only report the position.
                let pos = unsafe { libc::lseek(host, 0, if append { libc::SEEK_END } else { libc::SEEK_CUR }) };
                pos.max(0) as u64
            }
        };
        match start.checked_add(len) {
            Some(end) if end <= max => Ok(()),
            _ => Err(format!(
                "a write of {len} bytes at offset {start} would grow a file past the run's {max}-byte bound"
            )),
        }
    }

    pub(super) fn pread(&mut self, fd: i32, buf: u64, len: u64, off: i64) -> Action {
        let host = match self.file_fd(fd) {
            Ok(h) => h,
            Err(e) => return Action::Return(e),
        };
        if off < 0 {
            return Action::Return(neg_errno(libc::EINVAL));
        }
        let Some(ptr) = self.user_ptr(buf, len) else { return Action::Return(neg_errno(libc::EFAULT)) };
        self.stats.forwarded += 1;
        // SAFETY: `ptr..ptr+len` is writable guest memory (checked by `user_ptr`) and no Rust
        // reference to it exists; the kernel writes straight into the guest's page.
        let n = unsafe { libc::pread(host, ptr.cast(), len as usize, off) };
        Action::Return(if n >= 0 { n as i64 } else { neg_errno(last_errno()) })
    }

    pub(super) fn pwrite(&mut self, fd: i32, buf: u64, len: u64, off: i64) -> i64 {
        let host = match self.file_fd(fd) {
            Ok(h) => h,
            Err(e) => return e,
        };
        if off < 0 {
            return neg_errno(libc::EINVAL);
        }
        if let Err(why) = self.check_file_growth(host, Some(off), len) {
            return self.refuse(SYS_PWRITE64, &why);
        }
        let Some(ptr) = self.user_ptr(buf, len) else { return neg_errno(libc::EFAULT) };
        self.stats.forwarded += 1;
        // SAFETY: `ptr..ptr+len` is guest memory (checked by `user_ptr`); pwrite only reads it.
        let n = unsafe { libc::pwrite(host, ptr.cast(), len as usize, off) };
        if n >= 0 {
            n as i64
        } else {
            neg_errno(last_errno())
        }
    }

    pub(super) fn fsync(&mut self, fd: i32, nr: u64) -> i64 {
        let host = match self.file_fd(fd) {
            Ok(h) => h,
            Err(e) => return e,
        };
        self.stats.forwarded += 1;
        // SAFETY: fsync/fdatasync on an open descriptor we own.
        let r = unsafe {
            if nr == super::syscalls::SYS_FSYNC {
                libc::fsync(host)
            } else {
                libc::fdatasync(host)
            }
        };
        if r == 0 {
            0
        } else {
            neg_errno(last_errno())
        }
    }

    pub(super) fn socket(&mut self, domain: u64, type_: u64, protocol: u64) -> i64 {
        if let Err(why) = check_socket(domain, type_, protocol) {
            return self.refuse(SYS_SOCKET, &why);
        }
        self.stats.forwarded += 1;
        // SAFETY: socket takes no memory; the result is checked.
        let fd = unsafe { libc::socket(domain as i32, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP) };
        if fd < 0 {
            return neg_errno(last_errno());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        self.install_fd(GuestFd::Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn socket_fd(&self, fd: i32) -> Result<i32, i64> {
        match self.fds.get(&fd) {
            Some(GuestFd::Socket(s)) => Ok(s.as_raw_fd()),
            Some(_) => Err(neg_errno(libc::ENOTSOCK)),
            None => Err(neg_errno(libc::EBADF)),
        }
    }

    pub(super) fn connect(&mut self, fd: i32, addr: u64, len: u64) -> Action {
        let host = match self.socket_fd(fd) {
            Ok(h) => h,
            Err(e) => return Action::Return(e),
        };
        let mut raw = vec![0u8; len.min(128) as usize];
        if !self.read_user(addr, &mut raw) {
            return Action::Return(neg_errno(libc::EFAULT));
        }
        let Some(peer) = self.forward.peer else { return Action::Return(neg_errno(libc::ENOSYS)) };
        let target = match check_connect(&raw, peer) {
            Ok(t) => t,
            Err(why) => return Action::Return(self.refuse(SYS_CONNECT, &why)),
        };
        self.stats.forwarded += 1;
        // The host call gets an address the VMM built, not the guest's bytes.
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: target.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*target.ip()).to_be() },
            sin_zero: [0; 8],
        };
        loop {
            // SAFETY: `sa` is a valid sockaddr_in of the size passed.
            let r = unsafe {
                libc::connect(host, (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sa) as u32)
            };
            if r == 0 {
                return Action::Return(0);
            }
            match last_errno() {
                libc::EINTR | libc::EALREADY => {
                    if let Err(stop) = self.wait_wake(10) {
                        return Action::Stop(stop);
                    }
                }
                libc::EISCONN => return Action::Return(0),
                e => return Action::Return(neg_errno(e)),
            }
        }
    }

    pub(super) fn setsockopt(&mut self, fd: i32, level: u64, opt: u64, val: u64, len: u64) -> i64 {
        let host = match self.socket_fd(fd) {
            Ok(h) => h,
            Err(e) => return e,
        };
        if let Err(why) = check_sockopt(level, opt, len) {
            return self.refuse(SYS_SETSOCKOPT, &why);
        }
        let mut v = [0u8; 4];
        if !self.read_user(val, &mut v) {
            return neg_errno(libc::EFAULT);
        }
        let v = i32::from_le_bytes(v);
        self.stats.forwarded += 1;
        // SAFETY: `v` is a readable int of the size passed.
        let r = unsafe { libc::setsockopt(host, level as i32, opt as i32, (&v as *const i32).cast(), 4) };
        if r == 0 {
            0
        } else {
            neg_errno(last_errno())
        }
    }

    pub(super) fn shutdown(&mut self, fd: i32, how: u64) -> i64 {
        let host = match self.socket_fd(fd) {
            Ok(h) => h,
            Err(e) => return e,
        };
        if how > 2 {
            return self.refuse(SYS_SHUTDOWN, &format!("shutdown mode {how}"));
        }
        self.stats.forwarded += 1;
        // SAFETY: shutdown takes no memory.
        if unsafe { libc::shutdown(host, how as i32) } == 0 {
            0
        } else {
            neg_errno(last_errno())
        }
    }
}
