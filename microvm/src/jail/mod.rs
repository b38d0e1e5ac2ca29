//! The VMM jails itself, after Firecracker's jailer but in-process: once `/dev/kvm`, the tap,
//! the guest's files and the stats file are open and before guest code runs, the VMM
//! ([`enter`]) moves into new mount, IPC and UTS namespaces, pivots into an empty
//! read-only tmpfs root (nothing of the host's filesystem stays reachable by path), drops every
//! capability (effective, permitted, inheritable, ambient and the bounding set) and sets
//! no_new_privs; then each thread installs the seccomp allow-list of its kind
//! ([`seccomp`]). `--no-jail` skips all of it, for debugging, and the record says so.
//!
//! Everything here runs on the thread that will spawn the others (namespaces, credentials
//! and filters are per thread and inherited at clone), before it spawns them.
//!
//! No PID namespace: an in-process unshare(CLONE_NEWPID) only places future children in it,
//! and under kvm_pvm every KVM_RUN after it failed with EINVAL (measured, also when unshared
//! before the VM was created). What a PID namespace would contain is also ruled out by the
//! filters: the VMM cannot create processes (no fork, vfork, execve; clone only with
//! CLONE_THREAD). A PID namespace proper needs the jailer's shape: fork after unshare, the VMM
//! as PID 1 of the new namespace.

pub mod seccomp;

use std::ffi::CStr;

pub use seccomp::{install, ThreadKind};

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once [`enter`] succeeded: threads started later install their filters.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether this process entered the jail.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Errors from entering the jail; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("unshare of mount, IPC and UTS namespaces failed")]
    Unshare(#[source] std::io::Error),
    #[error("making the mount tree private failed")]
    PrivateMounts(#[source] std::io::Error),
    #[error("mounting the empty root tmpfs on {0} failed")]
    MountRoot(&'static str, #[source] std::io::Error),
    #[error("preparing the root ({0}) failed")]
    PrepareRoot(&'static str, #[source] std::io::Error),
    #[error("pivot_root into the empty root failed")]
    PivotRoot(#[source] std::io::Error),
    #[error("detaching the old root failed")]
    DetachOldRoot(#[source] std::io::Error),
    #[error("setting the hostname failed")]
    Hostname(#[source] std::io::Error),
    #[error("dropping capability {0} from the bounding set failed")]
    BoundingSet(u32, #[source] std::io::Error),
    #[error("clearing the ambient capabilities failed")]
    Ambient(#[source] std::io::Error),
    #[error("capset (dropping every capability) failed")]
    Capset(#[source] std::io::Error),
    #[error("setting no_new_privs failed")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("building the {0:?} seccomp filter failed: {1}")]
    BuildFilter(ThreadKind, String),
    #[error("installing the {0:?} seccomp filter failed")]
    InstallFilter(ThreadKind, #[source] seccompiler::Error),
    #[error("installing the SIGSYS reporter failed")]
    SigsysHandler(#[source] std::io::Error),
}

fn check(rc: libc::c_int, err: impl FnOnce(std::io::Error) -> JailError) -> Result<(), JailError> {
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The directory the empty root is mounted on. Only this process's new mount namespace sees
/// the tmpfs; /tmp exists on every host and is left untouched outside.
const NEW_ROOT: &CStr = c"/tmp";
const OLD_ROOT: &CStr = c"/tmp/old-root";
const OLD_ROOT_INSIDE: &CStr = c"/old-root";

fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), std::io::Error> {
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is a NUL-terminated string or null, as mount(2) accepts.
    let rc = unsafe { libc::mount(ptr(src), target.as_ptr(), ptr(fstype), flags, ptr(data).cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Enter the namespaces, the empty root, and drop every privilege. The caller must be the
/// only thread of the process (the bare VMM) or the one that spawns all others later.
pub fn enter() -> Result<(), JailError> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: unshare takes no memory; it moves this thread (and the children it makes).
    check(unsafe { libc::unshare(flags) }, JailError::Unshare)?;
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(JailError::PrivateMounts)?;
    let tmpfs_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some(c"cvbench-vmm-root"), NEW_ROOT, Some(c"tmpfs"), tmpfs_flags, Some(c"size=16k,mode=0700"))
        .map_err(|e| JailError::MountRoot("/tmp", e))?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mkdir(OLD_ROOT.as_ptr(), 0o700) }, |e| JailError::PrepareRoot("mkdir old-root", e))?;
    // SAFETY: two NUL-terminated paths; pivot_root has no libc wrapper.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, NEW_ROOT.as_ptr(), OLD_ROOT.as_ptr()) };
    check(rc as libc::c_int, JailError::PivotRoot)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chdir(c"/".as_ptr()) }, |e| JailError::PrepareRoot("chdir /", e))?;
    // SAFETY: NUL-terminated path; MNT_DETACH lazily drops the host's tree from this namespace
    // (descriptors already open, such as the run directory, keep working).
    check(unsafe { libc::umount2(OLD_ROOT_INSIDE.as_ptr(), libc::MNT_DETACH) }, JailError::DetachOldRoot)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::rmdir(OLD_ROOT_INSIDE.as_ptr()) }, |e| JailError::PrepareRoot("rmdir old-root", e))?;
    let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | tmpfs_flags;
    mount(None, c"/", None, ro, None).map_err(|e| JailError::PrepareRoot("remount / read-only", e))?;
    let name = b"cvbench-vmm";
    // SAFETY: `name` is readable for its length.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }, JailError::Hostname)?;
    drop_capabilities()?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, JailError::NoNewPrivs)?;
    ACTIVE.store(true, Ordering::Release);
    Ok(())
}

/// Empty the bounding set and the ambient set, then the effective, permitted and inheritable
/// sets (in that order: dropping the bounding set needs CAP_SETPCAP).
fn drop_capabilities() -> Result<(), JailError> {
    for cap in 0..64u32 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(JailError::BoundingSet(cap, e));
        }
    }
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) }, JailError::Ambient)?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: a version-3 header and the two data words that version takes.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    check(rc as libc::c_int, JailError::Capset)
}
