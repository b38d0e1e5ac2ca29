//! What the registry scenarios share for one bench run: a private registry (Debian's
//! docker-registry on 127.0.0.1) under `/var/tmp/cvbench-images-<pid>`, the images they pull
//! built once in a source store there and pushed to it, and the helpers that time a workload
//! to READY. Stopped by pid at the end of the bench ([`shutdown`]) and on Ctrl-C.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cvbench_registry::{Client, LocalRegistry, Options};
use cvbench_runtime::image::{self, Descriptor, ImageConfig, ProcessDefaults, RootFs, Store};

/// Size of the incompressible layer of the cold-start image, and of the file the image-depth
/// scenario writes to (copy-up), in a bench run.
pub const BIG_BYTES: usize = 64 << 20;
static BIG: AtomicUsize = AtomicUsize::new(BIG_BYTES);

/// The size of the big file in the images this process builds ([`BIG_BYTES`] unless a test
/// under an emulated CPU asked for less with [`set_big_bytes`] before the first [`get`]).
pub fn big_bytes() -> usize {
    BIG.load(Ordering::Relaxed)
}

/// Build the images with a smaller big file (tests; before the first [`get`]).
pub fn set_big_bytes(n: usize) {
    BIG.store(n, Ordering::Relaxed);
}
/// Image depths the image-depth scenario compares.
pub const DEPTHS: &[u32] = &[1, 8, 32, 128];
/// The big file inside the images.
pub const BIG_FILE: &str = "big.bin";

/// Errors preparing the shared images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the private registry")]
    Registry(#[from] cvbench_registry::server::Error),
    #[error("building image {0}")]
    Image(String, #[source] image::Error),
    #[error("pushing {0}")]
    Push(String, #[source] Box<cvbench_registry::client::Error>),
    #[error("I/O error on {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("workload binary")]
    Workload(#[from] crate::paths::PathsError),
}

/// The registry and what was pushed to it.
pub struct ImageBench {
    pub dir: PathBuf,
    registry: Mutex<LocalRegistry>,
    /// Registry reference of the cold-start image (workload + 64 MiB of noise).
    pub cold_ref: String,
    /// Registry reference of the image of each depth, built and pushed on first use.
    depth_refs: OnceLock<Result<BTreeMap<u32, String>, String>>,
    /// Bytes per image in the registry (for the report's notes).
    pub cold_bytes: u64,
    /// The source store the images are built in.
    src: Store,
    workload: Vec<u8>,
}

static CTX: Mutex<Option<Arc<ImageBench>>> = Mutex::new(None);

/// The shared images, made on first use.
pub fn get() -> Result<Arc<ImageBench>, String> {
    let mut g = CTX.lock().map_err(|_| "image bench lock poisoned".to_string())?;
    if let Some(c) = g.as_ref() {
        return Ok(c.clone());
    }
    let c = Arc::new(ImageBench::prepare().map_err(|e| crate::runner::chain(&e))?);
    cvbench_runtime::cleanup::on_interrupt(shutdown_now);
    *g = Some(c.clone());
    Ok(c)
}

fn shutdown_now() {
    if let Ok(mut g) = CTX.try_lock() {
        if let Some(c) = g.take() {
            c.stop();
        }
    }
}

/// Stop the private registry and remove its directory (end of the bench).
pub fn shutdown() {
    shutdown_now();
}

/// Build and push the images before the matrix when it has registry scenarios, so the
/// first unit's cell budget does not pay for it (a failure is reported by every unit).
pub fn prepare_for(plan: &super::Plan) {
    use super::Shape;
    if plan.scenarios.iter().any(|s| matches!(s.shape, Shape::ColdStart | Shape::ImageDepth { .. })) {
        let ctx = get();
        if plan.scenarios.iter().any(|s| matches!(s.shape, Shape::ImageDepth { .. })) {
            let _ = ctx.map(|c| c.depth_ref(1));
        }
    }
}

/// Calls [`shutdown`] when dropped: held by the matrix for its whole run.
pub struct ShutdownGuard;

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        shutdown();
    }
}

fn tar_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_entry_type(if path.ends_with('/') { tar::EntryType::Directory } else { tar::EntryType::Regular });
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data)
}

/// Incompressible bytes (splitmix64: gzip cannot shrink them), the same on every run.
pub fn noise(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data)?;
    gz.finish()
}

/// A layer blob in the store and the digest of its uncompressed tar (its diff id).
type Layer = (Descriptor, String);

/// Store a layer: `blob` as served, `tar` uncompressed (`None`: the blob is the tar).
fn put_layer(store: &Store, blob: &[u8], media: &str, tar: Option<&[u8]>) -> Result<Layer, image::Error> {
    let (digest, size) = store.put_bytes(blob)?;
    let diff = match tar {
        Some(t) => {
            use sha2::Digest;
            format!("sha256:{}", image::layer::hex(&sha2::Sha256::digest(t)))
        }
        None => digest.clone(),
    };
    Ok((Descriptor { media_type: media.into(), digest, size, annotations: BTreeMap::new(), platform: None }, diff))
}

/// Commit an image from stored layers, bottom first.
fn commit(store: &Store, name: &str, layers: Vec<Layer>) -> Result<Descriptor, image::Error> {
    let _lock = store.lock()?;
    let (descs, diff_ids): (Vec<_>, Vec<_>) = layers.into_iter().unzip();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ProcessDefaults { entrypoint: Some(vec!["/cvbench-workload".into()]), ..Default::default() },
        rootfs: RootFs { kind: "layers".into(), diff_ids },
    };
    store.commit(name, &config, descs, BTreeMap::new())
}

/// The base layer of every image: the directories a container needs and the workload, plus
/// `extra` files.
fn base_layer(workload: &[u8], extra: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for d in ["proc/", "dev/", "sys/", "tmp/", "data/"] {
        tar_entry(&mut b, d, &[], 0o755)?;
    }
    tar_entry(&mut b, "cvbench-workload", workload, 0o755)?;
    for (p, data) in extra {
        tar_entry(&mut b, p, data, 0o644)?;
    }
    b.into_inner()
}

impl ImageBench {
    /// Start the registry and push the cold-start image (the depth images come on first use).
    fn prepare() -> Result<ImageBench, Error> {
        let dir = PathBuf::from(format!("/var/tmp/cvbench-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
        let registry = LocalRegistry::start(&dir.join("registry"), false)?;
        let src = Store::open(&dir.join("src")).map_err(|e| Error::Image("source store".into(), e))?;
        let bin = crate::paths::workload_binary()?;
        let workload = std::fs::read(&bin).map_err(|e| Error::Io(bin.clone(), e))?;
        let io = |e| Error::Io(dir.clone(), e);
        let big = noise(big_bytes());
        // Cold start: gzip layers, as registries usually serve them.
        let l1 = base_layer(&workload, &[]).map_err(io)?;
        let mut l2b = tar::Builder::new(Vec::new());
        tar_entry(&mut l2b, BIG_FILE, &big, 0o644).map_err(io)?;
        let l2 = l2b.into_inner().map_err(io)?;
        let img = |e| Error::Image("bench/cold".into(), e);
        let cold_layers = vec![
            put_layer(&src, &gzip(&l1).map_err(io)?, image::MEDIA_LAYER_GZIP, Some(&l1)).map_err(img)?,
            put_layer(&src, &gzip(&l2).map_err(io)?, image::MEDIA_LAYER_GZIP, Some(&l2)).map_err(img)?,
        ];
        let cold_bytes = cold_layers.iter().map(|l| l.0.size).sum();
        commit(&src, "bench/cold", cold_layers).map_err(img)?;
        let cold_ref = registry.reference("cvbench/cold:latest");
        push(&cold_ref, &src, "bench/cold")?;
        Ok(ImageBench {
            dir,
            registry: Mutex::new(registry),
            cold_ref,
            depth_refs: OnceLock::new(),
            cold_bytes,
            src,
            workload,
        })
    }

    /// The registry reference of the image `layers` deep (all depths built and pushed at the
    /// first call).
    pub fn depth_ref(&self, layers: u32) -> Result<String, String> {
        let refs = self.depth_refs.get_or_init(|| self.push_depths().map_err(|e| crate::runner::chain(&e)));
        let refs = refs.as_ref().map_err(Clone::clone)?;
        refs.get(&layers).cloned().ok_or_else(|| format!("no image of depth {layers}"))
    }

    /// Image depth: uncompressed layers; the bottom one holds the big file.
    fn push_depths(&self) -> Result<BTreeMap<u32, String>, Error> {
        let (src, dir) = (&self.src, &self.dir);
        let io = |e| Error::Io(dir.clone(), e);
        let img = |e| Error::Image("bench/depth".into(), e);
        let big = noise(big_bytes());
        let bottom = base_layer(&self.workload, &[(BIG_FILE, &big), ("layer-0", b"0")]).map_err(io)?;
        let bottom = put_layer(src, &bottom, image::MEDIA_LAYER_TAR, None).map_err(img)?;
        let max = DEPTHS.iter().copied().max().unwrap_or(1);
        let mut small = Vec::new();
        for i in 1..max {
            let mut b = tar::Builder::new(Vec::new());
            tar_entry(&mut b, &format!("layer-{i}"), i.to_string().as_bytes(), 0o644).map_err(io)?;
            small.push(put_layer(src, &b.into_inner().map_err(io)?, image::MEDIA_LAYER_TAR, None).map_err(img)?);
        }
        let mut depth_refs = BTreeMap::new();
        for &n in DEPTHS {
            let layers: Vec<Layer> =
                std::iter::once(bottom.clone()).chain(small.iter().take(n as usize - 1).cloned()).collect();
            let name = format!("bench/depth-{n}");
            commit(src, &name, layers).map_err(|e| Error::Image(name.clone(), e))?;
            let r = self
                .registry
                .lock()
                .map(|g| g.reference(&format!("cvbench/depth:{n}")))
                .map_err(|_| Error::Io(dir.clone(), std::io::Error::other("registry lock poisoned")))?;
            push(&r, src, &name)?;
            depth_refs.insert(n, r);
        }
        Ok(depth_refs)
    }

    fn stop(&self) {
        if let Ok(mut r) = self.registry.lock() {
            r.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// A fresh, empty directory under the bench dir.
    pub fn fresh_dir(&self, what: &str) -> Result<PathBuf, String> {
        let p = self.dir.join(what);
        remove_tree(&p)?;
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }
}

fn push(reference: &str, src: &Store, name: &str) -> Result<(), Error> {
    let c = Client::new(reference, &Options::default()).map_err(|e| Error::Push(reference.into(), Box::new(e)))?;
    c.push(src, name).map_err(|e| Error::Push(reference.into(), Box::new(e)))?;
    Ok(())
}

/// Remove a directory tree if it exists.
pub fn remove_tree(p: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", p.display())),
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> Result<(), String> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("dropping caches: {e}"))
}

/// Read `out` until a READY line (the instant it came), within `timeout`.
pub fn wait_ready(out: impl std::io::Read + Send + 'static, timeout: Duration) -> Result<Instant, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if crate::record::is_ready_line(&line) {
                let _ = tx.send(Instant::now());
            }
        }
    });
    rx.recv_timeout(timeout).map_err(|_| "the workload never printed READY".to_string())
}
