//! Docker drives cvbench-runtime: a private dockerd of this test (its own data root, exec
//! root and socket, no iptables, no bridge) started with `--add-runtime cvbench=<binary>`
//! runs `docker run --runtime cvbench --rm --network none` with Docker's default seccomp
//! profile and capabilities, then `docker exec`, `docker stop` and `docker rm`; and
//! `docker run --read-only --tmpfs /run`. Docker (20.10 here; moby master of August 2026
//! too) sends `--tmpfs` as `noexec,nosuid,nodev,rprivate` and no `tmpcopyup` (its tmpfs
//! option check rejects `--tmpfs /run:tmpcopyup`), so /run starts empty, as under runc.
//! Skipped loudly where docker.io is absent. Each daemon is stopped by pid and its dirs removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cvbench-runtime");

struct Daemon {
    proc: Child,
    base: PathBuf,
    exec_root: PathBuf,
    sock: String,
}

impl Daemon {
    /// A daemon of `test`, or `None` after a loud skip when not root or docker.io is absent.
    fn for_test(test: &str) -> Option<Daemon> {
        if !common::root(test) {
            return None;
        }
        if !Path::new("/usr/bin/dockerd").exists() && Command::new("dockerd").arg("--version").output().is_err() {
            cvbench_testkit::skip(cvbench_testkit::Need::Other, &format!("{test} needs docker.io"));
            return None;
        }
        Some(Daemon::start())
    }

    fn start() -> Daemon {
        // Tests of one binary share a pid: a sequence number keeps their daemons apart.
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let base = PathBuf::from(format!("/var/tmp/cvbench-test-docker-{id}"));
        let exec_root = PathBuf::from(format!("/run/cvbt-{id}"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&exec_root).unwrap();
        let sock = format!("unix://{}/docker.sock", exec_root.display());
        let log = std::fs::File::create(base.join("dockerd.log")).unwrap();
        let proc = Command::new("dockerd")
            .arg("--data-root")
            .arg(base.join("data"))
            .arg("--exec-root")
            .arg(exec_root.join("x"))
            .arg("-H")
            .arg(&sock)
            .arg("--pidfile")
            .arg(exec_root.join("dockerd.pid"))
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none", "--log-level=error"])
            .arg("--add-runtime")
            .arg(format!("cvbench={BIN}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon { proc, base, exec_root, sock };
        let t = Instant::now();
        while !d.cli(&["version"]).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "dockerd did not answer: {:?}",
                std::fs::read_to_string(d.base.join("dockerd.log"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.sock)
            .env("DOCKER_CONFIG", self.base.join("client"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // dockerd stops its containers and containerd on SIGTERM.
        let pid = nix::unistd::Pid::from_raw(self.proc.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while self.proc.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
        let _ = std::fs::remove_dir_all(&self.exec_root);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A file the test image holds under /run, so a test can tell whether the tmpfs Docker mounts
/// there with `--tmpfs /run` started empty or with a copy of the image's /run.
const RUN_SEED: &str = "run/cvbench/seed";

fn busybox_image(d: &Daemon) {
    let rootfs = d.base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join(RUN_SEED).parent().unwrap()).unwrap();
    std::fs::write(rootfs.join(RUN_SEED), "from-the-image\n").unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for c in ["sh", "sleep", "cat", "echo", "id"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
    }
    let tar = d.base.join("img.tar");
    assert!(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    d.ok(&["import", tar.to_str().unwrap(), "cvbench-test-bb:latest"]);
}

#[test]
fn docker_runs_execs_stops_and_removes_with_cvbench_runtime() {
    let Some(d) = Daemon::for_test("docker_runs_execs_stops_and_removes_with_cvbench_runtime") else {
        return;
    };
    busybox_image(&d);

    let out = d.ok(&[
        "run",
        "--runtime",
        "cvbench",
        "--rm",
        "--network",
        "none",
        "cvbench-test-bb:latest",
        "/bin/sh",
        "-c",
        "echo hello; grep -E '^(Seccomp|CapBnd|NoNewPrivs):' /proc/self/status; \
         echo \"apparmor: $(cat /proc/self/attr/current 2>/dev/null)\"",
    ]);
    assert!(out.contains("hello"), "{out}");
    // Docker's defaults: its seccomp profile (filter mode 2) and 14 default capabilities.
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    // Where AppArmor is on, dockerd loads its docker-default profile and passes it in the
    // bundle; the runtime must have applied it at the process's exec.
    let apparmor_on = std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.split(',').any(|m| m.trim() == "apparmor"))
        && std::process::Command::new("apparmor_parser").arg("--version").output().is_ok();
    if apparmor_on {
        assert!(out.contains("apparmor: docker-default (enforce)"), "{out}");
    } else {
        eprintln!("(AppArmor is off here: docker-default is not applied, which the test host checks)");
    }

    let name = format!("cvbench-test-{}", std::process::id());
    d.ok(&[
        "run",
        "-d",
        "--runtime",
        "cvbench",
        "--network",
        "none",
        "--name",
        &name,
        "cvbench-test-bb:latest",
        "/bin/sleep",
        "60",
    ]);
    let exec = d.ok(&["exec", &name, "/bin/sh", "-c", "echo exec-ok; id -u; grep Seccomp: /proc/self/status"]);
    assert!(exec.contains("exec-ok") && exec.contains("Seccomp:\t2"), "{exec}");
    d.ok(&["stop", "-t", "1", &name]);
    d.ok(&["rm", &name]);

    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
    let state = d.exec_root.join("x/runtime-runc/moby/containers");
    let left = std::fs::read_dir(&state).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left, 0, "runtime state left in {}", state.display());
}

#[test]
fn docker_read_only_with_tmpfs_run_gives_an_empty_writable_run_on_a_read_only_rootfs() {
    let Some(d) = Daemon::for_test("docker_read_only_with_tmpfs_run_gives_an_empty_writable_run_on_a_read_only_rootfs")
    else {
        return;
    };
    busybox_image(&d);

    let o = d.cli(&[
        "run",
        "--runtime",
        "cvbench",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/run",
        "cvbench-test-bb:latest",
        "/bin/sh",
        "-c",
        &format!(
            "cat /proc/self/mountinfo; \
             echo new > /run/new && echo \"run-write=$(cat /run/new)\"; \
             for f in /bin/busybox /{RUN_SEED}; do if [ -e $f ]; then echo \"$f=present\"; else echo \"$f=absent\"; fi; done; \
             for p in /x /etc/x; do if (echo x > $p) 2>&1; then echo \"$p=written\"; else echo \"$p=refused\"; fi; done"
        ),
    ]);

    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "docker run: {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status);
    // mountinfo: "id parent maj:min root mount-point mount-options [optional...] - fstype source super".
    let run = out.lines().find_map(|l| {
        let (mount, fs) = l.split_once(" - ")?;
        let f: Vec<&str> = mount.split(' ').collect();
        (f.get(4) == Some(&"/run")).then(|| (f[5].to_string(), fs.split(' ').next().unwrap_or("").to_string()))
    });
    let (opts, fstype) = run.unwrap_or_else(|| panic!("no /run mount in mountinfo:\n{out}"));
    assert_eq!(fstype, "tmpfs", "/run:\n{out}");
    let opts: Vec<&str> = opts.split(',').collect();
    for o in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&o), "/run mounted {opts:?}, Docker asked for {o}");
    }
    assert!(out.contains("run-write=new"), "a write under /run:\n{out}");
    // Docker sends no tmpcopyup: the image's /run is covered, not copied (runc shows the same).
    assert!(out.contains("/bin/busybox=present"), "the shell's existence test:\n{out}");
    assert!(
        out.contains(&format!("/{RUN_SEED}=absent")),
        "/run shows the image's /{RUN_SEED} without tmpcopyup:\n{out}"
    );
    for p in ["/x", "/etc/x"] {
        assert!(out.contains(&format!("{p}=refused")), "{p} was writable on a --read-only rootfs:\n{out}");
        assert!(
            out.lines().any(|l| l.contains(&format!("{p}: Read-only file system"))),
            "{p} not refused as read-only:\n{out}"
        );
    }
}
