//! `wait-go`: print READY, block until a line (or end-of-file) arrives on stdin, then run one
//! named job and report its metrics together with the wait and the page faults the job took.
//!
//! This is the workload a snapshot is taken of: a VM paused while the guest blocks reading
//! stdin can be restored later and told to go, and the job's own fault count shows what the
//! restored memory costs on first touch.

use crate::cpu::{self, CpuParams};
use crate::disk::{self, DiskParams};
use crate::mem::{self, TouchParams};
use crate::net;
use crate::opts::{Opts, UsageError};
use crate::out::Report;
use crate::sys::{self, Errno};

/// The job run after the go line.
pub enum Job<'a> {
    Noop,
    Cpu(CpuParams),
    MemTouch(TouchParams),
    /// The disk workload on `--dir` (e.g. a restored micro-VM's virtio disk at /mnt).
    Disk(DiskParams<'a>),
    /// The request/response client against `--peer` (e.g. a restored micro-VM's virtio NIC).
    NetRr {
        peer: ([u8; 4], u16),
        requests: u64,
    },
}

impl<'a> Job<'a> {
    /// `--job noop|cpu|mem-touch|disk|net-rr` plus that job's own options (a disk job's directory
    /// path goes into `buf`).
    pub fn parse(o: &mut Opts, buf: &'a mut [u8; 512]) -> Result<Job<'a>, UsageError> {
        match o.word("job")? {
            None => Err(UsageError::Missing("job")),
            Some(b"noop") => Ok(Job::Noop),
            Some(b"cpu") => Ok(Job::Cpu(CpuParams::from_opts(o)?)),
            Some(b"mem-touch") => Ok(Job::MemTouch(TouchParams::from_opts(o)?)),
            Some(b"disk") => Ok(Job::Disk(DiskParams::from_opts(o, buf)?)),
            Some(b"net-rr") => {
                Ok(Job::NetRr { peer: o.addr("peer", None)?, requests: o.num("requests", 10_000, 1, 10_000_000)? })
            }
            Some(other) => Err(UsageError::BadChoice(other)),
        }
    }
}

/// Block until stdin yields a newline or reaches end-of-file.
fn wait_for_go() -> Result<(), Errno> {
    let mut buf = [0u8; 64];
    loop {
        match sys::read(0, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) if buf[..n].contains(&b'\n') => return Ok(()),
            Ok(_) => {}
            Err(e) if e.0 == sys::EINTR => {}
            Err(e) => return Err(e),
        }
    }
}

/// Wait for the go line, run `job`, and print its report with the wait and fault counts.
pub fn wait_then_run(job: &Job) -> Result<(), Errno> {
    let t = sys::now_ns();
    wait_for_go()?;
    let waited = sys::now_ns() - t;
    let (min0, maj0) = sys::page_faults()?;
    let t = sys::now_ns();
    let mut r = match job {
        Job::Noop => Report::new("noop"),
        Job::Cpu(p) => cpu::run(p)?,
        Job::MemTouch(p) => mem::touch(p)?,
        Job::Disk(p) => disk::run(p)?,
        Job::NetRr { peer, requests } => net::rr(*peer, *requests)?,
    };
    let job_ns = sys::now_ns() - t;
    let (min1, maj1) = sys::page_faults()?;
    r.metric("wait_ns", waited as f64)
        .metric("job_ns", job_ns as f64)
        .metric("job_minflt", min1.saturating_sub(min0) as f64)
        .metric("job_majflt", maj1.saturating_sub(maj0) as f64);
    r.finish();
    Ok(())
}
