//! The `native` backend: fork+exec of the workload binary on the host, the
//! baseline every ratio in the report is taken against.

use std::process::Command;
use std::time::Duration;

use super::netpath::{enter_before_exec, Client, NetPath};
use super::process::ChildProcess;
use super::{Backend, BackendError, BackendId, Instance, LaunchSpec};
use crate::paths;
use crate::record::ExitInfo;
use crate::workload::Needs;

const NAME: &str = BackendId::Native.name();

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
    BackendError::Launch { backend: NAME.into(), workload: workload.into(), source: e.into() }
}

struct NativeInstance {
    child: ChildProcess,
    args: Vec<String>,
    net: Option<NetPath>,
    scratch: Option<tempfile::TempDir>,
}

impl Backend for Native {
    fn id(&self) -> BackendId {
        BackendId::Native
    }

    fn check(&self) -> Result<(), String> {
        paths::workload_binary().map(|_| ()).map_err(|e| e.to_string())
    }

    fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Instance>, BackendError> {
        let bin = paths::workload_binary().map_err(|e| err(spec.workload.name(), e))?;
        let mut args = spec.args.clone();
        let mut net = None;
        let mut scratch = None;
        match spec.needs() {
            Needs { network: true, .. } => {
                // The same path as the containers': a veth pair between two
                // namespaces the run creates, never host loopback.
                let p = NetPath::start(&bin, NAME, Client::NewNamespace).map_err(|e| err(spec.workload.name(), e))?;
                args.extend(["--peer".to_string(), p.peer()]);
                net = Some(p);
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
        cmd.arg(spec.workload.name()).args(&args);
        if let Some(ns) =
            net.as_ref().map(NetPath::open_client).transpose().map_err(|e| err(spec.workload.name(), e))?.flatten()
        {
            enter_before_exec(&mut cmd, ns);
        }
        let child = ChildProcess::spawn(NAME, cmd, spec)?;
        Ok(Box::new(NativeInstance { child, args, net, scratch }))
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
        if let Some(n) = self.net.as_mut() {
            n.stop();
        }
        r
    }

    fn stop(&mut self) -> Result<ExitInfo, BackendError> {
        self.child.stop(Duration::from_secs(2))
    }

    fn notes(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(d) = &self.scratch {
            v.push(format!("disk: host filesystem at {}", d.path().display()));
        }
        if let Some(n) = &self.net {
            v.push(n.note());
        }
        v
    }
}
