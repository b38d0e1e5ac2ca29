//! What each backend is, in the report's words: the facts [`BackendId`] owns
//! (what the harness exec'd, what one row's figures include, its kind, its
//! chart colour) looked up by the name a record carries, and the network path
//! its net rows took (from the records' own `net:` notes, so the report states
//! what ran, not what was planned).

use super::aggregate::Aggregate;

pub use crate::backend::{BackendId, Kind, Profile};

/// The backend `name` names; `None` for a name from a foreign or older result file, which
/// the report keeps as it is.
fn id(name: &str) -> Option<BackendId> {
    name.parse().ok()
}

/// The profile of `name`, if it is a known backend.
pub fn profile(name: &str) -> Option<Profile> {
    id(name).map(BackendId::profile)
}

/// The kind of `name` (unknown names count as containers: never as native).
pub fn kind(name: &str) -> Kind {
    id(name).map_or(Kind::Container, BackendId::kind)
}

/// A backend's fixed colour; unknown names get grey.
pub fn rgb(name: &str) -> (u8, u8, u8) {
    profile(name).map_or((127, 127, 127), |p| p.rgb)
}

/// The network path as the backend's net records state it (`net:` or
/// `veth:` notes), else the planned path marked as such.
pub fn net_path(a: &Aggregate, backend: &str) -> String {
    for sc in ["net-stream", "net-rr"] {
        let stated = a
            .records(sc, backend)
            .iter()
            .flat_map(|r| &r.notes)
            .find_map(|n| n.strip_prefix("net: ").map(str::to_string));
        if let Some(s) = stated {
            return s;
        }
    }
    match profile(backend) {
        Some(p) => format!("{} (planned; no net record states it)", p.net),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_kept_as_containers_in_grey() {
        assert_eq!(kind("kata"), Kind::Container);
        assert_eq!(rgb("kata"), (127, 127, 127));
        assert_eq!(kind("gvisor"), Kind::Sandbox);
        assert_eq!(kind("native"), Kind::Native);
    }

    #[test]
    fn net_path_comes_from_the_records_note() {
        let r = crate::record::RunRecord {
            backend: "crun".into(),
            scenario: "net-rr".into(),
            notes: vec!["net: veth into namespace X".into()],
            ..Default::default()
        };
        let a = Aggregate::new(&[r]);
        assert_eq!(net_path(&a, "crun"), "veth into namespace X");
        assert!(net_path(&a, "runc").ends_with("(planned; no net record states it)"));
    }
}
