//! cgroup v1: one directory per controller hierarchy, each nested under this process's own
//! cgroup in that hierarchy (on this machine the memory controller sits under a parent cgroup).

use super::{read_file, read_procs, read_u64, remove_dir, write_file, write_one_of, CgroupManager, Error, Stats};
use crate::config::Resources;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Controllers every container gets: accounting, OOM reporting, pids limit and freezing.
const ALWAYS: [&str; 4] = ["memory", "cpuacct", "pids", "freezer"];

/// A container's set of v1 cgroups.
pub struct V1 {
    root: PathBuf,
    own: BTreeMap<String, String>,
    name: String,
    /// controller → directory, filled by `create`.
    dirs: BTreeMap<&'static str, PathBuf>,
    /// Directories to attach to, deduplicated (cpu and cpuacct may share a hierarchy).
    attach_dirs: Vec<PathBuf>,
    /// Ancestors of those that `create` made (a cgroupsPath like `/a/b/c`), outermost first.
    created_parents: Vec<PathBuf>,
    /// The memory hierarchy's root, joined (never made or removed) by a container run
    /// without the memory controller: the root memory cgroup is not charged.
    uncharged_memory: Option<PathBuf>,
}

impl V1 {
    /// `root` holds one mount per controller (`root/memory`, ...); `own` is this process's
    /// `/proc/self/cgroup`; `name` the leaf directory to create.
    pub fn new(root: &Path, own: &BTreeMap<String, String>, name: &str) -> V1 {
        V1 {
            root: root.to_path_buf(),
            own: own.clone(),
            name: name.to_string(),
            dirs: BTreeMap::new(),
            attach_dirs: Vec::new(),
            created_parents: Vec::new(),
            uncharged_memory: None,
        }
    }

    /// Make `dir` and each missing ancestor, one level at a time. In the cpuset hierarchy each
    /// new level first gets the cpus and mems of its nearest ancestor that has them: a fresh v1
    /// cpuset is empty, takes no tasks, and refuses a child's cpus (as runc and crun do).
    fn make_dirs(&mut self, dir: &Path, cpuset: bool) -> Result<(), Error> {
        super::create_levels(dir, &mut self.created_parents, |level| match cpuset {
            true => inherit_cpuset(level),
            false => Ok(()),
        })
    }

    /// The directory this container gets in `controller`'s hierarchy.
    pub fn dir_for(&self, controller: &str) -> PathBuf {
        let parent = self.own.get(controller).map(|p| p.trim_start_matches('/')).unwrap_or("");
        self.root.join(controller).join(parent).join(&self.name)
    }

    fn dir(&self, controller: &str) -> Option<&PathBuf> {
        self.dirs.get(controller)
    }

    /// Controllers `res` needs, each with the OCI field that asks for it (None: always made).
    fn wanted(res: &Resources) -> Vec<(&'static str, Option<&'static str>)> {
        let mut c: Vec<_> =
            ALWAYS.iter().filter(|c| !(res.no_memory_controller && **c == "memory")).map(|c| (*c, None)).collect();
        if res.cpu_quota_us.is_some() || res.cpu_shares.is_some() || res.cpu_period_us.is_some() {
            c.push(("cpu", Some("linux.resources.cpu")));
        }
        if res.cpuset_cpus.is_some() || res.cpuset_mems.is_some() {
            c.push(("cpuset", Some("linux.resources.cpu.cpus")));
        }
        if !res.devices.is_empty() {
            c.push(("devices", Some("linux.resources.devices")));
        }
        if !res.block_io.is_empty() {
            c.push(("blkio", Some("linux.resources.blockIO")));
        }
        if !res.hugepage_limits.is_empty() {
            c.push(("hugetlb", Some("linux.resources.hugepageLimits")));
        }
        if res.net_class_id.is_some() {
            c.push(("net_cls", Some("linux.resources.network.classID")));
        }
        if !res.net_priorities.is_empty() {
            c.push(("net_prio", Some("linux.resources.network.priorities")));
        }
        c
    }

    /// blkio: weights (CFQ's files, else BFQ's) and throttles.
    fn apply_blkio(dir: &Path, res: &Resources) -> Result<(), Error> {
        let b = &res.block_io;
        if let Some(w) = b.weight {
            write_one_of(dir, &["blkio.weight", "blkio.bfq.weight"], &w.to_string(), "linux.resources.blockIO.weight")?;
        }
        if let Some(w) = b.leaf_weight {
            write_one_of(dir, &["blkio.leaf_weight"], &w.to_string(), "linux.resources.blockIO.leafWeight")?;
        }
        for d in &b.weight_devices {
            if let Some(w) = d.weight {
                let line = format!("{}:{} {w}", d.major, d.minor);
                let files = ["blkio.weight_device", "blkio.bfq.weight_device"];
                write_one_of(dir, &files, &line, "linux.resources.blockIO.weightDevice[].weight")?;
            }
            if let Some(w) = d.leaf_weight {
                let line = format!("{}:{} {w}", d.major, d.minor);
                let field = "linux.resources.blockIO.weightDevice[].leafWeight";
                write_one_of(dir, &["blkio.leaf_weight_device"], &line, field)?;
            }
        }
        for t in b.throttles() {
            for d in t.devices {
                write_one_of(dir, &[t.v1_file], &format!("{}:{} {}", d.major, d.minor, d.rate), t.field)?;
            }
        }
        Ok(())
    }

    /// The memory settings besides the limits: soft limit, swappiness, the OOM-killer switch.
    fn apply_memory_extras(dir: &Path, res: &Resources) -> Result<(), Error> {
        if let Some(r) = res.memory_reservation_bytes {
            write_file(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
        }
        if let Some(s) = res.memory_swappiness {
            write_file(&dir.join("memory.swappiness"), &s.to_string())?;
        }
        if res.disable_oom_killer {
            write_file(&dir.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    fn apply(&self, res: &Resources) -> Result<(), Error> {
        if let Some(dir) = self.dir("devices") {
            for rule in &res.devices {
                let file = if rule.allow { "devices.allow" } else { "devices.deny" };
                write_file(&dir.join(file), &rule.v1_line())?;
            }
        }
        if let Some(dir) = self.dir("memory") {
            Self::apply_memory_extras(dir, res)?;
        }
        if let (Some(dir), Some(mem)) = (self.dir("memory"), res.memory_bytes) {
            write_file(&dir.join("memory.limit_in_bytes"), &mem.to_string())?;
            // Without an explicit swap limit, forbid swap so the memory limit means an OOM kill
            // rather than silent swapping (only possible where swap accounting is on).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            let swap = res.memory_swap_bytes.unwrap_or(mem);
            if memsw.exists() {
                write_file(&memsw, &swap.to_string())?;
            } else if res.memory_swap_bytes.is_some() {
                return Err(Error::ControllerMissing {
                    controller: "memory.memsw (swap accounting)".into(),
                    root: dir.clone(),
                });
            }
        }
        if let Some(dir) = self.dir("cpu") {
            if let Some(p) = res.cpu_period_us {
                write_file(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
            }
            if let Some(q) = res.cpu_quota_us {
                write_file(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
            if let Some(s) = res.cpu_shares {
                write_file(&dir.join("cpu.shares"), &s.to_string())?;
            }
        }
        if let (Some(dir), Some(max)) = (self.dir("pids"), res.pids_max) {
            write_file(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(dir) = self.dir("blkio") {
            Self::apply_blkio(dir, res)?;
        }
        if let Some(dir) = self.dir("hugetlb") {
            for l in &res.hugepage_limits {
                let file = format!("hugetlb.{}.limit_in_bytes", l.page_size);
                write_one_of(dir, &[&file], &l.limit.to_string(), "linux.resources.hugepageLimits")?;
            }
        }
        if let (Some(dir), Some(id)) = (self.dir("net_cls"), res.net_class_id) {
            write_file(&dir.join("net_cls.classid"), &id.to_string())?;
        }
        if let Some(dir) = self.dir("net_prio") {
            for p in &res.net_priorities {
                write_file(&dir.join("net_prio.ifpriomap"), &format!("{} {}", p.interface, p.priority))?;
            }
        }
        if let Some(dir) = self.dir("cpuset") {
            // Set on top of what `make_dirs` inherited.
            for (file, want) in [("cpuset.cpus", &res.cpuset_cpus), ("cpuset.mems", &res.cpuset_mems)] {
                if let Some(v) = want {
                    write_file(&dir.join(file), v)?;
                }
            }
        }
        Ok(())
    }
}

/// Give an empty cpuset `dir` the `cpuset.cpus` and `cpuset.mems` of its nearest ancestor
/// that has them.
fn inherit_cpuset(dir: &Path) -> Result<(), Error> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        // A missing file reads as empty (plain directories stand in for cgroupfs in unit tests).
        let own = fs::read_to_string(dir.join(file)).unwrap_or_default();
        if !own.trim().is_empty() {
            continue;
        }
        let mut from = None;
        for a in dir.ancestors().skip(1) {
            let path = a.join(file);
            if !path.exists() {
                break; // above the hierarchy's root
            }
            let v = read_file(&path)?;
            if !v.trim().is_empty() {
                from = Some(v.trim().to_string());
                break;
            }
        }
        match from {
            Some(v) => write_file(&dir.join(file), &v)?,
            None => {
                return Err(Error::Read {
                    path: dir.join(file),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no ancestor cpuset has a value to inherit",
                    ),
                })
            }
        }
    }
    Ok(())
}

impl CgroupManager for V1 {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn create(&mut self, res: &Resources) -> Result<(), Error> {
        super::validate(res)?;
        let mut seen: Vec<PathBuf> = Vec::new();
        let wanted = Self::wanted(res);
        // Every hierarchy checked before any directory is made.
        for (ctrl, field) in &wanted {
            if !self.root.join(ctrl).exists() {
                return Err(match field {
                    Some(field) => Error::ControllerMissingFor {
                        field,
                        needs: format!("the v1 `{ctrl}` controller"),
                        root: self.root.clone(),
                    },
                    None => Error::ControllerMissing { controller: ctrl.to_string(), root: self.root.clone() },
                });
            }
        }
        for (ctrl, _) in wanted {
            let hier = self.root.join(ctrl);
            let dir = self.dir_for(ctrl);
            // cpu and cpuacct are often co-mounted (`cpu,cpuacct` with symlinks).
            let canon = fs::canonicalize(&hier).unwrap_or(hier.clone());
            let first = !seen.contains(&canon);
            if first {
                // A cgroupsPath may name a parent that does not exist yet (`/docker/<id>`).
                self.make_dirs(&dir, ctrl == "cpuset")?;
                seen.push(canon);
                self.attach_dirs.push(dir.clone());
            }
            self.dirs.insert(ctrl, dir);
        }
        if res.no_memory_controller {
            let root = self.root.join("memory");
            if !root.exists() {
                return Err(Error::ControllerMissing { controller: "memory".into(), root: self.root.clone() });
            }
            self.uncharged_memory = Some(root);
        }
        self.apply(res)
    }

    fn attach(&self, pid: i32) -> Result<(), Error> {
        let value = pid.to_string();
        for dir in self.attach_dirs.iter().chain(&self.uncharged_memory) {
            fs::write(dir.join("cgroup.procs"), &value).map_err(|source| Error::AttachCgroup {
                pid,
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn self_attach_files(&self) -> Vec<PathBuf> {
        self.attach_dirs.iter().chain(&self.uncharged_memory).map(|d| d.join("tasks")).collect()
    }

    fn freeze(&self) -> Result<(), Error> {
        let dir = self
            .dir("freezer")
            .ok_or_else(|| Error::ControllerMissing { controller: "freezer".into(), root: self.root.clone() })?;
        let state = dir.join("freezer.state");
        write_file(&state, "FROZEN")?;
        for _ in 0..1000 {
            if read_file(&state)?.trim() == "FROZEN" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(Error::Write {
            path: state,
            value: "FROZEN".into(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "never reached FROZEN"),
        })
    }

    fn thaw(&self) -> Result<(), Error> {
        match self.dir("freezer") {
            Some(dir) => write_file(&dir.join("freezer.state"), "THAWED"),
            None => Ok(()),
        }
    }

    fn stats(&self) -> Result<Stats, Error> {
        let mut st = Stats::default();
        if let Some(dir) = self.dir("memory") {
            st.memory_usage_bytes = read_u64(&dir.join("memory.usage_in_bytes")).ok();
            st.memory_peak_bytes = read_u64(&dir.join("memory.max_usage_in_bytes")).ok();
            if let Ok(text) = read_file(&dir.join("memory.oom_control")) {
                st.oom_kills = super::keyed(&text, "oom_kill").unwrap_or(0);
            }
        }
        if let Some(dir) = self.dir("cpuacct") {
            st.cpu_usage_ns = read_u64(&dir.join("cpuacct.usage")).ok();
        }
        if let Some(dir) = self.dir("pids") {
            st.pids_current = read_u64(&dir.join("pids.current")).ok();
        }
        Ok(st)
    }

    fn procs(&self) -> Result<Vec<i32>, Error> {
        match self.attach_dirs.first() {
            Some(dir) => read_procs(&dir.join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.attach_dirs.clone()
    }

    fn created_parents(&self) -> Vec<PathBuf> {
        self.created_parents.clone()
    }

    fn remove(&mut self) -> Result<(), Error> {
        let mut first_err = None;
        for dir in self.attach_dirs.drain(..) {
            if let Err(e) = remove_dir(&dir) {
                first_err.get_or_insert(e);
            }
        }
        if first_err.is_none() {
            super::remove_parents(&self.created_parents);
            self.created_parents.clear();
        }
        self.dirs.clear();
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v1 tree in a temp dir: plain directories and files stand in for cgroupfs.
    fn fake_root() -> (tempfile::TempDir, BTreeMap<String, String>) {
        let tmp = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "cpuacct", "pids", "freezer", "cpuset"] {
            fs::create_dir_all(tmp.path().join(c)).unwrap();
        }
        fs::create_dir_all(tmp.path().join("memory/outer")).unwrap();
        fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(tmp.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let own = super::super::parse_proc_cgroup("4:memory:/outer\n1:cpu:/\n2:pids:/\n");
        (tmp, own)
    }

    #[test]
    fn create_nests_memory_under_own_cgroup() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "cvbench-1-0");
        cg.create(&Resources::default()).unwrap();
        assert!(tmp.path().join("memory/outer/cvbench-1-0").is_dir());
        assert!(tmp.path().join("pids/cvbench-1-0").is_dir());
        assert!(!tmp.path().join("cpu/cvbench-1-0").exists());
    }

    #[test]
    fn create_writes_limits() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        let res = Resources {
            memory_bytes: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_shares: Some(512),
            pids_max: Some(32),
            cpuset_mems: Some("0".into()),
            ..Default::default()
        };
        cg.create(&res).unwrap();
        let read = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(read("memory/outer/c/memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu/c/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/c/cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu/c/cpu.shares"), "512");
        assert_eq!(read("pids/c/pids.max"), "32");
        assert_eq!(read("cpuset/c/cpuset.cpus"), "0-1");
    }

    #[test]
    fn create_writes_soft_limit_swappiness_and_the_oom_switch() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        let res = Resources {
            memory_reservation_bytes: Some(32 << 20),
            memory_swappiness: Some(17),
            disable_oom_killer: true,
            ..Default::default()
        };

        cg.create(&res).unwrap();

        let read = |p: &str| fs::read_to_string(tmp.path().join("memory/outer/c").join(p)).unwrap();
        assert_eq!(read("memory.soft_limit_in_bytes"), "33554432");
        assert_eq!(read("memory.swappiness"), "17");
        assert_eq!(read("memory.oom_control"), "1");
    }

    #[test]
    fn swappiness_above_100_is_refused_by_field() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        let res = Resources { memory_swappiness: Some(101), ..Default::default() };

        let err = cg.create(&res).unwrap_err();

        assert!(err.to_string().contains("linux.resources.memory.swappiness"), "{err}");
        assert!(!tmp.path().join("memory/outer/c").exists());
    }

    #[test]
    fn without_the_memory_controller_the_container_joins_the_uncharged_root() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        cg.create(&Resources { no_memory_controller: true, ..Default::default() }).unwrap();
        assert!(!tmp.path().join("memory/outer/c").exists());
        cg.attach(42).unwrap();
        assert_eq!(fs::read_to_string(tmp.path().join("memory/cgroup.procs")).unwrap(), "42");
        assert_eq!(fs::read_to_string(tmp.path().join("pids/c/cgroup.procs")).unwrap(), "42");
        assert!(cg.self_attach_files().contains(&tmp.path().join("memory/tasks")));
        fs::remove_file(tmp.path().join("pids/c/cgroup.procs")).unwrap();
        for d in ["cpuacct/c", "freezer/c"] {
            fs::remove_file(tmp.path().join(d).join("cgroup.procs")).unwrap();
        }
        cg.remove().unwrap();
        assert!(tmp.path().join("memory").is_dir(), "the hierarchy's root is never removed");
    }

    #[test]
    fn a_memory_limit_without_the_memory_controller_is_refused() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        let res = Resources { no_memory_controller: true, memory_bytes: Some(64 << 20), ..Default::default() };
        assert!(matches!(cg.create(&res), Err(Error::BadValue { .. })));
    }

    #[test]
    fn attach_writes_pid_to_every_hierarchy() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        cg.create(&Resources::default()).unwrap();
        cg.attach(42).unwrap();
        for d in ["memory/outer/c", "cpuacct/c", "pids/c", "freezer/c"] {
            assert_eq!(fs::read_to_string(tmp.path().join(d).join("cgroup.procs")).unwrap(), "42");
        }
    }

    #[test]
    fn stats_read_usage_peak_and_oom_kills() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        cg.create(&Resources::default()).unwrap();
        let m = tmp.path().join("memory/outer/c");
        fs::write(m.join("memory.usage_in_bytes"), "100\n").unwrap();
        fs::write(m.join("memory.max_usage_in_bytes"), "200\n").unwrap();
        fs::write(m.join("memory.oom_control"), "oom_kill_disable 0\noom_kill 1\n").unwrap();
        fs::write(tmp.path().join("cpuacct/c/cpuacct.usage"), "5000\n").unwrap();
        let st = cg.stats().unwrap();
        assert_eq!(st.memory_usage_bytes, Some(100));
        assert_eq!(st.memory_peak_bytes, Some(200));
        assert_eq!(st.cpu_usage_ns, Some(5000));
        assert_eq!(st.oom_kills, 1);
    }

    #[test]
    fn nested_path_levels_inherit_cpuset_and_are_all_removed() {
        let (tmp, own) = fake_root();
        fs::create_dir_all(tmp.path().join("pids/shared")).unwrap();
        let mut cg = V1::new(tmp.path(), &own, "shared/a/b");
        let res = Resources { cpuset_cpus: Some("0".into()), ..Default::default() };

        cg.create(&res).unwrap();

        let read = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(read("cpuset/shared/cpuset.cpus"), "0-1");
        assert_eq!(read("cpuset/shared/a/cpuset.mems"), "0");
        assert_eq!(read("cpuset/shared/a/b/cpuset.cpus"), "0");
        assert_eq!(read("cpuset/shared/a/b/cpuset.mems"), "0");
        assert!(cg.created_parents().contains(&tmp.path().join("cpuset/shared/a")));
        assert!(!cg.created_parents().contains(&tmp.path().join("pids/shared")), "it existed before");
        // Plain directories stand in for cgroupfs here: empty the made ones as the kernel would.
        for p in cg.paths().into_iter().chain(cg.created_parents()) {
            for f in fs::read_dir(&p).unwrap().flatten().filter(|e| e.path().is_file()) {
                fs::remove_file(f.path()).unwrap();
            }
        }
        cg.remove().unwrap();
        assert!(!tmp.path().join("cpuset/shared").exists());
        assert!(!tmp.path().join("memory/outer/shared").exists());
        assert!(!tmp.path().join("pids/shared/a").exists());
        assert!(tmp.path().join("pids/shared").is_dir(), "not ours: kept");
    }

    fn throttled(rate: u64) -> crate::config::BlockIo {
        crate::config::BlockIo {
            throttle_read_bps: vec![crate::config::ThrottleDevice { major: 254, minor: 0, rate }],
            throttle_write_iops: vec![crate::config::ThrottleDevice { major: 8, minor: 16, rate: 7 }],
            ..Default::default()
        }
    }

    #[test]
    fn blkio_throttles_go_to_their_files_and_a_weight_without_its_file_names_the_field() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["blkio.throttle.read_bps_device", "blkio.throttle.write_iops_device", "blkio.bfq.weight"] {
            fs::write(tmp.path().join(f), "").unwrap();
        }
        let mut res = Resources { block_io: throttled(1 << 20), ..Default::default() };
        res.block_io.weight = Some(300);

        V1::apply_blkio(tmp.path(), &res).unwrap();
        res.block_io.leaf_weight = Some(300);
        let err = V1::apply_blkio(tmp.path(), &res).unwrap_err();

        let read = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(read("blkio.throttle.read_bps_device"), "254:0 1048576");
        assert_eq!(read("blkio.throttle.write_iops_device"), "8:16 7");
        assert_eq!(read("blkio.bfq.weight"), "300", "BFQ's file when CFQ's is absent");
        assert!(err.to_string().contains("`linux.resources.blockIO.leafWeight` needs blkio.leaf_weight"), "{err}");
    }

    #[test]
    fn a_missing_controller_names_the_field_and_nothing_is_made() {
        let (tmp, own) = fake_root();
        let mut cg = V1::new(tmp.path(), &own, "c");
        let res = Resources {
            hugepage_limits: vec![crate::config::HugepageLimit { page_size: "2MB".into(), limit: 1 << 21 }],
            ..Default::default()
        };

        let err = cg.create(&res).unwrap_err();

        assert!(
            err.to_string().contains("`linux.resources.hugepageLimits` needs the v1 `hugetlb` controller"),
            "{err}"
        );
        assert!(!tmp.path().join("memory/outer/c").exists() && !tmp.path().join("pids/c").exists());
    }

    #[test]
    fn create_fails_without_memory_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cg = V1::new(tmp.path(), &BTreeMap::new(), "c");
        let err = cg.create(&Resources::default()).unwrap_err();
        assert!(matches!(err, Error::ControllerMissing { .. }));
    }
}
