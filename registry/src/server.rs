//! A private registry of our own: Debian's `docker-registry` (the CNCF distribution registry
//! 2.8) on 127.0.0.1 at a free port, its storage and a generated config under a directory we
//! own, started in its own process group and stopped by pid when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Errors starting or stopping the private registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{REGISTRY_BIN} is not installed (apt-get install docker-registry)")]
    NotInstalled,
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a free port on 127.0.0.1")]
    Port(#[source] std::io::Error),
    #[error("the registry on {addr} did not answer within {secs} s (log {log}: {tail})")]
    NotReady { addr: SocketAddr, secs: u64, log: PathBuf, tail: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A running private registry; dropping it stops the process (by pid) and, when asked at
/// start, removes its directory.
pub struct LocalRegistry {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    remove_dir: bool,
}

/// A port the kernel just handed out on 127.0.0.1 (free at the time of asking).
fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::Port)?;
    Ok(l.local_addr().map_err(Error::Port)?.port())
}

/// The registry's config: filesystem storage under `storage` and no descriptor cache (so the
/// files are the truth: tests tamper with them), deletes enabled, HTTP on `addr` only, no auth.
fn config_text(storage: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        storage.display()
    )
}

/// `GET /v2/` answered with a 200 (or a 401: the API is up, auth is asked).
pub fn api_up(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && (head.ends_with(b"200") || head.ends_with(b"401"))
}

impl LocalRegistry {
    /// Start a registry keeping its storage, config and log under `dir` (created). With
    /// `remove_dir`, the directory goes when the registry is dropped.
    pub fn start(dir: &Path, remove_dir: bool) -> Result<LocalRegistry, Error> {
        if !Path::new(REGISTRY_BIN).is_file() {
            return Err(Error::NotInstalled);
        }
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).map_err(io_err(&storage))?;
        let mut last = None;
        // The port may be taken between asking and binding: try a few.
        for _ in 0..3 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let config = dir.join("config.yml");
            std::fs::write(&config, config_text(&storage, addr)).map_err(io_err(&config))?;
            let log = dir.join("registry.log");
            let out = std::fs::File::create(&log).map_err(io_err(&log))?;
            let err = out.try_clone().map_err(io_err(&log))?;
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Ctrl-C at the terminal must not reach it first: we stop it.
                .process_group(0)
                .spawn()
                .map_err(io_err(Path::new(REGISTRY_BIN)))?;
            let mut reg = LocalRegistry { child: Some(child), addr, dir: dir.to_path_buf(), remove_dir: false };
            match reg.wait_ready(Duration::from_secs(15)) {
                Ok(()) => {
                    reg.remove_dir = remove_dir;
                    return Ok(reg);
                }
                Err(e) => {
                    reg.stop();
                    last = Some(e);
                }
            }
        }
        if remove_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        Err(last.unwrap_or(Error::NotInstalled))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), Error> {
        let t = Instant::now();
        loop {
            if api_up(self.addr) {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some();
            if exited || t.elapsed() > limit {
                let log = self.dir.join("registry.log");
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                return Err(Error::NotReady { addr: self.addr, secs: limit.as_secs(), log, tail });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>/<repo>:<tag>`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// The registry's filesystem storage (tests tamper with blobs there).
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem layout).
    pub fn blob_data_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let prefix = hex.get(..2)?;
        Some(self.storage().join("docker/registry/v2/blobs/sha256").join(prefix).join(hex).join("data"))
    }

    /// The process id (for the report and for tests that check it is gone).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the registry by its pid: SIGTERM, then SIGKILL after 5 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_binds_loopback_and_keeps_storage_where_told() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 5999));
        let c = config_text(Path::new("/x/storage"), addr);
        assert!(c.contains("rootdirectory: /x/storage\n"));
        assert!(c.contains("addr: 127.0.0.1:5999\n"));
    }

    #[test]
    fn api_up_is_false_when_nothing_listens() {
        let port = free_port().unwrap();
        assert!(!api_up(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    }
}
