//! What the VMM's integration tests share: the root-and-KVM skip (testkit's, with our probe), the
//! VMM binary under test and the workload binary it loads.

use std::path::{Path, PathBuf};

/// Return from the calling test, with a loud skip, unless it runs as root with a usable KVM.
macro_rules! require_kvm {
    ($what:expr) => {
        if !cvbench_testkit::require_root_and_kvm($what, || cvbench_microvm::kvm_probe().usable()) {
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
