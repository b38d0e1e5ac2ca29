//! `disk`: sequential and random 4 KiB writes and reads on a file under a
//! given directory, with fsync, reporting MB/s and IOPS.
//!
//! Reads use O_DIRECT where the filesystem allows it (reported as
//! `direct_io` = 1); otherwise they are buffered reads of data just written
//! and synced, and `direct_io` = 0 says so.

use crate::mem::xorshift;
use crate::opts::{Opts, UsageError};
use crate::out::Report;
use crate::sys::{self, now_ns, Errno, Mapping};

const BLOCK: usize = 4096;

pub struct DiskParams<'a> {
    /// NUL-terminated directory path.
    pub dir: &'a [u8],
    pub size_mib: u64,
    /// Random 4 KiB writes (each fsync'd).
    pub rand_ops: u64,
    /// Random 4 KiB reads.
    pub rand_read_ops: u64,
}

impl<'a> DiskParams<'a> {
    /// `[--dir /tmp] [--size-mib 64] [--rand-ops 256] [--rand-read-ops RAND_OPS]`; the
    /// directory's NUL-terminated path goes into `buf`.
    pub fn from_opts(o: &mut Opts, buf: &'a mut [u8; 512]) -> Result<DiskParams<'a>, UsageError> {
        let dir = o.path("dir", b"/tmp", buf)?;
        let size_mib = o.num("size-mib", 64, 1, crate::MIB_MAX)?;
        let rand_ops = o.num("rand-ops", 256, 1, 1 << 24)?;
        // Reads are ~50x cheaper than fsync'd writes: sized on their own so both regions last.
        let rand_read_ops = o.num("rand-read-ops", rand_ops, 1, 1 << 24)?;
        Ok(DiskParams { dir, size_mib, rand_ops, rand_read_ops })
    }
}

fn file_path(dir: &[u8], buf: &mut [u8; 600]) -> usize {
    const NAME: &[u8] = b"/cvbench-disk.tmp\0";
    let d = &dir[..dir.len() - 1];
    buf[..d.len()].copy_from_slice(d);
    buf[d.len()..d.len() + NAME.len()].copy_from_slice(NAME);
    d.len() + NAME.len()
}

pub fn run(p: &DiskParams) -> Result<Report, Errno> {
    let mut pbuf = [0u8; 600];
    let plen = file_path(p.dir, &mut pbuf);
    let path = &pbuf[..plen];
    let size = (p.size_mib as usize) << 20;
    let blocks = (size / BLOCK) as u64;
    let mut io = Mapping::new(1 << 20)?;
    for (i, b) in io.slice_mut::<u8>().iter_mut().enumerate() {
        *b = (i * 31) as u8;
    }
    let fd = sys::open(path, sys::O_RDWR | sys::O_CREAT | sys::O_TRUNC | sys::O_CLOEXEC)?;
    let result = measure(fd, path, &mut io, size, blocks, (p.rand_ops, p.rand_read_ops));
    sys::close(fd);
    let _ = sys::unlink(path);
    let (seq_w, rand_w, seq_r, rand_r, direct) = result?;
    let mb_s = |bytes: f64, ns: u64| bytes / 1e6 / (ns.max(1) as f64 / 1e9);
    let iops = |ops: u64, ns: u64| ops as f64 / (ns.max(1) as f64 / 1e9);
    let mut r = Report::new("disk");
    r.metric("size_mib", p.size_mib as f64)
        .metric("seq_write_mb_s", mb_s(size as f64, seq_w))
        .metric("seq_read_mb_s", mb_s(size as f64, seq_r))
        .metric("rand_write_iops", iops(p.rand_ops, rand_w))
        .metric("rand_read_iops", iops(p.rand_read_ops, rand_r))
        .metric("rand_ops", p.rand_ops as f64)
        .metric("rand_read_ops", p.rand_read_ops as f64)
        .metric("seq_write_ns", seq_w as f64)
        .metric("rand_write_ns", rand_w as f64)
        .metric("seq_read_ns", seq_r as f64)
        .metric("rand_read_ns", rand_r as f64)
        .metric("timed_region_min_ns", seq_w.min(rand_w).min(seq_r).min(rand_r) as f64)
        .metric("direct_io", direct as u8 as f64)
        .metric("elapsed_ns", (seq_w + rand_w + seq_r + rand_r) as f64);
    Ok(r)
}

type Times = (u64, u64, u64, u64, bool);

fn measure(
    fd: i32,
    path: &[u8],
    io: &mut Mapping,
    size: usize,
    blocks: u64,
    (rand_ops, rand_read_ops): (u64, u64),
) -> Result<Times, Errno> {
    let chunk = io.len();
    let buf = io.slice_mut::<u8>();
    // Sequential write of the whole file in 1 MiB requests, then fsync.
    let t = now_ns();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(chunk);
        sys::pwrite(fd, &buf[..n], off as u64)?;
        off += n;
    }
    sys::fsync(fd)?;
    let seq_w = now_ns() - t;

    // Random 4 KiB writes, each made durable with fsync.
    let mut s = 0x2545_F491_4F6C_DD1D;
    let t = now_ns();
    for _ in 0..rand_ops {
        let blk = xorshift(&mut s) % blocks.max(1);
        sys::pwrite(fd, &buf[..BLOCK], blk * BLOCK as u64)?;
        sys::fsync(fd)?;
    }
    let rand_w = now_ns() - t;

    // Reads: prefer a second, O_DIRECT descriptor so the page cache is bypassed.
    let (rfd, direct) = match sys::open(path, sys::O_RDONLY | sys::O_DIRECT | sys::O_CLOEXEC) {
        Ok(d) => (d, true),
        Err(_) => (fd, false),
    };
    let reads = read_pass(rfd, buf, size, blocks, rand_read_ops, &mut s);
    if direct {
        sys::close(rfd);
    }
    let (seq_r, rand_r) = reads?;
    Ok((seq_w, rand_w, seq_r, rand_r, direct))
}

fn read_pass(
    rfd: i32,
    buf: &mut [u8],
    size: usize,
    blocks: u64,
    rand_ops: u64,
    s: &mut u64,
) -> Result<(u64, u64), Errno> {
    let chunk = buf.len();
    let t = now_ns();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(chunk);
        sys::pread(rfd, &mut buf[..n], off as u64)?;
        off += n;
    }
    let seq_r = now_ns() - t;
    let t = now_ns();
    for _ in 0..rand_ops {
        let blk = xorshift(s) % blocks.max(1);
        sys::pread(rfd, &mut buf[..BLOCK], blk * BLOCK as u64)?;
    }
    let rand_r = now_ns() - t;
    Ok((seq_r, rand_r))
}
