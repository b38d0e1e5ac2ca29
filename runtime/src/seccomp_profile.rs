//! Seccomp profiles given as data (OCI `linux.seccomp`): a default action, per-syscall
//! actions with argument conditions and errno values, compiled by our own BPF emitter into a
//! linear filter (one block per rule, first match wins, as libseccomp orders them).

use crate::syscalls::SYSCALLS;
use serde::{Deserialize, Serialize};

/// Errors compiling a profile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown system call `{0}` in the seccomp profile")]
    UnknownSyscall(String),
    #[error("the seccomp profile is too large for one BPF program ({0} instructions)")]
    TooLarge(usize),
    #[error("seccomp argument index {0} is out of range (0-5)")]
    ArgIndex(u32),
}

/// What happens when a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Log,
}

/// Comparison of one system call argument (`value` after masking for `MaskedEq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCond {
    pub index: u32,
    pub value: u64,
    /// For `MaskedEq` (as in libseccomp and the OCI spec): `value` is the mask and this the
    /// value the masked argument must equal.
    #[serde(default)]
    pub value_two: u64,
    pub op: Op,
}

/// Calls by name with one action, taken when every condition holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    #[serde(default)]
    pub args: Vec<ArgCond>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub default_action: Action,
    pub rules: Vec<Rule>,
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const JMP_JA: u16 = 0x05;
const RET_K: u16 = 0x06;
const ALU_AND_K: u16 = 0x54;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret(a: Action) -> u32 {
    match a {
        Action::Allow => 0x7fff_0000,
        Action::Errno(e) => 0x0005_0000 | (e & 0xffff),
        Action::KillThread => 0,
        Action::KillProcess => 0x8000_0000,
        Action::Trap => 0x0003_0000,
        Action::Log => 0x7ffc_0000,
    }
}

/// Syscall number by name.
pub fn number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Emit the checks of one condition on a 64-bit argument as 32-bit halves. Each emitted
/// block falls through when the condition holds and jumps to `FAIL` (patched later) when not.
fn cond(out: &mut Vec<libc::sock_filter>, fails: &mut Vec<usize>, c: &ArgCond) -> Result<(), Error> {
    if c.index > 5 {
        return Err(Error::ArgIndex(c.index));
    }
    let lo_off = OFF_ARGS + c.index * 8;
    let hi_off = lo_off + 4;
    let (v, m) = (c.value, c.value_two);
    let (vhi, vlo) = ((v >> 32) as u32, v as u32);
    // A jump whose false branch goes to FAIL: record it for patching.
    let mut fail_if_false = |out: &mut Vec<libc::sock_filter>, code: u16, k: u32| {
        fails.push(out.len());
        out.push(jump(code, k, 0, 0xff));
    };
    match c.op {
        Op::Eq | Op::MaskedEq => {
            let (mhi, mlo) = if c.op == Op::MaskedEq { (vhi, vlo) } else { (u32::MAX, u32::MAX) };
            let (vhi, vlo) = if c.op == Op::MaskedEq { ((m >> 32) as u32, m as u32) } else { (vhi, vlo) };
            out.push(stmt(LD_W_ABS, hi_off));
            if c.op == Op::MaskedEq {
                out.push(stmt(ALU_AND_K, mhi));
            }
            fail_if_false(out, JMP_JEQ_K, vhi & mhi);
            out.push(stmt(LD_W_ABS, lo_off));
            if c.op == Op::MaskedEq {
                out.push(stmt(ALU_AND_K, mlo));
            }
            fail_if_false(out, JMP_JEQ_K, vlo & mlo);
        }
        Op::Ne => {
            // Holds when either half differs: hi != vhi -> pass; else lo != vlo -> pass.
            out.push(stmt(LD_W_ABS, hi_off));
            out.push(jump(JMP_JEQ_K, vhi, 0, 2)); // differs: skip to pass
            out.push(stmt(LD_W_ABS, lo_off));
            fails.push(out.len());
            out.push(jump(JMP_JEQ_K, vlo, 0xff, 0)); // equal: fail
        }
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            // Unsigned 64-bit compare: decide on the high half, the low half on a tie.
            let lo_code = match c.op {
                Op::Gt | Op::Le => JMP_JGT_K,
                _ => JMP_JGE_K,
            };
            let holds_when_true = matches!(c.op, Op::Gt | Op::Ge);
            out.push(stmt(LD_W_ABS, hi_off));
            // hi > vhi: Gt/Ge hold, Lt/Le fail.
            if holds_when_true {
                out.push(jump(JMP_JGT_K, vhi, 3, 0));
            } else {
                fails.push(out.len());
                out.push(jump(JMP_JGT_K, vhi, 0xff, 0));
            }
            // hi < vhi: Gt/Ge fail, Lt/Le hold.
            if holds_when_true {
                fails.push(out.len());
                out.push(jump(JMP_JEQ_K, vhi, 0, 0xff));
            } else {
                out.push(jump(JMP_JEQ_K, vhi, 0, 2));
            }
            out.push(stmt(LD_W_ABS, lo_off));
            fails.push(out.len());
            if holds_when_true {
                out.push(jump(lo_code, vlo, 0, 0xff));
            } else {
                out.push(jump(lo_code, vlo, 0xff, 0));
            }
        }
    }
    Ok(())
}

/// Compile a profile for x86-64 (other architectures are killed).
pub fn compile(p: &Profile) -> Result<Vec<libc::sock_filter>, Error> {
    let mut out =
        vec![stmt(LD_W_ABS, OFF_ARCH), jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0), stmt(RET_K, ret(Action::KillProcess))];
    for rule in &p.rules {
        for name in &rule.names {
            let nr = number(name).ok_or_else(|| Error::UnknownSyscall(name.clone()))?;
            // Block: load nr; if nr != N skip the block; conditions; return action.
            out.push(stmt(LD_W_ABS, OFF_NR));
            let skip = out.len();
            out.push(jump(JMP_JEQ_K, nr, 0, 0)); // jf patched to the block end
            let mut fails = Vec::new();
            for c in &rule.args {
                cond(&mut out, &mut fails, c)?;
            }
            out.push(stmt(RET_K, ret(rule.action)));
            let end = out.len();
            patch_false(&mut out[skip], skip, end)?;
            for f in fails {
                let (jt_fail, jf_fail) = (out[f].jt == 0xff, out[f].jf == 0xff);
                let off = end - f - 1;
                let off = u8::try_from(off).map_err(|_| Error::TooLarge(off))?;
                if jt_fail {
                    out[f].jt = off;
                }
                if jf_fail {
                    out[f].jf = off;
                }
            }
        }
    }
    out.push(stmt(RET_K, ret(p.default_action)));
    if out.len() > 4096 {
        return Err(Error::TooLarge(out.len()));
    }
    Ok(out)
}

fn patch_false(ins: &mut libc::sock_filter, at: usize, end: usize) -> Result<(), Error> {
    let off = end - at - 1;
    match u8::try_from(off) {
        Ok(o) => {
            ins.jf = o;
            Ok(())
        }
        Err(_) => {
            // Too far for an 8-bit jump: invert through a `ja` (not needed for the rule sizes
            // the conditions allow; refuse rather than emit a wrong program).
            let _ = JMP_JA;
            Err(Error::TooLarge(off))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions emitted above.
    fn eval(prog: &[libc::sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let i = prog[pc];
            pc += 1;
            let cmp = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => AUDIT_ARCH_X86_64,
                        k => {
                            let n = ((k - OFF_ARGS) / 8) as usize;
                            if (k - OFF_ARGS).is_multiple_of(8) {
                                args[n] as u32
                            } else {
                                (args[n] >> 32) as u32
                            }
                        }
                    }
                }
                ALU_AND_K => acc &= i.k,
                JMP_JEQ_K => pc += cmp(acc == i.k),
                JMP_JGT_K => pc += cmp(acc > i.k),
                JMP_JGE_K => pc += cmp(acc >= i.k),
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn profile(op: Op, value: u64) -> Profile {
        Profile {
            default_action: Action::Allow,
            rules: vec![Rule {
                names: vec!["personality".into()],
                action: Action::Errno(1),
                args: vec![ArgCond { index: 0, value, value_two: 0, op }],
            }],
        }
    }

    const NR: u32 = 135; // personality

    #[test]
    fn an_eq_condition_blocks_only_the_matching_argument() {
        let prog = compile(&profile(Op::Eq, 8)).unwrap();
        assert_eq!(eval(&prog, NR, [8, 0, 0, 0, 0, 0]), ret(Action::Errno(1)));
        assert_eq!(eval(&prog, NR, [9, 0, 0, 0, 0, 0]), ret(Action::Allow));
        assert_eq!(eval(&prog, NR, [8 | 1 << 32, 0, 0, 0, 0, 0]), ret(Action::Allow));
        assert_eq!(eval(&prog, 0, [8, 0, 0, 0, 0, 0]), ret(Action::Allow));
    }

    #[test]
    fn ordered_conditions_compare_all_64_bits() {
        for (op, v, arg, hit) in [
            (Op::Gt, 10, 11, true),
            (Op::Gt, 10, 10, false),
            (Op::Ge, 10, 10, true),
            (Op::Ge, 10, 9, false),
            (Op::Lt, 10, 9, true),
            (Op::Lt, 10, 10, false),
            (Op::Le, 10, 10, true),
            (Op::Le, 10, 11, false),
            (Op::Gt, 10, 1 << 32, true),
            (Op::Lt, 1 << 32, 5, true),
            (Op::Ne, 10, 10, false),
            (Op::Ne, 10, 11, true),
            (Op::Ne, 10, 10 | 1 << 33, true),
            (Op::MaskedEq, 0xff, 0x1234, false),
        ] {
            let prog = compile(&profile(op, v)).unwrap();
            let got = eval(&prog, NR, [arg, 0, 0, 0, 0, 0]) == ret(Action::Errno(1));
            assert_eq!(got, hit, "{op:?} {v} vs {arg}");
        }
    }

    #[test]
    fn masked_eq_masks_before_comparing() {
        let mut p = profile(Op::MaskedEq, 0xf0);
        p.rules[0].args[0].value_two = 0x10;
        let prog = compile(&p).unwrap();
        assert_eq!(eval(&prog, NR, [0x1f, 0, 0, 0, 0, 0]), ret(Action::Errno(1)));
        assert_eq!(eval(&prog, NR, [0x2f, 0, 0, 0, 0, 0]), ret(Action::Allow));
    }

    #[test]
    fn unknown_syscall_names_are_refused() {
        let mut p = profile(Op::Eq, 1);
        p.rules[0].names = vec!["no_such_call".into()];
        assert!(matches!(compile(&p), Err(Error::UnknownSyscall(n)) if n == "no_such_call"));
    }
}
