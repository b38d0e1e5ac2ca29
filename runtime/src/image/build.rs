//! Building an image from a directory (one uncompressed tar layer), and the default image that
//! holds nothing but the workload binary.

use super::{io_err, Descriptor, Error, ImageConfig, ProcessDefaults, RootFs, Store, MEDIA_LAYER_TAR};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;

const WORKLOAD_SUM: &str = "cvbench.workload.sha256";
const WORKLOAD_STAMP: &str = "cvbench.workload.stamp";

/// Size and mtime of a file: a cheap "unchanged?" check before hashing it.
fn stamp(path: &Path) -> Result<String, Error> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).map_err(io_err(path))?;
    Ok(format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()))
}

/// Pack `dir` into a single-layer image tagged `name`. Ownership, modes, symlinks and
/// hardlinks are kept as on disk.
pub fn build(store: &Store, dir: &Path, name: &str) -> Result<Descriptor, Error> {
    build_with(store, dir, name, ProcessDefaults::default(), BTreeMap::new())
}

fn build_with(
    store: &Store,
    dir: &Path,
    name: &str,
    defaults: ProcessDefaults,
    annotations: BTreeMap<String, String>,
) -> Result<Descriptor, Error> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let _lock = store.lock()?;
    let tar_path = store.temp_path("layer.tar");
    let result = (|| {
        let f = File::create(&tar_path).map_err(io_err(&tar_path))?;
        let mut b = tar::Builder::new(f);
        b.follow_symlinks(false);
        b.append_dir_all(".", dir).map_err(io_err(dir))?;
        b.into_inner().and_then(|f| f.sync_all()).map_err(io_err(&tar_path))?;
        let mut f = File::open(&tar_path).map_err(io_err(&tar_path))?;
        let (digest, size) = store.put_blob(&mut f, None, &tar_path)?;
        // Unpack now: layers are unpacked once, at import/build time.
        store.layer_dir(&digest, Some(&digest))?;
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: defaults,
            rootfs: RootFs { kind: "layers".into(), diff_ids: vec![digest.clone()] },
        };
        let layer = Descriptor {
            media_type: MEDIA_LAYER_TAR.into(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        store.commit(name, &config, vec![layer], annotations)
    })();
    let _ = fs::remove_file(&tar_path);
    result
}

/// Make sure the default image exists and holds this exact workload binary (rebuilt when the
/// binary's sha256 changes). The binary sits at `/cvbench-workload`.
pub fn ensure_default_image(store: &Store, workload: &Path) -> Result<(), Error> {
    let st = stamp(workload)?;
    if let Ok(d) = store.find(super::DEFAULT_IMAGE) {
        // Same size and mtime as when the image was built: skip reading and hashing it.
        if d.annotations.get(WORKLOAD_STAMP) == Some(&st) {
            return Ok(());
        }
    }
    let bytes = fs::read(workload).map_err(io_err(workload))?;
    let sum = super::layer::hex(&sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)));
    if let Ok(d) = store.find(super::DEFAULT_IMAGE) {
        if d.annotations.get(WORKLOAD_SUM) == Some(&sum) && store.resolve(super::DEFAULT_IMAGE).is_ok() {
            return Ok(());
        }
    }
    let dir = store.temp_path("default-image");
    let result = (|| {
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        let bin = dir.join("cvbench-workload");
        fs::write(&bin, &bytes).map_err(io_err(&bin))?;
        fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(io_err(&bin))?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(io_err(&dir))?;
        let defaults = ProcessDefaults { entrypoint: Some(vec!["/cvbench-workload".into()]), ..Default::default() };
        let mut ann = BTreeMap::new();
        ann.insert(WORKLOAD_SUM.to_string(), sum);
        ann.insert(WORKLOAD_STAMP.to_string(), st);
        build_with(store, &dir, super::DEFAULT_IMAGE, defaults, ann)
    })();
    let _ = fs::remove_dir_all(&dir);
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_resolve_gives_unpacked_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("state")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/hello"), "hi").unwrap();
        std::os::unix::fs::symlink("/etc/hello", src.join("link")).unwrap();
        build(&store, &src, "t/one").unwrap();
        let r = store.resolve("t/one").unwrap();
        assert_eq!(r.layer_dirs.len(), 1);
        assert_eq!(fs::read(r.layer_dirs[0].join("etc/hello")).unwrap(), b"hi");
        assert!(fs::symlink_metadata(r.layer_dirs[0].join("link")).unwrap().file_type().is_symlink());
        let names: Vec<_> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["t/one:latest"]);
    }

    #[test]
    fn remove_deletes_unreferenced_blobs_and_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("state")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), "x").unwrap();
        build(&store, &src, "t/two").unwrap();
        store.remove("t/two").unwrap();
        assert!(store.list().unwrap().is_empty());
        let blobs = tmp.path().join("state/oci/blobs/sha256");
        assert_eq!(fs::read_dir(blobs).unwrap().count(), 0);
        assert_eq!(fs::read_dir(tmp.path().join("state/layers")).unwrap().count(), 0);
    }
}
