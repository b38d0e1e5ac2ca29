//! The `native` backend: fork+exec of the workload binary on the host, the
//! baseline every ratio in the report is taken against.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use super::process::{spawn_server, ChildProcess};
use super::{Backend, BackendError, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::Needs;

pub struct Native;

impl Native {
    pub fn new() -> Native {
        Native
    }
}

impl Default for Native {
    fn default() -> Self {
        Native::new()
    }
}

fn err(workload: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
    BackendError::Launch { backend: "native".into(), workload: workload.into(), source: e.into() }
}

/// A `cvbench-workload serve` on a free loopback port, for the net workloads.
pub struct LoopbackServer {
    proc: ChildProcess,
    pub addr: String,
}

impl LoopbackServer {
    pub fn start(workload_bin: &std::path::Path) -> Result<LoopbackServer, BackendError> {
        // Ask the kernel for a free port, then hand it to the server. The tiny
        // window between close and the server's bind is on loopback only.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| err("serve", e))?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(workload_bin);
        cmd.args(["serve", "--listen", &addr, "--max-conns", "1"]);
        let proc = spawn_server("native", cmd)?;
        Ok(LoopbackServer { proc, addr })
    }

    pub fn stop(&mut self) {
        let _ = self.proc.stop(Duration::from_secs(2));
    }
}

struct NativeInstance {
    child: ChildProcess,
    args: Vec<String>,
    server: Option<LoopbackServer>,
    scratch: Option<tempfile::TempDir>,
}

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn check(&self) -> Result<(), String> {
        paths::workload_binary().map(|_| ()).map_err(|e| e.to_string())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let bin = paths::workload_binary().map_err(|e| err(&spec.workload, e))?;
        let mut args = spec.args.clone();
        let mut server = None;
        let mut scratch = None;
        match spec.needs() {
            Needs { network: true, .. } => {
                let s = LoopbackServer::start(&bin)?;
                args.extend(["--peer".to_string(), s.addr.clone()]);
                server = Some(s);
            }
            Needs { disk: true, .. } => {
                let d = tempfile::Builder::new()
                    .prefix("cvbench-disk-")
                    .tempdir_in("/var/tmp")
                    .map_err(|e| err("disk", e))?;
                args.extend(["--dir".to_string(), d.path().display().to_string()]);
                scratch = Some(d);
            }
            _ => {}
        }
        let mut cmd = Command::new(&bin);
        cmd.arg(&spec.workload).args(&args);
        let child = ChildProcess::spawn("native", cmd, spec)?;
        Ok(Box::new(NativeInstance { child, args, server, scratch }))
    }
}

impl Instance for NativeInstance {
    fn pids(&self) -> Vec<i32> {
        vec![self.child.pid()]
    }

    fn close_stdin(&mut self) {
        self.child.close_stdin();
    }

    fn effective_args(&self) -> Option<Vec<String>> {
        Some(self.args.clone())
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitInfo, BackendError> {
        let r = self.child.wait(timeout);
        if let Some(s) = self.server.as_mut() {
            s.stop();
        }
        r
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.child.stop(Duration::from_secs(2))
    }

    fn notes(&self) -> Vec<String> {
        match &self.scratch {
            Some(d) => vec![format!("disk: host filesystem at {}", d.path().display())],
            None => vec![],
        }
    }
}
