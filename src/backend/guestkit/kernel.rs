//! The cached guest kernel and the `cvbench-vmm` binary: found, or what is missing and the
//! command that fixes it.

use std::path::PathBuf;

use cvbench_microvm::linux::kernel_cache;

use crate::paths;

/// The guest kernel: built (its path), or what is missing and the command that fixes it.
pub fn guest_kernel() -> kernel_cache::GuestKernel {
    kernel_cache::GuestKernel::probe()
}

/// The guest kernel's path, or why there is none and how to build it.
pub(crate) fn kernel() -> Result<PathBuf, String> {
    let k = guest_kernel();
    if let Some(p) = k.path() {
        return Ok(p.to_path_buf());
    }
    let (reason, fix) = k.missing().unwrap_or_default();
    Err(format!("{reason}; fix: {fix}"))
}

/// `cvbench-vmm`, beside the harness or at `$CVBENCH_VMM`.
pub(crate) fn vmm_binary() -> Result<PathBuf, String> {
    paths::sibling_binary("cvbench-vmm", "CVBENCH_VMM").map_err(|e| e.to_string())
}
