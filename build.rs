//! Builds the `cvbench-workload` binary (its own `no_std` workspace under
//! `workload/`) so that `cargo build`, `cargo test` and `cargo bench` of the
//! harness always find an up-to-date workload next to it.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ws = root.join("workload");
    for p in ["src", "Cargo.toml", "build.rs"] {
        println!("cargo:rerun-if-changed={}", ws.join(p).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(ws.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(ws.join("target"));
    // The outer build's wrappers and flags (clippy, coverage, RUSTFLAGS meant
    // for the harness) must not leak into the workload's own build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the workload");
    if !status.success() {
        panic!("building workload/ failed: {status}");
    }
    let bin = ws.join("target/release/cvbench-workload");
    println!("cargo:rustc-env=CVBENCH_WORKLOAD_BUILT={}", bin.display());
}
