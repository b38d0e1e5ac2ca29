//! Output: an unbuffered-until-flush writer for stdout/stderr and the one-line
//! JSON result every subcommand prints last.

use crate::sys;
use core::fmt::{self, Write};

/// A fixed-size line buffer over a file descriptor; nothing is allocated.
pub struct Out {
    fd: i32,
    buf: [u8; 4096],
    len: usize,
}

impl Out {
    pub fn stdout() -> Out {
        Out { fd: 1, buf: [0; 4096], len: 0 }
    }

    pub fn stderr() -> Out {
        Out { fd: 2, buf: [0; 4096], len: 0 }
    }

    pub fn flush(&mut self) {
        let mut off = 0;
        while off < self.len {
            match sys::write(self.fd, &self.buf[off..self.len]) {
                Ok(0) => break,
                Ok(n) => off += n,
                Err(e) if e.0 == sys::EINTR => continue,
                Err(_) => break,
            }
        }
        self.len = 0;
    }
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Print the startup marker the host times launch→READY against.
pub fn ready() {
    let _ = sys::write(1, b"READY\n");
}

/// Builds `{"workload":"NAME","metrics":{...}}` on one line.
pub struct Report {
    out: Out,
    first: bool,
}

impl Report {
    pub fn new(workload: &str) -> Report {
        let mut out = Out::stdout();
        let _ = write!(out, "{{\"workload\":\"{workload}\",\"metrics\":{{");
        Report { out, first: true }
    }

    /// Add one metric. Non-finite values become `null` (JSON has no NaN).
    pub fn metric(&mut self, name: &str, value: f64) -> &mut Report {
        let sep = if self.first { "" } else { "," };
        self.first = false;
        if value.is_finite() {
            let _ = write!(self.out, "{sep}\"{name}\":{value}");
        } else {
            let _ = write!(self.out, "{sep}\"{name}\":null");
        }
        self
    }

    pub fn finish(mut self) {
        let _ = self.out.write_str("}}\n");
        self.out.flush();
    }
}

/// Print a message to stderr.
pub fn eprint(args: fmt::Arguments) {
    let mut e = Out::stderr();
    let _ = e.write_fmt(args);
    e.flush();
}
