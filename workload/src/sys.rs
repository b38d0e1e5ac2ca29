//! Raw Linux x86-64 system calls: the complete list of kernel entry points the
//! workload binary can make. Every call the binary makes goes through this
//! file, so its syscall footprint is exactly the `nr` constants below.

use core::arch::asm;

/// System call numbers (x86-64). Keep in step with the README's footprint table
/// and with the bare micro-VM's syscall service.
pub mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const POLL: usize = 7;
    pub const MMAP: usize = 9;
    pub const MUNMAP: usize = 11;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const PREAD64: usize = 17;
    pub const PWRITE64: usize = 18;
    pub const SOCKET: usize = 41;
    pub const CONNECT: usize = 42;
    pub const ACCEPT: usize = 43;
    pub const SHUTDOWN: usize = 48;
    pub const BIND: usize = 49;
    pub const LISTEN: usize = 50;
    pub const SETSOCKOPT: usize = 54;
    pub const FSYNC: usize = 74;
    pub const GETRUSAGE: usize = 98;
    pub const GETPPID: usize = 110;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const UNLINKAT: usize = 263;
    pub const SIGNALFD4: usize = 289;
}

/// Issue a system call with up to six arguments; returns the raw kernel result
/// (negative errno on failure).
///
/// # Safety
/// The caller must pass arguments that are valid for system call `n`: every
/// pointer must reference memory of the size and mutability the kernel expects.
#[inline(always)]
pub unsafe fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller upholds the per-call contract; `syscall` clobbers only
    // rax (result), rcx and r11, which are declared.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A failed system call: the positive errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

fn check(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes.
    check(unsafe { syscall6(nr::WRITE, [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0]) })
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
    check(unsafe { syscall6(nr::READ, [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0]) })
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor passes no memory to the kernel.
    unsafe { syscall6(nr::CLOSE, [fd as usize, 0, 0, 0, 0, 0]) };
}

pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes no memory and does not return.
    unsafe { syscall6(nr::EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]) };
    #[allow(clippy::empty_loop)]
    loop {}
}

pub fn getppid() -> isize {
    // SAFETY: getppid takes no arguments.
    unsafe { syscall6(nr::GETPPID, [0; 6]) }
}

const CLOCK_MONOTONIC: usize = 1;

/// Monotonic time in nanoseconds. This is a real system call (no vDSO: the
/// binary has no dynamic loader and reads no auxiliary vector), so it costs the
/// same kind of kernel entry on every backend.
pub fn now_ns() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: `ts` is a writable `struct timespec` (two i64).
    unsafe { syscall6(nr::CLOCK_GETTIME, [CLOCK_MONOTONIC, ts.as_mut_ptr() as usize, 0, 0, 0, 0]) };
    (ts[0] as u64) * 1_000_000_000 + ts[1] as u64
}

const PROT_READ: usize = 1;
const PROT_WRITE: usize = 2;
const MAP_PRIVATE: usize = 0x02;
const MAP_ANONYMOUS: usize = 0x20;

/// An anonymous private read-write mapping, unmapped on drop. Pages are not
/// touched here: first touch is what `mem-touch` measures.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub fn new(len: usize) -> Result<Mapping, Errno> {
        let len = len.max(1);
        // SAFETY: an anonymous mapping with a null hint touches no existing memory.
        let ret =
            unsafe { syscall6(nr::MMAP, [0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, usize::MAX, 0]) };
        let addr = check(ret)?;
        Ok(Mapping { ptr: addr as *mut u8, len })
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// Write one byte per page so every page is resident before a timed
    /// region uses the mapping (its first touch is not what that region times).
    pub fn prefault(&mut self) {
        let mut off = 0;
        while off < self.len {
            // SAFETY: off < len, inside the mapping `self` owns; volatile so the store stays.
            unsafe { core::ptr::write_volatile(self.ptr.add(off), 0) };
            off += 4096;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The mapping viewed as `T`s (zero-filled memory is a valid value for the
    /// plain numeric types this is used with).
    pub fn slice_mut<T: Copy>(&mut self) -> &mut [T] {
        let n = self.len / core::mem::size_of::<T>();
        // SAFETY: the mapping is page-aligned, `len` bytes long, zero-filled,
        // exclusively owned by `self`, and T is a plain numeric type.
        unsafe { core::slice::from_raw_parts_mut(self.ptr as *mut T, n) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region this value mapped and owns.
        unsafe { syscall6(nr::MUNMAP, [self.ptr as usize, self.len, 0, 0, 0, 0]) };
    }
}

pub const AF_INET: usize = 2;
pub const SOCK_STREAM: usize = 1;
pub const SOCK_CLOEXEC: usize = 0o2000000;
const SOL_SOCKET: usize = 1;
const SO_REUSEADDR: usize = 2;
const IPPROTO_TCP: usize = 6;
const TCP_NODELAY: usize = 1;

/// `struct sockaddr_in` for an IPv4 address and port.
#[repr(C)]
pub struct SockAddrIn {
    family: u16,
    port_be: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

impl SockAddrIn {
    pub fn new(addr: [u8; 4], port: u16) -> SockAddrIn {
        SockAddrIn { family: AF_INET as u16, port_be: port.to_be(), addr, zero: [0; 8] }
    }
}

pub fn tcp_socket() -> Result<i32, Errno> {
    // SAFETY: socket takes no memory.
    check(unsafe { syscall6(nr::SOCKET, [AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, 0, 0, 0]) }).map(|fd| fd as i32)
}

pub fn connect(fd: i32, sa: &SockAddrIn) -> Result<(), Errno> {
    let p = sa as *const SockAddrIn as usize;
    let n = core::mem::size_of::<SockAddrIn>();
    // SAFETY: `sa` is a valid sockaddr_in of `n` bytes.
    check(unsafe { syscall6(nr::CONNECT, [fd as usize, p, n, 0, 0, 0]) }).map(|_| ())
}

pub fn bind(fd: i32, sa: &SockAddrIn) -> Result<(), Errno> {
    let p = sa as *const SockAddrIn as usize;
    let n = core::mem::size_of::<SockAddrIn>();
    // SAFETY: `sa` is a valid sockaddr_in of `n` bytes.
    check(unsafe { syscall6(nr::BIND, [fd as usize, p, n, 0, 0, 0]) }).map(|_| ())
}

pub fn listen(fd: i32) -> Result<(), Errno> {
    // SAFETY: listen takes no memory.
    check(unsafe { syscall6(nr::LISTEN, [fd as usize, 16, 0, 0, 0, 0]) }).map(|_| ())
}

pub fn accept(fd: i32) -> Result<i32, Errno> {
    // SAFETY: null address pointers ask the kernel not to report the peer.
    check(unsafe { syscall6(nr::ACCEPT, [fd as usize, 0, 0, 0, 0, 0]) }).map(|fd| fd as i32)
}

fn setsockopt_int(fd: i32, level: usize, opt: usize, val: i32) -> Result<(), Errno> {
    let v = &val as *const i32 as usize;
    // SAFETY: `val` is a readable int of 4 bytes.
    check(unsafe { syscall6(nr::SETSOCKOPT, [fd as usize, level, opt, v, 4, 0]) }).map(|_| ())
}

const SHUT_WR: usize = 1;

/// Close the sending side so the peer reads end-of-stream.
pub fn shutdown_write(fd: i32) {
    // SAFETY: shutdown takes no memory.
    unsafe { syscall6(nr::SHUTDOWN, [fd as usize, SHUT_WR, 0, 0, 0, 0]) };
}

pub fn set_reuseaddr(fd: i32) -> Result<(), Errno> {
    setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1)
}

pub fn set_nodelay(fd: i32) -> Result<(), Errno> {
    setsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1)
}

pub const O_RDONLY: usize = 0;
pub const O_RDWR: usize = 0o2;
pub const O_CREAT: usize = 0o100;
pub const O_TRUNC: usize = 0o1000;
pub const O_DIRECT: usize = 0o40000;
pub const O_CLOEXEC: usize = 0o2000000;
const AT_FDCWD: isize = -100;

/// `openat(AT_FDCWD, path, flags, 0600)`; `path` must end with a NUL byte.
pub fn open(path: &[u8], flags: usize) -> Result<i32, Errno> {
    if path.last() != Some(&0) {
        return Err(Errno(22));
    }
    // SAFETY: `path` is a NUL-terminated byte string.
    check(unsafe { syscall6(nr::OPENAT, [AT_FDCWD as usize, path.as_ptr() as usize, flags, 0o600, 0, 0]) })
        .map(|fd| fd as i32)
}

pub fn unlink(path: &[u8]) -> Result<(), Errno> {
    if path.last() != Some(&0) {
        return Err(Errno(22));
    }
    // SAFETY: `path` is a NUL-terminated byte string.
    check(unsafe { syscall6(nr::UNLINKAT, [AT_FDCWD as usize, path.as_ptr() as usize, 0, 0, 0, 0]) }).map(|_| ())
}

pub fn pwrite(fd: i32, buf: &[u8], off: u64) -> Result<usize, Errno> {
    let (p, n) = (buf.as_ptr() as usize, buf.len());
    // SAFETY: `buf` is a valid readable slice.
    check(unsafe { syscall6(nr::PWRITE64, [fd as usize, p, n, off as usize, 0, 0]) })
}

pub fn pread(fd: i32, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
    let (p, n) = (buf.as_mut_ptr() as usize, buf.len());
    // SAFETY: `buf` is a valid writable slice.
    check(unsafe { syscall6(nr::PREAD64, [fd as usize, p, n, off as usize, 0, 0]) })
}

pub fn fsync(fd: i32) -> Result<(), Errno> {
    // SAFETY: fsync takes no memory.
    check(unsafe { syscall6(nr::FSYNC, [fd as usize, 0, 0, 0, 0, 0]) }).map(|_| ())
}

const SIG_BLOCK: usize = 0;
pub const SIGINT: u32 = 2;
pub const SIGTERM: u32 = 15;

/// Block SIGTERM and SIGINT and return a signalfd that reports them, so `idle`
/// can wait for "stdin closed or asked to stop" with one `poll`, and so it also
/// stops on SIGTERM as PID 1 of a pid namespace (where an unhandled SIGTERM is
/// ignored by the kernel).
pub fn stop_signalfd() -> Result<i32, Errno> {
    let mask: u64 = (1 << (SIGTERM - 1)) | (1 << (SIGINT - 1));
    let m = &mask as *const u64 as usize;
    // SAFETY: `mask` is a readable 8-byte sigset_t; the old set is not requested.
    check(unsafe { syscall6(nr::RT_SIGPROCMASK, [SIG_BLOCK, m, 0, 8, 0, 0]) })?;
    // SAFETY: as above; -1 asks for a new signalfd, flags SFD_CLOEXEC.
    check(unsafe { syscall6(nr::SIGNALFD4, [usize::MAX, m, 8, O_CLOEXEC, 0, 0]) }).map(|fd| fd as i32)
}

/// `struct pollfd`.
#[repr(C)]
pub struct PollFd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

pub const POLLIN: i16 = 1;

pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> Result<usize, Errno> {
    let (p, n) = (fds.as_mut_ptr() as usize, fds.len());
    // SAFETY: `fds` is a valid writable array of pollfd.
    check(unsafe { syscall6(nr::POLL, [p, n, timeout_ms as isize as usize, 0, 0, 0]) })
}

pub const EINTR: i32 = 4;

const RUSAGE_SELF: usize = 0;

/// Page faults this process has taken so far: (minor, major), from `getrusage(RUSAGE_SELF)`.
/// Under the bare micro-VM the VMM answers with its own counts, which is where a guest's
/// first touch of a page lands (the host faults the page in for KVM).
pub fn page_faults() -> Result<(u64, u64), Errno> {
    // struct rusage: two timevals (4 x i64), then 14 longs: maxrss, ixrss, idrss, isrss,
    // minflt, majflt, ... so ru_minflt and ru_majflt are longs 8 and 9 of 18.
    let mut ru = [0i64; 18];
    // SAFETY: `ru` is a writable 144-byte `struct rusage`.
    check(unsafe { syscall6(nr::GETRUSAGE, [RUSAGE_SELF, ru.as_mut_ptr() as usize, 0, 0, 0, 0]) })?;
    Ok((ru[8] as u64, ru[9] as u64))
}
