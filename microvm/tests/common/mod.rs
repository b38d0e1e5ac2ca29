//! What the bare-VM integration tests share: the root-and-/dev/kvm skip, the VMM binary under
//! test and the workload binary it loads.

use std::path::{Path, PathBuf};

/// Why `what` cannot run here (not root, or no usable /dev/kvm), or `None`.
pub fn skip_reason(what: &str) -> Option<(cvbench_testkit::Need, String)> {
    use cvbench_testkit::Need;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some((Need::Root, format!("{what} need root")));
    }
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => None,
        Err(e) => Some((Need::Kvm, format!("cannot open /dev/kvm: {e}"))),
    }
}

/// Return from the calling test, with a loud skip, when `skip_reason($what)` says so.
macro_rules! require_kvm {
    ($what:expr) => {
        if let Some((need, why)) = common::skip_reason($what) {
            cvbench_testkit::skip(need, &why);
            return;
        }
    };
}
pub(crate) use require_kvm;

pub fn vmm() -> &'static str {
    env!("CARGO_BIN_EXE_cvbench-vmm")
}

/// The workload binary (env CVBENCH_WORKLOAD or the repo's release build).
pub fn workload() -> PathBuf {
    let p = std::env::var_os("CVBENCH_WORKLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../workload/target/release/cvbench-workload"));
    assert!(
        p.exists(),
        "workload binary {} is missing: build it with `cargo build --release --manifest-path \
         workload/Cargo.toml --target-dir workload/target` or set CVBENCH_WORKLOAD",
        p.display()
    );
    p
}
