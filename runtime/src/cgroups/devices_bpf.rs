//! cgroup v2 device control: OCI device rules compiled into an eBPF `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program, loaded with `bpf(BPF_PROG_LOAD)` and attached to the container's cgroup directory.
//!
//! cgroup v1 had `devices.allow`/`devices.deny` files; v2 has no devices controller at all. Instead
//! the kernel runs a small eBPF program on every device access (open, mknod) by a task in the
//! cgroup. Its context is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`,
//! where the low 16 bits of `access_type` hold the device type (`BPF_DEVCG_DEV_BLOCK` = 1,
//! `BPF_DEVCG_DEV_CHAR` = 2) and the high 16 bits the access (`MKNOD` = 1, `READ` = 2,
//! `WRITE` = 4). The program returns 1 to allow, 0 to deny (the caller then sees EPERM).
//!
//! The program we emit, in the order runc's `devicefilter` uses:
//!
//! ```text
//!   r2 = ctx->access_type; r3 = r2 & 0xffff (type); r2 >>= 16 (access)
//!   r4 = ctx->major;       r5 = ctx->minor
//!   for each rule, LAST first:           // the last matching rule wins, as on v1
//!     if r3 != type  goto next           // omitted for `a`
//!     if r2 & ~access goto next          // omitted when the rule covers rwm
//!     if r4 != major goto next           // omitted for `*`
//!     if r5 != minor goto next           // omitted for `*`
//!     r0 = allow; exit
//!   next: ...
//!   r0 = 1; exit                         // no rule matched: a fresh v1 cgroup inherits "a *:* rwm"
//! ```
//!
//! A rule that matches everything ends the program, so the rules before it are never emitted.
//! Each instruction is 8 bytes: opcode, dst/src registers (4 bits each), a 16-bit jump offset
//! (counted in instructions from the next one) and a 32-bit immediate.

use crate::config::DeviceRule;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Errors compiling, loading or attaching the device program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device rule has unknown type `{0}` (expected a, b or c)")]
    RuleType(char),
    #[error("device rule has unknown access `{0}` (expected some of r, w, m)")]
    RuleAccess(String),
    #[error("device rule number {0} is out of range")]
    RuleNumber(i64),
    #[error("device program is too long ({0} instructions)")]
    TooLong(usize),
    #[error("cannot load the device program (kernel log: {log})")]
    Load {
        log: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach the device program to the cgroup")]
    Attach(#[source] io::Error),
}

/// One eBPF instruction, in the kernel's `struct bpf_insn` layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (class | size/op | source).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X  (32-bit)
const ALU_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K: compares the low 32 bits, as the ctx fields are u32
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

fn exit_with(v: i32) -> [Insn; 2] {
    [insn(ALU64_MOV_K, 0, 0, 0, v), insn(JMP_EXIT, 0, 0, 0, 0)]
}

fn access_mask(access: &str) -> Result<i32, Error> {
    let mut m = 0;
    for c in access.chars() {
        m |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(Error::RuleAccess(access.into())),
        };
    }
    Ok(m)
}

fn number(n: Option<i64>) -> Result<Option<i32>, Error> {
    match n {
        None | Some(-1) => Ok(None),
        // Device numbers are u32 in the context; compare as the same bits.
        Some(v) if (0..=i64::from(u32::MAX)).contains(&v) => Ok(Some(v as u32 as i32)),
        Some(v) => Err(Error::RuleNumber(v)),
    }
}

/// The match conditions of one rule, each `None` when the rule does not test it.
fn block(rule: &DeviceRule) -> Result<Vec<Insn>, Error> {
    let ty = match rule.kind {
        'a' => None,
        'b' => Some(DEV_BLOCK),
        'c' => Some(DEV_CHAR),
        k => return Err(Error::RuleType(k)),
    };
    let acc = access_mask(&rule.access)?;
    let mut conds: Vec<(u8, i32)> = Vec::new();
    if let Some(t) = ty {
        conds.push((3, t));
    }
    if acc != ACC_ALL {
        conds.push((0, acc)); // marker: the access test needs two instructions first
    }
    if let Some(m) = number(rule.major)? {
        conds.push((4, m));
    }
    if let Some(m) = number(rule.minor)? {
        conds.push((5, m));
    }
    // Lay out the tests, then fix each jump to land just past the block's final `exit`.
    let mut out = Vec::new();
    let mut jumps = Vec::new();
    for (reg, imm) in conds {
        if reg == 0 {
            out.push(insn(ALU_MOV_X, 0, 2, 0, 0));
            out.push(insn(ALU_AND_K, 0, 0, 0, !imm & ACC_ALL));
            jumps.push(out.len());
            out.push(insn(JMP_JNE_K, 0, 0, 0, 0));
        } else {
            jumps.push(out.len());
            out.push(insn(JMP_JNE_K, reg, 0, 0, imm));
        }
    }
    out.extend(exit_with(i32::from(rule.allow)));
    let end = out.len();
    for j in jumps {
        out[j].off = (end - j - 1) as i16;
    }
    Ok(out)
}

/// Compile `rules` (in OCI order: later rules override earlier ones) into a program.
pub fn compile(rules: &[DeviceRule]) -> Result<Vec<Insn>, Error> {
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU_MOV_X, 3, 2, 0, 0),
        insn(ALU_AND_K, 3, 0, 0, 0xffff),
        insn(ALU_RSH_K, 2, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let b = block(rule)?;
        let unconditional = b.len() == 2;
        prog.extend(b);
        if unconditional {
            return check_len(prog);
        }
    }
    prog.extend(exit_with(1));
    check_len(prog)
}

fn check_len(prog: Vec<Insn>) -> Result<Vec<Insn>, Error> {
    // Jump offsets are i16; the kernel's limit for unprivileged-sized programs is far above this.
    if prog.len() > 4096 {
        return Err(Error::TooLong(prog.len()));
    }
    Ok(prog)
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, padded to the size we pass.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Load `prog` into the kernel and return the program's fd.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, Error> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    // SAFETY: `attr` is a correctly laid out prefix of `union bpf_attr` whose pointers (insns,
    // license, log buffer with its true size) stay valid for the call; the kernel zero-fills
    // the fields beyond the size we pass.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, std::mem::size_of::<ProgLoadAttr>())
    };
    if fd < 0 {
        let source = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        return Err(Error::Load { log: String::from_utf8_lossy(&log[..end]).trim().to_string(), source });
    }
    // SAFETY: a non-negative return of BPF_PROG_LOAD is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attach the loaded program to the cgroup directory `cgroup`; the attachment holds its own
/// reference, so the caller may close `prog` afterwards.
pub fn attach(prog: &OwnedFd, cgroup: BorrowedFd<'_>) -> Result<(), Error> {
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: `attr` is a correctly laid out prefix of `union bpf_attr` holding only integers;
    // both fds are open for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(Error::Attach(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: access.into() }
    }

    const PROLOGUE: usize = 6;

    #[test]
    fn empty_rules_allow_everything() {
        let p = compile(&[]).unwrap();
        assert_eq!(p.len(), PROLOGUE + 2);
        assert_eq!(&p[PROLOGUE..], &exit_with(1));
    }

    #[test]
    fn deny_all_is_an_unconditional_deny() {
        let p = compile(&[rule(false, 'a', None, None, "rwm")]).unwrap();
        assert_eq!(&p[PROLOGUE..], &exit_with(0));
    }

    #[test]
    fn allow_all_after_deny_all_wins() {
        let p = compile(&[rule(false, 'a', None, None, "rwm"), rule(true, 'a', None, None, "rwm")]).unwrap();
        assert_eq!(&p[PROLOGUE..], &exit_with(1));
    }

    #[test]
    fn char_rule_with_rw_tests_type_access_major_minor() {
        let p = compile(&[rule(false, 'a', None, None, "rwm"), rule(true, 'c', Some(1), Some(3), "rw")]).unwrap();
        let expected = [
            insn(JMP_JNE_K, 3, 0, 7, DEV_CHAR),
            insn(ALU_MOV_X, 0, 2, 0, 0),
            insn(ALU_AND_K, 0, 0, 0, ACC_MKNOD),
            insn(JMP_JNE_K, 0, 0, 4, 0),
            insn(JMP_JNE_K, 4, 0, 3, 1),
            insn(JMP_JNE_K, 5, 0, 2, 3),
            insn(ALU64_MOV_K, 0, 0, 0, 1),
            insn(JMP_EXIT, 0, 0, 0, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 0),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(&p[PROLOGUE..], &expected);
    }

    #[test]
    fn wildcard_minor_and_full_access_test_only_type_and_major() {
        let p = compile(&[rule(false, 'b', Some(8), None, "rwm")]).unwrap();
        let expected = [
            insn(JMP_JNE_K, 3, 0, 3, DEV_BLOCK),
            insn(JMP_JNE_K, 4, 0, 2, 8),
            insn(ALU64_MOV_K, 0, 0, 0, 0),
            insn(JMP_EXIT, 0, 0, 0, 0),
            insn(ALU64_MOV_K, 0, 0, 0, 1),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(&p[PROLOGUE..], &expected);
    }

    #[test]
    fn rules_before_an_unconditional_rule_are_dropped() {
        let p = compile(&[rule(true, 'c', Some(1), Some(5), "r"), rule(false, 'a', None, None, "rwm")]).unwrap();
        assert_eq!(p.len(), PROLOGUE + 2);
    }

    #[test]
    fn bad_rules_are_rejected() {
        assert!(matches!(compile(&[rule(true, 'x', None, None, "r")]), Err(Error::RuleType('x'))));
        assert!(matches!(compile(&[rule(true, 'c', None, None, "rq")]), Err(Error::RuleAccess(_))));
        assert!(matches!(compile(&[rule(true, 'c', Some(-5), None, "r")]), Err(Error::RuleNumber(-5))));
    }
}
