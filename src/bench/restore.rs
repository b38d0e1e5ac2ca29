//! The restore-start scenario: a micro-VM's waiting workload (`wait-go`) started cold (boot →
//! READY → go → exit) against restored from a snapshot (restore → go → exit, memory mapped
//! lazily or read in eagerly), with the phases, the job's own time and page faults, the
//! snapshot's size on disk and the VMM's faults after the restore; and density from one
//! snapshot: N waiting instances restored from the same memory file, their private memory
//! (`Private_Clean + Private_Dirty`: the file's page cache is shared, not counted) against N
//! cold boots.
//!
//! microvm-bare and microvm (the Linux guest, where its user space runs: hardware KVM) have
//! snapshots. Container checkpoint/restore goes through CRIU, which fails on this host's
//! kernel (`cvbench doctor` says why); a gVisor backend would add its `runsc
//! checkpoint`/`restore` pair as one more [`not_applicable`] arm and unit.

use serde::{Deserialize, Serialize};

use crate::backend::restore::{self, Guest, Snapshot, WaitingVm};
use crate::backend::{Backend, BackendId};
use crate::footprint;
use crate::record::RunRecord;
use crate::runner::RunRequest;
use cvbench_microvm::snapshot::memory::Load;

/// How a unit starts its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartKind {
    /// Boot the waiting form from scratch.
    Cold,
    /// Restore, memory mapped `MAP_PRIVATE`.
    Lazy,
    /// Restore, memory read in first.
    Eager,
}

impl StartKind {
    pub const ALL: [StartKind; 3] = [StartKind::Cold, StartKind::Lazy, StartKind::Eager];

    pub const fn name(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Lazy => "lazy",
            StartKind::Eager => "eager",
        }
    }

    fn load(self) -> Option<Load> {
        match self {
            StartKind::Cold => None,
            StartKind::Lazy => Some(Load::Lazy),
            StartKind::Eager => Some(Load::Eager),
        }
    }
}

/// Why `backend` has no restore-start cell.
pub fn not_applicable(backend: BackendId) -> Option<String> {
    match backend {
        BackendId::MicrovmBare => None,
        BackendId::Microvm if cvbench_microvm::kvm_kind() == cvbench_microvm::KvmKind::SoftwarePvm => Some(
            "microvm: starting from a snapshot needs the Linux guest's user space (the waiting workload) to run: \
             unavailable here, /dev/kvm is kvm_pvm (it runs in the test host)"
                .into(),
        ),
        BackendId::Microvm => None,
        other => Some(format!(
            "restore-start runs on microvm-bare and microvm, whose VMM takes and restores snapshots; {other} has no \
             snapshot path here (container checkpoint/restore needs CRIU, which fails on this host's kernel)"
        )),
    }
}

/// The guest a restore-start unit of `b` runs (the plan only schedules backends that have one).
fn guest_of(b: &dyn Backend) -> Result<Guest, String> {
    Guest::of(b.id()).ok_or_else(|| format!("{} has no snapshots", b.name()))
}

fn failed(req: &RunRequest, b: &dyn Backend, error: String) -> RunRecord {
    let mut rec = crate::runner::record_for(b, req);
    rec.error = Some(error);
    rec
}

/// The snapshot a unit restores from (none for a cold start).
fn snapshot_for(guest: Guest, start: StartKind, req: &RunRequest) -> Result<Option<Snapshot>, String> {
    match start {
        StartKind::Cold => Ok(None),
        _ => restore::take_snapshot(guest, req.workload, &req.args, req.timeout)
            .map(Some)
            .map_err(|e| crate::runner::chain(&e)),
    }
}

fn launch(guest: Guest, start: StartKind, req: &RunRequest, snap: Option<&Snapshot>) -> Result<WaitingVm, String> {
    let r = match (start.load(), snap) {
        (Some(load), Some(s)) => restore::launch_restored(guest, &s.path(), load, req.timeout),
        _ => restore::launch_cold(guest, req.workload, &req.args, req.timeout),
    };
    r.map_err(|e| crate::runner::chain(&e))
}

/// One instance: started, told to go, ended.
pub fn unit(b: &dyn Backend, req: &RunRequest, start: StartKind) -> RunRecord {
    let guest = match guest_of(b) {
        Ok(g) => g,
        Err(e) => return failed(req, b, e),
    };
    let snap = match snapshot_for(guest, start, req) {
        Ok(s) => s,
        Err(e) => return failed(req, b, e),
    };
    match launch(guest, start, req, snap.as_ref()) {
        Ok(vm) => {
            let mut rec = vm.go(crate::runner::record_for(b, req), snap.as_ref());
            if let Some(s) = &snap {
                rec.extra.insert("snapshot_take_ns".into(), s.take_ns as f64);
            }
            rec
        }
        Err(e) => failed(req, b, e),
    }
}

/// `n` instances waiting at once (restored ones from one snapshot), each one's private memory
/// sampled while all wait, then each told to go.
pub fn density(b: &dyn Backend, req: &RunRequest, n: u32, start: StartKind) -> Vec<RunRecord> {
    let guest = match guest_of(b) {
        Ok(g) => g,
        Err(e) => return vec![failed(req, b, e)],
    };
    let snap = match snapshot_for(guest, start, req) {
        Ok(s) => s,
        Err(e) => return vec![failed(req, b, e)],
    };
    let mut vms = Vec::new();
    for _ in 0..n {
        match launch(guest, start, req, snap.as_ref()) {
            Ok(vm) => vms.push(vm),
            // The ones already up are stopped by their Drop.
            Err(e) => return vec![failed(req, b, e)],
        }
    }
    let private: Vec<Option<u64>> = vms.iter().map(|vm| vm.pid().and_then(footprint::private_kib)).collect();
    let rss: Vec<Option<u64>> = vms.iter().map(|vm| vm.pid().and_then(|p| footprint::sample(&[p]).rss_kib)).collect();
    vms.into_iter()
        .zip(private.into_iter().zip(rss))
        .map(|(vm, (private, rss))| {
            let mut rec = vm.go(crate::runner::record_for(b, req), snap.as_ref());
            rec.extra.insert("density_n".into(), f64::from(n));
            if let Some(k) = private {
                rec.extra.insert("waiting_private_kib".into(), k as f64);
            }
            rec.footprint.rss_kib = rss;
            rec
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_micro_vms_have_a_cell_and_the_others_say_why() {
        let pvm = cvbench_microvm::kvm_kind() == cvbench_microvm::KvmKind::SoftwarePvm;
        for b in BackendId::ALL {
            let na = not_applicable(b);
            let has = b == BackendId::MicrovmBare || (b == BackendId::Microvm && !pvm);
            assert_eq!(na.is_none(), has, "{b}");
            if let Some(why) = na {
                assert!(why.contains(b.name()), "{why}");
            }
        }
    }
}
