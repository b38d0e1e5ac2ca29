//! Tap devices: made through `/dev/net/tun` (`TUNSETIFF`), since rtnetlink cannot create
//! them; addressed and raised with [`crate::Rtnl`] like any other link.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// Whether the tap outlives its file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Gone when the returned file (and every copy) is closed.
    WhileOpen,
    /// Stays until its namespace goes (another process opens it by name).
    Persistent,
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags at the start of the union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Create tap `name` (1 to 15 bytes) in the calling thread's network namespace, without
/// packet information, non-blocking and close-on-exec.
pub fn create(name: &str, lifetime: Lifetime) -> io::Result<File> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface names are 1 to 15 bytes"));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut ifr = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI, _pad: [0; 22] };
    ifr.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `ifr` is a live `struct ifreq` (40 bytes, name then union) that the kernel reads
    // and writes only within its size.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, std::ptr::from_mut(&mut ifr)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if lifetime == Lifetime::Persistent {
        // SAFETY: TUNSETPERSIST takes its argument by value; no memory is passed.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(tun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn create_refuses_names_the_kernel_would_truncate() {
        assert_eq!(create("", Lifetime::WhileOpen).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(create("a-name-of-16-byt", Lifetime::WhileOpen).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
