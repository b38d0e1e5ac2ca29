//! Linux capabilities: names, Docker's default set, and the keep-mask the child applies
//! (bounding set, effective/permitted/inheritable; ambient cleared).

/// Errors about capability names.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown capability `{0}`")]
    Unknown(String),
}

/// Every capability name by number (0..=40).
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set (14 capabilities).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Number of a capability; accepts `CAP_X` and `x` spellings.
pub fn number(name: &str) -> Result<u32, Error> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32).ok_or_else(|| Error::Unknown(name.to_string()))
}

/// Bit mask of the named capabilities.
pub fn mask<S: AsRef<str>>(names: &[S]) -> Result<u64, Error> {
    names.iter().try_fold(0u64, |m, n| Ok(m | 1u64 << number(n.as_ref())?))
}

/// The highest capability this kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// Names in a mask, for reports.
pub fn names(mask: u64) -> Vec<&'static str> {
    NAMES.iter().enumerate().filter(|(i, _)| mask & (1u64 << i) != 0).map(|(_, n)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_has_fourteen_caps_without_sys_admin() {
        let m = mask(DOCKER_DEFAULT).unwrap();
        assert_eq!(m.count_ones(), 14);
        assert_eq!(m & (1 << number("sys_admin").unwrap()), 0);
    }

    #[test]
    fn unknown_capability_is_an_error() {
        assert!(matches!(number("CAP_FLY"), Err(Error::Unknown(_))));
    }

    #[test]
    fn names_round_trip() {
        let m = mask(&["CAP_KILL", "net_raw"]).unwrap();
        assert_eq!(names(m), ["CAP_KILL", "CAP_NET_RAW"]);
    }
}
