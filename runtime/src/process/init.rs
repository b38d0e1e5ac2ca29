//! What runs inside the container process between `clone3` and `execve`.
//!
//! Everything here executes in the child of a possibly multi-threaded process, so it only makes
//! async-signal-safe calls: raw system calls on data the parent prepared (`ChildPlan`), no
//! allocation, no locks. glibc's set*id wrappers are avoided because they signal every thread
//! the parent had; the raw syscalls affect only this (single-threaded) process.

use super::channel::{self, Record};
use super::privileges::{setids, Privileges, StepFailed};
use super::Error;
use crate::rootfs::Op;
use std::ffi::CString;
use std::os::fd::RawFd;

/// Step codes for failures outside the rootfs op list (which uses its indices).
pub const STEP_USERNS: u32 = 10_000;
pub const STEP_HOSTNAME: u32 = 10_001;
pub const STEP_LOOPBACK: u32 = 10_002;
pub const STEP_GO: u32 = 10_003;
pub const STEP_CGROUPNS: u32 = 10_004;
pub const STEP_IFACE: u32 = 10_005;
pub const STEP_START_FIFO: u32 = 10_006;
pub const STEP_CAPBSET: u32 = 10_007;
pub const STEP_SETID: u32 = 10_008;
pub const STEP_CAPSET: u32 = 10_009;
pub const STEP_NO_NEW_PRIVS: u32 = 10_010;
pub const STEP_CWD: u32 = 10_011;
pub const STEP_STDIO: u32 = 10_012;
pub const STEP_SECCOMP: u32 = 10_013;
pub const STEP_EXEC: u32 = 10_014;
pub const STEP_SELF_ATTACH: u32 = 10_015;
pub const STEP_SETNS: u32 = 10_016;
pub const STEP_AMBIENT: u32 = 10_017;
pub const STEP_CTTY: u32 = 10_018;
pub const STEP_APPARMOR: u32 = 10_019;

/// The argv/envp arrays and candidate paths for execve, prepared in the parent.
pub struct ExecPlan {
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, Error> {
    items.iter().map(|s| CString::new(s.as_str()).map_err(|_| Error::Nul(s.clone()))).collect()
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

// SAFETY: the raw pointers only point into the CStrings owned by the same struct (heap
// buffers that do not move with it), so the plan may move to another thread as a whole.
unsafe impl Send for ExecPlan {}

impl ExecPlan {
    /// `args[0]` is looked up in the container's PATH (from `env`) unless it contains a `/`.
    pub fn new(args: &[String], env: &[String]) -> Result<ExecPlan, Error> {
        let prog = args.first().ok_or(Error::NoCommand)?;
        let candidates = if prog.contains('/') {
            vec![prog.clone()]
        } else {
            let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/bin:/usr/bin:/bin");
            path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{prog}", d.trim_end_matches('/'))).collect()
        };
        let argv = cstrings(args)?;
        let envs = cstrings(env)?;
        Ok(ExecPlan {
            candidates: cstrings(&candidates)?,
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            env_ptrs: null_terminated(&envs),
            _env: envs,
        })
    }
}

/// An IPv4 interface the child configures once the parent moved it into its netns.
pub struct Iface {
    pub name: [u8; libc::IFNAMSIZ],
    pub addr: [u8; 4],
    pub netmask: [u8; 4],
}

/// Everything the child does, in order.
pub struct ChildPlan {
    pub status_fd: RawFd,
    pub go_fd: RawFd,
    pub userns: bool,
    /// v1 `tasks` files to write "0" to before anything else (the child moves itself).
    pub self_attach: Vec<CString>,
    pub hostname: Option<CString>,
    pub ops: Vec<Op>,
    pub lo_up: bool,
    pub iface: Option<Iface>,
    pub unshare_cgroupns: bool,
    /// OCI `create`/`start`: block on this FIFO after setup until `start` opens it.
    pub start_fifo: Option<CString>,
    /// uid/gids, capabilities, no_new_privs and seccomp (shared with `exec`).
    pub privileges: Privileges,
    /// Namespaces to join first: (fd opened by the parent, CLONE_NEW* type).
    pub join: Vec<(RawFd, libc::c_int)>,
    pub umask: Option<libc::mode_t>,
    pub stdio: [RawFd; 3],
    /// stdin is a terminal to make the controlling one (a new session first).
    pub controlling_tty: bool,
    pub cwd: CString,
    pub exec: ExecPlan,
}

impl ChildPlan {
    /// Human-readable name of a step code, for the parent's error message.
    pub fn step_name(&self, code: u32) -> String {
        if let Some(op) = self.ops.get(code as usize) {
            return op.to_string();
        }
        match code {
            STEP_HOSTNAME => format!("sethostname {:?}", self.hostname),
            STEP_START_FIFO => format!("open the start FIFO {:?}", self.start_fifo),
            STEP_SETID => format!("switch to uid {} gid {}", self.privileges.uid, self.privileges.gid),
            STEP_CWD => format!("chdir to {:?}", self.cwd),
            STEP_EXEC => format!("execve {:?}", self.exec.candidates),
            STEP_SELF_ATTACH => format!("move into the cgroups {:?}", self.self_attach),
            other => step_label(other).map_or(format!("step {other}"), str::to_string),
        }
    }
}

/// What a step code outside the rootfs op list names, without a plan's details (`start`,
/// another process than the one that made the plan, reports the failures after the gate).
pub fn step_label(code: u32) -> Option<&'static str> {
    Some(match code {
        STEP_USERNS => "wait for uid/gid maps and become root in the user namespace",
        STEP_HOSTNAME => "set the hostname",
        STEP_LOOPBACK => "bring up lo",
        STEP_GO => "wait for the parent",
        STEP_CGROUPNS => "unshare the cgroup namespace",
        STEP_IFACE => "configure the veth interface",
        STEP_START_FIFO => "open the start FIFO",
        STEP_CAPBSET => "drop capabilities from the bounding set",
        STEP_SETID => "switch to the process's uid and gids",
        STEP_CAPSET => "set capabilities",
        STEP_NO_NEW_PRIVS => "set no_new_privs",
        STEP_CWD => "chdir to the process's cwd",
        STEP_CTTY => "make the terminal on stdin the controlling terminal",
        STEP_STDIO => "set up stdin/stdout/stderr",
        STEP_SECCOMP => "install the seccomp filter",
        STEP_EXEC => "execve the process",
        STEP_SELF_ATTACH => "move into the cgroups",
        STEP_SETNS => "join a namespace given by path",
        STEP_AMBIENT => "raise ambient capabilities",
        STEP_APPARMOR => "set the AppArmor profile for exec (/proc/thread-self/attr/apparmor/exec)",
        _ => return None,
    })
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: libc::c_long) -> Result<(), i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Send a failed step on `fd` (async-signal-safe; a negative fd sends nothing).
pub(crate) fn report(fd: RawFd, code: u32, errno: i32) {
    channel::send(fd, Record { kind: channel::KIND_ERROR, code, errno, pad: 0, t_ns: channel::now_ns() });
}

fn fail(fd: RawFd, code: u32, errno: i32) -> ! {
    report(fd, code, errno);
    // SAFETY: _exit is async-signal-safe and ends this process without running atexit hooks
    // copied from the parent.
    unsafe { libc::_exit(127) }
}

fn mark(fd: RawFd, code: u32) {
    channel::send(fd, Record { kind: channel::KIND_MARK, code, errno: 0, pad: 0, t_ns: channel::now_ns() });
}

fn wait_for(fd: RawFd, go_fd: RawFd, want: u8, step: u32) {
    match channel::recv_byte(go_fd) {
        Some(b) if b == want => {}
        // The parent gave up (closed the pipe): leave quietly.
        // SAFETY: async-signal-safe exit.
        None => unsafe { libc::_exit(1) },
        Some(_) => fail(fd, step, libc::EPROTO),
    }
}

fn iface_ioctl(sock: RawFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> Result<(), i32> {
    // SAFETY: `ifr` is a valid ifreq for the SIOC* requests used here.
    check(unsafe { libc::ioctl(sock, req, ifr as *mut libc::ifreq) } as libc::c_long)
}

fn set_addr(ifr: &mut libc::ifreq, addr: [u8; 4]) {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr) },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in the sockaddr slot of the ifreq union (both 16 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            &mut ifr.ifr_ifru as *mut _ as *mut u8,
            std::mem::size_of::<libc::sockaddr_in>(),
        )
    };
}

/// Bring `name` up, optionally giving it an IPv4 address first. Plain ioctls: no netlink.
fn link_up(name: &[u8], addr: Option<([u8; 4], [u8; 4])>) -> Result<(), i32> {
    // SAFETY: socket(2) with constant arguments.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock as libc::c_long)?;
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.iter().take(libc::IFNAMSIZ - 1)) {
        *d = *s as libc::c_char;
    }
    let result = (|| {
        if let Some((a, m)) = addr {
            set_addr(&mut ifr, a);
            iface_ioctl(sock, libc::SIOCSIFADDR, &mut ifr)?;
            set_addr(&mut ifr, m);
            iface_ioctl(sock, libc::SIOCSIFNETMASK, &mut ifr)?;
        }
        iface_ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        iface_ioctl(sock, libc::SIOCSIFFLAGS, &mut ifr)
    })();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    result
}

/// Format `/proc/self/fd/N` into `buf` without allocating; returns the C string length.
fn proc_fd_path(fd: RawFd, buf: &mut [u8; 32]) {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
}

/// Write "0" (= this thread) to a cgroup v1 `tasks` file.
pub(crate) fn attach_self(path: &CString) -> Result<(), i32> {
    // SAFETY: NUL-terminated path; the fd is closed right after the write.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd as libc::c_long)?;
    // SAFETY: writing one byte from a static buffer to the fd opened above.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let e = errno();
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(e);
    }
    Ok(())
}

fn start_gate(path: &CString, status: RawFd) -> RawFd {
    // O_PATH does not block on a FIFO; the blocking open happens after setup via /proc.
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        fail(status, STEP_START_FIFO, errno());
    }
    fd
}

/// Block until `start` opens the FIFO, then write the go byte. Returns the FIFO's write end
/// (close-on-exec, above stderr so stdio set-up cannot replace it): `start` reads until it
/// closes, at exec or exit, and takes a record arriving before that as the failure.
fn wait_start(gate: RawFd, status: RawFd) -> RawFd {
    let mut buf = [0u8; 32];
    proc_fd_path(gate, &mut buf);
    // SAFETY: `buf` is NUL-terminated by proc_fd_path; blocks until `start` opens the FIFO.
    let fd = unsafe { libc::open(buf.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        fail(status, STEP_START_FIFO, errno());
    }
    // SAFETY: fcntl/close on fds we own; writing one byte from a static buffer.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        if high < 0 {
            fail(status, STEP_START_FIFO, errno());
        }
        libc::close(fd);
        libc::close(gate);
        libc::write(high, b"0".as_ptr().cast(), 1);
        high
    }
}

fn setup_stdio(stdio: [RawFd; 3]) -> Result<(), i32> {
    // Move sources out of the 0..2 range first so a dup2 cannot clobber a later source.
    let mut src = stdio;
    for s in src.iter_mut() {
        if (0..3).contains(s) {
            // SAFETY: F_DUPFD_CLOEXEC on an fd we hold.
            let d = unsafe { libc::fcntl(*s, libc::F_DUPFD_CLOEXEC, 3) };
            check(d as libc::c_long)?;
            *s = d;
        }
    }
    for (target, s) in src.iter().enumerate() {
        if *s >= 0 {
            // SAFETY: dup2 onto a standard fd; clears close-on-exec on the copy.
            check(unsafe { libc::dup2(*s, target as RawFd) } as libc::c_long)?;
        }
    }
    Ok(())
}

fn reset_signals(old_mask: &libc::sigset_t) {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring default dispositions (Rust programs ignore SIGPIPE, for one).
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: restores the mask the parent thread had before SIGCHLD was blocked.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut()) };
}

/// Run the plan; never returns (execs the workload or exits 127 after reporting).
pub fn run(plan: &ChildPlan, old_mask: &libc::sigset_t) -> ! {
    let st = plan.status_fd;
    mark(st, channel::MARK_START);
    for f in &plan.self_attach {
        if let Err(e) = attach_self(f) {
            fail(st, STEP_SELF_ATTACH, e);
        }
    }
    for (fd, nstype) in &plan.join {
        // SAFETY: setns(2) on an fd the parent opened from a namespace path.
        if let Err(e) = check(unsafe { libc::setns(*fd, *nstype) } as libc::c_long) {
            fail(st, STEP_SETNS, e);
        }
    }
    if plan.userns {
        wait_for(st, plan.go_fd, channel::MSG_MAPS, STEP_USERNS);
        if let Err(e) = setids(0, 0, &[]) {
            fail(st, STEP_USERNS, e);
        }
    }
    if plan.controlling_tty {
        // The terminal replaces the creator's stdio before the start gate, as with runc: a
        // caller waiting for `create`'s output to end must not wait for `start`.
        if let Err(e) = setup_stdio(plan.stdio) {
            fail(st, STEP_STDIO, e);
        }
        // SAFETY: setsid(2) takes no arguments.
        let session = check(unsafe { libc::setsid() } as libc::c_long);
        // SAFETY: ioctl(TIOCSCTTY) on fd 0 with an integer argument.
        if let Err(e) = session.and_then(|()| check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } as libc::c_long)) {
            fail(st, STEP_CTTY, e);
        }
    } else {
        // As runc's init: a session of its own, so the container's session leader is inside
        // its pid namespace (CRIU refuses to checkpoint a tree whose leader is outside). The
        // cloned child leads no process group, so setsid cannot fail.
        // SAFETY: setsid(2) takes no arguments.
        unsafe { libc::setsid() };
    }
    let gate = plan.start_fifo.as_ref().map(|p| start_gate(p, st));
    if let Some(h) = &plan.hostname {
        // SAFETY: pointer and length of a NUL-terminated string.
        if let Err(e) = check(unsafe { libc::sethostname(h.as_ptr(), h.as_bytes().len()) } as libc::c_long) {
            fail(st, STEP_HOSTNAME, e);
        }
    }
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(e) = op.run() {
            fail(st, i as u32, e);
        }
    }
    if plan.lo_up {
        if let Err(e) = link_up(b"lo", None) {
            fail(st, STEP_LOOPBACK, e);
        }
    }
    mark(st, channel::MARK_ROOTFS_DONE);
    wait_for(st, plan.go_fd, channel::MSG_GO, STEP_GO);
    if plan.unshare_cgroupns {
        // Done after the parent attached us, so the namespace root is our own cgroup.
        // SAFETY: unshare with a constant flag.
        if let Err(e) = check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as libc::c_long) {
            fail(st, STEP_CGROUPNS, e);
        }
    }
    if let Some(i) = &plan.iface {
        let len = i.name.iter().position(|b| *b == 0).unwrap_or(i.name.len());
        if let Err(e) = link_up(&i.name[..len], Some((i.addr, i.netmask))) {
            fail(st, STEP_IFACE, e);
        }
    }
    mark(st, channel::MARK_GO);
    // Past the start gate the creating process may be gone: marks go nowhere, and a failure
    // goes to `start` through the FIFO, which stays open until exec closes it.
    let (st, report) = match gate {
        Some(g) => (-1, wait_start(g, st)),
        None => (st, st),
    };
    if let Err(StepFailed { step, errno }) = plan.privileges.drop_privileges() {
        fail(report, step, errno);
    }
    if let Some(m) = plan.umask {
        // SAFETY: umask(2) cannot fail.
        unsafe { libc::umask(m) };
    }
    // SAFETY: NUL-terminated path.
    if let Err(e) = check(unsafe { libc::chdir(plan.cwd.as_ptr()) } as libc::c_long) {
        fail(report, STEP_CWD, e);
    }
    if !plan.controlling_tty {
        if let Err(e) = setup_stdio(plan.stdio) {
            fail(report, STEP_STDIO, e);
        }
    }
    // Every inherited fd above stderr closes at exec (the status pipe too: EOF = exec'd).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
    reset_signals(old_mask);
    mark(st, channel::MARK_EXEC);
    if let Err(StepFailed { step, errno }) = plan.privileges.install_late_seccomp() {
        fail(report, step, errno);
    }
    let mut err = libc::ENOENT;
    for path in &plan.exec.candidates {
        // SAFETY: NUL-terminated path and NULL-terminated pointer arrays that outlive the call.
        unsafe { libc::execve(path.as_ptr(), plan.exec.argv_ptrs.as_ptr(), plan.exec.env_ptrs.as_ptr()) };
        let e = errno();
        if e != libc::ENOENT {
            err = e;
        }
    }
    fail(report, STEP_EXEC, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_plan_searches_path_for_bare_names() {
        let p = ExecPlan::new(&["sh".into()], &["PATH=/a:/b/".into()]).unwrap();
        let c: Vec<_> = p.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/a/sh", "/b/sh"]);
    }

    #[test]
    fn exec_plan_rejects_nul_and_empty() {
        assert!(matches!(ExecPlan::new(&[], &[]), Err(Error::NoCommand)));
        assert!(matches!(ExecPlan::new(&["a\0b".into()], &[]), Err(Error::Nul(_))));
    }

    #[test]
    fn proc_fd_path_formats_digits() {
        let mut b = [0u8; 32];
        proc_fd_path(1234, &mut b);
        let s = std::ffi::CStr::from_bytes_until_nul(&b).unwrap();
        assert_eq!(s.to_str().unwrap(), "/proc/self/fd/1234");
    }
}
