//! The local image store: an OCI image layout under `<state>/oci` (content-addressed blobs,
//! `index.json` naming manifests), unpacked layers under `<state>/layers/<hex>`, every write to a
//! temp name then renamed, and an exclusive `flock` on `<state>/lock` around every change.

pub mod build;
pub mod import;
pub mod layer;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The image built from the workload binary alone.
pub const DEFAULT_IMAGE: &str = "cvbench/workload:latest";

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image `{0}` not found in the store")]
    NotFound(String),
    #[error("corrupt image data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("digest mismatch for {path}: expected {expected}, got {actual}")]
    DigestMismatch { path: PathBuf, expected: String, actual: String },
    #[error("tar entry {0} would escape the layer root")]
    Escape(PathBuf),
    #[error("{0} is neither an OCI image layout nor a docker-save archive")]
    NotAnImage(PathBuf),
    #[error("{path} is not an image archive: {reason}")]
    ArchiveLayout { path: PathBuf, reason: String },
    #[error("invalid digest `{0}` (want sha256:<64 hex>)")]
    BadDigest(String),
    #[error("cannot lock the store at {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// An OCI image manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An OCI index (`index.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config the runtime uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: ProcessDefaults,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessDefaults {
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// One row of `image ls`.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub digest: String,
    pub layers: usize,
    pub size: u64,
}

/// An image ready to run: its config and unpacked layer dirs, bottom first.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: String,
    pub digest: String,
    pub config: ImageConfig,
    pub layer_dirs: Vec<PathBuf>,
}

/// Add `:latest` to a name without a tag.
pub fn normalize_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The hex part of a `sha256:` digest, checked.
pub fn digest_hex(digest: &str) -> Result<&str, Error> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(Error::BadDigest(digest.to_string())),
    }
}

/// An exclusive lock on the store, released on drop.
pub struct StoreLock {
    _file: File,
}

/// The store rooted at a state directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, Error> {
        let s = Store { root: state_dir.to_path_buf() };
        for d in [s.blobs_dir(), s.layers_dir(), s.tmp_dir()] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let layout = s.oci_dir().join("oci-layout");
        if !layout.exists() {
            s.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    fn oci_dir(&self) -> PathBuf {
        self.root.join("oci")
    }
    fn blobs_dir(&self) -> PathBuf {
        self.root.join("oci/blobs/sha256")
    }
    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    /// Scratch space on the same filesystem as the store (so renames are atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Take the store's exclusive lock (blocks while another process holds it).
    pub fn lock(&self) -> Result<StoreLock, Error> {
        let path = self.root.join("lock");
        let f = File::options().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        loop {
            // SAFETY: flock on an fd we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                break;
            }
            let e = nix::Error::last();
            if e != nix::Error::EINTR {
                return Err(Error::Lock { path, source: e });
            }
        }
        Ok(StoreLock { _file: f })
    }

    /// A unique temp path inside the store.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.tmp_dir().join(format!("cvbench-{}-{}-{what}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<(), Error> {
        let tmp = self.temp_path("write");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// Path of a blob.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        Ok(self.blobs_dir().join(digest_hex(digest)?))
    }

    /// Copy a stream into the store, verifying it against `expected` when given. Returns the
    /// digest and size. Existing blobs are kept (content addressing makes them identical).
    pub fn put_blob(
        &self,
        reader: &mut dyn Read,
        expected: Option<&str>,
        origin: &Path,
    ) -> Result<(String, u64), Error> {
        let tmp = self.temp_path("blob");
        let mut hr = layer::HashingReader::new(reader);
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        let copied = io::copy(&mut hr, &mut f).map_err(io_err(origin));
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let digest = hr.digest();
        if let Some(want) = expected {
            if want != digest {
                let _ = fs::remove_file(&tmp);
                return Err(Error::DigestMismatch {
                    path: origin.to_path_buf(),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        let dest = self.blob_path(&digest)?;
        if dest.exists() {
            let _ = fs::remove_file(&tmp);
        } else {
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        }
        Ok((digest, size))
    }

    /// Store bytes as a blob.
    pub fn put_bytes(&self, data: &[u8]) -> Result<(String, u64), Error> {
        self.put_blob(&mut &data[..], None, Path::new("<memory>"))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T, Error> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Read and parse a JSON blob, re-verifying its digest.
    pub fn blob_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T, Error> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).map_err(|_| Error::NotFound(digest.to_string()))?;
        let actual = format!(
            "sha256:{}",
            layer::hex(&sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes),))
        );
        if actual != digest {
            return Err(Error::DigestMismatch { path, expected: digest.to_string(), actual });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt { path, reason: e.to_string() })
    }

    /// The store's index.
    pub fn index(&self) -> Result<Index, Error> {
        let path = self.oci_dir().join("index.json");
        if !path.exists() {
            return Ok(Index { schema_version: 2, media_type: Some(MEDIA_INDEX.into()), manifests: Vec::new() });
        }
        self.read_json(&path)
    }

    fn write_index(&self, index: &Index) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(index)
            .map_err(|e| Error::Corrupt { path: self.oci_dir().join("index.json"), reason: e.to_string() })?;
        self.write_atomic(&self.oci_dir().join("index.json"), &bytes)
    }

    /// Point `name` at a manifest (caller holds the lock).
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), Error> {
        let name = normalize_name(name);
        let mut index = self.index()?;
        index.manifests.retain(|d| d.annotations.get(REF_NAME) != Some(&name));
        let mut d = manifest.clone();
        d.annotations.insert(REF_NAME.into(), name);
        index.manifests.push(d);
        self.write_index(&index)
    }

    /// Find a manifest descriptor by name or digest.
    pub fn find(&self, name: &str) -> Result<Descriptor, Error> {
        let index = self.index()?;
        let want = normalize_name(name);
        index
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME) == Some(&want) || d.digest == name)
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Every tagged image.
    pub fn list(&self) -> Result<Vec<ImageInfo>, Error> {
        let mut out = Vec::new();
        for d in self.index()?.manifests {
            let m: Manifest = self.blob_json(&d.digest)?;
            out.push(ImageInfo {
                name: d.annotations.get(REF_NAME).cloned().unwrap_or_default(),
                digest: d.digest.clone(),
                layers: m.layers.len(),
                size: m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size,
            });
        }
        Ok(out)
    }

    /// Untag an image and delete blobs and unpacked layers nothing else references.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let _lock = self.lock()?;
        let d = self.find(name)?;
        let mut index = self.index()?;
        index.manifests.retain(|m| m != &d);
        self.write_index(&index)?;
        self.collect_garbage(&index)
    }

    fn collect_garbage(&self, index: &Index) -> Result<(), Error> {
        let mut keep = std::collections::BTreeSet::new();
        for d in &index.manifests {
            keep.insert(digest_hex(&d.digest)?.to_string());
            if let Ok(m) = self.blob_json::<Manifest>(&d.digest) {
                keep.insert(digest_hex(&m.config.digest)?.to_string());
                for l in &m.layers {
                    keep.insert(digest_hex(&l.digest)?.to_string());
                }
            }
        }
        for dir in [self.blobs_dir(), self.layers_dir()] {
            for e in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let p = e.path();
                    let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                    r.map_err(io_err(&p))?;
                }
            }
        }
        Ok(())
    }

    /// The unpacked directory of a layer blob, unpacking it on first use (temp dir + rename).
    /// `diff_id`, when known, is checked against the uncompressed stream.
    pub fn layer_dir(&self, digest: &str, diff_id: Option<&str>) -> Result<PathBuf, Error> {
        let dir = self.layers_dir().join(digest_hex(digest)?);
        if dir.is_dir() {
            return Ok(dir);
        }
        let blob = self.blob_path(digest)?;
        if !blob.exists() {
            return Err(Error::NotFound(digest.to_string()));
        }
        let tmp = self.temp_path("layer");
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(io_err(&tmp))?;
        let result = layer::unpack(&blob, &tmp).and_then(|actual| match diff_id {
            Some(want) if want != actual => {
                Err(Error::DigestMismatch { path: blob.clone(), expected: want.to_string(), actual })
            }
            _ => Ok(()),
        });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dir) {
            Ok(()) => Ok(dir),
            // Lost a race with another unpacker of the same layer: theirs is as good.
            Err(_) if dir.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(dir)
            }
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// Resolve a name to its config and unpacked layers.
    pub fn resolve(&self, name: &str) -> Result<Resolved, Error> {
        let d = self.find(name)?;
        let m: Manifest = self.blob_json(&d.digest)?;
        let config: ImageConfig = self.blob_json(&m.config.digest)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Error::Corrupt {
                path: self.blob_path(&m.config.digest)?,
                reason: format!("{} diff_ids for {} layers", config.rootfs.diff_ids.len(), m.layers.len()),
            });
        }
        let mut layer_dirs = Vec::new();
        for (l, diff) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            layer_dirs.push(self.layer_dir(&l.digest, Some(diff))?);
        }
        Ok(Resolved { name: normalize_name(name), digest: d.digest, config, layer_dirs })
    }

    /// Write manifest + tag for an image whose config and layers are already blobs.
    pub fn commit(
        &self,
        name: &str,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Descriptor, Error> {
        let cfg = serde_json::to_vec(config)
            .map_err(|e| Error::Corrupt { path: PathBuf::from(name), reason: e.to_string() })?;
        let (cd, cs) = self.put_bytes(&cfg)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            config: Descriptor {
                media_type: MEDIA_CONFIG.into(),
                digest: cd,
                size: cs,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
        };
        let mbytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Corrupt { path: PathBuf::from(name), reason: e.to_string() })?;
        let (md, ms) = self.put_bytes(&mbytes)?;
        let desc = Descriptor { media_type: MEDIA_MANIFEST.into(), digest: md, size: ms, annotations, platform: None };
        self.tag(name, &desc)?;
        Ok(desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_adds_latest_only_when_untagged() {
        assert_eq!(normalize_name("a/b"), "a/b:latest");
        assert_eq!(normalize_name("a/b:1"), "a/b:1");
        assert_eq!(normalize_name("localhost:5000/b"), "localhost:5000/b:latest");
    }

    #[test]
    fn put_blob_rejects_digest_mismatch_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let bad = format!("sha256:{}", "0".repeat(64));
        let err = store.put_blob(&mut &b"data"[..], Some(&bad), Path::new("x")).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn digest_hex_checks_format() {
        assert!(digest_hex("sha256:abc").is_err());
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn find_reports_missing_image() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        assert!(matches!(store.find("nope"), Err(Error::NotFound(_))));
    }
}
