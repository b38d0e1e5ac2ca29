//! cgroup v2: one directory in the unified hierarchy, controllers enabled in the parent's
//! `cgroup.subtree_control`, and a directory fd for `clone3(CLONE_INTO_CGROUP)`.

use super::{
    devices_bpf, read_file, read_procs, read_u64, remove_dir, write_file, write_one_of, CgroupManager, Error, Stats,
};
use crate::config::Resources;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A container's v2 cgroup.
pub struct V2 {
    root: PathBuf,
    dir: PathBuf,
    dir_fd: Option<File>,
    created: bool,
    /// Ancestors `create` made for a nested name, outermost first.
    created_parents: Vec<PathBuf>,
}

impl V2 {
    /// `root` is the cgroup2 mount; the cgroup goes under this process's own v2 cgroup.
    pub fn new(root: &Path, own: &BTreeMap<String, String>, name: &str) -> Result<V2, Error> {
        let parent = own.get("").map(|p| p.trim_start_matches('/')).unwrap_or("");
        Ok(V2 {
            root: root.to_path_buf(),
            dir: root.join(parent).join(name),
            dir_fd: None,
            created: false,
            created_parents: Vec::new(),
        })
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Controllers the limits need, in `cgroup.controllers` names, each with the OCI field
    /// that asks for it (None: the runtime's own limits).
    fn needed(res: &Resources) -> Vec<(&'static str, Option<&'static str>)> {
        let mut c = Vec::new();
        if res.wants_memory_controller() {
            c.push(("memory", None));
        }
        if res.cpu_quota_us.is_some() || res.cpu_shares.is_some() {
            c.push(("cpu", None));
        }
        if res.pids_max.is_some() {
            c.push(("pids", None));
        }
        if res.cpuset_cpus.is_some() || res.cpuset_mems.is_some() {
            c.push(("cpuset", None));
        }
        if !res.block_io.is_empty() {
            c.push(("io", Some("linux.resources.blockIO")));
        }
        if !res.hugepage_limits.is_empty() {
            c.push(("hugetlb", Some("linux.resources.hugepageLimits")));
        }
        c
    }

    /// Enable, in `parent`'s `cgroup.subtree_control`, the controllers its children need.
    fn enable_controllers(parent: &Path, res: &Resources) -> Result<(), Error> {
        let available = read_file(&parent.join("cgroup.controllers")).unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        let needed = Self::needed(res);
        let subtree = parent.join("cgroup.subtree_control");
        if res.no_memory_controller && read_file(&subtree).unwrap_or_default().split_whitespace().any(|c| c == "memory")
        {
            // v2 turns a controller on for every child of a parent: this one would be charged.
            return Err(Error::BadValue {
                field: "linux.resources.memory",
                reason: format!("{} enables `memory` for every child cgroup", subtree.display()),
            });
        }
        for (ctrl, field) in &needed {
            if !available.contains(ctrl) {
                let root = parent.to_path_buf();
                return Err(match field {
                    Some(field) => {
                        Error::ControllerMissingFor { field, needs: format!("the `{ctrl}` controller"), root }
                    }
                    None => Error::ControllerMissing { controller: ctrl.to_string(), root },
                });
            }
        }
        // Enable what the parent offers (memory/cpu/pids also for stats); the parent must not
        // hold processes itself (v2's no-internal-processes rule), so failures only matter when
        // a limit needs the controller, which the writes below then report.
        let extra = needed.iter().map(|(c, _)| *c).filter(|c| matches!(*c, "io" | "hugetlb"));
        for ctrl in ["memory", "cpu", "pids", "cpuset"].into_iter().chain(extra) {
            if available.contains(&ctrl) && !(res.no_memory_controller && ctrl == "memory") {
                let _ = fs::write(&subtree, format!("+{ctrl}"));
            }
        }
        Ok(())
    }

    /// io: weights (BFQ's file as given, else `io.weight` scaled) and `io.max` throttles.
    fn apply_io(&self, res: &Resources) -> Result<(), Error> {
        let (d, b) = (&self.dir, &res.block_io);
        let bfq = d.join("io.bfq.weight").exists();
        let weight = |w: u16| if bfq { w.to_string() } else { blkio_to_io_weight(w).to_string() };
        let weight_files: &[&str] = if bfq { &["io.bfq.weight"] } else { &["io.weight"] };
        if let Some(w) = b.weight {
            write_one_of(d, weight_files, &format!("default {}", weight(w)), "linux.resources.blockIO.weight")?;
        }
        for dev in &b.weight_devices {
            if let Some(w) = dev.weight {
                let line = format!("{}:{} {}", dev.major, dev.minor, weight(w));
                write_one_of(d, weight_files, &line, "linux.resources.blockIO.weightDevice[].weight")?;
            }
        }
        if b.leaf_weight.is_some() || b.weight_devices.iter().any(|w| w.leaf_weight.is_some()) {
            return Err(Error::ControllerMissingFor {
                field: "linux.resources.blockIO.leafWeight",
                needs: "cgroup v1's CFQ blkio.leaf_weight (v2 has no leaf weights)".into(),
                root: d.clone(),
            });
        }
        for t in b.throttles() {
            for dev in t.devices {
                let line = format!("{}:{} {}={}", dev.major, dev.minor, t.v2_key, dev.rate);
                write_one_of(d, &["io.max"], &line, t.field)?;
            }
        }
        Ok(())
    }

    fn apply(&self, res: &Resources) -> Result<(), Error> {
        let d = &self.dir;
        if let Some(r) = res.memory_reservation_bytes {
            write_file(&d.join("memory.low"), &r.to_string())?;
        }
        if let Some(m) = res.memory_bytes {
            write_file(&d.join("memory.max"), &m.to_string())?;
            let swap = res.memory_swap_bytes.map(|s| s - m).unwrap_or(0);
            let swap_file = d.join("memory.swap.max");
            if swap_file.exists() {
                write_file(&swap_file, &swap.to_string())?;
            }
        }
        if res.cpu_quota_us.is_some() || res.cpu_period_us.is_some() {
            let quota = match res.cpu_quota_us {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".into(),
            };
            let period = res.cpu_period_us.unwrap_or(100_000);
            write_file(&d.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(shares) = res.cpu_shares {
            write_file(&d.join("cpu.weight"), &shares_to_weight(shares).to_string())?;
        }
        if let Some(p) = res.pids_max {
            write_file(&d.join("pids.max"), &p.to_string())?;
        }
        if let Some(c) = &res.cpuset_cpus {
            write_file(&d.join("cpuset.cpus"), c)?;
        }
        if let Some(m) = &res.cpuset_mems {
            write_file(&d.join("cpuset.mems"), m)?;
        }
        if !res.block_io.is_empty() {
            self.apply_io(res)?;
        }
        for l in &res.hugepage_limits {
            let file = format!("hugetlb.{}.max", l.page_size);
            write_one_of(d, &[&file], &l.limit.to_string(), "linux.resources.hugepageLimits")?;
        }
        Ok(())
    }
}

/// Map a blkio weight (10..=1000) onto v2 `io.weight` (1..=10000), linearly, as runc and crun do.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// Map v1 shares (2..=262144, default 1024) onto v2 weight (1..=10000, default 100), the same
/// linear conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl CgroupManager for V2 {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn create(&mut self, res: &Resources) -> Result<(), Error> {
        super::validate(res)?;
        // Compile before creating anything, so a bad rule leaves nothing behind.
        let devices = if res.devices.is_empty() {
            None
        } else {
            Some(
                devices_bpf::compile(&res.devices)
                    .map_err(|source| Error::DeviceProgram { path: self.dir.clone(), source })?,
            )
        };
        if res.net_class_id.is_some() || !res.net_priorities.is_empty() {
            let (field, needs) = if res.net_class_id.is_some() {
                ("linux.resources.network.classID", "cgroup v1's net_cls controller (v2 has none)")
            } else {
                ("linux.resources.network.priorities", "cgroup v1's net_prio controller (v2 has none)")
            };
            let needs = needs.to_string();
            return Err(Error::ControllerMissingFor { field, needs, root: self.root.clone() });
        }
        let v1_only = [
            (res.memory_swappiness.is_some(), "linux.resources.memory.swappiness", "memory.swappiness"),
            (res.disable_oom_killer, "linux.resources.memory.disableOOMKiller", "memory.oom_control"),
        ];
        if let Some((_, field, file)) = v1_only.into_iter().find(|(set, _, _)| *set) {
            let needs = format!("cgroup v1's {file} (cgroup v2 has no equivalent)");
            return Err(Error::ControllerMissingFor { field, needs, root: self.root.clone() });
        }
        // A nested cgroupsPath (`a/b/c`): every level made here passes the controllers on to
        // the next, starting at the deepest level that exists.
        let top = self.dir.ancestors().skip(1).find(|a| a.exists()).unwrap_or(&self.root).to_path_buf();
        Self::enable_controllers(&top, res)?;
        let dir = self.dir.clone();
        super::create_levels(&self.dir, &mut self.created_parents, |level| {
            if level == dir {
                Ok(())
            } else {
                Self::enable_controllers(level, res)
            }
        })?;
        self.created = true;
        self.apply(res)?;
        let fd = File::open(&self.dir).map_err(|source| Error::Read { path: self.dir.clone(), source })?;
        if let Some(prog) = devices {
            // v2 has no devices controller: the rules become a BPF_CGROUP_DEVICE program, attached
            // before any process joins (clone3 puts the child straight into this directory).
            let bpf_err = |source| Error::DeviceProgram { path: self.dir.clone(), source };
            let prog_fd = devices_bpf::load(&prog).map_err(bpf_err)?;
            devices_bpf::attach(&prog_fd, fd.as_fd()).map_err(bpf_err)?;
        }
        self.dir_fd = Some(fd);
        Ok(())
    }

    fn attach(&self, pid: i32) -> Result<(), Error> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).map_err(|source| Error::AttachCgroup {
            pid,
            path: self.dir.clone(),
            source,
        })
    }

    fn clone_into_fd(&self) -> Option<RawFd> {
        self.dir_fd.as_ref().map(|f| f.as_raw_fd())
    }

    fn freeze(&self) -> Result<(), Error> {
        write_file(&self.dir.join("cgroup.freeze"), "1")?;
        let events = self.dir.join("cgroup.events");
        for _ in 0..1000 {
            if super::keyed(&read_file(&events)?, "frozen") == Some(1) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::Write {
            path: self.dir.join("cgroup.freeze"),
            value: "1".into(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "never reported frozen"),
        })
    }

    fn thaw(&self) -> Result<(), Error> {
        write_file(&self.dir.join("cgroup.freeze"), "0")
    }

    fn stats(&self) -> Result<Stats, Error> {
        let d = &self.dir;
        let mut st = Stats {
            memory_usage_bytes: read_u64(&d.join("memory.current")).ok(),
            memory_peak_bytes: read_u64(&d.join("memory.peak")).ok(),
            pids_current: read_u64(&d.join("pids.current")).ok(),
            ..Default::default()
        };
        if let Ok(text) = read_file(&d.join("cpu.stat")) {
            st.cpu_usage_ns = super::keyed(&text, "usage_usec").map(|u| u * 1000);
        }
        if let Ok(text) = read_file(&d.join("memory.events")) {
            st.oom_kills = super::keyed(&text, "oom_kill").unwrap_or(0);
        }
        Ok(st)
    }

    fn procs(&self) -> Result<Vec<i32>, Error> {
        read_procs(&self.dir.join("cgroup.procs"))
    }

    fn paths(&self) -> Vec<PathBuf> {
        if self.created {
            vec![self.dir.clone()]
        } else {
            Vec::new()
        }
    }

    fn created_parents(&self) -> Vec<PathBuf> {
        self.created_parents.clone()
    }

    fn remove(&mut self) -> Result<(), Error> {
        self.dir_fd = None;
        if self.created {
            remove_dir(&self.dir)?;
            self.created = false;
        }
        super::remove_parents(&self.created_parents);
        self.created_parents.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(controllers: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.controllers"), controllers).unwrap();
        fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        tmp
    }

    #[test]
    fn io_throttles_become_io_max_lines_and_weights_scale_without_bfq() {
        let tmp = fake_root("io\n");
        let mut cg = V2::new(tmp.path(), &BTreeMap::new(), "c").unwrap();
        fs::create_dir(tmp.path().join("c")).unwrap();
        fs::write(tmp.path().join("c/io.max"), "").unwrap();
        fs::write(tmp.path().join("c/io.weight"), "").unwrap();
        cg.created = true;
        let res = Resources {
            block_io: crate::config::BlockIo {
                weight: Some(1000),
                throttle_read_bps: vec![crate::config::ThrottleDevice { major: 254, minor: 0, rate: 1 << 20 }],
                ..Default::default()
            },
            ..Default::default()
        };

        cg.apply_io(&res).unwrap();

        assert_eq!(fs::read_to_string(tmp.path().join("c/io.max")).unwrap(), "254:0 rbps=1048576");
        assert_eq!(fs::read_to_string(tmp.path().join("c/io.weight")).unwrap(), "default 10000");
        assert_eq!((blkio_to_io_weight(10), blkio_to_io_weight(500)), (1, 4950));
    }

    #[test]
    fn network_classid_on_v2_is_refused_by_field_before_anything_is_made() {
        let tmp = fake_root("cpu memory pids\n");
        let mut cg = V2::new(tmp.path(), &BTreeMap::new(), "c").unwrap();
        let res = Resources { net_class_id: Some(0x100001), ..Default::default() };

        let err = cg.create(&res).unwrap_err();

        assert!(err.to_string().contains("`linux.resources.network.classID` needs cgroup v1's net_cls"), "{err}");
        assert!(!tmp.path().join("c").exists());
    }

    #[test]
    fn memory_swappiness_on_v2_is_refused_by_field_before_anything_is_made() {
        let tmp = fake_root("cpu memory pids\n");
        let mut cg = V2::new(tmp.path(), &BTreeMap::new(), "c").unwrap();
        let res = Resources { memory_swappiness: Some(10), ..Default::default() };

        let err = cg.create(&res).unwrap_err();

        assert!(err.to_string().contains("`linux.resources.memory.swappiness` needs cgroup v1's"), "{err}");
        assert!(!tmp.path().join("c").exists());
    }

    #[test]
    fn create_writes_v2_limit_files() {
        let tmp = fake_root("cpu memory pids cpuset\n");
        let mut cg = V2::new(tmp.path(), &BTreeMap::new(), "c").unwrap();
        let res = Resources {
            memory_bytes: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            cpu_shares: Some(1024),
            pids_max: Some(16),
            ..Default::default()
        };
        cg.create(&res).unwrap();
        let read = |p: &str| fs::read_to_string(tmp.path().join("c").join(p)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("pids.max"), "16");
        assert!(cg.clone_into_fd().is_some());
    }

    #[test]
    fn create_reports_missing_controller() {
        let tmp = fake_root("");
        let mut cg = V2::new(tmp.path(), &BTreeMap::new(), "c").unwrap();
        let res = Resources { pids_max: Some(16), ..Default::default() };
        let err = cg.create(&res).unwrap_err();
        assert!(err.to_string().contains("`pids`"), "{err}");
        assert!(!tmp.path().join("c").exists());
    }

    #[test]
    fn stats_read_cpu_stat_and_memory_events() {
        let tmp = fake_root("");
        let mut cg = V2::new(tmp.path(), &BTreeMap::new(), "c").unwrap();
        cg.create(&Resources::default()).unwrap();
        let d = tmp.path().join("c");
        fs::write(d.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        fs::write(d.join("memory.events"), "oom 1\noom_kill 2\n").unwrap();
        fs::write(d.join("memory.peak"), "4096\n").unwrap();
        let st = cg.stats().unwrap();
        assert_eq!(st.cpu_usage_ns, Some(7000));
        assert_eq!(st.oom_kills, 2);
        assert_eq!(st.memory_peak_bytes, Some(4096));
    }

    #[test]
    fn shares_map_to_weight_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
