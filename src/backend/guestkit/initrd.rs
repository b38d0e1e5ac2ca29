//! The guest initramfs (busybox, `/init`, the workload), written once per backend object and
//! shared by its instances.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cvbench_microvm::linux::initramfs;

use crate::paths;

/// A backend's initramfs slot: empty until the first launch writes the image.
pub(crate) type InitrdSlot = Mutex<Option<Arc<tempfile::NamedTempFile>>>;

/// The guest initramfs, written once into `dir` and shared by every instance of a backend
/// (ours and the QEMU peer boot the same image).
pub(crate) fn shared_initrd(
    slot: &InitrdSlot,
    prefix: &str,
    dir: &Path,
) -> Result<Arc<tempfile::NamedTempFile>, String> {
    let mut g = slot.lock().map_err(|_| "initrd lock poisoned".to_string())?;
    if let Some(f) = g.as_ref() {
        return Ok(f.clone());
    }
    let img = initramfs::GuestImage {
        workload: paths::workload_binary().map_err(|e| e.to_string())?,
        busybox: PathBuf::from("/bin/busybox"),
    };
    let f = tempfile::Builder::new()
        .prefix(&format!("{prefix}-{}-", std::process::id()))
        .tempfile_in(dir)
        .map_err(|e| e.to_string())?;
    // Removed by the signal owner's cleanup too, should the process die of Ctrl-C before the
    // last Arc drops.
    cvbench_signals::remove_on_interrupt(f.path().to_path_buf());
    initramfs::write_guest_image(&img, f.path()).map_err(|e| e.to_string())?;
    let f = Arc::new(f);
    *g = Some(f.clone());
    Ok(f)
}
