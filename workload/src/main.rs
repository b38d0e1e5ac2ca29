//! `cvbench-workload`: the one binary cvbench runs natively, as a container's
//! process, as the Linux micro-VM's payload, and loaded directly by the bare
//! micro-VM.
//!
//! # Why `no_std` with raw system calls
//! The same bytes must run with no guest kernel at all (the bare micro-VM
//! services each system call itself), so the binary's kernel interface has to
//! be small, fixed and known. A `std` program linked with glibc's static
//! runtime makes some 25 different calls before `main` (TLS and robust-list
//! set-up, `rseq`, signal stacks, a read of `/proc/self/maps` for the stack
//! guard) and times through the vDSO, which a bare VM does not have. Here the
//! entry point is ours (`rt`), every kernel entry goes through `sys`, memory
//! comes from `mmap`, and time is a real `clock_gettime` call: the complete
//! footprint is the `sys::nr` table, listed in the README, and a test fails
//! when it grows.
//!
//! Every subcommand prints `READY` first and one JSON line last; bad arguments
//! print usage to stderr and exit 2; a failing system call exits 1.
#![no_std]
#![no_main]

mod cpu;
mod disk;
mod mem;
mod net;
mod opts;
mod out;
mod rt;
mod sys;
mod syscall;
mod wait;

use opts::{Opts, UsageError};
use out::{eprint, ready, Report};
use sys::{Errno, PollFd, POLLIN};

const USAGE: &str = "usage: cvbench-workload <subcommand> [--option value ...]
  noop                                   print READY and exit
  idle                                   block until stdin closes or SIGTERM/SIGINT
  wait-go   --job noop|cpu|mem-touch|disk|net-rr [job options]
                                         print READY, wait for a line on stdin, run the job
  cpu       [--sha-mib 64] [--sieve-n 4000000] [--matmul-n 160]
  mem-bw    [--array-mib 32] [--iters 5]
  mem-touch [--touch-mib 128] [--chase-mib 32] [--accesses 4000000]
  syscall   [--iters 200000]
  net-stream --peer A.B.C.D:PORT [--mib 256]
  net-rr     --peer A.B.C.D:PORT [--requests 10000]
  serve     [--listen 127.0.0.1:5201] [--max-conns 0]
  disk      [--dir /tmp] [--size-mib 64] [--rand-ops 256] [--rand-read-ops RAND_OPS]
";

enum Failure {
    Usage(UsageError),
    UnknownSubcommand,
    Sys(Errno),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Failure {
        Failure::Usage(e)
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Failure {
        Failure::Sys(e)
    }
}

#[no_mangle]
extern "C" fn cvbench_start(sp: *const usize) -> ! {
    // SAFETY: `_start` passes the kernel's initial stack pointer unchanged.
    let args = unsafe { rt::Args::from_stack(sp) };
    let code = match dispatch(&args) {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprint(format_args!("cvbench-workload: {e}\n{USAGE}"));
            2
        }
        Err(Failure::UnknownSubcommand) => {
            eprint(format_args!("cvbench-workload: missing or unknown subcommand\n{USAGE}"));
            2
        }
        Err(Failure::Sys(e)) => {
            eprint(format_args!("cvbench-workload: system call failed: errno {}\n", e.0));
            1
        }
    };
    sys::exit_group(code)
}

pub(crate) const MIB_MAX: u64 = 1 << 16;

fn dispatch(args: &rt::Args) -> Result<(), Failure> {
    let sub = args.get(1).ok_or(Failure::UnknownSubcommand)?;
    let mut o = Opts::new(args, 2);
    match sub {
        b"noop" => {
            o.finish()?;
            ready();
            Report::new("noop").finish();
        }
        b"idle" => {
            o.finish()?;
            idle()?;
        }
        b"wait-go" => {
            let mut buf = [0u8; 512];
            let job = wait::Job::parse(&mut o, &mut buf)?;
            o.finish()?;
            ready();
            wait::wait_then_run(&job)?;
        }
        b"cpu" => {
            let p = cpu::CpuParams::from_opts(&mut o)?;
            o.finish()?;
            ready();
            cpu::run(&p)?.finish();
        }
        b"mem-bw" => {
            let (mib, iters) = (o.num("array-mib", 32, 1, MIB_MAX)?, o.num("iters", 5, 1, 10_000)?);
            o.finish()?;
            ready();
            mem::bandwidth(mib, iters)?;
        }
        b"mem-touch" => {
            let p = mem::TouchParams::from_opts(&mut o)?;
            o.finish()?;
            ready();
            mem::touch(&p)?.finish();
        }
        b"syscall" => {
            let iters = o.num("iters", 200_000, 1, 1 << 40)?;
            o.finish()?;
            ready();
            syscall::run(iters);
        }
        b"net-stream" => {
            let peer = o.addr("peer", None)?;
            let mib = o.num("mib", 256, 1, MIB_MAX)?;
            o.finish()?;
            ready();
            net::stream(peer, mib)?;
        }
        b"net-rr" => {
            let peer = o.addr("peer", None)?;
            let n = o.num("requests", 10_000, 1, 10_000_000)?;
            o.finish()?;
            ready();
            net::rr(peer, n)?.finish();
        }
        b"serve" => {
            let listen = o.addr("listen", Some(([127, 0, 0, 1], 5201)))?;
            let max = o.num("max-conns", 0, 0, u64::MAX >> 1)?;
            o.finish()?;
            net::serve(listen, max)?;
        }
        b"disk" => {
            let mut buf = [0u8; 512];
            let p = disk::DiskParams::from_opts(&mut o, &mut buf)?;
            o.finish()?;
            ready();
            disk::run(&p)?.finish();
        }
        b"help" | b"--help" | b"-h" => {
            eprint(format_args!("{USAGE}"));
        }
        _ => return Err(Failure::UnknownSubcommand),
    }
    Ok(())
}

/// Print READY, then block until stdin reaches end-of-file (or errors) or a
/// SIGTERM/SIGINT arrives.
fn idle() -> Result<(), Errno> {
    let sfd = sys::stop_signalfd()?;
    ready();
    let t = sys::now_ns();
    let mut buf = [0u8; 256];
    let reason = loop {
        let mut fds = [PollFd { fd: 0, events: POLLIN, revents: 0 }, PollFd { fd: sfd, events: POLLIN, revents: 0 }];
        match sys::poll(&mut fds, -1) {
            Err(e) if e.0 == sys::EINTR => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        if fds[1].revents != 0 {
            break 1.0;
        }
        if fds[0].revents != 0 {
            match sys::read(0, &mut buf) {
                Ok(0) | Err(_) => break 0.0,
                Ok(_) => {}
            }
        }
    };
    let mut r = Report::new("idle");
    r.metric("idle_ns", (sys::now_ns() - t) as f64).metric("stopped_by_signal", reason);
    r.finish();
    Ok(())
}
