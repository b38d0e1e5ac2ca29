//! The bare guest's system call service: the workload's whole kernel footprint implemented by
//! the VMM (stdio forwarded to the VMM's own descriptors, anonymous mmap from the guest heap,
//! host CLOCK_MONOTONIC, a signalfd fed by the VMM's SIGTERM/SIGINT, poll over both), the
//! forwarded network and file calls when the run grants them (see `forward`), and `-ENOSYS`
//! with a one-time warning for anything else.
//!
//! The guest's descriptor table maps guest fds to what backs them: the VMM's stdio, a host
//! file or socket the VMM opened for the guest (owned here, closed with the guest's close or
//! at the end of the run), or a signalfd the VMM emulates.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::control::{Control, Stop};
use super::files::RunDir;
use super::heap::Heap;
use super::layout::Layout;
use crate::vstate::memory::{discard, host_range, read_bytes, write_bytes, GuestMemoryMmap};

pub const SYS_READ: u64 = 0;
pub const SYS_WRITE: u64 = 1;
pub const SYS_CLOSE: u64 = 3;
pub const SYS_POLL: u64 = 7;
pub const SYS_PREAD64: u64 = 17;
pub const SYS_PWRITE64: u64 = 18;
pub const SYS_SOCKET: u64 = 41;
pub const SYS_CONNECT: u64 = 42;
pub const SYS_SHUTDOWN: u64 = 48;
pub const SYS_SETSOCKOPT: u64 = 54;
pub const SYS_FSYNC: u64 = 74;
pub const SYS_FDATASYNC: u64 = 75;
pub const SYS_OPENAT: u64 = 257;
pub const SYS_UNLINKAT: u64 = 263;
pub const SYS_MMAP: u64 = 9;
pub const SYS_MUNMAP: u64 = 11;
pub const SYS_RT_SIGPROCMASK: u64 = 14;
pub const SYS_GETPID: u64 = 39;
pub const SYS_EXIT: u64 = 60;
pub const SYS_GETRUSAGE: u64 = 98;
pub const SYS_GETPPID: u64 = 110;
pub const SYS_CLOCK_GETTIME: u64 = 228;
pub const SYS_EXIT_GROUP: u64 = 231;
pub const SYS_SIGNALFD4: u64 = 289;

const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const SIGINFO_SIZE: u64 = 128;

/// What the VMM does after servicing a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Resume the guest with this value in RAX.
    Return(i64),
    /// The guest called exit/exit_group with this status.
    Exit(i32),
    /// The guest must be stopped (deadline or an unblocked host signal).
    Stop(Stop),
}

/// Names of calls the workload may make that the bare VM does not implement, for the warning.
fn unsupported_name(nr: u64) -> &'static str {
    match nr {
        17 => "pread64",
        18 => "pwrite64",
        41 => "socket",
        42 => "connect",
        43 => "accept",
        48 => "shutdown",
        49 => "bind",
        50 => "listen",
        54 => "setsockopt",
        74 => "fsync",
        257 => "openat",
        263 => "unlinkat",
        _ => "unknown",
    }
}

pub(super) fn neg_errno(e: i32) -> i64 {
    -i64::from(e)
}

pub(super) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A descriptor in the guest's table.
#[derive(Debug)]
pub(super) enum GuestFd {
    /// Forwarded to the VMM's host descriptor of the same number (0, 1, 2).
    Stdio(i32),
    /// A regular file beneath the run directory, opened for the guest.
    File(OwnedFd),
    /// A TCP socket the VMM made for the guest.
    Socket(OwnedFd),
    /// A signalfd over the given signal mask.
    Signal(u64),
}

impl GuestFd {
    /// The host descriptor behind it, if any.
    pub(super) fn host(&self) -> Option<i32> {
        match self {
            GuestFd::Stdio(h) => Some(*h),
            GuestFd::File(f) | GuestFd::Socket(f) => Some(f.as_raw_fd()),
            GuestFd::Signal(_) => None,
        }
    }
}

/// What the run lets the guest reach beyond stdio.
#[derive(Debug, Default)]
pub struct Forward {
    /// Files: beneath this directory only.
    pub files: Option<RunDir>,
    /// Network: TCP connections to this one address only.
    pub peer: Option<std::net::SocketAddrV4>,
}

/// Most refusal warnings printed (all are counted).
const MAX_REFUSAL_WARNINGS: usize = 32;

/// Per-run counters reported with the result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyscallStats {
    pub total: u64,
    pub by_nr: BTreeMap<u64, u64>,
    pub unsupported: BTreeSet<u64>,
    /// Forwarded network and file calls made on the host for the guest.
    pub forwarded: u64,
    /// Calls refused by the confinement policy (answered -EPERM).
    pub refused: u64,
    /// The first refusals, in words.
    pub refusals: Vec<String>,
}

/// The guest's kernel-side state.
pub struct Service {
    pub(super) mem: GuestMemoryMmap,
    pub(super) layout: Layout,
    heap: Heap,
    pub(super) fds: BTreeMap<i32, GuestFd>,
    blocked: u64,
    pub(super) control: Arc<Control>,
    pub(super) forward: Forward,
    pub stats: SyscallStats,
}

impl Service {
    pub fn new(mem: GuestMemoryMmap, layout: Layout, control: Arc<Control>, forward: Forward) -> Service {
        let fds = (0..3).map(|fd| (fd, GuestFd::Stdio(fd))).collect();
        Service {
            heap: Heap::new(layout.heap_start, layout.heap_end),
            mem,
            layout,
            fds,
            blocked: 0,
            control,
            forward,
            stats: SyscallStats::default(),
        }
    }

    /// Count and report a call the confinement policy refuses; the guest gets -EPERM.
    pub(super) fn refuse(&mut self, nr: u64, why: &str) -> i64 {
        self.stats.refused += 1;
        if self.stats.refusals.len() < MAX_REFUSAL_WARNINGS {
            eprintln!("cvbench-vmm: warning: refused guest {} ({why}); returning -EPERM", unsupported_name(nr));
            self.stats.refusals.push(format!("{}: {why}", unsupported_name(nr)));
        }
        neg_errno(libc::EPERM)
    }

    /// Lowest free guest descriptor number.
    pub(super) fn install_fd(&mut self, fd: GuestFd) -> i64 {
        let new = (3..).find(|n| !self.fds.contains_key(n)).unwrap_or(3);
        self.fds.insert(new, fd);
        i64::from(new)
    }

    /// The guest-visible tables a snapshot keeps: descriptors, blocked signals, free heap.
    /// A descriptor backed by a host file or socket cannot be carried into another process,
    /// so a guest holding one cannot be saved.
    pub(super) fn save(&self) -> Result<super::snapshot::ServiceState, String> {
        let mut fds = Vec::new();
        for (&fd, g) in &self.fds {
            fds.push(match g {
                GuestFd::Stdio(h) => super::snapshot::SavedFd::Stdio { fd, host: *h },
                GuestFd::Signal(mask) => super::snapshot::SavedFd::Signal { fd, mask: *mask },
                GuestFd::File(_) | GuestFd::Socket(_) => {
                    return Err(format!(
                        "guest descriptor {fd} is a forwarded file or socket, which a snapshot cannot carry"
                    ))
                }
            });
        }
        Ok(super::snapshot::ServiceState { fds, blocked_signals: self.blocked, heap_free: self.heap.free_ranges() })
    }

    /// A service resumed from a snapshot's (already validated) tables; no grants.
    pub(super) fn restored(
        mem: GuestMemoryMmap,
        layout: Layout,
        control: Arc<Control>,
        heap: Heap,
        state: &super::snapshot::ServiceState,
    ) -> Service {
        let fds = state
            .fds
            .iter()
            .map(|f| match *f {
                super::snapshot::SavedFd::Stdio { fd, host } => (fd, GuestFd::Stdio(host)),
                super::snapshot::SavedFd::Signal { fd, mask } => (fd, GuestFd::Signal(mask)),
            })
            .collect();
        Service {
            heap,
            mem,
            layout,
            fds,
            blocked: state.blocked_signals,
            control,
            forward: Forward::default(),
            stats: SyscallStats::default(),
        }
    }

    /// Whether guest descriptor `fd` is the VMM's own stdin.
    pub(super) fn is_stdin(&self, fd: i32) -> bool {
        matches!(self.fds.get(&fd), Some(GuestFd::Stdio(0)))
    }

    /// Signals the guest currently blocks.
    pub fn blocked(&self) -> u64 {
        self.blocked
    }

    /// Service system call `nr` with arguments `a` (rdi, rsi, rdx, r10, r8, r9).
    pub fn call(&mut self, nr: u64, a: [u64; 6]) -> Action {
        self.stats.total += 1;
        *self.stats.by_nr.entry(nr).or_default() += 1;
        let r = match nr {
            SYS_READ => return self.read(a[0] as i32, a[1], a[2]),
            SYS_WRITE => return self.write(a[0] as i32, a[1], a[2]),
            SYS_CLOSE => self.close(a[0] as i32),
            SYS_POLL => return self.poll(a[0], a[1], a[2] as i32),
            SYS_MMAP => self.mmap(a[0], a[1], a[3], a[4] as i32),
            SYS_MUNMAP => self.munmap(a[0], a[1]),
            SYS_RT_SIGPROCMASK => self.sigprocmask(a[0], a[1], a[2], a[3]),
            // SAFETY: getpid/getppid take no arguments and cannot fail.
            SYS_GETPID => i64::from(unsafe { libc::getpid() }),
            // SAFETY: as above.
            SYS_GETPPID => i64::from(unsafe { libc::getppid() }),
            SYS_CLOCK_GETTIME => self.clock_gettime(a[0] as i32, a[1]),
            SYS_GETRUSAGE => self.getrusage(a[0] as i32, a[1]),
            SYS_EXIT | SYS_EXIT_GROUP => return Action::Exit((a[0] & 0xff) as i32),
            SYS_SIGNALFD4 => self.signalfd4(a[0] as i32, a[1], a[2]),
            SYS_OPENAT if self.forward.files.is_some() => self.openat(a[0] as i32, a[1], a[2], a[3]),
            SYS_UNLINKAT if self.forward.files.is_some() => self.unlinkat(a[0] as i32, a[1], a[2]),
            SYS_PREAD64 if self.forward.files.is_some() => return self.pread(a[0] as i32, a[1], a[2], a[3] as i64),
            SYS_PWRITE64 if self.forward.files.is_some() => self.pwrite(a[0] as i32, a[1], a[2], a[3] as i64),
            SYS_FSYNC | SYS_FDATASYNC if self.forward.files.is_some() => self.fsync(a[0] as i32, nr),
            SYS_SOCKET if self.forward.peer.is_some() => self.socket(a[0], a[1], a[2]),
            SYS_CONNECT if self.forward.peer.is_some() => return self.connect(a[0] as i32, a[1], a[2]),
            SYS_SETSOCKOPT if self.forward.peer.is_some() => self.setsockopt(a[0] as i32, a[1], a[2], a[3], a[4]),
            SYS_SHUTDOWN if self.forward.peer.is_some() => self.shutdown(a[0] as i32, a[1]),
            _ => {
                if self.stats.unsupported.insert(nr) {
                    eprintln!(
                        "cvbench-vmm: warning: guest system call {nr} ({}) is not supported by the bare VM; returning -ENOSYS",
                        unsupported_name(nr)
                    );
                }
                neg_errno(libc::ENOSYS)
            }
        };
        Action::Return(r)
    }

    /// Host pointer for a user buffer, or None if any of it is outside user memory.
    pub(super) fn user_ptr(&self, addr: u64, len: u64) -> Option<*mut u8> {
        if len == 0 {
            return Some(std::ptr::NonNull::dangling().as_ptr());
        }
        if !self.layout.is_user_range(addr, len) {
            return None;
        }
        host_range(&self.mem, addr, len).ok()
    }

    pub(super) fn read_user(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.layout.is_user_range(addr, buf.len() as u64) && read_bytes(&self.mem, addr, buf).is_ok()
    }

    fn write_user(&self, addr: u64, data: &[u8]) -> bool {
        self.layout.is_user_range(addr, data.len() as u64) && write_bytes(&self.mem, addr, data).is_ok()
    }

    pub(super) fn host_fd(&self, fd: i32) -> Option<i32> {
        self.fds.get(&fd).and_then(GuestFd::host)
    }

    fn write(&mut self, fd: i32, buf: u64, len: u64) -> Action {
        let Some(host) = self.host_fd(fd) else { return Action::Return(neg_errno(libc::EBADF)) };
        let Some(ptr) = self.user_ptr(buf, len) else { return Action::Return(neg_errno(libc::EFAULT)) };
        if let Some(GuestFd::File(f)) = self.fds.get(&fd) {
            if let Err(why) = self.check_file_growth(f.as_raw_fd(), None, len) {
                return Action::Return(self.refuse(SYS_WRITE, &why));
            }
            self.stats.forwarded += 1;
        } else if let Some(GuestFd::Socket(_)) = self.fds.get(&fd) {
            self.stats.forwarded += 1;
        }
        loop {
            // SAFETY: `ptr..ptr+len` is inside guest memory (checked by `user_ptr`), which
            // stays mapped for the service's lifetime; write only reads it.
            let n = unsafe { libc::write(host, ptr.cast(), len as usize) };
            if n >= 0 {
                return Action::Return(n as i64);
            }
            let e = last_errno();
            if e != libc::EINTR {
                return Action::Return(neg_errno(e));
            }
            // A stop signal interrupted a blocking write (a socket whose peer stopped reading).
            if let Some(stop) = self.control.check(self.blocked) {
                return Action::Stop(stop);
            }
        }
    }

    fn read(&mut self, fd: i32, buf: u64, len: u64) -> Action {
        if matches!(self.fds.get(&fd), Some(GuestFd::File(_) | GuestFd::Socket(_))) {
            self.stats.forwarded += 1;
        }
        let entry = self.fds.get(&fd).map(|g| match g {
            GuestFd::Signal(mask) => Err(*mask),
            other => Ok(other.host().unwrap_or(-1)),
        });
        match entry {
            Some(Ok(host)) => {
                let Some(ptr) = self.user_ptr(buf, len) else {
                    return Action::Return(neg_errno(libc::EFAULT));
                };
                loop {
                    // Wait for data or a wake-up first: a signal that lands just before a
                    // blocking read would otherwise go unnoticed until input arrives.
                    let mut fds = [
                        libc::pollfd { fd: host, events: libc::POLLIN, revents: 0 },
                        libc::pollfd { fd: self.control.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                    ];
                    // SAFETY: `fds` is a valid array of two pollfd structs.
                    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                    if n < 0 || fds[1].revents != 0 {
                        self.control.clear_wake();
                        if let Some(stop) = self.control.check(self.blocked) {
                            return Action::Stop(stop);
                        }
                        if fds[0].revents == 0 {
                            continue;
                        }
                    }
                    // SAFETY: `ptr..ptr+len` is writable guest memory (checked by
                    // `user_ptr`); no Rust reference to it exists.
                    let n = unsafe { libc::read(host, ptr.cast(), len as usize) };
                    if n >= 0 {
                        return Action::Return(n as i64);
                    }
                    let e = last_errno();
                    if e != libc::EINTR && e != libc::EAGAIN {
                        return Action::Return(neg_errno(e));
                    }
                }
            }
            Some(Err(mask)) => self.read_signalfd(mask, buf, len),
            None => Action::Return(neg_errno(libc::EBADF)),
        }
    }

    fn read_signalfd(&mut self, mask: u64, buf: u64, len: u64) -> Action {
        if len < SIGINFO_SIZE {
            return Action::Return(neg_errno(libc::EINVAL));
        }
        loop {
            let ready = self.control.pending() & mask;
            if ready != 0 {
                let signo = ready.trailing_zeros() + 1;
                let mut info = [0u8; SIGINFO_SIZE as usize];
                info[..4].copy_from_slice(&signo.to_le_bytes());
                if !self.write_user(buf, &info) {
                    return Action::Return(neg_errno(libc::EFAULT));
                }
                self.control.consume(1 << (signo - 1));
                return Action::Return(SIGINFO_SIZE as i64);
            }
            if let Err(stop) = self.wait_wake(-1) {
                return Action::Stop(stop);
            }
        }
    }

    /// Block until the control eventfd fires or `timeout_ms` passes; Err if the guest must stop.
    pub(super) fn wait_wake(&self, timeout_ms: i32) -> Result<(), Stop> {
        let mut p = libc::pollfd { fd: self.control.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
        self.control.clear_wake();
        self.control.check(self.blocked).map_or(Ok(()), Err)
    }

    fn close(&mut self, fd: i32) -> i64 {
        // Stdio stays open (it is the VMM's); files and sockets close as their entry drops.
        match self.fds.remove(&fd) {
            Some(_) => 0,
            None => neg_errno(libc::EBADF),
        }
    }

    fn poll(&mut self, fds_addr: u64, nfds: u64, timeout_ms: i32) -> Action {
        if nfds > 1024 {
            return Action::Return(neg_errno(libc::EINVAL));
        }
        let mut raw = vec![0u8; nfds as usize * 8];
        if !self.read_user(fds_addr, &mut raw) {
            return Action::Return(neg_errno(libc::EFAULT));
        }
        let mut guest: Vec<(i32, i16, i16)> = raw
            .chunks_exact(8)
            .map(|c| {
                let fd = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                (fd, i16::from_le_bytes([c[4], c[5]]), 0)
            })
            .collect();
        let start = Instant::now();
        loop {
            // Host descriptors first, plus the wake eventfd last.
            let mut host: Vec<libc::pollfd> = Vec::new();
            let mut slots = Vec::new();
            let mut ready = 0;
            for (i, (fd, events, revents)) in guest.iter_mut().enumerate() {
                *revents = 0;
                if *fd < 0 {
                    continue; // poll(2) ignores negative descriptors
                }
                match self.fds.get(fd) {
                    Some(GuestFd::Signal(mask)) => {
                        if self.control.pending() & mask != 0 && *events & libc::POLLIN != 0 {
                            *revents = libc::POLLIN;
                            ready += 1;
                        }
                    }
                    Some(other) => {
                        slots.push(i);
                        host.push(libc::pollfd { fd: other.host().unwrap_or(-1), events: *events, revents: 0 });
                    }
                    None => {
                        *revents = libc::POLLNVAL;
                        ready += 1;
                    }
                }
            }
            host.push(libc::pollfd { fd: self.control.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            let wait = if ready > 0 {
                0
            } else if timeout_ms < 0 {
                -1
            } else {
                (i64::from(timeout_ms) - start.elapsed().as_millis() as i64).max(0) as i32
            };
            // SAFETY: `host` is a valid array of `host.len()` pollfd structs.
            let n = unsafe { libc::poll(host.as_mut_ptr(), host.len() as libc::nfds_t, wait) };
            if n < 0 && last_errno() != libc::EINTR {
                return Action::Return(neg_errno(last_errno()));
            }
            for (k, &i) in slots.iter().enumerate() {
                if n > 0 && host[k].revents != 0 {
                    guest[i].2 = host[k].revents;
                    ready += 1;
                }
            }
            let woken = n < 0 || host.last().is_some_and(|p| p.revents != 0);
            if woken {
                self.control.clear_wake();
                if let Some(stop) = self.control.check(self.blocked) {
                    return Action::Stop(stop);
                }
                if ready == 0 {
                    continue; // re-evaluate signalfds after the wake-up
                }
            }
            let expired = timeout_ms >= 0 && start.elapsed().as_millis() as i64 >= i64::from(timeout_ms);
            if ready > 0 || expired {
                break;
            }
        }
        for (i, (_, _, revents)) in guest.iter().enumerate() {
            raw[i * 8 + 6..i * 8 + 8].copy_from_slice(&revents.to_le_bytes());
        }
        if !self.write_user(fds_addr, &raw) {
            return Action::Return(neg_errno(libc::EFAULT));
        }
        Action::Return(guest.iter().filter(|g| g.2 != 0).count() as i64)
    }

    fn mmap(&mut self, addr: u64, len: u64, flags: u64, fd: i32) -> i64 {
        let anon_private = flags & (MAP_ANONYMOUS | MAP_PRIVATE) == MAP_ANONYMOUS | MAP_PRIVATE;
        if !anon_private || flags & MAP_FIXED != 0 || fd != -1 || len == 0 {
            if !anon_private || fd != -1 {
                eprintln!("cvbench-vmm: warning: guest mmap(addr {addr:#x}, flags {flags:#x}, fd {fd}) is not anonymous private memory; only that is supported");
            }
            return neg_errno(libc::EINVAL);
        }
        match self.heap.alloc(len) {
            Some(a) => a as i64,
            None => neg_errno(libc::ENOMEM),
        }
    }

    fn munmap(&mut self, addr: u64, len: u64) -> i64 {
        match self.heap.free(addr, len) {
            Some((a, l)) => match discard(&self.mem, a, l) {
                Ok(()) => 0,
                Err(_) => neg_errno(libc::EINVAL),
            },
            None => neg_errno(libc::EINVAL),
        }
    }

    fn sigprocmask(&mut self, how: u64, set: u64, old: u64, size: u64) -> i64 {
        if size != 8 {
            return neg_errno(libc::EINVAL);
        }
        let prev = self.blocked;
        if set != 0 {
            let mut b = [0u8; 8];
            if !self.read_user(set, &mut b) {
                return neg_errno(libc::EFAULT);
            }
            // SIGKILL and SIGSTOP cannot be blocked.
            let s = u64::from_le_bytes(b) & !((1 << (libc::SIGKILL - 1)) | (1 << (libc::SIGSTOP - 1)));
            self.blocked = match how as i32 {
                libc::SIG_BLOCK => prev | s,
                libc::SIG_UNBLOCK => prev & !s,
                libc::SIG_SETMASK => s,
                _ => return neg_errno(libc::EINVAL),
            };
        }
        if old != 0 && !self.write_user(old, &prev.to_le_bytes()) {
            return neg_errno(libc::EFAULT);
        }
        0
    }

    fn signalfd4(&mut self, fd: i32, mask_addr: u64, size: u64) -> i64 {
        if size != 8 {
            return neg_errno(libc::EINVAL);
        }
        let mut b = [0u8; 8];
        if !self.read_user(mask_addr, &mut b) {
            return neg_errno(libc::EFAULT);
        }
        let mask = u64::from_le_bytes(b);
        if fd == -1 {
            return self.install_fd(GuestFd::Signal(mask));
        }
        match self.fds.get_mut(&fd) {
            Some(GuestFd::Signal(m)) => {
                *m = mask;
                i64::from(fd)
            }
            _ => neg_errno(libc::EINVAL),
        }
    }

    /// `getrusage(RUSAGE_SELF)` answered with the VMM's own usage: the guest has no kernel of
    /// its own, and its first touch of a page is a fault the VMM process takes (KVM faults
    /// the page in on its behalf), so these are the guest's page faults as the host sees them.
    fn getrusage(&mut self, who: i32, ru_addr: u64) -> i64 {
        if who != libc::RUSAGE_SELF {
            return neg_errno(libc::EINVAL);
        }
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage we own.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return neg_errno(last_errno());
        }
        // SAFETY: rusage is plain old data; viewing it as its bytes reads no padding that
        // matters (the kernel ABI layout has none on x86-64).
        let bytes = unsafe {
            std::slice::from_raw_parts((&ru as *const libc::rusage).cast::<u8>(), std::mem::size_of::<libc::rusage>())
        };
        if self.write_user(ru_addr, bytes) {
            0
        } else {
            neg_errno(libc::EFAULT)
        }
    }

    fn clock_gettime(&mut self, clock: i32, ts_addr: u64) -> i64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec we own.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return neg_errno(last_errno());
        }
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&ts.tv_sec.to_le_bytes());
        out[8..].copy_from_slice(&ts.tv_nsec.to_le_bytes());
        if self.write_user(ts_addr, &out) {
            0
        } else {
            neg_errno(libc::EFAULT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bare::elf::{ElfImage, Segment};
    use crate::vstate::memory::{create_guest_memory, read_u64, write_bytes, write_u64, MemRange};

    fn service() -> Service {
        let seg = Segment { vaddr: 0x20_0000, offset: 0, filesz: 0, memsz: 0x1000, flags: 5 };
        let img = ElfImage { entry: 0x20_0000, segments: vec![seg], phdr_vaddr: None, phnum: 1 };
        let layout = Layout::plan(64 << 20, &img).unwrap();
        let mem = create_guest_memory(&[MemRange { start: 0, size: 64 << 20 }]).unwrap();
        Service::new(mem, layout, Arc::new(Control::new().unwrap()), Forward::default())
    }

    fn service_with(forward: Forward) -> Service {
        let mut s = service();
        s.forward = forward;
        s
    }

    #[test]
    fn a_granted_file_opens_and_a_write_past_the_bound_is_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let files = Some(RunDir::open(dir.path(), 4096).unwrap());
        let mut s = service_with(Forward { files, peer: None });
        let at = s.layout.heap_start;
        write_bytes(&s.mem, at, b"f\0").unwrap();
        let flags = (libc::O_RDWR | libc::O_CREAT) as u64;
        let Action::Return(fd) = s.call(SYS_OPENAT, [libc::AT_FDCWD as u64, at, flags, 0o600, 0, 0]) else { panic!() };
        assert!(fd >= 3, "{fd}");
        assert_eq!(s.call(SYS_PWRITE64, [fd as u64, at, 2, 0, 0, 0]), Action::Return(2));
        assert_eq!(s.call(SYS_PWRITE64, [fd as u64, at, 2, 4095, 0, 0]), Action::Return(-i64::from(libc::EPERM)));
        assert_eq!((s.stats.refused, s.stats.forwarded), (1, 2));
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"f\0");
    }

    #[test]
    fn connect_elsewhere_is_refused_before_any_host_call() {
        let peer = Some("10.204.0.1:5201".parse().unwrap());
        let mut s = service_with(Forward { files: None, peer });
        let Action::Return(fd) = s.call(SYS_SOCKET, [2, 1, 0, 0, 0, 0]) else { panic!() };
        let at = s.layout.heap_start;
        let mut sa = [0u8; 16];
        sa[0] = 2;
        sa[2..4].copy_from_slice(&5201u16.to_be_bytes());
        sa[4..8].copy_from_slice(&[127, 0, 0, 1]);
        write_bytes(&s.mem, at, &sa).unwrap();
        assert_eq!(s.call(SYS_CONNECT, [fd as u64, at, 16, 0, 0, 0]), Action::Return(-i64::from(libc::EPERM)));
        assert_eq!(s.stats.refused, 1);
        assert_eq!(s.call(SYS_SOCKET, [17, 3, 0, 0, 0, 0]), Action::Return(-i64::from(libc::EPERM)));
    }

    #[test]
    fn without_a_grant_file_and_socket_calls_stay_enosys() {
        let mut s = service();
        assert_eq!(s.call(SYS_OPENAT, [0, 0, 0, 0, 0, 0]), Action::Return(-i64::from(libc::ENOSYS)));
        assert_eq!(s.call(SYS_SOCKET, [2, 1, 0, 0, 0, 0]), Action::Return(-i64::from(libc::ENOSYS)));
        assert_eq!(s.stats.refused, 0);
    }

    #[test]
    fn unknown_syscall_returns_enosys_and_is_recorded() {
        let mut s = service();
        assert_eq!(s.call(41, [2, 1, 0, 0, 0, 0]), Action::Return(-i64::from(libc::ENOSYS)));
        assert!(s.stats.unsupported.contains(&41));
    }

    #[test]
    fn mmap_returns_zeroed_heap_memory_and_munmap_rezeroes_it() {
        let mut s = service();
        let Action::Return(a) = s.call(SYS_MMAP, [0, 8192, 3, 0x22, u64::MAX, 0]) else { panic!() };
        assert_eq!(a as u64, s.layout.heap_start);
        write_u64(&s.mem, a as u64, 42).unwrap();
        assert_eq!(s.call(SYS_MUNMAP, [a as u64, 8192, 0, 0, 0, 0]), Action::Return(0));
        let Action::Return(b) = s.call(SYS_MMAP, [0, 4096, 3, 0x22, u64::MAX, 0]) else { panic!() };
        assert_eq!(b, a);
        assert_eq!(read_u64(&s.mem, b as u64).unwrap(), 0);
    }

    #[test]
    fn mmap_of_a_file_is_rejected() {
        let mut s = service();
        assert_eq!(s.call(SYS_MMAP, [0, 4096, 1, 0x02, 5, 0]), Action::Return(-i64::from(libc::EINVAL)));
    }

    #[test]
    fn write_to_a_bad_pointer_is_efault_and_to_a_bad_fd_is_ebadf() {
        let mut s = service();
        assert_eq!(s.call(SYS_WRITE, [1, 0x10, 4, 0, 0, 0]), Action::Return(-i64::from(libc::EFAULT)));
        assert_eq!(s.call(SYS_WRITE, [9, 0x20_0000, 4, 0, 0, 0]), Action::Return(-i64::from(libc::EBADF)));
    }

    #[test]
    fn exit_group_ends_with_the_low_byte_of_the_status() {
        let mut s = service();
        assert_eq!(s.call(SYS_EXIT_GROUP, [0x1_03, 0, 0, 0, 0, 0]), Action::Exit(3));
    }

    #[test]
    fn signalfd_polls_readable_once_a_blocked_stop_signal_is_pending() {
        let mut s = service();
        let mask_at = s.layout.heap_start;
        let term = 1u64 << (libc::SIGTERM - 1);
        write_u64(&s.mem, mask_at, term).unwrap();
        assert_eq!(s.call(SYS_RT_SIGPROCMASK, [0, mask_at, 0, 8, 0, 0]), Action::Return(0));
        assert_eq!(s.blocked(), term);
        let Action::Return(fd) = s.call(SYS_SIGNALFD4, [u64::MAX, mask_at, 8, 0, 0, 0]) else { panic!() };
        assert_eq!(fd, 3);
        s.control.note_signal(libc::SIGTERM as u32);
        let pfd = mask_at + 64;
        write_u64(&s.mem, pfd, (fd as u64) | (1 << 32)).unwrap(); // fd, events POLLIN
        assert_eq!(s.call(SYS_POLL, [pfd, 1, 1000, 0, 0, 0]), Action::Return(1));
        assert_eq!(read_u64(&s.mem, pfd).unwrap() >> 48, 1); // revents POLLIN
        assert_eq!(s.call(SYS_READ, [fd as u64, pfd, 128, 0, 0, 0]), Action::Return(128));
        assert_eq!(read_u64(&s.mem, pfd).unwrap() & 0xffff_ffff, libc::SIGTERM as u64);
        assert_eq!(s.control.pending(), 0);
    }

    #[test]
    fn getrusage_reports_the_vmm_page_faults_and_refuses_other_targets() {
        let mut s = service();
        let at = s.layout.heap_start;
        assert_eq!(s.call(SYS_GETRUSAGE, [0, at, 0, 0, 0, 0]), Action::Return(0));
        assert!(read_u64(&s.mem, at + 8 * 8).unwrap() > 0, "ru_minflt of a running process is never 0");
        assert_eq!(s.call(SYS_GETRUSAGE, [u64::MAX, at, 0, 0, 0, 0]), Action::Return(-i64::from(libc::EINVAL)));
        assert_eq!(s.call(SYS_GETRUSAGE, [0, 0x10, 0, 0, 0, 0]), Action::Return(-i64::from(libc::EFAULT)));
    }

    #[test]
    fn clock_gettime_writes_a_monotonic_timespec() {
        let mut s = service();
        let at = s.layout.heap_start;
        assert_eq!(s.call(SYS_CLOCK_GETTIME, [1, at, 0, 0, 0, 0]), Action::Return(0));
        let t1 = read_u64(&s.mem, at).unwrap();
        assert!(t1 > 0 || read_u64(&s.mem, at + 8).unwrap() > 0);
    }
}
