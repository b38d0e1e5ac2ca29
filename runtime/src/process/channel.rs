//! The parent↔child channel: two pipes. The child reports fixed-size records (marks with a
//! timestamp, or a failed step with its errno) on `status`, which is close-on-exec, so EOF
//! means the exec succeeded. The parent sends single bytes on `go` (maps written, go).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Byte the parent sends once uid/gid maps are written.
pub const MSG_MAPS: u8 = b'M';
/// Byte the parent sends to let the child continue towards exec.
pub const MSG_GO: u8 = b'G';

/// A record kind on the status pipe.
pub const KIND_MARK: u32 = 1;
pub const KIND_ERROR: u32 = 2;

/// Marks the child sends (CLOCK_MONOTONIC ns).
pub const MARK_START: u32 = 0;
pub const MARK_ROOTFS_DONE: u32 = 1;
pub const MARK_GO: u32 = 2;
pub const MARK_EXEC: u32 = 3;

/// One record on the status pipe: plain old data, written with a single write(2) (atomic for
/// pipes, being far below PIPE_BUF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    pub kind: u32,
    /// The mark id, or the failed step's index.
    pub code: u32,
    pub errno: i32,
    pub pad: u32,
    pub t_ns: u64,
}

const RECORD_SIZE: usize = std::mem::size_of::<Record>();

impl Record {
    fn to_bytes(self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.code.to_ne_bytes());
        b[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        b[16..24].copy_from_slice(&self.t_ns.to_ne_bytes());
        b
    }

    fn from_bytes(b: &[u8; RECORD_SIZE]) -> Record {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[16..24]);
        Record { kind: u32_at(0), code: u32_at(4), errno: u32_at(8) as i32, pad: 0, t_ns: u64::from_ne_bytes(t) }
    }
}

/// The whole records in `bytes` (what the child wrote to a stream other than the status pipe).
pub fn records(bytes: &[u8]) -> impl Iterator<Item = Record> + '_ {
    bytes.chunks_exact(RECORD_SIZE).map(|c| {
        let mut b = [0u8; RECORD_SIZE];
        b.copy_from_slice(c);
        Record::from_bytes(&b)
    })
}

/// CLOCK_MONOTONIC in ns; async-signal-safe (a vDSO read).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Child side: send a record. Async-signal-safe. A negative fd means "no channel".
pub fn send(fd: RawFd, rec: Record) {
    if fd < 0 {
        return;
    }
    let b = rec.to_bytes();
    // SAFETY: `b` is a valid buffer of `b.len()` bytes; failure is ignored because the child
    // has nobody else to tell.
    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
}

/// Child side: block for one byte from the parent. Returns None on EOF or error.
pub fn recv_byte(fd: RawFd) -> Option<u8> {
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into a valid stack variable.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            return Some(b);
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// The parent's ends of the channel, and the child's raw fds.
pub struct Channel {
    pub status_rd: File,
    pub go_wr: File,
    pub child_status: OwnedFd,
    pub child_go: OwnedFd,
}

impl Channel {
    /// Both pipes, close-on-exec on every end.
    pub fn new() -> Result<Channel, nix::Error> {
        let (status_rd, child_status) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (child_go, go_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Channel { status_rd: File::from(status_rd), go_wr: File::from(go_wr), child_status, child_go })
    }

    /// Raw fds the child uses (status, go).
    pub fn child_fds(&self) -> (RawFd, RawFd) {
        (self.child_status.as_raw_fd(), self.child_go.as_raw_fd())
    }
}

/// Parent side: read the next record; Ok(None) at EOF (the child exec'd or died).
pub fn read_record(f: &mut File) -> std::io::Result<Option<Record>> {
    let mut b = [0u8; RECORD_SIZE];
    let mut got = 0;
    while got < RECORD_SIZE {
        match f.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "short record from the container process",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Record::from_bytes(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn records_round_trip_through_a_pipe() {
        let mut ch = Channel::new().unwrap();
        let rec = Record { kind: KIND_ERROR, code: 7, errno: libc::EPERM, pad: 0, t_ns: 123 };
        send(ch.child_status.as_raw_fd(), rec);
        drop(ch.child_status);
        assert_eq!(read_record(&mut ch.status_rd).unwrap(), Some(rec));
        assert_eq!(read_record(&mut ch.status_rd).unwrap(), None);
    }
}
