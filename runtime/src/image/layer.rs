//! Unpacking one layer tarball (tar or tar+gzip, detected by magic bytes) into a directory in
//! overlayfs form: `.wh.NAME` becomes a 0/0 character device, `.wh..wh..opq` the
//! `trusted.overlay.opaque` xattr. Entries may not escape the directory, neither by `..` nor
//! through a symlink unpacked earlier.

use super::Error;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// `sha256:<hex>` of everything read so far.
    pub fn digest(self) -> String {
        format!("sha256:{}", hex(&self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Open a possibly gzip- or zstd-compressed tar stream.
pub fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>, Error> {
    let mut f = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let f = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(BufReader::new(f))))
    } else if n == 4 && magic == ZSTD_MAGIC {
        // Registry layers may be `tar+zstd` (OCI image spec 1.1).
        let d = zstd::stream::read::Decoder::new(f).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

/// Turn a tar entry path into a relative path with no `..`, or refuse it.
pub fn clean_path(raw: &Path) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Error::Escape(raw.to_path_buf())),
        }
    }
    Ok(out)
}

/// Make sure every ancestor of `rel` under `root` is a real directory (creating missing ones),
/// so writing `rel` cannot be redirected outside `root` through a symlink.
fn safe_parent(root: &Path, rel: &Path) -> Result<PathBuf, Error> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => return Err(Error::Escape(rel.to_path_buf())),
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(Error::Escape(rel.to_path_buf())),
                Err(_) => fs::create_dir(&cur).map_err(|source| Error::Io { path: cur.clone(), source })?,
            }
        }
    }
    Ok(cur)
}

fn remove_existing(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn set_opaque(dir: &Path) -> Result<(), Error> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::Escape(dir.to_path_buf()))?;
    // SAFETY: NUL-terminated path and name, a one-byte value buffer.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if r < 0 {
        return Err(Error::Io { path: dir.to_path_buf(), source: io::Error::last_os_error() });
    }
    Ok(())
}

fn whiteout(path: &Path) -> Result<(), Error> {
    remove_existing(path)?;
    nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e.into() })
}

/// Unpack `blob` into `dest` (which must exist and be empty). Returns the diff id: the
/// sha256 of the uncompressed tar stream.
pub fn unpack(blob: &Path, dest: &Path) -> Result<String, Error> {
    let mut reader = HashingReader::new(open_maybe_gzip(blob)?);
    let io_err = |source| Error::Io { path: blob.to_path_buf(), source };
    {
        let mut ar = tar::Archive::new(&mut reader);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        for entry in ar.entries().map_err(io_err)? {
            let mut entry = entry.map_err(io_err)?;
            let raw = entry.path().map_err(io_err)?.into_owned();
            let rel = clean_path(&raw)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let parent = safe_parent(dest, &rel)?;
            let name = rel.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            if name == b".wh..wh..opq" {
                set_opaque(&parent)?;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(b".wh.") {
                whiteout(&parent.join(std::ffi::OsStr::from_bytes(hidden)))?;
                continue;
            }
            let target = dest.join(&rel);
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                if let Ok(m) = fs::symlink_metadata(&target) {
                    if !m.is_dir() {
                        remove_existing(&target)?;
                    }
                }
            } else {
                remove_existing(&target)?;
            }
            if kind.is_hard_link() {
                let link = entry.link_name().map_err(io_err)?.ok_or_else(|| Error::Escape(raw.clone()))?;
                let link_rel = clean_path(&link)?;
                safe_parent(dest, &link_rel)?;
                fs::hard_link(dest.join(&link_rel), &target)
                    .map_err(|source| Error::Io { path: target.clone(), source })?;
                continue;
            }
            entry.unpack(&target).map_err(|source| Error::Io { path: target.clone(), source })?;
        }
    }
    // Drain trailing padding so the digest covers the whole stream.
    io::copy(&mut reader, &mut io::sink()).map_err(io_err)?;
    Ok(reader.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn tar_with(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap_or(());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    /// Write a raw path into a header, bypassing tar's own `..` checks.
    fn raw_header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<String, Error>) {
        let tmp = tempfile::tempdir().unwrap();
        let blob = tmp.path().join("blob");
        fs::write(&blob, bytes).unwrap();
        let dest = tmp.path().join("root");
        fs::create_dir(&dest).unwrap();
        let r = unpack(&blob, &dest);
        (tmp, r)
    }

    #[test]
    fn unpack_keeps_modes_symlinks_and_hardlinks() {
        let bytes = tar_with(|b| {
            b.append(&header("bin/", tar::EntryType::Directory, 0, 0o755), &[][..]).unwrap();
            b.append(&header("bin/tool", tar::EntryType::Regular, 2, 0o751), &b"hi"[..]).unwrap();
            let mut l = header("bin/link", tar::EntryType::Symlink, 0, 0o777);
            l.set_link_name("/bin/tool").unwrap();
            l.set_cksum();
            b.append(&l, &[][..]).unwrap();
            let mut h = header("bin/hard", tar::EntryType::Link, 0, 0o644);
            h.set_link_name("bin/tool").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let (tmp, r) = unpack_bytes(&bytes);
        r.unwrap();
        let root = tmp.path().join("root");
        let m = fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o751);
        assert_eq!(fs::read_link(root.join("bin/link")).unwrap(), Path::new("/bin/tool"));
        assert_eq!(fs::read(root.join("bin/hard")).unwrap(), b"hi");
    }

    #[test]
    fn unpack_rejects_parent_dir_entries() {
        let bytes = tar_with(|b| {
            b.append(&raw_header("../evil", tar::EntryType::Regular, 1), &b"x"[..]).unwrap();
        });
        let (tmp, r) = unpack_bytes(&bytes);
        assert!(matches!(r, Err(Error::Escape(_))), "{r:?}");
        assert!(!tmp.path().join("evil").exists());
    }

    #[test]
    fn unpack_rejects_writes_through_absolute_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let bytes = tar_with(|b| {
            let mut l = header("etc", tar::EntryType::Symlink, 0, 0o777);
            l.set_link_name(outside.path()).unwrap();
            l.set_cksum();
            b.append(&l, &[][..]).unwrap();
            b.append(&header("etc/passwd", tar::EntryType::Regular, 1, 0o644), &b"x"[..]).unwrap();
        });
        let (_tmp, r) = unpack_bytes(&bytes);
        assert!(matches!(r, Err(Error::Escape(_))), "{r:?}");
        assert!(!outside.path().join("passwd").exists());
    }

    #[test]
    fn unpack_reads_gzip_and_reports_uncompressed_digest() {
        let bytes = tar_with(|b| {
            b.append(&header("a", tar::EntryType::Regular, 1, 0o644), &b"x"[..]).unwrap();
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let (tmp, r) = unpack_bytes(&gz.finish().unwrap());
        let want = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        assert_eq!(r.unwrap(), want);
        assert_eq!(fs::read(tmp.path().join("root/a")).unwrap(), b"x");
    }

    #[test]
    fn unpack_reads_zstd_and_reports_uncompressed_digest() {
        let bytes = tar_with(|b| {
            b.append(&header("z", tar::EntryType::Regular, 1, 0o644), &b"y"[..]).unwrap();
        });
        let (tmp, r) = unpack_bytes(&zstd::encode_all(&bytes[..], 3).unwrap());
        let want = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        assert_eq!(r.unwrap(), want);
        assert_eq!(fs::read(tmp.path().join("root/z")).unwrap(), b"y");
    }

    #[test]
    fn unpack_converts_whiteouts_for_overlayfs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: whiteout device nodes need root");
            return;
        }
        let bytes = tar_with(|b| {
            b.append(&header("d/.wh.gone", tar::EntryType::Regular, 0, 0o644), &[][..]).unwrap();
            b.append(&header("o/.wh..wh..opq", tar::EntryType::Regular, 0, 0o644), &[][..]).unwrap();
        });
        let (tmp, r) = unpack_bytes(&bytes);
        r.unwrap();
        let root = tmp.path().join("root");
        let m = fs::symlink_metadata(root.join("d/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        let mut buf = [0u8; 4];
        let p = std::ffi::CString::new(root.join("o").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings and buffer.
        let n = unsafe { libc::lgetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), 4) };
        assert_eq!(n, 1);
        assert_eq!(buf[0], b'y');
    }
}
