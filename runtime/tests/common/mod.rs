//! Shared helpers for the runtime's integration tests: root check, a private store and run
//! root per test, a busybox test image, output capture and host resource counts.
#![allow(dead_code)]

use cvbench_runtime::config::{ContainerConfig, RootfsSource};
use cvbench_runtime::container::{self, RunResult, Stdio};
use cvbench_runtime::image::{build, Store};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const BUSYBOX_IMAGE: &str = "test/busybox:latest";

/// True when running as root; otherwise a loud, counted skip (a failure inside the test host).
pub fn root(test: &str) -> bool {
    cvbench_testkit::require_root(test)
}

/// The workload binary (env CVBENCH_WORKLOAD or the repo's release build).
pub fn workload() -> PathBuf {
    let p = std::env::var_os("CVBENCH_WORKLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../workload/target/release/cvbench-workload"));
    assert!(
        p.is_file(),
        "workload binary {} missing: build it with `cargo build --release --manifest-path workload/Cargo.toml --target-dir workload/target` or set CVBENCH_WORKLOAD",
        p.display()
    );
    p
}

/// Where test run roots go: the parent of the runtime's default run root (a tmpfs).
pub fn run_parent() -> PathBuf {
    cvbench_runtime::default_run_root().parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/run"))
}

/// A private store and run root, removed on drop.
pub struct Env {
    pub state: tempfile::TempDir,
    pub run_root: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            state: tempfile::Builder::new().prefix("cvbench-test-state-").tempdir_in("/var/tmp").unwrap(),
            run_root: tempfile::Builder::new().prefix("cvbench-test-run-").tempdir_in("/run").unwrap(),
        }
    }

    pub fn store(&self) -> Store {
        Store::open(self.state.path()).unwrap()
    }

    /// A config for `image` running `args`, pointed at this env.
    pub fn config(&self, image: &str, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            rootfs: RootfsSource::Image(image.into()),
            args: args.iter().map(|s| s.to_string()).collect(),
            hostname: "cvb-test".into(),
            state_dir: self.state.path().to_path_buf(),
            run_root: self.run_root.path().to_path_buf(),
            ..Default::default()
        }
    }

    /// The default workload image in this env's store.
    pub fn workload_image(&self) -> &'static str {
        build::ensure_default_image(&self.store(), &workload()).unwrap();
        cvbench_runtime::image::DEFAULT_IMAGE
    }

    /// An image holding busybox-static (for shell commands inside tests only).
    pub fn busybox_image(&self) -> &'static str {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static at /bin/busybox");
        for applet in [
            "sh", "sleep", "cat", "ls", "hostname", "echo", "unshare", "true", "wc", "grep", "id", "stat", "ip",
            "head", "touch", "rm",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        fs::create_dir(dir.path().join("etc")).unwrap();
        build::build(&self.store(), dir.path(), BUSYBOX_IMAGE).unwrap();
        BUSYBOX_IMAGE
    }
}

/// Run a config to completion, capturing stdout and stderr.
pub fn run_capture(cfg: &ContainerConfig) -> (Result<RunResult, cvbench_runtime::Error>, String, String) {
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let stdio =
        Stdio { stdin: Some(fs::File::open("/dev/null").unwrap().into()), stdout: Some(out_w), stderr: Some(err_w) };
    let reader = |fd: std::os::fd::OwnedFd| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = fs::File::from(fd).read_to_string(&mut s);
            s
        })
    };
    let (to, te) = (reader(out_r), reader(err_r));
    let r = container::run(cfg, stdio, Some(std::time::Duration::from_secs(60)));
    (r, to.join().unwrap(), te.join().unwrap())
}

/// Tests comparing host-wide counts take this lock so they do not see each other's objects.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Host-side objects a container could leak: mounts naming cvbench or overlay in this mount
/// namespace, cvbench cgroups (ours or of dead owners), veth links named `cvb*` in the root
/// namespace, cvbench network namespaces, container state dirs.
#[derive(Debug, PartialEq, Eq)]
pub struct Counts {
    pub mounts: usize,
    pub cgroups: usize,
    pub links: usize,
    pub netns: usize,
    pub run_dirs: usize,
}

/// Ours or a leak: a `cvbench-<pid>-` name whose owner is this process or no longer alive.
/// Names owned by other live processes (other tests, a benchmark running meanwhile) are
/// not counted, so parallel users of the machine do not disturb the counts.
fn ours_or_dead(name: &str) -> bool {
    match cvbench_runtime::cleanup::owner_of(name) {
        Some(pid) => pid == std::process::id() as i32 || !cvbench_runtime::container::alive(pid, 0),
        None => false,
    }
}

fn count_cvbench_dirs(dir: &Path, depth: u32) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if ours_or_dead(&e.file_name().to_string_lossy()) {
            n += 1;
        }
        if depth > 0 {
            n += count_cvbench_dirs(&e.path(), depth - 1);
        }
    }
    n
}

pub fn counts(run_root: &Path) -> Counts {
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains(": cvb")).count())
        .unwrap_or(0);
    Counts {
        mounts: fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains("cvbench") || l.contains("overlay"))
            .count(),
        cgroups: count_cvbench_dirs(Path::new("/sys/fs/cgroup"), 3),
        links,
        netns: fs::read_dir("/run/netns")
            .map(|r| r.flatten().filter(|e| ours_or_dead(&e.file_name().to_string_lossy())).count())
            .unwrap_or(0),
        run_dirs: fs::read_dir(run_root.join("containers")).map(|r| r.count()).unwrap_or(0),
    }
}

/// sha256 digest string of bytes.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(bytes);
    format!("sha256:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// One tar entry for hand-made layers.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A raw path written without tar's own checks (for escape tests).
    RawFile(&'a str, &'a [u8]),
}

/// Build an uncompressed layer tarball.
pub fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match e {
            Entry::File(p, data, mode) => {
                h.set_path(p).unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            Entry::Dir(p) => {
                h.set_path(p).unwrap();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Entry::Symlink(p, target) | Entry::Hardlink(p, target) => {
                h.set_path(p).unwrap();
                h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_link_name(target).unwrap();
                h.set_size(0);
                h.set_mode(0o777);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            Entry::RawFile(p, data) => {
                let mut h = tar::Header::new_old();
                h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

/// Write an OCI image layout into `dir` with the given layers (raw bytes, maybe gzipped,
/// with their uncompressed form for diff_ids). Returns the manifest digest.
pub fn write_oci_layout(dir: &Path, name: &str, layers: &[(Vec<u8>, Vec<u8>)]) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = digest(b);
        fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut descs = Vec::new();
    let mut diffs = Vec::new();
    for (blob, raw) in layers {
        let gz = blob.starts_with(&[0x1f, 0x8b]);
        descs.push(serde_json::json!({
            "mediaType": if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
            "digest": put(blob), "size": blob.len()}));
        diffs.push(digest(raw));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "true"]},
        "rootfs": {"type": "layers", "diff_ids": diffs}}))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs}))
    .unwrap();
    let md = put(&manifest);
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": name}}]}))
        .unwrap(),
    )
    .unwrap();
    md
}

/// Tar up a directory (for tarball imports).
pub fn tar_dir(dir: &Path, out: &Path) {
    let f = fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap();
}

/// A layer holding busybox at /bin/busybox plus `sh` and `ls` links.
pub fn busybox_layer() -> Vec<u8> {
    let bb = fs::read("/bin/busybox").unwrap();
    layer_tar(&[
        Entry::Dir("bin"),
        Entry::File("bin/busybox", &bb, 0o755),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/ls", "busybox"),
        Entry::Symlink("bin/cat", "busybox"),
    ])
}

/// Files in the store's blob and layer dirs and names in its index.
pub fn store_contents(state: &Path) -> (usize, usize, usize) {
    let n = |p: PathBuf| fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
    let names = Store::open(state).unwrap().list().unwrap().len();
    (n(state.join("oci/blobs/sha256")), n(state.join("layers")), names)
}
