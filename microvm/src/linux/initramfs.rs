//! A writer for the initramfs the guest boots from: an uncompressed `newc` cpio archive
//! (the kernel unpacks it into its root tmpfs), plus the standard cvbench guest image:
//! busybox, the `/init` script from `microvm/guest/init.sh`, and the workload binary.

use std::path::{Path, PathBuf};

/// Errors from building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path} for the initramfs")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the initramfs to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initramfs entry name {0:?} must be relative, non-empty and free of '..' and empty components")]
    BadName(String),
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An in-memory newc archive under construction.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio { out: Vec::new(), next_ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<(), InitramfsError> {
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(InitramfsError::BadName(name.to_string()));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        pad4(&mut self.out);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
        Ok(())
    }

    pub fn dir(&mut self, name: &str) -> Result<&mut Cpio, InitramfsError> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])?;
        Ok(self)
    }

    /// A directory with the given permission bits (an image's).
    pub fn dir_mode(&mut self, name: &str, perm: u32) -> Result<&mut Cpio, InitramfsError> {
        self.entry(name, S_IFDIR | (perm & 0o7777), (0, 0), &[])?;
        Ok(self)
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<&mut Cpio, InitramfsError> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)?;
        Ok(self)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> Result<&mut Cpio, InitramfsError> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())?;
        Ok(self)
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<&mut Cpio, InitramfsError> {
        self.entry(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])?;
        Ok(self)
    }

    /// Close the archive with the trailer and return its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        // The trailer entry cannot fail: its name is fixed and valid.
        let _ = self.entry("TRAILER!!!", 0, (0, 0), &[]);
        let mut out = self.out;
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
        out
    }
}

/// The guest `/init` (a busybox `sh` script), checked in at `microvm/guest/init.sh`.
pub const GUEST_INIT: &str = include_str!("../../guest/init.sh");

/// Where the workload binary lives inside the guest.
pub const GUEST_WORKLOAD_PATH: &str = "/cvbench-workload";

/// What goes into the standard guest image.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// The static workload binary.
    pub workload: PathBuf,
    /// A static busybox for the init script (Debian's busybox-static: `/bin/busybox`).
    pub busybox: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    std::fs::read(path).map_err(|source| InitramfsError::Read { path: path.to_path_buf(), source })
}

/// The top-level directories the guest's `/init` mounts on or writes to.
pub const GUEST_DIRS: [&str; 7] = ["bin", "dev", "proc", "sys", "tmp", "mnt", "run"];

/// The entries [`add_guest_init`] writes: the guest image owns these paths.
pub const GUEST_OWNED: [&str; 5] = ["dev/console", "dev/null", "bin/busybox", "bin/sh", "init"];

/// The guest's top-level directories ([`GUEST_DIRS`]), first in an archive.
pub fn add_guest_dirs(c: &mut Cpio) -> Result<(), InitramfsError> {
    for d in GUEST_DIRS {
        c.dir(d)?;
    }
    Ok(())
}

/// The console and null nodes, busybox (and `sh` pointing at it) and the `/init` script: the
/// entries [`GUEST_OWNED`] names.
pub fn add_guest_init(c: &mut Cpio, busybox: &[u8]) -> Result<(), InitramfsError> {
    c.char_dev("dev/console", 0o600, 5, 1)?
        .char_dev("dev/null", 0o666, 1, 3)?
        .file("bin/busybox", 0o755, busybox)?
        .symlink("bin/sh", "busybox")?
        .file("init", 0o755, GUEST_INIT.as_bytes())?;
    Ok(())
}

/// Build the guest image as cpio bytes.
pub fn build_guest_image(img: &GuestImage) -> Result<Vec<u8>, InitramfsError> {
    let workload = read(&img.workload)?;
    let busybox = read(&img.busybox)?;
    let mut c = Cpio::new();
    add_guest_dirs(&mut c)?;
    add_guest_init(&mut c, &busybox)?;
    c.file(&GUEST_WORKLOAD_PATH[1..], 0o755, &workload)?;
    Ok(c.finish())
}

/// Build the guest image and write it to `out`.
pub fn write_guest_image(img: &GuestImage, out: &Path) -> Result<(), InitramfsError> {
    let bytes = build_guest_image(img)?;
    std::fs::write(out, bytes).map_err(|source| InitramfsError::Write { path: out.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_headers_padded_to_four_bytes() {
        let mut c = Cpio::new();
        c.file("init", 0o755, b"#!x\n").unwrap();
        let out = c.finish();
        assert_eq!(&out[..6], b"070701");
        // mode field (2nd) and file size field (7th)
        assert_eq!(&out[14..22], b"000081ed");
        assert_eq!(&out[54..62], b"00000004");
        // header 110 bytes + "init\0" = 115, padded to 116; data follows
        assert_eq!(&out[116..120], b"#!x\n");
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn archive_ends_with_the_trailer() {
        let out = Cpio::new().finish();
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("TRAILER!!!"));
    }

    #[test]
    fn absolute_names_are_rejected() {
        assert!(matches!(Cpio::new().dir("/etc"), Err(InitramfsError::BadName(_))));
    }

    #[test]
    fn names_that_climb_or_have_empty_components_are_rejected() {
        for bad in ["../etc", "a/../../b", "a//b", "a/"] {
            assert!(matches!(Cpio::new().file(bad, 0o644, b""), Err(InitramfsError::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn character_devices_carry_major_and_minor() {
        let mut c = Cpio::new();
        c.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let out = c.finish();
        // rdevmajor is the 10th field, rdevminor the 11th
        assert_eq!(&out[6 + 9 * 8..6 + 10 * 8], b"00000005");
        assert_eq!(&out[6 + 10 * 8..6 + 11 * 8], b"00000001");
    }
}
