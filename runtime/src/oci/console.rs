//! `process.terminal`: the container's stdin, stdout and stderr are the slave side of a
//! pseudo-terminal, and its first process gets it as its controlling terminal. Who holds the
//! master side depends on the verb, as with runc:
//! - `run` in the foreground keeps it and relays it to the runtime's own stdin and stdout
//!   (the caller's terminal is put in raw mode meanwhile, so keys reach the container as typed);
//! - `create --console-socket PATH` sends it over the UNIX socket at PATH (`SCM_RIGHTS`) to
//!   whoever listens there (containerd's shim, for `docker run -t`), then closes its copy.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::container::Stdio;

/// Errors of setting up or handing over a container's terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a pseudo-terminal")]
    Open(#[source] nix::Error),
    #[error("duplicating the terminal's descriptor")]
    Dup(#[source] std::io::Error),
    #[error("connecting to the console socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("receiving a descriptor from a console socket")]
    Receive(#[source] nix::Error),
    #[error("the console socket's message carried no descriptor")]
    NoDescriptor,
    #[error("sending the terminal over the console socket {path}")]
    Send {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A pseudo-terminal for one container.
pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Pty {
    /// A new pty, sized `(rows, cols)` when `size` is given (`process.consoleSize`).
    pub fn open(size: Option<(u16, u16)>) -> Result<Pty, Error> {
        let ws = size.map(|(rows, cols)| nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 });
        let p = nix::pty::openpty(ws.as_ref(), None).map_err(Error::Open)?;
        for fd in [&p.master, &p.slave] {
            // The container's init dups the slave onto 0..2; no other child may inherit either.
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                .map_err(Error::Open)?;
        }
        Ok(Pty { master: p.master, slave: p.slave })
    }

    /// The container's three standard streams: the slave side, three times.
    pub fn stdio(&self) -> Result<Stdio, Error> {
        let dup = || self.slave.try_clone().map_err(Error::Dup);
        Ok(Stdio { stdin: Some(dup()?), stdout: Some(dup()?), stderr: Some(dup()?) })
    }

    /// `create --console-socket`: hand the master side to the listener at `socket` and keep no
    /// copy (the container's slave side stays open in the container).
    pub fn send_master(self, socket: &Path) -> Result<(), Error> {
        let s = UnixStream::connect(socket).map_err(|source| Error::Connect { path: socket.to_path_buf(), source })?;
        // runc sends the terminal's name as the message; the receiver only uses the descriptor.
        let name = b"/dev/ptmx";
        let fds = [self.master.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<()>(
            s.as_raw_fd(),
            &[IoSlice::new(name)],
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .map_err(|source| Error::Send { path: socket.to_path_buf(), source })?;
        Ok(())
    }

    /// `run` in the foreground: relay the master side to this process's stdin and stdout until
    /// the container's side closes. Returns the relay; drop it (or call `finish`) once the
    /// container has exited. The two relay threads hold the master side; the caller passes the
    /// slave to the container through [`Pty::stdio`], and this `Pty`'s copy is dropped here.
    pub fn relay(self) -> Result<Relay, Error> {
        let Pty { master, slave } = self;
        drop(slave);
        let raw = RawMode::enter(std::io::stdin().as_fd());
        let out_master = master.try_clone().map_err(Error::Dup)?;
        let output = std::thread::spawn(move || {
            let mut m = std::fs::File::from(out_master);
            let mut buf = [0u8; 4096];
            let mut out = std::io::stdout();
            // EIO once every slave descriptor is closed: the container has ended.
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        });
        let in_master = master.try_clone().map_err(Error::Dup)?;
        // Left detached: a read of our stdin can block for as long as the caller types nothing.
        std::thread::spawn(move || {
            let mut m = std::fs::File::from(in_master);
            let mut buf = [0u8; 4096];
            let mut inp = std::io::stdin();
            while let Ok(n) = inp.read(&mut buf) {
                if n == 0 {
                    // End of our input: the terminal's end-of-file character, as a user would type.
                    let _ = m.write_all(&[4]);
                    break;
                }
                if m.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        drop(master);
        Ok(Relay { output: Some(output), _raw: raw })
    }
}

/// The receiving side of a console socket (what containerd's shim does): one descriptor from
/// the message on `conn`.
pub fn receive_fd(conn: &UnixStream) -> Result<OwnedFd, Error> {
    let recv = |source| Error::Receive(source);
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(recv)?;
    let fd = msg
        .cmsgs()
        .map_err(recv)?
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(v) => v.first().copied(),
            _ => None,
        })
        .ok_or(Error::NoDescriptor)?;
    // SAFETY: a descriptor the kernel just installed for us over SCM_RIGHTS, owned by no one else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A running `run` relay.
pub struct Relay {
    output: Option<std::thread::JoinHandle<()>>,
    _raw: Option<RawMode>,
}

impl Relay {
    /// Wait (at most `limit`) for the container's last output to be copied out.
    pub fn finish(mut self, limit: std::time::Duration) {
        if let Some(h) = self.output.take() {
            let deadline = std::time::Instant::now() + limit;
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// The caller's terminal in raw mode, restored on drop; nothing when stdin is not a terminal.
struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter(stdin: BorrowedFd<'_>) -> Option<RawMode> {
        let saved = nix::sys::termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd: stdin.try_clone_to_owned().ok()?, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(self.fd.as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_master_arrives_over_the_console_socket_and_carries_the_slaves_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let pty = Pty::open(Some((24, 80))).unwrap();
        let stdio = pty.stdio().unwrap();
        pty.send_master(&path).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut master = std::fs::File::from(receive_fd(&conn).unwrap());
        // What the container writes to its stdout comes out of the received master.
        let mut out = std::fs::File::from(stdio.stdout.unwrap());
        out.write_all(b"hello\n").unwrap();
        let mut got = [0u8; 16];
        let n = master.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"hello\r\n");
    }

    #[test]
    fn a_missing_console_socket_is_a_clear_error() {
        let pty = Pty::open(None).unwrap();
        let e = pty.send_master(Path::new("/nonexistent/console.sock")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/console.sock"), "{e}");
    }
}
