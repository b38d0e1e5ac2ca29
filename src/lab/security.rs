//! Lab 8 (security): the walls between a container's process and the host kernel, tried from
//! inside. The same busybox script runs in four containers of our runtime — the default, the
//! default without its seccomp filter, a `--privileged`-style one, and one in a user namespace —
//! and reports what the process is (seccomp mode, no_new_privs, effective capabilities, its uid
//! map) and whether it may create a user namespace (no capability needed: only seccomp stops it)
//! and mount a tmpfs (needs CAP_SYS_ADMIN and a filter that allows `mount`). Then the
//! security-surface reading of every backend that runs here, from the host's `/proc`.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cvbench_runtime::config::{IdMap, RootfsSource};
use cvbench_runtime::namespaces::Namespace;
use cvbench_runtime::{ContainerConfig, Stdio};

use super::{backend_ready, progress, LabOptions, LabReport, Table};
use crate::backend::BackendId;
use crate::bench::surface;
use crate::runner::RunRequest;

use crate::backend::container::USERNS_HOST_BASE;

/// Run in every container: one `KEY=value` line per fact.
const SCRIPT: &str = "bb=/bin/busybox
$bb grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status | $bb sed 's/:[[:space:]]*/=/'
echo uid_map=$($bb cat /proc/self/uid_map | $bb tr -s ' ' | $bb sed 's/^ //')
if $bb unshare -U $bb true 2>/dev/null; then echo userns=allowed; else echo userns=denied; fi
if $bb mount -t tmpfs none /mnt 2>/dev/null; then echo mount=allowed; else echo mount=denied; fi
";

/// The four configurations the script runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Default,
    SeccompUnconfined,
    Privileged,
    UserNamespace,
}

impl Variant {
    const ALL: [Variant; 4] =
        [Variant::Default, Variant::SeccompUnconfined, Variant::Privileged, Variant::UserNamespace];

    fn label(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::SeccompUnconfined => "no seccomp filter",
            Variant::Privileged => "privileged",
            Variant::UserNamespace => "user namespace",
        }
    }

    fn config(self, rootfs: &Path) -> ContainerConfig {
        let mut cfg = ContainerConfig {
            rootfs: RootfsSource::Dir(rootfs.to_path_buf()),
            args: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), SCRIPT.into()],
            ..Default::default()
        };
        match self {
            Variant::Default => {}
            Variant::SeccompUnconfined => cfg.seccomp_unconfined = true,
            Variant::Privileged => cfg.privileged = true,
            Variant::UserNamespace => {
                cfg.namespaces.insert(Namespace::User);
                let map = IdMap { container_id: 0, host_id: USERNS_HOST_BASE, size: 65_536 };
                cfg.uid_map = vec![map];
                cfg.gid_map = vec![map];
            }
        }
        cfg
    }
}

/// The script's `KEY=value` lines.
fn facts(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A root filesystem holding only a static busybox (and `/mnt` to mount on), readable by
/// the user namespace's root, which is an unprivileged user on the host.
fn busybox_rootfs(dir: &Path) -> Result<(), String> {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    fs::create_dir_all(dir.join("mnt")).map_err(|e| format!("{}/mnt: {e}", dir.display()))?;
    fs::copy("/bin/busybox", bin.join("busybox"))
        .map_err(|e| format!("copying /bin/busybox (apt-get install busybox-static): {e}"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Run the script in one variant; its stdout, or why it did not run.
fn run_variant(v: Variant, rootfs: &Path) -> Result<String, String> {
    let out = tempfile::tempfile().map_err(|e| e.to_string())?;
    let stdout = OwnedFd::from(out.try_clone().map_err(|e| e.to_string())?);
    let stdio = Stdio { stdin: None, stdout: Some(stdout), stderr: None };
    let result = cvbench_runtime::container::run(&v.config(rootfs), stdio, Some(Duration::from_secs(30)))
        .map_err(|e| crate::lab::live::error_chain(&e))?;
    if result.exit.code != Some(0) {
        return Err(format!("the probe script exited with {:?}", result.exit));
    }
    use std::io::{Read, Seek};
    let mut f = out;
    let mut text = String::new();
    f.seek(std::io::SeekFrom::Start(0)).and_then(|_| f.read_to_string(&mut text)).map_err(|e| e.to_string())?;
    Ok(text)
}

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    let _ = opts;
    if let Err(reason) = backend_ready(BackendId::Container) {
        r.unavailable(reason);
        return;
    }
    walls(r);
    surfaces(r);
}

fn walls(r: &mut LabReport) {
    let dir = match tempfile::Builder::new().prefix("cvbench-lab8-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            r.check("a scratch root filesystem is made", false, e.to_string());
            return;
        }
    };
    if let Err(e) = busybox_rootfs(dir.path()) {
        r.check("a busybox root filesystem is made", false, e);
        return;
    }
    let mut t = Table::new(
        "What the container's process is, and what it may do (seen from inside)",
        &[
            "container",
            "Seccomp",
            "NoNewPrivs",
            "capabilities",
            "uid map (inside host count)",
            "new user ns",
            "mount tmpfs",
        ],
    );
    let mut seen: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    for v in Variant::ALL {
        if super::stopped() {
            return;
        }
        progress(&format!("running the probe script in a {} container", v.label()));
        match run_variant(v, dir.path()) {
            Ok(out) => {
                let f = facts(&out);
                let caps = f
                    .get("CapEff")
                    .and_then(|m| u64::from_str_radix(m, 16).ok())
                    .map(surface::cap_names)
                    .unwrap_or_else(|| "?".into());
                let get = |k: &str| f.get(k).cloned().unwrap_or_else(|| "?".into());
                t.row(vec![
                    v.label().into(),
                    get("Seccomp"),
                    get("NoNewPrivs"),
                    caps,
                    get("uid_map"),
                    get("userns"),
                    get("mount"),
                ]);
                seen.insert(v.label(), f);
            }
            Err(e) => r.check(format!("the {} container runs the probe", v.label()), false, e),
        }
    }
    r.tables.push(t);
    let fact = |v: Variant, k: &str| seen.get(v.label()).and_then(|f| f.get(k)).map(String::as_str);
    if seen.len() < Variant::ALL.len() {
        return;
    }
    r.check(
        "the default container runs under a seccomp filter with no_new_privs",
        fact(Variant::Default, "Seccomp") == Some("2") && fact(Variant::Default, "NoNewPrivs") == Some("1"),
        format!(
            "Seccomp={:?} NoNewPrivs={:?}",
            fact(Variant::Default, "Seccomp"),
            fact(Variant::Default, "NoNewPrivs")
        ),
    );
    r.check(
        "the default filter denies creating a user namespace, which needs no capability",
        fact(Variant::Default, "userns") == Some("denied")
            && fact(Variant::SeccompUnconfined, "userns") == Some("allowed"),
        format!(
            "default: {:?}; without the filter: {:?}",
            fact(Variant::Default, "userns"),
            fact(Variant::SeccompUnconfined, "userns")
        ),
    );
    r.check(
        "mount stays denied without the filter: CAP_SYS_ADMIN is dropped too (two walls)",
        fact(Variant::Default, "mount") == Some("denied")
            && fact(Variant::SeccompUnconfined, "mount") == Some("denied"),
        format!(
            "default: {:?}; without the filter: {:?}",
            fact(Variant::Default, "mount"),
            fact(Variant::SeccompUnconfined, "mount")
        ),
    );
    r.check(
        "a privileged container has no filter, every capability, and may mount",
        fact(Variant::Privileged, "Seccomp") == Some("0") && fact(Variant::Privileged, "mount") == Some("allowed"),
        format!("Seccomp={:?} mount={:?}", fact(Variant::Privileged, "Seccomp"), fact(Variant::Privileged, "mount")),
    );
    let map = fact(Variant::UserNamespace, "uid_map").unwrap_or("");
    r.check(
        format!("in a user namespace, the container's root is host uid {USERNS_HOST_BASE}"),
        map.split_whitespace().collect::<Vec<_>>() == ["0", &USERNS_HOST_BASE.to_string(), "65536"],
        format!("uid_map {map:?}"),
    );
    r.note(
        "`Seccomp` 2 is filter mode, 0 none; capabilities are the effective set (CapEff). Each container \
         ran `busybox sh -c` on a root filesystem holding only busybox.",
    );
}

/// The security-surface reading (the bench's `surface` scenario) of each backend that runs here.
fn surfaces(r: &mut LabReport) {
    let mut t = Table::new(
        "The security surface per backend (from the host's /proc of the instance's most isolated process)",
        &["backend", "process", "own namespaces", "capabilities", "seccomp", "no_new_privs"],
    );
    let mut probed = 0;
    for id in [BackendId::Native, BackendId::Container, BackendId::Runc, BackendId::Crun, BackendId::MicrovmBare] {
        if super::stopped() {
            return;
        }
        let b = match backend_ready(id) {
            Ok(b) => b,
            Err(reason) => {
                r.note(format!("not in the surface table: {reason}"));
                continue;
            }
        };
        progress(&format!("reading the security surface of an idle {} instance", id.name()));
        let mut req = RunRequest::new(crate::workload::Workload::Idle, Vec::new());
        req.timeout = Duration::from_secs(60);
        req.scenario = "lab".into();
        let rec = surface::probe(b.as_ref(), &req);
        if let Some(e) = &rec.error {
            r.check(format!("the surface of {} is read", id.name()), false, e.clone());
            continue;
        }
        let note = |k: &str| {
            rec.notes.iter().find_map(|n| n.strip_prefix(&format!("surface.{k}: "))).unwrap_or("?").to_string()
        };
        t.row(vec![
            id.name().into(),
            note("process"),
            note("namespaces"),
            note("capabilities"),
            note("seccomp"),
            note("no_new_privs"),
        ]);
        probed += 1;
    }
    r.tables.push(t);
    r.check("the surface of native and our container is read", probed >= 2, format!("{probed} backend(s) read"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_reads_key_value_lines_and_skips_others() {
        let f = facts("Seccomp=2\nnoise\nuid_map=0 100000 65536\nuserns=denied\n");
        assert_eq!(f.get("Seccomp").map(String::as_str), Some("2"));
        assert_eq!(f.get("uid_map").map(String::as_str), Some("0 100000 65536"));
        assert_eq!(f.get("userns").map(String::as_str), Some("denied"));
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn only_the_user_namespace_variant_maps_ids() {
        let dir = Path::new("/nonexistent");
        for v in Variant::ALL {
            let cfg = v.config(dir);
            assert_eq!(!cfg.uid_map.is_empty(), v == Variant::UserNamespace, "{v:?}");
            assert_eq!(cfg.privileged, v == Variant::Privileged, "{v:?}");
            assert_eq!(cfg.seccomp_unconfined, v == Variant::SeccompUnconfined, "{v:?}");
        }
    }
}
