//! The checkpoint image directory as untrusted input. Whoever writes a checkpoint (our
//! `checkpoint` verb, or the harness after `runc`/`runsc checkpoint`) adds a manifest,
//! `cvbench-checkpoint.json`, naming the runtime that wrote the image and the size and SHA-256
//! of every file in it. A restore verifies the directory against it before anything is created:
//! a missing directory, a directory that is not a checkpoint, another runtime's checkpoint, a
//! truncated, grown, changed, missing or extra file, a symlink or a subdirectory are each refused
//! naming the path, so `criu restore` (or `runsc restore`) never reads a half-written image.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest's file name inside the image directory.
pub const MANIFEST: &str = "cvbench-checkpoint.json";
/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// More files than any checkpoint of one container makes (CRIU writes tens).
const MAX_FILES: usize = 4096;
/// The manifest is a few KiB; refuse to parse anything much bigger.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Why an image directory cannot be restored from.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("checkpoint image {0} does not exist")]
    Missing(PathBuf),
    #[error("checkpoint image {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not a checkpoint image: it has no {MANIFEST}")]
    NotACheckpoint(PathBuf),
    #[error("cannot read the checkpoint image {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the checkpoint manifest {path} is not valid")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the checkpoint manifest {path} is format {found}, this build reads format {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("checkpoint image {path} was written by {found}, not {expected}")]
    OtherRuntime { path: PathBuf, found: String, expected: String },
    #[error("checkpoint image file {path} is missing")]
    FileMissing { path: PathBuf },
    #[error("checkpoint image file {path} is {found} bytes, the manifest says {expected} (truncated or grown)")]
    Size { path: PathBuf, found: u64, expected: u64 },
    #[error("checkpoint image file {path} does not match its SHA-256 in the manifest")]
    Digest { path: PathBuf },
    #[error("checkpoint image {dir} holds {name}, which its manifest does not list")]
    Extra { dir: PathBuf, name: String },
    #[error("checkpoint image entry {0} is not a regular file (symlinks and directories are refused)")]
    NotAFile(PathBuf),
    #[error("checkpoint manifest {path} names {name:?}, which is not a plain file name")]
    BadName { path: PathBuf, name: String },
    #[error("checkpoint image {0} has more than {MAX_FILES} files")]
    TooManyFiles(PathBuf),
    #[error("cannot write the checkpoint manifest {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One file of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// `cvbench-checkpoint.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// The runtime that wrote the image (`runc`, `cvbench-runtime`, `gvisor`, ...).
    pub runtime: String,
    pub files: Vec<ImageFile>,
}

impl Manifest {
    /// Bytes of the image's files (the manifest not counted).
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Read { path: path.to_path_buf(), source }
}

/// SHA-256 and length of the file at `path`, opened without following a symlink.
fn digest(path: &Path) -> Result<(u64, String), ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(read_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(read_err(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((n, hex))
}

/// The names in `dir` other than the manifest, each checked to be a regular file.
fn entries(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let e = e.map_err(read_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == MANIFEST {
            continue;
        }
        // file_type() does not follow symlinks.
        if !e.file_type().map_err(read_err(&e.path()))?.is_file() {
            return Err(ImageError::NotAFile(e.path()));
        }
        names.push(name);
        if names.len() > MAX_FILES {
            return Err(ImageError::TooManyFiles(dir.to_path_buf()));
        }
    }
    names.sort();
    Ok(names)
}

/// Describe every file now in `dir` and write the manifest, for `runtime`.
pub fn seal(dir: &Path, runtime: &str) -> Result<Manifest, ImageError> {
    let mut files = Vec::new();
    for name in entries(dir)? {
        let (size, sha256) = digest(&dir.join(&name))?;
        files.push(ImageFile { name, size, sha256 });
    }
    let m = Manifest { format_version: FORMAT_VERSION, runtime: runtime.to_string(), files };
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&m).map_err(|source| ImageError::Manifest { path: path.clone(), source })?;
    std::fs::write(&path, text).map_err(|source| ImageError::Write { path, source })?;
    Ok(m)
}

/// Check that `dir` is a complete checkpoint image written by `runtime`.
pub fn verify(dir: &Path, runtime: &str) -> Result<Manifest, ImageError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ImageError::Missing(dir.to_path_buf())),
        Err(source) => return Err(ImageError::Read { path: dir.to_path_buf(), source }),
    };
    if !meta.is_dir() {
        return Err(ImageError::NotADirectory(dir.to_path_buf()));
    }
    let path = dir.join(MANIFEST);
    let text = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NotACheckpoint(dir.to_path_buf()))
        }
        Err(source) => return Err(ImageError::Read { path, source }),
        Ok(m) if !m.is_file() => return Err(ImageError::NotAFile(path)),
        Ok(m) if m.len() > MAX_MANIFEST_BYTES => {
            return Err(ImageError::Size { path, found: m.len(), expected: MAX_MANIFEST_BYTES })
        }
        Ok(_) => std::fs::read(&path).map_err(read_err(&path))?,
    };
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|source| ImageError::Manifest { path: path.clone(), source })?;
    if m.format_version != FORMAT_VERSION {
        return Err(ImageError::Version { path, found: m.format_version });
    }
    if m.runtime != runtime {
        return Err(ImageError::OtherRuntime {
            path: dir.to_path_buf(),
            found: m.runtime.clone(),
            expected: runtime.to_string(),
        });
    }
    for f in &m.files {
        let plain = !f.name.is_empty() && f.name != "." && f.name != ".." && !f.name.contains('/');
        if !plain || f.name == MANIFEST {
            return Err(ImageError::BadName { path, name: f.name.clone() });
        }
    }
    let present = entries(dir)?;
    if let Some(extra) = present.iter().find(|n| !m.files.iter().any(|f| &f.name == *n)) {
        return Err(ImageError::Extra { dir: dir.to_path_buf(), name: extra.clone() });
    }
    for f in &m.files {
        let p = dir.join(&f.name);
        if !present.contains(&f.name) {
            return Err(ImageError::FileMissing { path: p });
        }
        let (size, sha) = digest(&p)?;
        if size != f.size {
            return Err(ImageError::Size { path: p, found: size, expected: f.size });
        }
        if sha != f.sha256 {
            return Err(ImageError::Digest { path: p });
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pages-1.img"), vec![7u8; 10_000]).unwrap();
        std::fs::write(d.path().join("core-1.img"), b"core").unwrap();
        seal(d.path(), "runc").unwrap();
        d
    }

    #[test]
    fn a_sealed_image_verifies_and_counts_its_bytes() {
        let d = image();
        assert_eq!(verify(d.path(), "runc").unwrap().bytes(), 10_004);
    }

    #[test]
    fn verify_rejects_a_missing_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope");
        let e = verify(&p, "runc").unwrap_err();
        assert!(matches!(e, ImageError::Missing(_)) && e.to_string().contains(&*p.to_string_lossy()), "{e}");
    }

    #[test]
    fn verify_rejects_a_directory_without_manifest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("core-1.img"), b"core").unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::NotACheckpoint(_))));
    }

    #[test]
    fn verify_rejects_another_runtimes_image() {
        let d = image();
        let e = verify(d.path(), "gvisor").unwrap_err();
        assert!(e.to_string().contains("written by runc, not gvisor"), "{e}");
    }

    #[test]
    fn verify_rejects_a_truncated_file_naming_it() {
        let d = image();
        let f = std::fs::OpenOptions::new().write(true).open(d.path().join("pages-1.img")).unwrap();
        f.set_len(4096).unwrap();
        let e = verify(d.path(), "runc").unwrap_err();
        assert!(matches!(e, ImageError::Size { found: 4096, expected: 10_000, .. }), "{e}");
        assert!(e.to_string().contains("pages-1.img"), "{e}");
    }

    #[test]
    fn verify_rejects_a_changed_file() {
        let d = image();
        std::fs::write(d.path().join("core-1.img"), b"CORE").unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::Digest { .. })));
    }

    #[test]
    fn verify_rejects_extra_symlinked_and_escaping_entries() {
        let d = image();
        std::fs::write(d.path().join("extra.img"), b"x").unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::Extra { .. })));
        std::fs::remove_file(d.path().join("extra.img")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link.img")).unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::NotAFile(_))));
        std::fs::remove_file(d.path().join("link.img")).unwrap();
        let mut m: Manifest = serde_json::from_slice(&std::fs::read(d.path().join(MANIFEST)).unwrap()).unwrap();
        m.files[0].name = "../core-1.img".into();
        std::fs::write(d.path().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::BadName { .. })));
    }

    #[test]
    fn verify_rejects_another_format_version_and_a_garbled_manifest() {
        let d = image();
        let mut m: Manifest = serde_json::from_slice(&std::fs::read(d.path().join(MANIFEST)).unwrap()).unwrap();
        m.format_version = 99;
        std::fs::write(d.path().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::Version { found: 99, .. })));
        std::fs::write(d.path().join(MANIFEST), b"{\"format_version\":").unwrap();
        assert!(matches!(verify(d.path(), "runc"), Err(ImageError::Manifest { .. })));
    }
}
