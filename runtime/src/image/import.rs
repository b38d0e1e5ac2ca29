//! Importing images: an OCI image layout (directory or tarball) and `docker save` archives, in
//! both the old `manifest.json` form and the newer OCI form. Every blob is copied through the
//! digest check; on any error the blobs this import added are removed again.

use super::{
    io_err, layer, Descriptor, Error, ImageConfig, Index, Manifest, Store, MEDIA_INDEX, MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR, MEDIA_MANIFEST,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Import `path` (directory or tarball). Returns the names tagged.
pub fn import(store: &Store, path: &Path) -> Result<Vec<String>, Error> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        return import_dir(store, path, path);
    }
    // A tarball: unpack it (with the same escape checks as layers) into store scratch space.
    let tmp = store.temp_path("import");
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let result = layer::unpack(path, &tmp).and_then(|_| import_dir(store, &archive_root(&tmp, path)?, path));
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Where the image sits in an unpacked tarball: its root, or (for `tar cf img.tar img/`) the
/// one top-level directory when that holds an OCI layout's `oci-layout` and `index.json`.
fn archive_root(unpacked: &Path, origin: &Path) -> Result<PathBuf, Error> {
    if unpacked.join("manifest.json").is_file() || unpacked.join("index.json").is_file() {
        return Ok(unpacked.to_path_buf());
    }
    let mut top: Vec<(String, bool)> = Vec::new();
    for e in fs::read_dir(unpacked).map_err(io_err(unpacked))? {
        let e = e.map_err(io_err(unpacked))?;
        let is_dir = e.file_type().map_err(io_err(&e.path()))?.is_dir();
        top.push((e.file_name().to_string_lossy().into_owned(), is_dir));
    }
    top.sort();
    let layout_error = |reason: String| Error::ArchiveLayout { path: origin.to_path_buf(), reason };
    match top.as_slice() {
        [] => Err(Error::NotAnImage(origin.to_path_buf())),
        [(name, true)] => {
            let dir = unpacked.join(name);
            let missing: Vec<&str> = ["oci-layout", "index.json"]
                .into_iter()
                .filter(|f| !fs::symlink_metadata(dir.join(f)).is_ok_and(|m| m.is_file()))
                .collect();
            if missing.is_empty() {
                Ok(dir)
            } else {
                Err(layout_error(format!(
                    "its one top-level directory `{name}` is not an OCI image layout (no {})",
                    missing.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
                )))
            }
        }
        entries => Err(layout_error(format!(
            "no `index.json` or `manifest.json` at its root, and {} top-level entries ({}) rather than one \
             directory holding an OCI image layout",
            entries.len(),
            entries.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

/// Blobs added by one import, removed again unless the import succeeds.
struct Added<'a> {
    store: &'a Store,
    blobs: Vec<PathBuf>,
    done: bool,
}

impl Drop for Added<'_> {
    fn drop(&mut self) {
        if !self.done {
            for b in &self.blobs {
                let _ = fs::remove_file(b);
                if let Some(name) = b.file_name() {
                    let _ = fs::remove_dir_all(self.store.root().join("layers").join(name));
                }
            }
        }
    }
}

impl Added<'_> {
    fn put(&mut self, file: &Path, expected: Option<&str>) -> Result<(String, u64), Error> {
        let mut f = File::open(file)
            .map_err(|_| Error::Corrupt { path: file.to_path_buf(), reason: "referenced file is missing".into() })?;
        let existed = match expected {
            Some(d) => self.store.blob_path(d)?.exists(),
            None => false,
        };
        let (digest, size) = self.store.put_blob(&mut f, expected, file)?;
        if !existed {
            self.blobs.push(self.store.blob_path(&digest)?);
        }
        Ok((digest, size))
    }
}

fn layer_media(file: &Path) -> Result<&'static str, Error> {
    let mut magic = [0u8; 2];
    let mut f = File::open(file).map_err(io_err(file))?;
    let n = f.read(&mut magic).map_err(io_err(file))?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] { MEDIA_LAYER_GZIP } else { MEDIA_LAYER_TAR })
}

fn import_dir(store: &Store, dir: &Path, origin: &Path) -> Result<Vec<String>, Error> {
    let _lock = store.lock()?;
    let mut added = Added { store, blobs: Vec::new(), done: false };
    let names = if dir.join("manifest.json").is_file() {
        import_docker(store, dir, origin, &mut added)?
    } else if dir.join("index.json").is_file() {
        import_oci(store, dir, origin, &mut added)?
    } else {
        return Err(Error::NotAnImage(origin.to_path_buf()));
    };
    added.done = true;
    Ok(names)
}

/// Check a path from a manifest stays inside the archive.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, Error> {
    Ok(dir.join(layer::clean_path(Path::new(rel))?))
}

fn import_docker(store: &Store, dir: &Path, origin: &Path, added: &mut Added<'_>) -> Result<Vec<String>, Error> {
    let entries: Vec<DockerEntry> = read_json(&dir.join("manifest.json"))?;
    let mut names = Vec::new();
    for e in entries {
        let cfg_path = inside(dir, &e.config)?;
        let config: ImageConfig = read_json(&cfg_path)?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(Error::Corrupt {
                path: cfg_path,
                reason: format!("{} diff_ids for {} layers", config.rootfs.diff_ids.len(), e.layers.len()),
            });
        }
        let mut layers = Vec::new();
        for (rel, diff) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let file = inside(dir, rel)?;
            // The newer (OCI-form) save names blobs by digest: check it.
            let expected = rel.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}"));
            let (digest, size) = added.put(&file, expected.as_deref())?;
            store.layer_dir(&digest, Some(diff))?;
            layers.push(Descriptor {
                media_type: layer_media(&file)?.into(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            });
        }
        let tags = e.repo_tags.unwrap_or_default();
        let fallback = format!(
            "imported/{}",
            origin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
        );
        let tags = if tags.is_empty() { vec![fallback] } else { tags };
        for t in tags {
            store.commit(&t, &config, layers.clone(), BTreeMap::new())?;
            names.push(super::normalize_name(&t));
        }
    }
    Ok(names)
}

fn import_oci(store: &Store, dir: &Path, origin: &Path, added: &mut Added<'_>) -> Result<Vec<String>, Error> {
    let index: Index = read_json(&dir.join("index.json"))?;
    let mut names = Vec::new();
    let mut queue: Vec<Descriptor> = index.manifests;
    while let Some(d) = queue.pop() {
        let blob = dir.join("blobs/sha256").join(super::digest_hex(&d.digest)?);
        let (digest, _) = added.put(&blob, Some(&d.digest))?;
        if d.media_type == MEDIA_INDEX || d.media_type == "application/vnd.docker.distribution.manifest.list.v2+json" {
            let nested: Index = store.blob_json(&digest)?;
            for mut m in nested.manifests {
                let amd64 = m.platform.as_ref().and_then(|p| p.get("architecture")).is_none_or(|a| a == "amd64");
                if amd64 {
                    for (k, v) in &d.annotations {
                        m.annotations.entry(k.clone()).or_insert(v.clone());
                    }
                    queue.push(m);
                }
            }
            continue;
        }
        let manifest: Manifest = store.blob_json(&digest)?;
        let cfg_blob = dir.join("blobs/sha256").join(super::digest_hex(&manifest.config.digest)?);
        added.put(&cfg_blob, Some(&manifest.config.digest))?;
        let config: ImageConfig = store.blob_json(&manifest.config.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Corrupt { path: cfg_blob, reason: "diff_ids and layers differ in number".into() });
        }
        for (l, diff) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let file = dir.join("blobs/sha256").join(super::digest_hex(&l.digest)?);
            added.put(&file, Some(&l.digest))?;
            store.layer_dir(&l.digest, Some(diff))?;
        }
        let name = d
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| d.annotations.get("org.opencontainers.image.ref.name"))
            .cloned();
        let stem = origin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let name = match name {
            Some(n) if n.contains(':') || n.contains('/') => n,
            Some(tag) => format!("imported/{stem}:{tag}"),
            None => format!("imported/{stem}"),
        };
        let desc = Descriptor {
            media_type: MEDIA_MANIFEST.into(),
            digest: digest.clone(),
            size: d.size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        store.tag(&name, &desc)?;
        names.push(super::normalize_name(&name));
    }
    if names.is_empty() {
        return Err(Error::NotAnImage(origin.to_path_buf()));
    }
    Ok(names)
}
