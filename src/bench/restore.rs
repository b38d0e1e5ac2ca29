//! The restore-start scenario: a micro-VM's waiting workload (`wait-go`) started cold (boot →
//! READY → go → exit) against restored from a snapshot (restore → go → exit, memory mapped
//! lazily or read in eagerly), with the phases, the job's own time and page faults, the
//! snapshot's size on disk and the VMM's faults after the restore; and density from one
//! snapshot: N waiting instances restored from the same memory file, their private memory
//! (`Private_Clean + Private_Dirty`: the file's page cache is shared, not counted) against N
//! cold boots.
//!
//! microvm-bare and microvm (the Linux guest, where its user space runs: hardware KVM) have
//! snapshots. The containers that checkpoint (gvisor and gvisor-ptrace through runsc, runc and
//! cvbench-runtime through CRIU) run the same units in `restore_container.rs`, with one start
//! kind of their own, `restore` (a runtime's one way to restore).

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
    /// A container runtime's restore from its checkpoint image.
    Restore,
}

impl StartKind {
    pub const ALL: [StartKind; 4] = [StartKind::Cold, StartKind::Lazy, StartKind::Eager, StartKind::Restore];

    pub const fn name(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Lazy => "lazy",
            StartKind::Eager => "eager",
            StartKind::Restore => "restore",
        }
    }

    fn load(self) -> Option<Load> {
        match self {
            StartKind::Cold | StartKind::Restore => None,
            StartKind::Lazy => Some(Load::Lazy),
            StartKind::Eager => Some(Load::Eager),
        }
    }
}

/// Why CRIU cannot checkpoint on this host, if it cannot (host facts, probed once).
fn criu_unusable() -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(|| cvbench_runtime::checkpoint::criu::CriuFacts::probe().verdict().err()).as_deref()
}

/// Why `backend` has no restore-start cell for `start`.
pub fn not_applicable(backend: BackendId, start: StartKind) -> Option<String> {
    let kind = crate::backend::peers::checkpoint::kind_for(backend);
    let container = kind.is_ok();
    let criu = kind.is_ok_and(crate::backend::peers::checkpoint::uses_criu);
    let vm = Guest::of(backend).is_some();
    match (backend, start) {
        (BackendId::Microvm, _) if cvbench_microvm::kvm_kind() == cvbench_microvm::KvmKind::SoftwarePvm => Some(
            "microvm: starting from a snapshot needs the Linux guest's user space (the waiting workload) to run: \
             unavailable here, /dev/kvm is kvm_pvm (it runs in the test host)"
                .into(),
        ),
        (_, StartKind::Restore) if vm => {
            Some(format!("{backend} restores lazily or eagerly; `restore` is a container runtime's start"))
        }
        (_, _) if vm => None,
        // A checkpointing container runs its restore unless CRIU, which it needs, cannot run here.
        (_, StartKind::Restore) if criu => criu_unusable().map(|why| format!("{backend} restore: {why}")),
        (_, StartKind::Cold | StartKind::Restore) if container => None,
        (_, StartKind::Lazy | StartKind::Eager) if container => {
            Some(format!("{backend} has one restore (`restore`), not the VMM's lazy or eager memory"))
        }
        (other, _) => Some(format!(
            "restore-start runs on microvm-bare and microvm (the VMM's snapshots) and on the containers that \
             checkpoint (gvisor, gvisor-ptrace, runc, cvbench-runtime); {other} has no snapshot path"
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
    if Guest::of(b.id()).is_none() {
        return super::restore_container::unit(b, req, start);
    }
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
    if Guest::of(b.id()).is_none() {
        return super::restore_container::density(b, req, n, start);
    }
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
    fn the_micro_vms_and_the_checkpointing_containers_have_cells_and_the_others_say_why() {
        let pvm = cvbench_microvm::kvm_kind() == cvbench_microvm::KvmKind::SoftwarePvm;
        let criu_ok = criu_unusable().is_none();
        let vms = [BackendId::MicrovmBare, BackendId::Microvm];
        let containers = [BackendId::Gvisor, BackendId::GvisorPtrace, BackendId::Runc, BackendId::CvbenchRuntime];
        for b in BackendId::ALL {
            for start in StartKind::ALL {
                let na = not_applicable(b, start);
                let vm = vms.contains(&b) && !(b == BackendId::Microvm && pvm);
                let expect = match start {
                    StartKind::Cold => vm || containers.contains(&b),
                    StartKind::Lazy | StartKind::Eager => vm,
                    StartKind::Restore => {
                        containers.contains(&b) && (criu_ok || matches!(b, BackendId::Gvisor | BackendId::GvisorPtrace))
                    }
                };
                assert_eq!(na.is_none(), expect, "{b} {start:?}");
                if let Some(why) = na {
                    assert!(why.contains(b.name()), "{why}");
                }
            }
        }
    }
}
