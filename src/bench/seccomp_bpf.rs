//! How many system calls a process's seccomp filters let through, measured from the filters
//! themselves: the classic-BPF programs are read from the running process
//! (`PTRACE_SECCOMP_GET_FILTER`, root only) and run here, once per x86-64 syscall number, on a
//! `seccomp_data` with zero arguments. A call counts as allowed when every filter returns
//! `SECCOMP_RET_ALLOW` (or `LOG`) for it; a rule that checks arguments is judged on zero ones.

use std::fmt;

/// One classic-BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("instruction {0}: unsupported opcode {1:#06x}")]
    Opcode(usize, u16),
    #[error("instruction {0}: load outside seccomp_data (offset {1})")]
    Load(usize, u32),
    #[error("instruction {0}: jump or fall-through past the end of the program")]
    Jump(usize),
    #[error("instruction {0}: scratch slot {1} out of range")]
    Scratch(usize, u32),
}

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
/// Past the highest x86-64 syscall number (462 in Linux 6.18), with room for new ones.
pub const SYSCALL_RANGE: u32 = 512;

/// Run `prog` on `seccomp_data {nr, arch, ip: 0, args: 0}` and return its return value.
pub fn run(prog: &[Insn], nr: u32, arch: u32) -> Result<u32, BpfError> {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    // Classic BPF only jumps forward, so this loop ends within prog.len() steps.
    loop {
        let i = *prog.get(pc).ok_or(BpfError::Jump(pc))?;
        let k = i.k;
        let src = if i.code & 0x08 != 0 { x } else { k };
        match i.code & 0x07 {
            0x00 => {
                // LD
                a = match i.code {
                    0x20 => {
                        let o = k as usize;
                        let w = data.get(o..o + 4).ok_or(BpfError::Load(pc, k))?;
                        u32::from_ne_bytes([w[0], w[1], w[2], w[3]])
                    }
                    0x00 => k,
                    0x80 => 64,
                    0x60 => *mem.get(k as usize).ok_or(BpfError::Scratch(pc, k))?,
                    c => return Err(BpfError::Opcode(pc, c)),
                };
            }
            0x01 => {
                // LDX
                x = match i.code {
                    0x01 => k,
                    0x81 => 64,
                    0x61 => *mem.get(k as usize).ok_or(BpfError::Scratch(pc, k))?,
                    c => return Err(BpfError::Opcode(pc, c)),
                };
            }
            0x02 => *mem.get_mut(k as usize).ok_or(BpfError::Scratch(pc, k))? = a,
            0x03 => *mem.get_mut(k as usize).ok_or(BpfError::Scratch(pc, k))? = x,
            0x04 => {
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).unwrap_or(0),
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).unwrap_or(0),
                    0xa0 => a ^ src,
                    _ => return Err(BpfError::Opcode(pc, i.code)),
                };
            }
            0x05 => {
                let taken = match i.code & 0xf0 {
                    0x00 => {
                        pc = pc + 1 + k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return Err(BpfError::Opcode(pc, i.code)),
                };
                pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                continue;
            }
            0x06 => return Ok(if i.code & 0x18 == 0x10 { a } else { k }),
            _ => {
                // MISC: TAX / TXA
                match i.code {
                    0x07 => x = a,
                    0x87 => a = x,
                    c => return Err(BpfError::Opcode(pc, c)),
                }
            }
        }
        pc += 1;
    }
}

/// Does the stack of filters let `nr` through?
pub fn allows(filters: &[Vec<Insn>], nr: u32) -> Result<bool, BpfError> {
    for f in filters {
        let action = run(f, nr, AUDIT_ARCH_X86_64)? & SECCOMP_RET_ACTION_FULL;
        if action != SECCOMP_RET_ALLOW && action != SECCOMP_RET_LOG {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What the filters allow over the x86-64 syscall numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    pub filters: usize,
    pub instructions: usize,
    pub allowed: u32,
}

impl AllowList {
    pub fn measure(filters: &[Vec<Insn>]) -> Result<AllowList, BpfError> {
        let mut allowed = 0;
        for nr in 0..SYSCALL_RANGE {
            if allows(filters, nr)? {
                allowed += 1;
            }
        }
        Ok(AllowList { filters: filters.len(), instructions: filters.iter().map(Vec::len).sum(), allowed })
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {SYSCALL_RANGE} syscall numbers allowed (zero arguments; {} filter(s), {} BPF instructions)",
            self.allowed, self.filters, self.instructions
        )
    }
}

/// Most filters read from one process, and the most instructions one filter can have.
const MAX_FILTERS: usize = 64;
const MAX_INSNS: usize = 4096;

/// What the tracing child writes for each filter: its instruction count, then the instructions;
/// then one of these markers.
const END_OF_FILTERS: i64 = -1;
const NO_FILTER: i64 = -2;
const FAILED: i64 = -3;

/// Read every seccomp filter of `pid` (root; the process is stopped for the moment it takes).
/// `Ok(None)`: the process has no filter.
///
/// The tracer is a child process forked for the purpose, never a thread of this one: a ptrace
/// stop is reported to every waiting thread of the tracer's process, so when `pid` is our own
/// child (the bare VM's VMM is), a thread of ours waiting for it to exit would take the stop
/// for its end, and the tracer would wait for a stop it never sees.
pub fn read_filters(pid: i32) -> Result<Option<Vec<Vec<Insn>>>, String> {
    // Everything the child uses is made before the fork: between fork and _exit it makes only
    // raw system calls on this memory (async-signal-safe; this process has other threads).
    let mut buf = vec![libc::sock_filter { code: 0, jt: 0, jf: 0, k: 0 }; MAX_INSNS];
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: fork(2); the child runs `trace_and_write` (raw system calls only) and `_exit`s.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        use std::os::fd::AsRawFd;
        trace_and_write(pid, &mut buf, wr.as_raw_fd());
        // SAFETY: ends the forked child without running this process's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop(wr);
    let mut bytes = Vec::new();
    let read = std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut bytes);
    let mut status = 0;
    // SAFETY: reaps the child forked above; `status` is a valid out-pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };
    read.map_err(|e| format!("reading the filters of {pid} from the tracing child: {e}"))?;
    parse_filters(pid, &bytes)
}

/// The forked child's work: seize and stop `pid`, write each filter to `fd`, detach.
fn trace_and_write(pid: i32, buf: &mut [libc::sock_filter], fd: i32) {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    let null = std::ptr::null_mut::<libc::c_void>();
    let put = |v: i64| {
        // SAFETY: write(2) of an 8-byte local.
        unsafe { libc::write(fd, (&v as *const i64).cast(), 8) };
    };
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) as i64;
    // SAFETY: PTRACE_SEIZE takes no memory (addr and data null); it fails cleanly for a process
    // that may not be traced.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) } != 0 {
        put(FAILED);
        put(errno());
        return;
    }
    let mut status = 0;
    // SAFETY: PTRACE_INTERRUPT of our seized tracee, then waitpid for its stop (`status` valid).
    let stopped = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, null, null) } == 0
        && unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } == pid;
    if !stopped {
        put(FAILED);
        put(errno());
    } else {
        for index in 0..MAX_FILTERS {
            // SAFETY: the tracee is seized and stopped; the kernel writes at most the filter's
            // length (at most BPF_MAXINSNS = MAX_INSNS instructions) into `buf`.
            let n =
                unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index as *mut libc::c_void, buf.as_mut_ptr()) };
            if n < 0 {
                let e = errno();
                if e == i64::from(libc::ENOENT) && index > 0 {
                    put(END_OF_FILTERS);
                } else if (e == i64::from(libc::EINVAL) || e == i64::from(libc::ENOENT)) && index == 0 {
                    put(NO_FILTER);
                } else {
                    put(FAILED);
                    put(e);
                }
                break;
            }
            let n = (n as usize).min(buf.len());
            put(n as i64);
            // SAFETY: write(2) of the first `n` instructions of `buf` (8 bytes each).
            unsafe { libc::write(fd, buf.as_ptr().cast(), n * 8) };
        }
    }
    // SAFETY: detaching our own tracee, no memory passed; it resumes where it stopped.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, null, null) };
}

/// The child's stream back into filters (or its error).
fn parse_filters(pid: i32, bytes: &[u8]) -> Result<Option<Vec<Vec<Insn>>>, String> {
    let mut at = 0;
    let mut next = |len: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + len)?;
        at += len;
        Some(s)
    };
    let mut filters = Vec::new();
    loop {
        let Some(word) = next(8) else {
            return Err(format!("the tracing child's answer about {pid} ended early"));
        };
        let v = i64::from_ne_bytes(word.try_into().map_err(|_| "short word".to_string())?);
        match v {
            END_OF_FILTERS => return Ok(Some(filters)),
            NO_FILTER => return Ok(None),
            FAILED => {
                let e = next(8).map_or(0, |w| i64::from_ne_bytes(w.try_into().unwrap_or([0; 8])));
                let err = std::io::Error::from_raw_os_error(e as i32);
                return Err(format!(
                    "ptrace of {pid} (PTRACE_SEIZE, PTRACE_INTERRUPT or PTRACE_SECCOMP_GET_FILTER): {err}"
                ));
            }
            n if (0..=MAX_INSNS as i64).contains(&n) => {
                let raw = next(n as usize * 8).ok_or_else(|| format!("a filter of {pid} ended early"))?;
                let insns = raw
                    .chunks_exact(8)
                    .map(|c| Insn {
                        code: u16::from_ne_bytes([c[0], c[1]]),
                        jt: c[2],
                        jf: c[3],
                        k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                    })
                    .collect();
                filters.push(insns);
                if filters.len() == MAX_FILTERS {
                    return Ok(Some(filters));
                }
            }
            other => return Err(format!("the tracing child sent {other} for {pid}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn i(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// arch check, then allow read (0) and write (1), everything else ERRNO.
    fn two_calls() -> Vec<Insn> {
        vec![
            i(0x20, 0, 0, 4),                 // ld arch
            i(0x15, 1, 0, AUDIT_ARCH_X86_64), // jeq x86-64
            i(0x06, 0, 0, 0),                 // kill
            i(0x20, 0, 0, 0),                 // ld nr
            i(0x15, 2, 0, 0),                 // jeq read → allow
            i(0x15, 1, 0, 1),                 // jeq write → allow
            i(0x06, 0, 0, 0x0005_0000 | 1),   // errno EPERM
            i(0x06, 0, 0, SECCOMP_RET_ALLOW), // allow
        ]
    }

    #[test]
    fn a_two_call_allow_list_allows_exactly_two() {
        let m = AllowList::measure(&[two_calls()]).unwrap();
        assert_eq!((m.allowed, m.filters, m.instructions), (2, 1, 8));
        assert!(!allows(&[two_calls()], 2).unwrap());
    }

    #[test]
    fn the_wrong_arch_is_killed() {
        assert_eq!(run(&two_calls(), 0, 0x4000_0003).unwrap(), 0);
    }

    #[test]
    fn the_most_restrictive_filter_wins() {
        let allow_all = vec![i(0x06, 0, 0, SECCOMP_RET_ALLOW)];
        let deny_write = vec![
            i(0x20, 0, 0, 0),
            i(0x15, 0, 1, 1),
            i(0x06, 0, 0, 0x0003_0000), // trap
            i(0x06, 0, 0, SECCOMP_RET_ALLOW),
        ];
        assert_eq!(AllowList::measure(std::slice::from_ref(&allow_all)).unwrap().allowed, SYSCALL_RANGE);
        assert_eq!(AllowList::measure(&[allow_all, deny_write]).unwrap().allowed, SYSCALL_RANGE - 1);
    }

    #[test]
    fn bad_programs_are_errors_not_panics() {
        assert_eq!(run(&[i(0x20, 0, 0, 62)], 0, 0), Err(BpfError::Load(0, 62)));
        assert_eq!(run(&[i(0x05, 0, 0, 5)], 0, 0), Err(BpfError::Jump(6)));
        assert_eq!(run(&[i(0x02, 0, 0, 16)], 0, 0), Err(BpfError::Scratch(0, 16)));
        assert_eq!(run(&[i(0xff, 0, 0, 0)], 0, 0), Err(BpfError::Opcode(0, 0xff)));
        assert_eq!(run(&[], 0, 0), Err(BpfError::Jump(0)));
    }

    #[test]
    fn alu_and_scratch_memory_work() {
        // A = nr; A += 1; M[0] = A; X = M[0]; A = X; ret A
        let p = [
            i(0x20, 0, 0, 0),
            i(0x04, 0, 0, 1),
            i(0x02, 0, 0, 0),
            i(0x61, 0, 0, 0),
            i(0x87, 0, 0, 0),
            i(0x16, 0, 0, 0),
        ];
        assert_eq!(run(&p, 41, 0).unwrap(), 42);
    }

    #[test]
    fn this_process_filter_reading_says_none_or_fails_cleanly() {
        // A child with no filter: reading gives None (as root), or a clear error otherwise.
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let r = read_filters(c.id() as i32);
        c.kill().unwrap();
        c.wait().unwrap();
        match r {
            Ok(f) => assert!(f.is_none(), "{f:?}"),
            Err(e) => assert!(e.contains("PTRACE"), "{e}"),
        }
    }
}
