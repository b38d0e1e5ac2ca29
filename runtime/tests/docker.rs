//! Docker drives cvbench-runtime: a private dockerd of this test (its own data root, exec
//! root and socket, no iptables, no bridge) started with `--add-runtime cvbench=<binary>`
//! runs `docker run --runtime cvbench --rm --network none` with Docker's default seccomp
//! profile and capabilities, then `docker exec`, `docker stop` and `docker rm`. Skipped
//! loudly where docker.io is absent. The daemon is stopped by pid and its dirs removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cvbench-runtime");

struct Daemon {
    proc: Child,
    base: PathBuf,
    exec_root: PathBuf,
    sock: String,
}

impl Daemon {
    fn start() -> Daemon {
        let pid = std::process::id();
        let base = PathBuf::from(format!("/var/tmp/cvbench-test-docker-{pid}"));
        let exec_root = PathBuf::from(format!("/run/cvbt-{pid}"));
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

fn busybox_image(d: &Daemon) {
    let rootfs = d.base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
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
    if !common::root("docker_runs_execs_stops_and_removes_with_cvbench_runtime") {
        return;
    }
    if !Path::new("/usr/bin/dockerd").exists() && Command::new("dockerd").arg("--version").output().is_err() {
        eprintln!("SKIPPED: docker_runs_execs_stops_and_removes_with_cvbench_runtime needs docker.io");
        return;
    }
    let d = Daemon::start();
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
        "echo hello; grep -E '^(Seccomp|CapBnd|NoNewPrivs):' /proc/self/status",
    ]);
    assert!(out.contains("hello"), "{out}");
    // Docker's defaults: its seccomp profile (filter mode 2) and 14 default capabilities.
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");

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
