//! Process entry without a C runtime: `_start`, the argument vector, the panic
//! handler, and the few memory routines the compiler expects to link against.

use core::arch::{asm, global_asm};

// The kernel (or the bare micro-VM loader) enters with rsp pointing at argc,
// followed by argv[], NULL, envp[], NULL, auxv. Align the stack and hand the
// original pointer to Rust.
global_asm!(".globl _start", "_start:", "xor ebp, ebp", "mov rdi, rsp", "and rsp, -16", "call cvbench_start", "ud2",);

/// Up to this many arguments are looked at; more is a usage error.
pub const MAX_ARGS: usize = 64;

/// The process arguments as byte strings (without the NUL).
pub struct Args {
    items: [&'static [u8]; MAX_ARGS],
    len: usize,
}

impl Args {
    /// # Safety
    /// `sp` must be the initial stack pointer laid out by the kernel's ELF loader.
    pub unsafe fn from_stack(sp: *const usize) -> Args {
        let mut args = Args { items: [&[]; MAX_ARGS], len: 0 };
        // SAFETY: per the contract, sp[0] is argc and sp[1..=argc] are pointers to
        // NUL-terminated strings that live for the whole process.
        unsafe {
            let argc = *sp;
            for i in 0..argc.min(MAX_ARGS) {
                let p = *sp.add(1 + i) as *const u8;
                let mut n = 0;
                while *p.add(n) != 0 {
                    n += 1;
                }
                args.items[i] = core::slice::from_raw_parts(p, n);
            }
            args.len = argc.min(MAX_ARGS);
        }
        args
    }

    pub fn get(&self, i: usize) -> Option<&'static [u8]> {
        if i < self.len {
            Some(self.items[i])
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut w = crate::out::Out::stderr();
    let _ = core::fmt::Write::write_fmt(&mut w, format_args!("cvbench-workload: panic: {info}\n"));
    w.flush();
    crate::sys::exit_group(101)
}

// The compiler lowers copies and fills to these symbols; with no libc linked
// they are provided here with the x86 string instructions.

/// # Safety
/// Standard `memcpy` contract: non-overlapping valid regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: caller guarantees both regions are valid for n bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// Standard `memmove` contract: valid regions of `n` bytes, may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: a forward copy is correct when dst does not start inside src.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backward copy with the direction flag set, restored afterwards.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dst
}

/// # Safety
/// Standard `memset` contract: a valid writable region of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: caller guarantees the region is valid for n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// Standard `memcmp` contract: two valid readable regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n and both regions are valid for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// Same as `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Referenced from precompiled `core` for unwinding tables; with
/// `panic = "abort"` nothing unwinds, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// # Safety
/// `s` must point to a NUL-terminated byte string.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the string is NUL-terminated, so every byte up to the NUL is
    // readable. Volatile reads keep the compiler from turning this loop back
    // into a call to `strlen`.
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}
