//! A tiny static guest for the bare VM's confinement test: it tries to reach past the run's
//! grant (files outside the run directory, a planted symlink, /proc/self/mem, a socket to
//! 127.0.0.1, an AF_PACKET socket, a huge write) and once uses what it is granted (a file in
//! the run directory), printing `name=<return value>` per attempt, then exits 0. Built by
//! `tests/bare.rs` with plain `rustc` (no_std, no libc, static, not PIE).
#![no_std]
#![no_main]

use core::arch::asm;

const AT_FDCWD: isize = -100;

/// # Safety
/// The arguments must be valid for system call `nr`.
unsafe fn syscall(nr: usize, a: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; syscall clobbers rcx and r11.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
             in("r10") a[3], lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

fn write(buf: &[u8]) {
    // SAFETY: `buf` is readable for its length.
    unsafe { syscall(1, [1, buf.as_ptr() as usize, buf.len(), 0]) };
}

fn report(name: &[u8], value: isize) {
    let mut line = [0u8; 64];
    let mut n = 0;
    for &b in name.iter().chain(b"=") {
        line[n] = b;
        n += 1;
    }
    if value < 0 {
        line[n] = b'-';
        n += 1;
    }
    let mut digits = [0u8; 20];
    let mut d = 0;
    let mut v = value.unsigned_abs();
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        line[n] = digits[d];
        n += 1;
    }
    line[n] = b'\n';
    write(&line[..n + 1]);
}

fn open(path: &[u8], flags: usize) -> isize {
    // SAFETY: `path` is NUL-terminated.
    unsafe { syscall(257, [AT_FDCWD as usize, path.as_ptr() as usize, flags, 0o600]) }
}

// The entry: the ABI wants RSP 16-byte aligned before a call, and the kernel (here the VMM)
// enters with it aligned, so align and call.
core::arch::global_asm!(".globl _start", "_start:", "and rsp, -16", "call probe", "ud2");

#[no_mangle]
pub extern "C" fn probe() -> ! {
    const O_RDWR: usize = 2;
    const O_CREAT: usize = 0o100;
    report(b"etc_passwd", open(b"/etc/passwd\0", 0));
    report(b"dotdot", open(b"../../x\0", O_RDWR | O_CREAT));
    report(b"symlink", open(b"link\0", 0));
    report(b"proc_mem", open(b"/proc/self/mem\0", O_RDWR));
    report(b"unlink_dotdot", unsafe { syscall(263, [AT_FDCWD as usize, b"../x\0".as_ptr() as usize, 0, 0]) });
    // SAFETY (all below): plain integers or NUL-terminated / sized buffers we own.
    let sock = unsafe { syscall(41, [2, 1, 0, 0]) }; // AF_INET, SOCK_STREAM
    report(b"tcp_socket", sock);
    let mut sa = [0u8; 16];
    sa[0] = 2; // AF_INET
    sa[2..4].copy_from_slice(&5201u16.to_be_bytes());
    sa[4..8].copy_from_slice(&[127, 0, 0, 1]);
    report(b"connect_loopback", unsafe { syscall(42, [sock as usize, sa.as_ptr() as usize, 16, 0]) });
    report(b"packet_socket", unsafe { syscall(41, [17, 3, 0x0300, 0]) }); // AF_PACKET, SOCK_RAW, ETH_P_ALL
    let fd = open(b"granted.txt\0", O_RDWR | O_CREAT);
    report(b"granted_open", fd);
    report(b"granted_write", unsafe { syscall(1, [fd as usize, b"hi".as_ptr() as usize, 2, 0]) });
    let block = [7u8; 4096];
    report(b"huge_pwrite", unsafe { syscall(18, [fd as usize, block.as_ptr() as usize, 4096, 1 << 40]) });
    report(b"close", unsafe { syscall(3, [fd as usize, 0, 0, 0]) });
    write(b"done\n");
    // SAFETY: exit_group takes no memory.
    unsafe { syscall(231, [0, 0, 0, 0]) };
    loop {}
}

/// # Safety
/// Standard `memset` contract: a valid writable region of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the region is valid for `n` bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// Referenced from the precompiled `core`'s unwind tables; with panic=abort it never runs.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: exit_group takes no memory.
    unsafe { syscall(231, [99, 0, 0, 0]) };
    loop {}
}
