//! The workload subcommands the suite runs, and what each needs from a
//! backend (a network peer, a disk, a stdin to end it), so backends ask one
//! enum instead of re-matching subcommand strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The port the workload's peer server (`cvbench-workload serve`) listens on, for every backend.
pub const SERVE_PORT: u16 = 5201;

/// One subcommand of the `cvbench-workload` binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Noop,
    Idle,
    Cpu,
    MemBw,
    MemTouch,
    Syscall,
    NetStream,
    NetRr,
    Disk,
}

/// What a workload needs from the backend that runs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A TCP peer (`serve`) the backend starts and passes as `--peer IP:PORT`.
    pub network: bool,
    /// Storage under test the backend provides and passes as `--dir PATH`.
    pub disk: bool,
    /// Runs until told to stop (stdin closed or SIGTERM), not to completion.
    pub long_running: bool,
}

/// A subcommand name that is not a workload.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no workload named {0:?} (known: {known})", known = Workload::names().join(", "))]
pub struct UnknownWorkload(pub String);

impl Workload {
    /// Every workload, in the order `--help` lists them.
    pub const ALL: [Workload; 9] = [
        Workload::Noop,
        Workload::Idle,
        Workload::Cpu,
        Workload::MemBw,
        Workload::MemTouch,
        Workload::Syscall,
        Workload::NetStream,
        Workload::NetRr,
        Workload::Disk,
    ];

    /// The subcommand name, as the workload binary and the records spell it.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Noop => "noop",
            Workload::Idle => "idle",
            Workload::Cpu => "cpu",
            Workload::MemBw => "mem-bw",
            Workload::MemTouch => "mem-touch",
            Workload::Syscall => "syscall",
            Workload::NetStream => "net-stream",
            Workload::NetRr => "net-rr",
            Workload::Disk => "disk",
        }
    }

    /// Every name, in [`Workload::ALL`] order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|w| w.name()).collect()
    }

    pub fn needs(self) -> Needs {
        match self {
            Workload::NetStream | Workload::NetRr => Needs { network: true, ..Needs::default() },
            Workload::Disk => Needs { disk: true, ..Needs::default() },
            Workload::Idle => Needs { long_running: true, ..Needs::default() },
            Workload::Noop | Workload::Cpu | Workload::MemBw | Workload::MemTouch | Workload::Syscall => {
                Needs::default()
            }
        }
    }
}

impl FromStr for Workload {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Workload, UnknownWorkload> {
        Workload::ALL.into_iter().find(|w| w.name() == s).ok_or_else(|| UnknownWorkload(s.to_string()))
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// On the wire (scenarios, plans) a workload is its name.
impl Serialize for Workload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Workload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Workload, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_workload() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
    }

    #[test]
    fn unknown_name_is_rejected_with_the_known_list() {
        let e = "fork-bomb".parse::<Workload>().unwrap_err();
        assert!(e.to_string().contains("net-stream"), "{e}");
    }

    #[test]
    fn net_workloads_need_a_network_and_nothing_else() {
        for w in [Workload::NetStream, Workload::NetRr] {
            assert_eq!(w.needs(), Needs { network: true, disk: false, long_running: false });
        }
    }

    #[test]
    fn disk_needs_storage_and_idle_needs_a_stop() {
        assert!(Workload::Disk.needs().disk);
        assert!(Workload::Idle.needs().long_running);
        assert_eq!(Workload::Cpu.needs(), Needs::default());
    }

    #[test]
    fn serde_spells_the_name() {
        let json = serde_json::to_string(&Workload::NetStream).unwrap();
        assert_eq!(json, "\"net-stream\"");
        assert_eq!(serde_json::from_str::<Workload>(&json).unwrap(), Workload::NetStream);
        assert!(serde_json::from_str::<Workload>("\"serve\"").is_err());
    }
}
