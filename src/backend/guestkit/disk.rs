//! The `disk` workload's scratch disk for a VM: a sparse raw image with an ext4 filesystem,
//! mounted by the guest at /mnt.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backend::peers::{launch_err, run_tool};
use crate::backend::BackendError;

const DISK_MIB: u64 = 512;

/// Make `disk.ext4` in `dir` for `backend`'s launch of `workload`.
pub(crate) fn make_disk(backend: &str, dir: &Path, workload: &str) -> Result<PathBuf, BackendError> {
    let img = dir.join("disk.ext4");
    let f = std::fs::File::create(&img).map_err(|e| launch_err(backend, workload, e))?;
    f.set_len(DISK_MIB << 20).map_err(|e| launch_err(backend, workload, e))?;
    run_tool(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)).map_err(|e| launch_err(backend, workload, e))?;
    Ok(img)
}
