//! Where `scripts/build-guest-kernel` finds the kernel source and caches the guest kernel,
//! computed the same way the script does. The source is a `linux-source-<ver>` tarball
//! (`.tar.xz` or `.tar.bz2`) in `/usr/src` (Debian: `/usr/src/linux-source-6.1.tar.xz`) or in a
//! directory of the same name there (Ubuntu: `/usr/src/linux-source-6.8.0/linux-source-6.8.0.tar.bz2`);
//! `CVBENCH_KERNEL_SOURCE_PKG` names one, else the tested 6.1 is taken when present, else the
//! newest. The kernel is cached at `${XDG_CACHE_HOME:-$HOME/.cache}/cvbench/kernel/<key>/vmlinux`,
//! `<key>` the first 16 hex digits of sha256("source <package> <version>\n" + fragment + patch),
//! `<version>` the package's dpkg version (`unpackaged-<tarball bytes>` for a tarball dpkg does
//! not know). The fragment and patch are compiled in, so a changed recipe never picks a stale
//! kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The kernel config fragment merged on top of tinyconfig.
pub const FRAGMENT: &str = include_str!("../../guest/kernel.fragment");
/// The kernel patch (int3 self-test skip, boot-timer hook).
pub const PATCH: &str = include_str!("../../guest/kernel.patch");
/// The source package the recipe is tested with (Debian 12's), preferred when present.
pub const TESTED_SOURCE_PACKAGE: &str = "linux-source-6.1";
/// Where the distributions put kernel source tarballs (`CVBENCH_KERNEL_SOURCE_DIR` overrides).
pub const SOURCE_DIR: &str = "/usr/src";
/// The command that builds the kernel (relative to the repository root).
pub const BUILD_COMMAND: &str = "scripts/build-guest-kernel";
/// The command that installs a kernel source (the tested one; any `linux-source-<ver>` works).
pub const INSTALL_SOURCE_COMMAND: &str =
    "apt-get install linux-source-6.1   # or the linux-source-<version> your distribution offers";

const PREFIX: &str = "linux-source-";
const EXTENSIONS: [&str; 2] = ["tar.xz", "tar.bz2"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no kernel source under {}: neither linux-source-<version>.tar.xz/.tar.bz2 nor linux-source-<version>/linux-source-<version>.tar.xz/.tar.bz2", dir.display())]
    FindSource { dir: PathBuf },
    #[error("{package} (CVBENCH_KERNEL_SOURCE_PKG) has no tarball under {}", dir.display())]
    FindNamedSource { package: String, dir: PathBuf },
    #[error("neither XDG_CACHE_HOME nor HOME is set: no place for the kernel cache")]
    CacheDir,
}

/// A kernel source tarball: the package it is named after and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// `linux-source-<version>`, also the name dpkg knows it by.
    pub package: String,
    pub tarball: PathBuf,
}

/// The numeric parts of a `linux-source-<version>` name, or None for any other name.
fn source_version_parts(package: &str) -> Option<Vec<u64>> {
    let v = package.strip_prefix(PREFIX)?;
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// The tarball of `package` in `dir`: flat (Debian) before in its own directory (Ubuntu),
/// `.tar.xz` before `.tar.bz2`.
fn tarball_of(dir: &Path, package: &str) -> Option<PathBuf> {
    let flat = EXTENSIONS.iter().map(|e| dir.join(format!("{package}.{e}")));
    let nested = EXTENSIONS.iter().map(|e| dir.join(package).join(format!("{package}.{e}")));
    flat.chain(nested).find(|p| p.is_file())
}

/// The kernel source in `dir`: `wanted` if given, else the tested 6.1 if present, else the
/// newest `linux-source-<version>` (numeric order, as `sort -V` in the script).
pub fn find_source(dir: &Path, wanted: Option<&str>) -> Result<KernelSource, Error> {
    let found =
        |package: &str| tarball_of(dir, package).map(|tarball| KernelSource { package: package.into(), tarball });
    if let Some(package) = wanted {
        return found(package).ok_or_else(|| Error::FindNamedSource { package: package.into(), dir: dir.into() });
    }
    if let Some(s) = found(TESTED_SOURCE_PACKAGE) {
        return Ok(s);
    }
    let names = std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| {
        let name = e.file_name().into_string().ok()?;
        let package = EXTENSIONS.iter().find_map(|ext| name.strip_suffix(&format!(".{ext}"))).unwrap_or(&name);
        Some((source_version_parts(package)?, package.to_string()))
    });
    let newest = names.filter(|(_, package)| tarball_of(dir, package).is_some()).max();
    newest.and_then(|(_, package)| found(&package)).ok_or_else(|| Error::FindSource { dir: dir.into() })
}

/// The version that keys the cache: dpkg's version of the package, or the tarball's size for
/// a tarball put there by hand.
pub fn source_version(source: &KernelSource) -> String {
    let dpkg = Command::new("dpkg-query").args(["-W", "-f=${Version}", &source.package]).output().ok();
    match dpkg.filter(|o| o.status.success()).and_then(|o| String::from_utf8(o.stdout).ok()) {
        Some(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => format!("unpackaged-{}", std::fs::metadata(&source.tarball).map(|m| m.len()).unwrap_or(0)),
    }
}

/// The cache key for a source package and its version.
pub fn cache_key(package: &str, version: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("source {package} {version}\n"));
    h.update(FRAGMENT);
    h.update(PATCH);
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Where the kernel built from `source` in `dir` is (or would be) cached under `cache_root`.
pub fn locate_in(dir: &Path, wanted: Option<&str>, cache_root: &Path) -> Result<(KernelSource, PathBuf), Error> {
    let source = find_source(dir, wanted)?;
    let key = cache_key(&source.package, &source_version(&source));
    Ok((source, cache_root.join(key).join("vmlinux")))
}

fn env_nonempty(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn cache_root() -> Result<PathBuf, Error> {
    if let Some(x) = env_nonempty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(x).join("cvbench/kernel"));
    }
    let home = env_nonempty("HOME").ok_or(Error::CacheDir)?;
    Ok(PathBuf::from(home).join(".cache/cvbench/kernel"))
}

/// The guest kernel on this host: built, buildable, or not buildable and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestKernel {
    Built(PathBuf),
    /// The source is there; [`BUILD_COMMAND`] builds it into `expected`.
    NotBuilt {
        source: KernelSource,
        expected: PathBuf,
    },
    /// [`BUILD_COMMAND`] would fail: nothing to build from, or nowhere to put it.
    Unbuildable(Error),
}

impl GuestKernel {
    /// Looks in `CVBENCH_KERNEL_SOURCE_DIR` (default `/usr/src`) for `CVBENCH_KERNEL_SOURCE_PKG`
    /// (default: 6.1, else the newest), and in the cache, as the build script does.
    pub fn probe() -> GuestKernel {
        let dir = env_nonempty("CVBENCH_KERNEL_SOURCE_DIR").map_or_else(|| PathBuf::from(SOURCE_DIR), PathBuf::from);
        let wanted = env_nonempty("CVBENCH_KERNEL_SOURCE_PKG").and_then(|v| v.into_string().ok());
        match cache_root().and_then(|root| locate_in(&dir, wanted.as_deref(), &root)) {
            Ok((_, vmlinux)) if vmlinux.is_file() => GuestKernel::Built(vmlinux),
            Ok((source, expected)) => GuestKernel::NotBuilt { source, expected },
            Err(e) => GuestKernel::Unbuildable(e),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            GuestKernel::Built(p) => Some(p),
            _ => None,
        }
    }

    /// Why there is no kernel and the one command that fixes it; None when it is built. The
    /// fix is never the build command when the build command would fail.
    pub fn missing(&self) -> Option<(String, &'static str)> {
        match self {
            GuestKernel::Built(_) => None,
            GuestKernel::NotBuilt { source, expected } => Some((
                format!(
                    "the guest kernel is not built (from {}, into {}; about 5 minutes on 2 cores, once)",
                    source.tarball.display(),
                    expected.display()
                ),
                BUILD_COMMAND,
            )),
            GuestKernel::Unbuildable(e @ Error::CacheDir) => Some((
                format!("the guest kernel cannot be built: {e}"),
                "set HOME (or XDG_CACHE_HOME) to the home of the user that builds it",
            )),
            GuestKernel::Unbuildable(e) => {
                Some((format!("the guest kernel cannot be built: {e}"), INSTALL_SOURCE_COMMAND))
            }
        }
    }
}

/// The cached kernel, if it has been built.
pub fn cached_kernel() -> Option<PathBuf> {
    GuestKernel::probe().path().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source dir with these files (parents made), each holding a few bytes.
    fn layout(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"not really a tarball").unwrap();
        }
        dir
    }

    #[test]
    fn finds_debians_flat_tarball() {
        let d = layout(&["linux-source-6.12.tar.xz", "python3.11/x"]);
        let s = find_source(d.path(), None).unwrap();
        assert_eq!(s.package, "linux-source-6.12");
        assert_eq!(s.tarball, d.path().join("linux-source-6.12.tar.xz"));
    }

    #[test]
    fn finds_ubuntus_bz2_in_its_directory() {
        let d = layout(&["linux-source-6.8.0/linux-source-6.8.0.tar.bz2", "linux-source-6.8.0/debian/control"]);
        let s = find_source(d.path(), None).unwrap();
        assert_eq!(s.package, "linux-source-6.8.0");
        assert_eq!(s.tarball, d.path().join("linux-source-6.8.0/linux-source-6.8.0.tar.bz2"));
    }

    #[test]
    fn prefers_the_tested_6_1_then_the_newest_by_number() {
        let with_61 = layout(&["linux-source-6.12.tar.xz", "linux-source-6.1.tar.xz"]);
        assert_eq!(find_source(with_61.path(), None).unwrap().package, TESTED_SOURCE_PACKAGE);
        let without = layout(&["linux-source-6.9.tar.xz", "linux-source-6.12/linux-source-6.12.tar.bz2"]);
        assert_eq!(find_source(without.path(), None).unwrap().package, "linux-source-6.12");
    }

    #[test]
    fn a_named_package_is_taken_or_reported_missing() {
        let d = layout(&["linux-source-6.1.tar.xz", "linux-source-6.8.0/linux-source-6.8.0.tar.bz2"]);
        assert_eq!(find_source(d.path(), Some("linux-source-6.8.0")).unwrap().package, "linux-source-6.8.0");
        let e = find_source(d.path(), Some("linux-source-5.10")).unwrap_err();
        assert_eq!(e, Error::FindNamedSource { package: "linux-source-5.10".into(), dir: d.path().into() });
    }

    #[test]
    fn ignores_other_names_and_a_directory_without_its_tarball() {
        let d = layout(&["linux-source-6.8.0/README", "linux-headers-6.1.tar.xz", "linux-source-rc.tar.xz"]);
        assert_eq!(find_source(d.path(), None).unwrap_err(), Error::FindSource { dir: d.path().into() });
        assert!(find_source(&d.path().join("absent"), None).is_err());
    }

    #[test]
    fn a_tarball_dpkg_does_not_know_is_keyed_by_its_size() {
        let d = layout(&["linux-source-6.8.0/linux-source-6.8.0.tar.bz2"]);
        let s = find_source(d.path(), None).unwrap();
        assert_eq!(source_version(&s), format!("unpackaged-{}", b"not really a tarball".len()));
    }

    #[test]
    fn cache_key_is_16_hex_digits_and_depends_on_package_and_version() {
        let a = cache_key("linux-source-6.1", "6.1.1-1");
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, cache_key("linux-source-6.1", "6.1.2-1"));
        assert_ne!(a, cache_key("linux-source-6.12", "6.1.1-1"));
    }

    #[test]
    fn cache_key_matches_sha256sum_of_the_same_bytes() {
        // The script hashes these bytes with sha256sum; recompute it the shell way.
        let (package, version) = ("linux-source-6.1", "6.1.192-3");
        let mut input = format!("source {package} {version}\n").into_bytes();
        input.extend_from_slice(FRAGMENT.as_bytes());
        input.extend_from_slice(PATCH.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in");
        std::fs::write(&f, &input).unwrap();
        let out = Command::new("sha256sum").arg(&f).output().unwrap();
        let shell = String::from_utf8(out.stdout).unwrap();
        assert_eq!(&shell[..16], cache_key(package, version));
    }

    /// `scripts/build-guest-kernel --print-path` with the source dir and cache given.
    fn script_print_path(src: &Path, cache: &Path, wanted: Option<&str>) -> std::process::Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(BUILD_COMMAND);
        let mut c = Command::new(script);
        c.arg("--print-path").env("CVBENCH_KERNEL_SOURCE_DIR", src).env("XDG_CACHE_HOME", cache);
        match wanted {
            Some(p) => c.env("CVBENCH_KERNEL_SOURCE_PKG", p),
            None => c.env_remove("CVBENCH_KERNEL_SOURCE_PKG"),
        };
        c.output().unwrap()
    }

    #[test]
    fn the_build_script_finds_the_kernel_where_this_module_looks_in_both_layouts() {
        let ubuntu = &["linux-source-6.8.0/linux-source-6.8.0.tar.bz2"][..];
        let debian = &["linux-source-6.9.tar.xz", "linux-source-6.12.tar.xz"][..];
        for (files, wanted) in [(ubuntu, None), (debian, None), (debian, Some("linux-source-6.9"))] {
            let src = layout(files);
            let cache = tempfile::tempdir().unwrap();
            let (_, vmlinux) = locate_in(src.path(), wanted, &cache.path().join("cvbench/kernel")).unwrap();

            let before = script_print_path(src.path(), cache.path(), wanted);
            assert_eq!(before.status.code(), Some(1), "{files:?}: nothing is cached yet");

            std::fs::create_dir_all(vmlinux.parent().unwrap()).unwrap();
            std::fs::write(&vmlinux, b"vmlinux").unwrap();
            let after = script_print_path(src.path(), cache.path(), wanted);
            assert!(after.status.success(), "{files:?}: {}", String::from_utf8_lossy(&after.stderr));
            assert_eq!(String::from_utf8_lossy(&after.stdout).trim(), vmlinux.to_str().unwrap(), "{files:?}");
        }
    }

    #[test]
    fn without_a_source_the_fix_is_to_install_one_not_to_build() {
        let empty = tempfile::tempdir().unwrap();
        let k = GuestKernel::Unbuildable(find_source(empty.path(), None).unwrap_err());
        let (reason, fix) = k.missing().unwrap();
        assert!(reason.contains(&empty.path().display().to_string()), "{reason}");
        assert!(fix.starts_with("apt-get install linux-source-"), "{fix}");
        assert_ne!(fix, BUILD_COMMAND);
    }

    #[test]
    fn with_a_source_the_fix_is_to_build() {
        let d = layout(&["linux-source-6.12.tar.xz"]);
        let (source, expected) = locate_in(d.path(), None, Path::new("/nonexistent/cache")).unwrap();
        let (reason, fix) = GuestKernel::NotBuilt { source, expected }.missing().unwrap();
        assert_eq!(fix, BUILD_COMMAND);
        assert!(reason.contains("linux-source-6.12.tar.xz"), "{reason}");
    }
}
