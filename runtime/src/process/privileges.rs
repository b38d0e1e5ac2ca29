//! Dropping privileges before exec: the one copy every verb uses, the container's first
//! process ([`super::init`]) and `exec` ([`crate::oci::exec`]). The AppArmor profile for the
//! next exec (first, as runc does: before no_new_privs narrows what a profile change may do),
//! seccomp (first after it when no_new_privs is off), the bounding set, uid/gids, capset,
//! ambient capabilities and no_new_privs, each failure reported with its step code.
//!
//! Runs between fork/clone and exec: only raw system calls on a [`Privileges`] the parent
//! prepared, no allocation, no locks (async-signal-safe).

use super::init::{
    STEP_AMBIENT, STEP_APPARMOR, STEP_CAPBSET, STEP_CAPSET, STEP_NO_NEW_PRIVS, STEP_SECCOMP, STEP_SETID,
};

/// The capability sets (bit i = capability i) and the highest capability the kernel knows.
pub struct CapPlan {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub last_cap: u32,
}

impl CapPlan {
    /// The same set everywhere but ambient (the runtime's own containers).
    pub fn uniform(keep: u64, last_cap: u32) -> CapPlan {
        CapPlan { bounding: keep, effective: keep, permitted: keep, inheritable: keep, ambient: 0, last_cap }
    }
}

/// Who the process becomes and what confines it.
pub struct Privileges {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// None keeps every capability (`--privileged`).
    pub caps: Option<CapPlan>,
    pub no_new_privs: bool,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    /// The AppArmor profile the process execs into (OCI `process.apparmorProfile`), only
    /// when AppArmor is enabled on the host; see [`AppArmorExec`].
    pub apparmor: Option<AppArmorExec>,
}

/// The request "exec PROFILE" for the kernel's AppArmor attribute, made by the parent so
/// the child only opens, writes and closes (no allocation between fork and exec).
pub struct AppArmorExec {
    request: Vec<u8>,
}

/// The attribute files tried in order: the per-LSM one (Linux 5.8 and later), then the
/// shared one older kernels have. `thread-self`: the attribute is per thread.
const APPARMOR_ATTRS: [&std::ffi::CStr; 2] = [c"/proc/thread-self/attr/apparmor/exec", c"/proc/thread-self/attr/exec"];

impl AppArmorExec {
    /// `None` for an empty name; a name with a NUL or a newline is refused (the kernel
    /// reads the request up to either, so such a name would ask for another profile).
    pub fn new(profile: &str) -> Result<Option<AppArmorExec>, String> {
        if profile.is_empty() {
            return Ok(None);
        }
        if profile.contains(['\0', '\n']) {
            return Err(format!("AppArmor profile {profile:?} contains a NUL or a newline"));
        }
        Ok(Some(AppArmorExec { request: format!("exec {profile}").into_bytes() }))
    }

    /// The profile's name, as asked for.
    pub fn profile(&self) -> &str {
        std::str::from_utf8(&self.request[5..]).unwrap_or_default()
    }

    /// Ask the kernel to switch to the profile at the next execve. Async-signal-safe.
    fn apply(&self) -> Result<(), StepFailed> {
        let mut last = libc::ENOENT;
        for attr in APPARMOR_ATTRS {
            // SAFETY: open(2) of a NUL-terminated constant path.
            let fd = unsafe { libc::open(attr.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                last = errno();
                continue;
            }
            // SAFETY: write(2) of a live buffer with its length to the fd just opened.
            let n = unsafe { libc::write(fd, self.request.as_ptr().cast(), self.request.len()) };
            let write_errno = errno();
            // SAFETY: closing the fd opened above.
            unsafe { libc::close(fd) };
            return if n == self.request.len() as isize {
                Ok(())
            } else {
                Err(StepFailed { step: STEP_APPARMOR, errno: if n < 0 { write_errno } else { libc::EIO } })
            };
        }
        Err(StepFailed { step: STEP_APPARMOR, errno: last })
    }
}

/// A step that failed: its code (`init::STEP_*`, named by `init::step_label`) and errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepFailed {
    pub step: u32,
    pub errno: i32,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn at(step: u32, ret: libc::c_long) -> Result<(), StepFailed> {
    if ret < 0 {
        Err(StepFailed { step, errno: errno() })
    } else {
        Ok(())
    }
}

fn prctl(step: u32, option: libc::c_int, arg2: libc::c_ulong) -> Result<(), StepFailed> {
    // SAFETY: prctl with integer arguments only (the options used here take no pointers).
    at(step, unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }
        as libc::c_long)
}

/// Set supplementary groups, then gid, then uid (all three ids each). Raw syscalls, not
/// glibc's wrappers, which signal every thread the parent had.
pub(crate) fn setids(uid: u32, gid: u32, groups: &[libc::gid_t]) -> Result<(), i32> {
    let step = |r: libc::c_long| at(STEP_SETID, r).map_err(|f| f.errno);
    // SAFETY: setgroups(2) with the length and pointer of a live slice.
    step(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    // SAFETY: setresgid(2) with plain integers.
    step(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: setresuid(2) with plain integers.
    step(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

fn drop_bounding(caps: &CapPlan) -> Result<(), StepFailed> {
    for cap in 0..=caps.last_cap.min(63) {
        if caps.bounding & (1u64 << cap) == 0 {
            prctl(STEP_CAPBSET, libc::PR_CAPBSET_DROP, cap as libc::c_ulong)?;
        }
    }
    // Nothing inherited stays ambient; the plan's ambient set is raised after capset.
    prctl(STEP_AMBIENT, libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset(c: &CapPlan) -> Result<(), StepFailed> {
    let hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data = [false, true].map(|hi| CapData {
        effective: half(c.effective, hi),
        permitted: half(c.permitted, hi),
        inheritable: half(c.inheritable, hi),
    });
    // SAFETY: header and a two-element data array as capset(2) version 3 expects.
    at(STEP_CAPSET, unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) })
}

fn raise_ambient(c: &CapPlan) -> Result<(), StepFailed> {
    // The kernel only raises ambient caps that are permitted and inheritable; others are
    // skipped, as runc does (it warns and goes on).
    let raisable = c.ambient & c.permitted & c.inheritable;
    for cap in 0..=c.last_cap.min(63) {
        if raisable & (1u64 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            at(STEP_AMBIENT, r as libc::c_long)?;
        }
    }
    Ok(())
}

fn install_seccomp(filter: &[libc::sock_filter]) -> Result<(), StepFailed> {
    let prog =
        libc::sock_fprog { len: filter.len() as libc::c_ushort, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `prog` points at a filter that lives until exec; the kernel copies it.
    at(STEP_SECCOMP, unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1u32, // SECCOMP_SET_MODE_FILTER
            0u32,
            &prog as *const libc::sock_fprog,
        )
    })
}

impl Privileges {
    /// Everything up to and including no_new_privs. Without no_new_privs the seccomp filter
    /// comes first: the kernel then wants CAP_SYS_ADMIN for it, so it goes in while we still
    /// have that (as runc does), and it also governs the rest. With no_new_privs the filter
    /// waits for [`Privileges::install_late_seccomp`], right before execve.
    pub fn drop_privileges(&self) -> Result<(), StepFailed> {
        if let Some(a) = &self.apparmor {
            a.apply()?;
        }
        if !self.no_new_privs {
            if let Some(f) = &self.seccomp {
                install_seccomp(f)?;
            }
        }
        if let Some(c) = &self.caps {
            drop_bounding(c)?;
            if self.uid != 0 {
                // Keep the permitted set across the uid change; capset below sets what is asked.
                prctl(STEP_SETID, libc::PR_SET_KEEPCAPS, 1)?;
            }
        }
        setids(self.uid, self.gid, &self.groups).map_err(|errno| StepFailed { step: STEP_SETID, errno })?;
        if let Some(c) = &self.caps {
            capset(c)?;
            raise_ambient(c)?;
        }
        if self.no_new_privs {
            prctl(STEP_NO_NEW_PRIVS, libc::PR_SET_NO_NEW_PRIVS, 1)?;
        }
        Ok(())
    }

    /// With no_new_privs, the seccomp filter, installed as the last step before execve (so
    /// it does not have to allow the runtime's own set-up calls). Without, nothing: the filter
    /// is in already.
    pub fn install_late_seccomp(&self) -> Result<(), StepFailed> {
        match (&self.seccomp, self.no_new_privs) {
            (Some(f), true) => install_seccomp(f),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AppArmorExec;

    #[test]
    fn apparmor_request_is_exec_and_the_profile_name() {
        let a = AppArmorExec::new("docker-default").unwrap().unwrap();
        assert_eq!(a.request, b"exec docker-default");
        assert_eq!(a.profile(), "docker-default");
    }

    #[test]
    fn apparmor_empty_name_is_no_request_and_separators_are_refused() {
        assert!(AppArmorExec::new("").unwrap().is_none());
        assert!(AppArmorExec::new("a\nexec b").is_err());
        assert!(AppArmorExec::new("a\0b").is_err());
    }
}
