//! The default seccomp profile: an allow-list modelled on Docker's default, compiled here into a
//! classic-BPF program (no libseccomp). Anything not listed fails with EPERM; `clone` is allowed
//! only without namespace flags and `clone3` fails with ENOSYS so libcs fall back to `clone`,
//! as in Docker's profile. Non-x86-64 calls kill the process.
//!
//! Numbers past the table (newer calls than the UAPI header the table was generated from) get
//! ENOSYS, so libcs fall back to older equivalents.
//!
//! Counting against the 362 entries of the x86-64 table, see [`blocked_count`]
//! (printed by `cvbench-runtime seccomp-info`); Docker's default blocks 67 of 362. The profile
//! differs from Docker's in that `personality` is allowed with any argument and none of the
//! capability-conditional groups (e.g. `mount` with CAP_SYS_ADMIN) are added under `--privileged`
//! (which skips seccomp entirely).

use crate::syscalls::SYSCALLS;

/// Names allowed unconditionally (names absent on x86-64 are ignored).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chroot",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "personality",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Namespace-creating clone flags a container may not use.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const JMP_JA: u16 = 0x05;
const RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

/// What happens to one system call number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Errno(u32),
    /// Allow unless a namespace flag is set in the first argument.
    CloneCheck,
}

fn lookup(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// The verdict for every number 0..=max known, in order.
pub fn verdicts() -> Vec<Verdict> {
    let max = SYSCALLS.iter().map(|(_, nr)| *nr).max().unwrap_or(0);
    let mut v = vec![Verdict::Errno(libc::EPERM as u32); max as usize + 1];
    for name in ALLOWED {
        if let Some(nr) = lookup(name) {
            v[nr as usize] = Verdict::Allow;
        }
    }
    if let Some(nr) = lookup("clone") {
        v[nr as usize] = Verdict::CloneCheck;
    }
    if let Some(nr) = lookup("clone3") {
        v[nr as usize] = Verdict::Errno(libc::ENOSYS as u32);
    }
    v
}

/// How many system calls of the x86-64 table the default profile refuses outright
/// (`clone` counts as allowed, `clone3` as blocked), and the table size.
pub fn blocked_count() -> (usize, usize) {
    let v = verdicts();
    let blocked = SYSCALLS.iter().filter(|(_, nr)| matches!(v[*nr as usize], Verdict::Errno(_))).count();
    (blocked, SYSCALLS.len())
}

/// Names of the refused system calls, sorted by number.
pub fn blocked_names() -> Vec<&'static str> {
    let v = verdicts();
    SYSCALLS.iter().filter(|(_, nr)| matches!(v[*nr as usize], Verdict::Errno(_))).map(|(n, _)| *n).collect()
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn leaf(out: &mut Vec<libc::sock_filter>, v: Verdict) {
    match v {
        Verdict::Allow => out.push(stmt(RET_K, RET_ALLOW)),
        Verdict::Errno(e) => out.push(stmt(RET_K, RET_ERRNO | (e & 0xffff))),
        Verdict::CloneCheck => {
            out.push(stmt(LD_W_ABS, OFF_ARG0_LO));
            out.push(jump(JMP_JSET_K, CLONE_NS_FLAGS, 0, 1));
            out.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
            out.push(stmt(RET_K, RET_ALLOW));
        }
    }
}

/// Emit a binary search over `intervals` (start, verdict), each running to the next start.
/// Every jump is either a 0/1 skip or a 32-bit `ja`, so the 8-bit jt/jf limits never bind.
fn tree(out: &mut Vec<libc::sock_filter>, intervals: &[(u32, Verdict)]) {
    if intervals.len() == 1 {
        leaf(out, intervals[0].1);
        return;
    }
    let mid = intervals.len() / 2;
    out.push(jump(JMP_JGE_K, intervals[mid].0, 0, 1));
    let ja = out.len();
    out.push(stmt(JMP_JA, 0));
    tree(out, &intervals[..mid]);
    out[ja].k = (out.len() - ja - 1) as u32;
    tree(out, &intervals[mid..]);
}

/// Compile the default profile.
pub fn default_filter() -> Vec<libc::sock_filter> {
    let v = verdicts();
    // Merge runs of equal verdicts into intervals; everything past the table is refused.
    let mut intervals: Vec<(u32, Verdict)> = Vec::new();
    for (nr, verdict) in v.iter().enumerate() {
        if intervals.last().map(|(_, last)| last) != Some(verdict) {
            intervals.push((nr as u32, *verdict));
        }
    }
    // Numbers newer than this table get ENOSYS, so libcs fall back to older calls
    // (e.g. fchmodat2 -> fchmodat) instead of failing with EPERM.
    intervals.push((v.len() as u32, Verdict::Errno(libc::ENOSYS as u32)));
    let mut out = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        // The x32 ABI sets bit 30; refuse it outright.
        jump(JMP_JGE_K, 0x4000_0000, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
    ];
    tree(&mut out, &intervals);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions emitted above.
    fn eval(prog: &[libc::sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0,
                        _ => panic!("bad offset"),
                    }
                }
                JMP_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                JMP_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                JMP_JSET_K => pc += if acc & i.k != 0 { i.jt } else { i.jf } as usize,
                JMP_JA => pc += i.k as usize,
                RET_K => return i.k,
                other => panic!("bad opcode {other:#x}"),
            }
        }
    }

    fn run(nr: &str, arg0: u32) -> u32 {
        eval(&default_filter(), lookup(nr).unwrap(), AUDIT_ARCH_X86_64, arg0)
    }

    #[test]
    fn filter_allows_every_listed_call_and_refuses_the_rest() {
        let prog = default_filter();
        let v = verdicts();
        for (name, nr) in SYSCALLS {
            let got = eval(&prog, *nr, AUDIT_ARCH_X86_64, 0);
            let want = match v[*nr as usize] {
                Verdict::Allow | Verdict::CloneCheck => RET_ALLOW,
                Verdict::Errno(e) => RET_ERRNO | e,
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn filter_refuses_mount_unshare_and_keyctl() {
        for name in ["mount", "unshare", "keyctl", "bpf", "setns", "pivot_root"] {
            assert_eq!(run(name, 0), RET_ERRNO | libc::EPERM as u32, "{name}");
        }
    }

    #[test]
    fn filter_checks_clone_flags_and_refuses_clone3_with_enosys() {
        assert_eq!(run("clone", libc::SIGCHLD as u32), RET_ALLOW);
        assert_eq!(run("clone", libc::CLONE_NEWUSER as u32), RET_ERRNO | libc::EPERM as u32);
        assert_eq!(run("clone3", 0), RET_ERRNO | libc::ENOSYS as u32);
    }

    #[test]
    fn filter_kills_foreign_arch_and_refuses_unknown_numbers() {
        let prog = default_filter();
        assert_eq!(eval(&prog, 0, 0x4000_0003, 0), RET_KILL_PROCESS);
        assert_eq!(eval(&prog, 9999, AUDIT_ARCH_X86_64, 0), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(eval(&prog, 0x4000_0001, AUDIT_ARCH_X86_64, 0), RET_ERRNO | 1);
    }

    #[test]
    fn filter_allows_the_workload_footprint() {
        for name in [
            "read",
            "write",
            "close",
            "poll",
            "mmap",
            "munmap",
            "rt_sigprocmask",
            "pread64",
            "pwrite64",
            "socket",
            "connect",
            "accept",
            "shutdown",
            "bind",
            "listen",
            "setsockopt",
            "fsync",
            "getppid",
            "clock_gettime",
            "exit_group",
            "openat",
            "unlinkat",
            "signalfd4",
            "execve",
        ] {
            assert_eq!(run(name, 0), RET_ALLOW, "{name}");
        }
    }

    #[test]
    fn allowed_names_missing_from_the_table_are_only_newer_calls() {
        // The UAPI header here stops at 450; these came later and get ENOSYS (see above).
        let newer = ["cachestat", "fchmodat2", "futex_requeue", "futex_wait", "futex_wake", "map_shadow_stack"];
        let missing: Vec<_> = ALLOWED.iter().filter(|n| lookup(n).is_none()).collect();
        assert!(missing.iter().all(|m| newer.contains(m)), "unknown: {missing:?}");
    }
}
