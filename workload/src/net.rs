//! `net-stream`, `net-rr` (TCP clients) and `serve`, the matching server.
//!
//! Protocol: the client sends one mode byte. `S` (stream): the client then
//! sends bytes until it closes its write side; the server counts them and
//! replies with one byte when the stream ends, so the client's clock covers
//! delivery. `R` (request/response): each 1-byte request is echoed.

use crate::out::{ready, Report};
use crate::sys::{self, now_ns, Errno, Mapping, PollFd, SockAddrIn, POLLIN};

fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match sys::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.0 == sys::EINTR => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_exact(fd: i32, buf: &mut [u8]) -> Result<bool, Errno> {
    let mut got = 0;
    while got < buf.len() {
        match sys::read(fd, &mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.0 == sys::EINTR => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn connect(addr: ([u8; 4], u16)) -> Result<i32, Errno> {
    let fd = sys::tcp_socket()?;
    sys::set_nodelay(fd)?;
    sys::connect(fd, &SockAddrIn::new(addr.0, addr.1))?;
    Ok(fd)
}

pub fn stream(addr: ([u8; 4], u16), mib: u64) -> Result<(), Errno> {
    let fd = connect(addr)?;
    let mut chunk = Mapping::new(128 << 10)?;
    chunk.prefault();
    let total = mib << 20;
    let t = now_ns();
    write_all(fd, b"S")?;
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk.len() as u64) as usize;
        write_all(fd, &chunk.slice_mut::<u8>()[..n])?;
        sent += n as u64;
    }
    sys::shutdown_write(fd);
    let mut ack = [0u8; 1];
    let acked = read_exact(fd, &mut ack)?;
    let ns = now_ns() - t;
    sys::close(fd);
    if !acked {
        return Err(Errno(104));
    }
    let mut r = Report::new("net-stream");
    r.metric("bytes", total as f64)
        .metric("gbit_per_s", total as f64 * 8.0 / ns.max(1) as f64)
        .metric("elapsed_ns", ns as f64);
    r.finish();
    Ok(())
}

/// Percentile (nearest rank) of a sorted slice.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64 + 0.999_999) as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The request/response client; its report is left open for the caller to add to and finish.
pub fn rr(addr: ([u8; 4], u16), count: u64) -> Result<Report, Errno> {
    let fd = connect(addr)?;
    let mut lat = Mapping::new(count as usize * 4)?;
    lat.prefault();
    let lat = lat.slice_mut::<u32>();
    write_all(fd, b"R")?;
    let mut b = [0u8; 1];
    let t_all = now_ns();
    for slot in lat.iter_mut().take(count as usize) {
        let t = now_ns();
        write_all(fd, b"x")?;
        if !read_exact(fd, &mut b)? {
            return Err(Errno(104));
        }
        *slot = (now_ns() - t).min(u32::MAX as u64) as u32;
    }
    let elapsed = now_ns() - t_all;
    sys::close(fd);
    let lat = &mut lat[..count as usize];
    lat.sort_unstable();
    let mut r = Report::new("net-rr");
    r.metric("requests", count as f64)
        .metric("p50_us", percentile(lat, 50.0) as f64 / 1e3)
        .metric("p99_us", percentile(lat, 99.0) as f64 / 1e3)
        .metric("min_us", lat.first().copied().unwrap_or(0) as f64 / 1e3)
        .metric("max_us", lat.last().copied().unwrap_or(0) as f64 / 1e3)
        .metric("tps", count as f64 / (elapsed.max(1) as f64 / 1e9))
        .metric("elapsed_ns", elapsed as f64);
    Ok(r)
}

fn serve_one(conn: i32, buf: &mut [u8]) -> Result<u64, Errno> {
    let mut mode = [0u8; 1];
    if !read_exact(conn, &mut mode)? {
        return Ok(0);
    }
    let mut bytes = 0u64;
    match mode[0] {
        b'S' => loop {
            match sys::read(conn, buf) {
                Ok(0) => {
                    write_all(conn, b"k")?;
                    break;
                }
                Ok(n) => bytes += n as u64,
                Err(e) if e.0 == sys::EINTR => {}
                Err(e) => return Err(e),
            }
        },
        b'R' => {
            let mut b = [0u8; 1];
            while read_exact(conn, &mut b)? {
                write_all(conn, &b)?;
                bytes += 1;
            }
        }
        _ => {}
    }
    Ok(bytes)
}

/// Serve connections one at a time until SIGTERM/SIGINT, or after `max_conns`
/// connections when non-zero. Prints READY once listening.
pub fn serve(addr: ([u8; 4], u16), max_conns: u64) -> Result<(), Errno> {
    let sfd = sys::stop_signalfd()?;
    let lfd = sys::tcp_socket()?;
    sys::set_reuseaddr(lfd)?;
    sys::bind(lfd, &SockAddrIn::new(addr.0, addr.1))?;
    sys::listen(lfd)?;
    ready();
    let mut buf = Mapping::new(256 << 10)?;
    let (mut conns, mut bytes) = (0u64, 0u64);
    loop {
        let mut fds = [PollFd { fd: lfd, events: POLLIN, revents: 0 }, PollFd { fd: sfd, events: POLLIN, revents: 0 }];
        match sys::poll(&mut fds, -1) {
            Err(e) if e.0 == sys::EINTR => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        if fds[1].revents != 0 {
            break;
        }
        let conn = sys::accept(lfd)?;
        let _ = sys::set_nodelay(conn);
        // A failed connection ends that connection, not the server.
        bytes += serve_one(conn, buf.slice_mut::<u8>()).unwrap_or(0);
        sys::close(conn);
        conns += 1;
        if max_conns != 0 && conns >= max_conns {
            break;
        }
    }
    sys::close(lfd);
    let mut r = Report::new("serve");
    r.metric("connections", conns as f64).metric("bytes", bytes as f64);
    r.finish();
    Ok(())
}
