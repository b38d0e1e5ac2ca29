//! The declared `rust-version` covers the locked dependency graph: every package in
//! `cargo metadata` (Cargo.lock's versions, all platforms) needs at most the Rust that the
//! workspace's members declare, so the README's and install-deps' minimum is one that builds.

use std::process::Command;

use serde::Deserialize;

/// The part of `cargo metadata --format-version 1` this test reads.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    rust_version: Option<String>,
}

/// A `rust-version` ("1.88", "1.85.0") as (major, minor, patch); a missing part is 0.
fn parse_rust_version(v: &str) -> Result<(u64, u64, u64), String> {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!("'{v}' is not MAJOR.MINOR[.PATCH]"));
    }
    let mut n = [0u64; 3];
    for (slot, p) in n.iter_mut().zip(&parts) {
        *slot = p.parse().map_err(|_| format!("'{v}' is not MAJOR.MINOR[.PATCH] ('{p}' is not a number)"))?;
    }
    Ok((n[0], n[1], n[2]))
}

fn locked_metadata() -> Metadata {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata --offline failed (it needs every locked package downloaded, other platforms' too: \
         run `cargo fetch --locked` once):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
}

#[test]
fn parse_rust_version_reads_two_and_three_parts_and_rejects_others() {
    assert_eq!(parse_rust_version("1.88"), Ok((1, 88, 0)));
    assert_eq!(parse_rust_version("1.85.1"), Ok((1, 85, 1)));
    assert!(parse_rust_version("1.x").is_err());
    assert!(parse_rust_version("1.2.3.4").is_err());
}

#[test]
fn declared_rust_version_covers_every_locked_package() {
    let meta = locked_metadata();
    let (members, deps): (Vec<&Package>, Vec<&Package>) =
        meta.packages.iter().partition(|p| meta.workspace_members.contains(&p.id));
    assert!(!members.is_empty(), "cargo metadata lists no workspace members");
    assert!(!deps.is_empty(), "cargo metadata lists no dependencies");

    let declared: Vec<(&str, &str, (u64, u64, u64))> = members
        .iter()
        .map(|m| {
            let v = m
                .rust_version
                .as_deref()
                .unwrap_or_else(|| panic!("{} declares no rust-version (want rust-version.workspace = true)", m.name));
            let parsed = parse_rust_version(v).unwrap_or_else(|e| panic!("{}'s rust-version: {e}", m.name));
            (m.name.as_str(), v, parsed)
        })
        .collect();

    let mut too_new: Vec<((u64, u64, u64), String)> = Vec::new();
    for dep in &deps {
        let Some(needed) = dep.rust_version.as_deref() else { continue };
        let needed_v = parse_rust_version(needed).unwrap_or_else(|e| panic!("{} {}: {e}", dep.name, dep.version));
        let behind: Vec<String> =
            declared.iter().filter(|(_, _, v)| needed_v > *v).map(|(name, v, _)| format!("{name} {v}")).collect();
        if !behind.is_empty() {
            too_new.push((
                needed_v,
                format!("{} {} needs Rust {needed}; declared: {}", dep.name, dep.version, behind.join(", ")),
            ));
        }
    }
    too_new.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    assert!(
        too_new.is_empty(),
        "the workspace's rust-version (root Cargo.toml; the README and scripts/install-deps say the same) is older \
         than locked dependencies need; the newest need comes first:\n{}",
        too_new.iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join("\n")
    );
}
