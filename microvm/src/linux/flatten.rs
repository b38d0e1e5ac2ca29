//! An OCI image turned into the Linux guest's boot filesystem: its unpacked layers (bottom
//! first, as the runtime's image store keeps them for overlayfs) merged into one tree, with
//! overlayfs' whiteouts applied (a 0:0 character device hides a lower path, the
//! `trusted.overlay.opaque` xattr hides a lower directory's contents), and written as the
//! initramfs the guest boots from, with the guest's own busybox and `/init` on top. This is
//! what a VM must do that a container does not: a container mounts the layers, a VM needs one
//! disk or archive.
//!
//! The layers are image-controlled: only directories, regular files and symlinks are taken
//! (devices, fifos and sockets are skipped and counted), names are checked again by the cpio
//! writer, the paths the guest's `/init` depends on must be directories or absent, and the
//! archive is bounded.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::initramfs::{self, Cpio, InitramfsError, GUEST_DIRS, GUEST_OWNED, GUEST_WORKLOAD_PATH};

/// Errors from flattening an image.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("cannot read the image layer at {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image's /{0} is not a directory; the guest's /init needs it to be one")]
    NotADirectory(String),
    #[error("the image has no {GUEST_WORKLOAD_PATH} (a regular file); the guest's /init runs the workload from there")]
    NoWorkload,
    #[error("the image flattens to more than {limit} bytes (the guest holds its initramfs in RAM)")]
    TooBig { limit: u64 },
    #[error("image file {0} is larger than a newc cpio entry can hold (4 GiB)")]
    FileTooBig(PathBuf),
    #[error("image path {0:?} is not valid UTF-8")]
    BadName(PathBuf),
    #[error("writing the initramfs")]
    Cpio(#[from] InitramfsError),
    #[error("cannot write the initramfs to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One path of the merged tree.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { src: PathBuf, mode: u32, size: u64 },
    Symlink { target: String },
}

/// What [`write_image_initramfs`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flattened {
    /// Entries taken from the image (directories, files, symlinks).
    pub entries: u64,
    /// Bytes of the image's regular files.
    pub file_bytes: u64,
    /// Devices, fifos and sockets left out.
    pub skipped: u64,
    /// Size of the archive written.
    pub archive_bytes: u64,
}

/// The merged tree of `layers` (bottom first), keyed by relative path.
struct Tree {
    nodes: BTreeMap<String, Node>,
    skipped: u64,
}

impl Tree {
    /// Remove `path` and everything under it.
    fn remove(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Apply one layer directory on top of what is merged so far.
    fn apply(&mut self, root: &Path, dir: &Path) -> Result<(), FlattenError> {
        let read = |path: &Path, source| FlattenError::Read { path: path.to_path_buf(), source };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| read(dir, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read(dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let key = rel.to_str().ok_or_else(|| FlattenError::BadName(rel.to_path_buf()))?.to_string();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| read(&path, e))?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                // A whiteout: the path is deleted in this layer.
                self.remove(&key);
            } else if ft.is_dir() {
                if !matches!(self.nodes.get(&key), Some(Node::Dir { .. })) {
                    self.remove(&key);
                } else if is_opaque(&path) {
                    self.remove_children(&key);
                }
                self.nodes.insert(key, Node::Dir { mode: meta.permissions().mode() & 0o7777 });
                self.apply(root, &path)?;
            } else if ft.is_file() {
                if meta.len() > u64::from(u32::MAX) {
                    return Err(FlattenError::FileTooBig(path));
                }
                self.remove(&key);
                let mode = meta.permissions().mode() & 0o7777;
                self.nodes.insert(key, Node::File { src: path, mode, size: meta.len() });
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| read(&path, e))?;
                let target = target.to_str().ok_or_else(|| FlattenError::BadName(target.clone()))?.to_string();
                self.remove(&key);
                self.nodes.insert(key, Node::Symlink { target });
            } else {
                self.skipped += 1;
            }
        }
        Ok(())
    }
}

/// Whether overlayfs would treat `dir` as opaque (its lower contents hidden).
fn is_opaque(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut buf = [0u8; 4];
    // SAFETY: lgetxattr reads the NUL-terminated path and attribute name and writes at most
    // `buf.len()` bytes into our buffer.
    let n =
        unsafe { libc::lgetxattr(c.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

/// Merge `layers` (bottom first) into a tree and check what the guest's `/init` relies on.
fn merge(layers: &[PathBuf]) -> Result<Tree, FlattenError> {
    let mut tree = Tree { nodes: BTreeMap::new(), skipped: 0 };
    for l in layers {
        tree.apply(l, l)?;
    }
    for d in GUEST_DIRS {
        if matches!(tree.nodes.get(d), Some(n) if !matches!(n, Node::Dir { .. })) {
            return Err(FlattenError::NotADirectory(d.to_string()));
        }
    }
    if !matches!(tree.nodes.get(&GUEST_WORKLOAD_PATH[1..]), Some(Node::File { .. })) {
        return Err(FlattenError::NoWorkload);
    }
    Ok(tree)
}

/// Flatten `layers` (bottom first) into an initramfs at `out`: the image's tree, then the
/// guest's busybox, `/init` and console nodes. Fails if the archive would exceed `limit` bytes.
pub fn write_image_initramfs(
    layers: &[PathBuf],
    busybox: &Path,
    out: &Path,
    limit: u64,
) -> Result<Flattened, FlattenError> {
    let tree = merge(layers)?;
    let taken = || tree.nodes.iter().filter(|(name, _)| !GUEST_OWNED.contains(&name.as_str()));
    let file_bytes: u64 = taken().map(|(_, n)| if let Node::File { size, .. } = n { *size } else { 0 }).sum();
    let mut stats = Flattened { skipped: tree.skipped, file_bytes, ..Default::default() };
    if file_bytes > limit {
        return Err(FlattenError::TooBig { limit });
    }
    let read =
        |path: &Path| std::fs::read(path).map_err(|source| FlattenError::Read { path: path.to_path_buf(), source });
    let mut c = Cpio::new();
    initramfs::add_guest_dirs(&mut c)?;
    for (name, node) in taken() {
        match node {
            Node::Dir { mode } => c.dir_mode(name, *mode)?,
            Node::File { src, mode, .. } => c.file(name, *mode, &read(src)?)?,
            Node::Symlink { target } => c.symlink(name, target)?,
        };
        stats.entries += 1;
    }
    // The image's own entries of these names were left out above: the guest's come last.
    initramfs::add_guest_init(&mut c, &read(busybox)?)?;
    let bytes = c.finish();
    if bytes.len() as u64 > limit {
        return Err(FlattenError::TooBig { limit });
    }
    stats.archive_bytes = bytes.len() as u64;
    std::fs::write(out, bytes).map_err(|source| FlattenError::Write { path: out.to_path_buf(), source })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode) of every entry of a newc archive, trailer excluded.
    fn listing(bytes: &[u8]) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        let mut at = 0;
        let field = |b: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..6 + i * 8 + 8]).unwrap(), 16).unwrap()
        };
        loop {
            let h = &bytes[at..];
            assert_eq!(&h[..6], b"070701");
            let (mode, size, namesize) = (field(h, 1), field(h, 6) as usize, field(h, 11) as usize);
            let name = String::from_utf8(h[110..110 + namesize - 1].to_vec()).unwrap();
            if name == "TRAILER!!!" {
                return v;
            }
            v.push((name, mode));
            at += (110 + namesize).div_ceil(4) * 4;
            at += size.div_ceil(4) * 4;
        }
    }

    fn layer(root: &Path, n: usize, files: &[(&str, &str)]) -> PathBuf {
        let d = root.join(format!("l{n}"));
        for (p, data) in files {
            let p = d.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
        }
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn busybox(root: &Path) -> PathBuf {
        let p = root.join("busybox");
        std::fs::write(&p, b"\x7fELF busybox").unwrap();
        p
    }

    fn names(l: &[(String, u32)]) -> Vec<&str> {
        l.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn upper_layers_replace_lower_files_and_the_guest_owns_init() {
        let t = tempfile::tempdir().unwrap();
        let l0 = layer(t.path(), 0, &[("cvbench-workload", "old"), ("etc/a", "1"), ("init", "image init")]);
        let l1 = layer(t.path(), 1, &[("cvbench-workload", "new"), ("etc/b", "2")]);
        std::os::unix::fs::symlink("a", l1.join("etc/link")).unwrap();
        let out = t.path().join("out.cpio");
        let s = write_image_initramfs(&[l0, l1], &busybox(t.path()), &out, 1 << 20).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let l = listing(&bytes);
        let n = names(&l);
        assert_eq!(n.iter().filter(|x| **x == "cvbench-workload").count(), 1, "{n:?}");
        assert!(n.contains(&"etc/a") && n.contains(&"etc/b") && n.contains(&"etc/link"));
        assert_eq!(n.iter().filter(|x| **x == "init").count(), 1, "the image's init is replaced: {n:?}");
        assert_eq!(n.last(), Some(&"init"), "the guest's /init comes last: {n:?}");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("new") && !text.contains("image init"));
        assert_eq!((s.entries, s.file_bytes, s.skipped), (5, 5, 0), "{s:?}");
        assert_eq!(s.archive_bytes, bytes.len() as u64);
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_paths() {
        if !cvbench_testkit::require_root("whiteout device nodes and trusted.* xattrs") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let l0 = layer(t.path(), 0, &[("cvbench-workload", "w"), ("gone/x", "1"), ("keep/y", "2"), ("opq/z", "3")]);
        let l1 = layer(t.path(), 1, &[("opq/new", "4")]);
        let wh = CString::new(l1.join("gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: mknod of a 0:0 character device (overlayfs' whiteout) at a path we own.
        assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) }, 0);
        let opq = CString::new(l1.join("opq").as_os_str().as_bytes()).unwrap();
        // SAFETY: setting an xattr on a directory we own, from a valid name and one-byte value.
        let r =
            unsafe { libc::lsetxattr(opq.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0) };
        assert_eq!(r, 0);
        let out = t.path().join("out.cpio");
        write_image_initramfs(&[l0, l1], &busybox(t.path()), &out, 1 << 20).unwrap();
        let l = listing(&std::fs::read(&out).unwrap());
        let n = names(&l);
        assert!(!n.iter().any(|x| x.starts_with("gone")), "{n:?}");
        assert!(n.contains(&"keep/y") && n.contains(&"opq/new"), "{n:?}");
        assert!(!n.contains(&"opq/z"), "opaque dir hides the lower file: {n:?}");
    }

    #[test]
    fn a_file_over_a_directory_removes_what_was_under_it() {
        let t = tempfile::tempdir().unwrap();
        let l0 = layer(t.path(), 0, &[("cvbench-workload", "w"), ("data/deep/f", "1")]);
        let l1 = layer(t.path(), 1, &[("data", "now a file")]);
        let out = t.path().join("out.cpio");
        write_image_initramfs(&[l0, l1], &busybox(t.path()), &out, 1 << 20).unwrap();
        let l = listing(&std::fs::read(&out).unwrap());
        let data: Vec<_> = l.iter().filter(|(n, _)| n.starts_with("data")).collect();
        assert_eq!(data.len(), 1, "{data:?}");
        assert_eq!(data[0].1 & 0o170000, 0o100000, "a regular file");
    }

    #[test]
    fn an_image_without_the_workload_is_rejected() {
        let t = tempfile::tempdir().unwrap();
        let l0 = layer(t.path(), 0, &[("etc/a", "1")]);
        let out = t.path().join("out.cpio");
        let e = write_image_initramfs(&[l0], &busybox(t.path()), &out, 1 << 20).unwrap_err();
        assert!(matches!(e, FlattenError::NoWorkload), "{e}");
        assert!(!out.exists(), "nothing written");
    }

    #[test]
    fn an_image_whose_bin_is_a_symlink_is_rejected() {
        let t = tempfile::tempdir().unwrap();
        let l0 = layer(t.path(), 0, &[("cvbench-workload", "w"), ("usr/bin/x", "1")]);
        std::os::unix::fs::symlink("usr/bin", l0.join("bin")).unwrap();
        let e = write_image_initramfs(&[l0], &busybox(t.path()), &t.path().join("o"), 1 << 20).unwrap_err();
        assert!(matches!(e, FlattenError::NotADirectory(ref d) if d == "bin"), "{e}");
    }

    #[test]
    fn an_image_over_the_limit_is_rejected() {
        let t = tempfile::tempdir().unwrap();
        let big = "x".repeat(4096);
        let l0 = layer(t.path(), 0, &[("cvbench-workload", "w"), ("big", &big)]);
        let out = t.path().join("out.cpio");
        let e = write_image_initramfs(&[l0], &busybox(t.path()), &out, 1024).unwrap_err();
        assert!(matches!(e, FlattenError::TooBig { limit: 1024 }), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn fifos_are_skipped_and_counted() {
        let t = tempfile::tempdir().unwrap();
        let l0 = layer(t.path(), 0, &[("cvbench-workload", "w")]);
        let fifo = CString::new(l0.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo at a path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let out = t.path().join("out.cpio");
        let s = write_image_initramfs(&[l0], &busybox(t.path()), &out, 1 << 20).unwrap();
        assert_eq!(s.skipped, 1);
        assert!(!names(&listing(&std::fs::read(&out).unwrap())).contains(&"pipe"));
    }
}
