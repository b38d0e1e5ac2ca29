//! The initial user stack as Linux's ELF loader lays it out: `argc`, `argv[]`, NULL, `envp[]`,
//! NULL, the auxiliary vector, then the strings and AT_RANDOM bytes near the top.

use super::elf::ElfImage;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_EXECFN: u64 = 31;

/// Errors from building the stack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StackError {
    #[error("argument or environment string {0:?} contains a NUL byte")]
    Nul(String),
    #[error("arguments and environment need {need} bytes, more than the {room} byte limit")]
    TooBig { need: usize, room: usize },
}

/// The bytes to copy to `sp..top` and the initial stack pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialStack {
    pub sp: u64,
    pub bytes: Vec<u8>,
}

/// Most bytes the initial stack may take (Linux allows a quarter of the stack rlimit).
pub const MAX_STACK_IMAGE: usize = 256 * 1024;

/// Lay out the initial stack ending at `top` (16-byte aligned).
pub fn build(
    top: u64,
    args: &[String],
    env: &[String],
    elf: &ElfImage,
    random: [u8; 16],
) -> Result<InitialStack, StackError> {
    for s in args.iter().chain(env) {
        if s.contains('\0') {
            return Err(StackError::Nul(s.clone()));
        }
    }
    // Strings area, filled downwards from the top: AT_RANDOM bytes, then each string.
    let mut strings: Vec<u8> = Vec::new();
    let mut place = |data: &[u8]| -> u64 {
        strings.splice(0..0, data.iter().copied());
        strings.len() as u64 // offset of the start below `top`
    };
    let random_off = place(&random);
    let mut str_offs = Vec::new();
    for s in args.iter().chain(env) {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        str_offs.push(place(&b));
    }
    let strings_len = strings.len() as u64;
    let addr_of = |off: u64| top - off;

    let execfn = str_offs.first().map_or(0, |&o| addr_of(o));
    let mut auxv: Vec<(u64, u64)> = vec![
        (AT_PAGESZ, 4096),
        (AT_PHENT, 56),
        (AT_PHNUM, u64::from(elf.phnum)),
        (AT_ENTRY, elf.entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_SECURE, 0),
        (AT_RANDOM, addr_of(random_off)),
        (AT_EXECFN, execfn),
    ];
    if let Some(phdr) = elf.phdr_vaddr {
        auxv.insert(0, (AT_PHDR, phdr));
    }
    auxv.push((AT_NULL, 0));

    let words = 1 + args.len() + 1 + env.len() + 1 + 2 * auxv.len();
    let strings_bottom = (top - strings_len) & !0xf;
    let sp = (strings_bottom - 8 * words as u64) & !0xf;
    let need = (top - sp) as usize;
    if need > MAX_STACK_IMAGE {
        return Err(StackError::TooBig { need, room: MAX_STACK_IMAGE });
    }

    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(args.len() as u64);
    table.extend(str_offs[..args.len()].iter().map(|&o| addr_of(o)));
    table.push(0);
    table.extend(str_offs[args.len()..].iter().map(|&o| addr_of(o)));
    table.push(0);
    for (k, v) in auxv {
        table.push(k);
        table.push(v);
    }
    let mut bytes = vec![0u8; need];
    for (i, w) in table.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let strings_at = need - strings.len();
    bytes[strings_at..].copy_from_slice(&strings);
    Ok(InitialStack { sp, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf() -> ElfImage {
        ElfImage { entry: 0x20_3b50, segments: vec![], phdr_vaddr: Some(0x20_0040), phnum: 9 }
    }

    fn word(st: &InitialStack, addr: u64) -> u64 {
        let i = (addr - st.sp) as usize;
        u64::from_le_bytes(st.bytes[i..i + 8].try_into().unwrap())
    }

    fn cstr(st: &InitialStack, addr: u64) -> String {
        let i = (addr - st.sp) as usize;
        let end = st.bytes[i..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8(st.bytes[i..i + end].to_vec()).unwrap()
    }

    #[test]
    fn stack_holds_argc_argv_envp_and_auxv_in_linux_order() {
        let top = 0x1000_0000;
        let args = vec!["cvbench-workload".to_string(), "cpu".to_string()];
        let env = vec!["A=1".to_string()];
        let st = build(top, &args, &env, &elf(), [7; 16]).unwrap();
        assert_eq!(st.sp % 16, 0);
        assert_eq!(st.sp + st.bytes.len() as u64, top);
        assert_eq!(word(&st, st.sp), 2);
        assert_eq!(cstr(&st, word(&st, st.sp + 8)), "cvbench-workload");
        assert_eq!(cstr(&st, word(&st, st.sp + 16)), "cpu");
        assert_eq!(word(&st, st.sp + 24), 0);
        assert_eq!(cstr(&st, word(&st, st.sp + 32)), "A=1");
        assert_eq!(word(&st, st.sp + 40), 0);
        // auxv: collect pairs up to AT_NULL.
        let mut aux = std::collections::BTreeMap::new();
        let mut a = st.sp + 48;
        loop {
            let (k, v) = (word(&st, a), word(&st, a + 8));
            if k == AT_NULL {
                break;
            }
            aux.insert(k, v);
            a += 16;
        }
        assert_eq!(aux[&AT_PHDR], 0x20_0040);
        assert_eq!(aux[&AT_ENTRY], 0x20_3b50);
        assert_eq!(aux[&AT_PAGESZ], 4096);
        assert_eq!(cstr(&st, aux[&AT_EXECFN]), "cvbench-workload");
        let r = (aux[&AT_RANDOM] - st.sp) as usize;
        assert_eq!(&st.bytes[r..r + 16], &[7; 16]);
    }

    #[test]
    fn stack_rejects_strings_with_nul() {
        let e = build(0x1000_0000, &["a\0b".to_string()], &[], &elf(), [0; 16]).unwrap_err();
        assert_eq!(e, StackError::Nul("a\0b".to_string()));
    }

    #[test]
    fn stack_rejects_huge_argument_lists() {
        let big = vec!["x".repeat(4096); 100];
        let e = build(0x1000_0000, &big, &[], &elf(), [0; 16]).unwrap_err();
        assert!(matches!(e, StackError::TooBig { .. }));
    }
}
