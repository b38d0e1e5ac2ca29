//! The swarm's registry: Debian's `docker-registry` listening on the bridge's address inside the
//! bridge namespace, so every node reaches it and the root namespace does not.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::SwarmError;

/// The registry's port on the bridge.
pub const PORT: u16 = 5000;

pub struct SwarmRegistry {
    child: Option<Child>,
    addr: SocketAddr,
}

/// Whether the registry API answers at `addr` when asked from inside the namespace at `ns`
/// (a short-lived thread joins it; the rest of the process stays where it is).
fn api_up_in(ns: &Path, addr: SocketAddr) -> bool {
    let Ok(f) = std::fs::File::open(ns) else { return false };
    std::thread::spawn(move || {
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
            && cvbench_registry::server::api_up(addr)
    })
    .join()
    .unwrap_or(false)
}

impl SwarmRegistry {
    /// Start it in the namespace at `ns`, listening on `addr`, storage under `dir`.
    pub fn start(ns: &Path, addr: SocketAddr, dir: &Path, limit: Duration) -> Result<SwarmRegistry, SwarmError> {
        let bin = cvbench_registry::server::REGISTRY_BIN;
        if !Path::new(bin).is_file() {
            return Err(SwarmError::Missing(format!("{bin} (apt-get install docker-registry)")));
        }
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).map_err(|e| SwarmError::Io(storage.clone(), e))?;
        let config = dir.join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        std::fs::write(&config, text).map_err(|e| SwarmError::Io(config.clone(), e))?;
        let log: PathBuf = dir.join("registry.log");
        let out = std::fs::File::create(&log).map_err(|e| SwarmError::Io(log.clone(), e))?;
        let err = out.try_clone().map_err(|e| SwarmError::Io(log.clone(), e))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args([bin, "serve"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| SwarmError::Spawn(bin.into(), e))?;
        let mut r = SwarmRegistry { child: Some(child), addr };
        let t = Instant::now();
        while !api_up_in(ns, addr) {
            let exited = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some();
            if exited || t.elapsed() > limit {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(SwarmError::RegistryDown { addr, detail: tail.lines().last().unwrap_or("").to_string() });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(r)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SwarmRegistry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
