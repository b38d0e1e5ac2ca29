//! Where `scripts/build-guest-kernel` caches the guest kernel, computed the same way the
//! script does: `${XDG_CACHE_HOME:-$HOME/.cache}/cvbench/kernel/<key>/vmlinux`, with `<key>`
//! the first 16 hex digits of sha256("source linux-source-6.1 <version>\n" + fragment + patch).
//! The fragment and patch are compiled in, so a changed recipe never picks a stale kernel.

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

/// The kernel config fragment merged on top of tinyconfig.
pub const FRAGMENT: &str = include_str!("../../guest/kernel.fragment");
/// The kernel patch (int3 self-test skip, boot-timer hook).
pub const PATCH: &str = include_str!("../../guest/kernel.patch");
/// The Debian package the kernel is built from.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";
/// The command that builds the kernel (relative to the repository root).
pub const BUILD_COMMAND: &str = "scripts/build-guest-kernel";

/// The cache key for a given source package version.
pub fn cache_key(source_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("source {SOURCE_PACKAGE} {source_version}\n"));
    h.update(FRAGMENT);
    h.update(PATCH);
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The installed version of the kernel source package, if any.
pub fn source_version() -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PACKAGE]).output().ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !v.trim().is_empty()).then(|| v.trim().to_string())
}

fn cache_root() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("cvbench/kernel"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".cache/cvbench/kernel"))
}

/// Where the kernel for this recipe and source version is (or would be) cached.
pub fn expected_path() -> Option<PathBuf> {
    Some(cache_root()?.join(cache_key(&source_version()?)).join("vmlinux"))
}

/// The cached kernel, if it has been built.
pub fn cached_kernel() -> Option<PathBuf> {
    expected_path().filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_is_16_hex_digits_and_depends_on_the_version() {
        let a = cache_key("6.1.1-1");
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, cache_key("6.1.2-1"));
    }

    #[test]
    fn cache_key_matches_the_build_script() {
        // The script hashes the same bytes with sha256sum; recompute it the shell way.
        let version = "6.1.192-3";
        let mut input = format!("source {SOURCE_PACKAGE} {version}\n").into_bytes();
        input.extend_from_slice(FRAGMENT.as_bytes());
        input.extend_from_slice(PATCH.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in");
        std::fs::write(&f, &input).unwrap();
        let out = Command::new("sha256sum").arg(&f).output().unwrap();
        let shell = String::from_utf8(out.stdout).unwrap();
        assert_eq!(&shell[..16], cache_key(version));
    }
}
