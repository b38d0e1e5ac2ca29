//! Linux namespaces: names, parsing and the clone flags a container asks for.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::str::FromStr;

/// Errors parsing namespace names.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown namespace `{0}` (known: pid, mount, uts, ipc, net, cgroup, user)")]
    Unknown(String),
}

/// One kind of namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Pid,
    Mount,
    Uts,
    Ipc,
    Net,
    Cgroup,
    User,
}

impl Namespace {
    /// Every namespace kind, in the order a run reports them.
    pub const ALL: [Namespace; 7] = [
        Namespace::Pid,
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Cgroup,
        Namespace::User,
    ];

    /// The `CLONE_NEW*` flag that creates this namespace.
    pub fn clone_flag(self) -> u64 {
        (match self {
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::User => libc::CLONE_NEWUSER,
        }) as u64
    }

    /// The name used in configs, on the command line and in /proc/PID/ns.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Pid => "pid",
            Namespace::Mount => "mount",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
            Namespace::Cgroup => "cgroup",
            Namespace::User => "user",
        }
    }
}

impl FromStr for Namespace {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        // OCI calls the mount namespace "mount", util-linux "mnt"; accept both.
        match s {
            "pid" => Ok(Namespace::Pid),
            "mount" | "mnt" => Ok(Namespace::Mount),
            "uts" => Ok(Namespace::Uts),
            "ipc" => Ok(Namespace::Ipc),
            "net" | "network" => Ok(Namespace::Net),
            "cgroup" => Ok(Namespace::Cgroup),
            "user" => Ok(Namespace::User),
            other => Err(Error::Unknown(other.to_string())),
        }
    }
}

/// Parse a comma-separated list such as `pid,mount,uts`.
pub fn parse_list(list: &str) -> Result<BTreeSet<Namespace>, Error> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Namespace::from_str).collect()
}

/// The combined clone flags for a set of namespaces.
pub fn clone_flags(set: &BTreeSet<Namespace>) -> u64 {
    set.iter().fold(0, |acc, ns| acc | ns.clone_flag())
}

/// The default set: everything except the user namespace.
pub fn default_set() -> BTreeSet<Namespace> {
    Namespace::ALL.into_iter().filter(|ns| *ns != Namespace::User).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list_accepts_known_names_and_aliases() {
        let set = parse_list("pid, mnt,uts,net").unwrap();
        assert_eq!(set.len(), 4);
        assert!(set.contains(&Namespace::Mount));
    }

    #[test]
    fn parse_list_rejects_unknown_name() {
        let err = parse_list("pid,time").unwrap_err();
        assert!(err.to_string().contains("`time`"));
    }

    #[test]
    fn clone_flags_combine() {
        let set = parse_list("pid,net").unwrap();
        assert_eq!(clone_flags(&set), (libc::CLONE_NEWPID | libc::CLONE_NEWNET) as u64);
    }

    #[test]
    fn default_set_excludes_user() {
        assert!(!default_set().contains(&Namespace::User));
        assert_eq!(default_set().len(), 6);
    }
}
