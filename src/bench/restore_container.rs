//! The restore-start units of the containers that checkpoint (`backend::peers::checkpoint`):
//! the waiting workload started fresh in the runtime's foreground `run` (cold) against
//! restored from a checkpoint taken where it waits (`restore`); and density from one
//! checkpoint: N containers restored from the same image, waiting at once, with the private
//! memory of each one's process tree. Records start from `runner::record_for`.

use crate::backend::peers::checkpoint::{self, Checkpoint, WaitingContainer};
use crate::backend::Backend;
use crate::footprint;
use crate::record::RunRecord;
use crate::runner::{self, RunRequest};

use super::restore::StartKind;

fn failed(b: &dyn Backend, req: &RunRequest, error: String) -> RunRecord {
    let mut rec = runner::record_for(b, req);
    rec.error = Some(error);
    rec
}

/// The checkpoint a unit restores from (none for a cold start).
fn checkpoint_for(b: &dyn Backend, req: &RunRequest, start: StartKind) -> Result<Option<Checkpoint>, String> {
    match start {
        StartKind::Restore => {
            checkpoint::take(b.id(), req.workload, &req.args, req.timeout).map(Some).map_err(|e| runner::chain(&e))
        }
        _ => Ok(None),
    }
}

fn launch(b: &dyn Backend, req: &RunRequest, ckpt: Option<&Checkpoint>) -> Result<WaitingContainer, String> {
    match ckpt {
        Some(c) => checkpoint::launch_restored(c, req.timeout),
        None => checkpoint::launch_cold(b.id(), req.workload, &req.args, req.timeout),
    }
    .map_err(|e| runner::chain(&e))
}

/// One container: started (fresh or restored), told to go, ended.
pub fn unit(b: &dyn Backend, req: &RunRequest, start: StartKind) -> RunRecord {
    let ckpt = match checkpoint_for(b, req, start) {
        Ok(c) => c,
        Err(e) => return failed(b, req, e),
    };
    match launch(b, req, ckpt.as_ref()) {
        Ok(w) => w.go(runner::record_for(b, req), req.timeout, ckpt.as_ref()),
        Err(e) => failed(b, req, e),
    }
}

/// Private memory of a waiting container's process tree (Private_Clean + Private_Dirty).
fn private_tree_kib(pid: i32) -> Option<u64> {
    let mut pids = vec![pid];
    pids.extend(crate::backend::peers::descendants(pid));
    pids.into_iter().map(footprint::private_kib).sum()
}

/// `n` containers waiting at once (restored ones from one checkpoint), each one's private
/// memory sampled while all wait, then each told to go.
pub fn density(b: &dyn Backend, req: &RunRequest, n: u32, start: StartKind) -> Vec<RunRecord> {
    let ckpt = match checkpoint_for(b, req, start) {
        Ok(c) => c,
        Err(e) => return vec![failed(b, req, e)],
    };
    let mut waiting = Vec::new();
    for _ in 0..n {
        match launch(b, req, ckpt.as_ref()) {
            Ok(w) => waiting.push(w),
            // The ones already up are stopped and deleted by their Drop.
            Err(e) => return vec![failed(b, req, e)],
        }
    }
    let private: Vec<Option<u64>> = waiting.iter().map(|w| w.pid().and_then(private_tree_kib)).collect();
    waiting
        .into_iter()
        .zip(private)
        .map(|(w, private)| {
            let mut rec = w.go(runner::record_for(b, req), req.timeout, ckpt.as_ref());
            rec.extra.insert("density_n".into(), f64::from(n));
            if let Some(k) = private {
                rec.extra.insert("waiting_private_kib".into(), k as f64);
            }
            rec
        })
        .collect()
}
