//! Push and pull between the local image store and a registry, over `oci-client`. Manifests
//! are checked (media types, linux/amd64 in an index) before any blob moves; every blob is
//! streamed to a temp file in the store, checked against its size and digest, then renamed
//! into place; blobs the store already has are skipped; on any failure the blobs this pull
//! added are removed again, so the store never holds half an image.

use crate::media::{self, Parsed};
use cvbench_runtime::image::{self, Descriptor, ImageConfig, Manifest, Store};
use futures_util::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of a push or pull; each names the reference.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("cannot start the I/O runtime for {reference}")]
    Runtime {
        reference: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: not found in the registry")]
    NotFound {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("{reference}: {what} failed")]
    Registry {
        reference: String,
        what: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("{reference}: refused manifest")]
    Manifest {
        reference: String,
        #[source]
        source: media::Error,
    },
    #[error("{reference}: blob {digest} has digest {actual}: rejected")]
    DigestMismatch { reference: String, digest: String, actual: String },
    #[error("{reference}: blob {digest} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch { reference: String, digest: String, expected: u64, actual: u64 },
    #[error("{reference}: blob {digest} was cut off after {got} of {expected} bytes")]
    Truncated {
        reference: String,
        digest: String,
        got: u64,
        expected: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: {count} diff_ids in the config for {layers} layers")]
    ConfigMismatch { reference: String, count: usize, layers: usize },
    #[error("{reference}: image store")]
    Store {
        reference: String,
        #[source]
        source: image::Error,
    },
    #[error("{reference}: I/O error on {path}")]
    Io {
        reference: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to reach a registry.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// User and password, sent as Basic auth or traded for a bearer token when the registry
    /// asks (`WWW-Authenticate: Bearer`); anonymous when `None`.
    pub credentials: Option<(String, String)>,
}

impl Options {
    /// Credentials from `CVBENCH_REGISTRY_USER` and `CVBENCH_REGISTRY_PASSWORD`, if both are set.
    pub fn from_env() -> Options {
        let user = std::env::var("CVBENCH_REGISTRY_USER").ok();
        let pass = std::env::var("CVBENCH_REGISTRY_PASSWORD").ok();
        Options { credentials: user.zip(pass) }
    }
}

/// What a pull did and how long each part took.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PullReport {
    /// The name the image is tagged with in the store (the reference itself).
    pub name: String,
    pub manifest_digest: String,
    pub blobs_fetched: usize,
    pub blobs_skipped: usize,
    pub bytes_fetched: u64,
    /// Manifest(s) + every blob, verified and renamed into the store.
    pub pull_ns: u64,
    /// Unpacking the layers into directories (overlay lower dirs).
    pub unpack_ns: u64,
}

/// What a push did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PushReport {
    pub manifest_digest: String,
    pub blobs_pushed: usize,
    pub blobs_skipped: usize,
    pub bytes_pushed: u64,
    pub push_ns: u64,
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without a port).
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parse `host[:port]/repo[:tag|@digest]`; the registry host must be written out.
pub fn parse_reference(reference: &str) -> Result<Reference, Error> {
    let bad = |reason: &str| Error::InvalidReference { reference: reference.to_string(), reason: reason.into() };
    let first = reference.split('/').next().unwrap_or("");
    if !reference.contains('/') || !(first.contains(':') || first.contains('.') || first == "localhost") {
        return Err(bad("want host:port/repo:tag (the registry must be named)"));
    }
    let r: Reference = reference.parse().map_err(|e: oci_client::ParseError| bad(&e.to_string()))?;
    if r.registry() != first {
        return Err(bad("the registry part did not survive parsing"));
    }
    Ok(r)
}

/// A connection to one registry.
pub struct Client {
    oci: oci_client::Client,
    rt: tokio::runtime::Runtime,
    auth: RegistryAuth,
    reference: Reference,
    name: String,
}

impl Client {
    /// A client for the registry of `reference`: plain HTTP only when it is a loopback
    /// address, HTTPS otherwise.
    pub fn new(reference: &str, opts: &Options) -> Result<Client, Error> {
        let r = parse_reference(reference)?;
        let protocol = if is_loopback(r.registry()) {
            ClientProtocol::HttpsExcept(vec![r.registry().to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { reference: reference.to_string(), source })?;
        let auth = match &opts.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Client { oci: oci_client::Client::new(config), rt, auth, reference: r, name: reference.to_string() })
    }

    fn registry_err(&self, what: &str, source: OciDistributionError) -> Error {
        let reference = self.name.clone();
        let not_found = match &source {
            OciDistributionError::ImageManifestNotFoundError(_) => true,
            OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }),
            OciDistributionError::ServerError { code, .. } => *code == 404,
            _ => false,
        };
        if not_found {
            Error::NotFound { reference, source }
        } else {
            Error::Registry { reference, what: what.to_string(), source }
        }
    }

    fn store_err(&self) -> impl FnOnce(image::Error) -> Error + '_ {
        move |source| Error::Store { reference: self.name.clone(), source }
    }

    fn io_err<'a>(&'a self, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io { reference: self.name.clone(), path: path.to_path_buf(), source }
    }

    /// The manifest body and digest for `r`, parsed and checked; an index resolves to its
    /// linux/amd64 image manifest.
    fn fetch_manifest(&self) -> Result<(Vec<u8>, String, String, Manifest), Error> {
        let mut r = self.reference.clone();
        for _ in 0..2 {
            let (body, digest) = self
                .rt
                .block_on(self.oci.pull_manifest_raw(&r, &self.auth, &media::ACCEPT))
                .map_err(|e| self.registry_err("manifest request", e))?;
            let actual = sha256(&body);
            if actual != digest {
                return Err(Error::DigestMismatch { reference: self.name.clone(), digest, actual });
            }
            let parsed =
                media::parse(&body).map_err(|source| Error::Manifest { reference: self.name.clone(), source })?;
            match parsed {
                Parsed::Image { media_type, manifest } => return Ok((body.to_vec(), digest, media_type, manifest)),
                Parsed::Index(entries) => {
                    let d = media::pick_linux_amd64(&entries)
                        .map_err(|source| Error::Manifest { reference: self.name.clone(), source })?;
                    r = Reference::with_digest(r.registry().to_string(), r.repository().to_string(), d.digest.clone());
                }
            }
        }
        Err(Error::Manifest {
            reference: self.name.clone(),
            source: media::Error::UnknownMediaType("an index inside an index".into()),
        })
    }

    /// Stream one blob into the store: temp file, size + digest check, rename.
    fn fetch_blob(&self, store: &Store, d: &Descriptor) -> Result<u64, Error> {
        let dest = store.blob_path(&d.digest).map_err(self.store_err())?;
        let tmp = TempFile(store.temp_path("pull"));
        // The HTTP body arrives in small chunks: batch them into 1 MiB writes.
        let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp.0).map_err(self.io_err(&tmp.0))?);
        let od = OciDescriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size as i64,
            ..Default::default()
        };
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let result: Result<(), Error> = self.rt.block_on(async {
            let mut s = self
                .oci
                .pull_blob_stream(&self.reference, &od)
                .await
                .map_err(|e| self.registry_err("blob request", e))?;
            if let Some(len) = s.content_length.filter(|l| *l != d.size) {
                return Err(Error::SizeMismatch {
                    reference: self.name.clone(),
                    digest: d.digest.clone(),
                    expected: d.size,
                    actual: len,
                });
            }
            loop {
                match s.try_next().await {
                    Ok(Some(chunk)) => {
                        got += chunk.len() as u64;
                        if got > d.size {
                            return Err(Error::SizeMismatch {
                                reference: self.name.clone(),
                                digest: d.digest.clone(),
                                expected: d.size,
                                actual: got,
                            });
                        }
                        hasher.update(&chunk);
                        f.write_all(&chunk).map_err(self.io_err(&tmp.0))?;
                    }
                    Ok(None) => return Ok(()),
                    // oci-client's own digest check fails the stream at its end: report
                    // the mismatch ourselves, below, from our own hash.
                    Err(_) if got == d.size => return Ok(()),
                    Err(e) => {
                        return Err(Error::Truncated {
                            reference: self.name.clone(),
                            digest: d.digest.clone(),
                            got,
                            expected: d.size,
                            source: std::io::Error::other(e.to_string()),
                        })
                    }
                }
            }
        });
        result?;
        if got != d.size {
            return Err(Error::Truncated {
                reference: self.name.clone(),
                digest: d.digest.clone(),
                got,
                expected: d.size,
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            });
        }
        let actual = format!("sha256:{}", image::layer::hex(&hasher.finalize()));
        if actual != d.digest {
            return Err(Error::DigestMismatch { reference: self.name.clone(), digest: d.digest.clone(), actual });
        }
        let f = f.into_inner().map_err(|e| Error::Io {
            reference: self.name.clone(),
            path: tmp.0.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(self.io_err(&tmp.0))?;
        fs::rename(&tmp.0, &dest).map_err(self.io_err(&dest))?;
        tmp.disarm();
        Ok(got)
    }

    /// Pull the image into `store`, tagged with the reference, and unpack its layers.
    pub fn pull(&self, store: &Store) -> Result<PullReport, Error> {
        let t0 = Instant::now();
        let _lock = store.lock().map_err(self.store_err())?;
        let (body, digest, media_type, manifest) = self.fetch_manifest()?;
        let mut added = Added { blobs: Vec::new(), layers: Vec::new(), done: false };
        let mut report = PullReport { name: image::normalize_name(&self.name), ..Default::default() };
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let path = store.blob_path(&d.digest).map_err(self.store_err())?;
            if path.exists() {
                report.blobs_skipped += 1;
                continue;
            }
            let n = self.fetch_blob(store, d)?;
            added.blobs.push(path);
            report.blobs_fetched += 1;
            report.bytes_fetched += n;
        }
        let config: ImageConfig = store.blob_json(&manifest.config.digest).map_err(self.store_err())?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::ConfigMismatch {
                reference: self.name.clone(),
                count: config.rootfs.diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        let (stored, size) = store.put_bytes(&body).map_err(self.store_err())?;
        debug_assert_eq!(stored, digest);
        report.pull_ns = t0.elapsed().as_nanos() as u64;
        let t1 = Instant::now();
        for (l, diff) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let existed = store.root().join("layers").join(image::digest_hex(&l.digest).unwrap_or("")).is_dir();
            let dir = store.layer_dir(&l.digest, Some(diff)).map_err(self.store_err())?;
            if !existed {
                added.layers.push(dir);
            }
        }
        report.unpack_ns = t1.elapsed().as_nanos() as u64;
        let desc =
            Descriptor { media_type, digest: digest.clone(), size, annotations: BTreeMap::new(), platform: None };
        store.tag(&self.name, &desc).map_err(self.store_err())?;
        added.done = true;
        report.manifest_digest = digest;
        Ok(report)
    }

    /// Push the stored image `name` to the reference: blobs the registry has are skipped,
    /// the manifest goes up byte for byte (so its digest is the one in our store).
    pub fn push(&self, store: &Store, name: &str) -> Result<PushReport, Error> {
        let t0 = Instant::now();
        let d = store.find(name).map_err(self.store_err())?;
        let manifest: Manifest = store.blob_json(&d.digest).map_err(self.store_err())?;
        media::check_image(&manifest).map_err(|source| Error::Manifest { reference: self.name.clone(), source })?;
        let body_path = store.blob_path(&d.digest).map_err(self.store_err())?;
        let body = fs::read(&body_path).map_err(self.io_err(&body_path))?;
        let mut report = PushReport::default();
        for b in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
            let exists = self
                .rt
                .block_on(self.oci.blob_exists(&self.reference, &b.digest))
                .map_err(|e| self.registry_err("blob check", e))?;
            if exists {
                report.blobs_skipped += 1;
                continue;
            }
            let path = store.blob_path(&b.digest).map_err(self.store_err())?;
            let f = File::open(&path).map_err(self.io_err(&path))?;
            self.rt
                .block_on(self.oci.push_blob_stream(&self.reference, file_stream(f), &b.digest, Some(b.size)))
                .map_err(|e| self.registry_err("blob upload", e))?;
            report.blobs_pushed += 1;
            report.bytes_pushed += b.size;
        }
        let media_type = manifest.media_type.clone().unwrap_or_else(|| d.media_type.clone());
        let ct = http::HeaderValue::from_str(&media_type).map_err(|_| Error::Manifest {
            reference: self.name.clone(),
            source: media::Error::UnknownMediaType(media_type.clone()),
        })?;
        self.rt
            .block_on(self.oci.push_manifest_raw(&self.reference, body, ct))
            .map_err(|e| self.registry_err("manifest upload", e))?;
        report.manifest_digest = d.digest;
        report.push_ns = t0.elapsed().as_nanos() as u64;
        Ok(report)
    }
}

impl Client {
    /// Put a manifest body as is under the reference (the referenced blobs must be there):
    /// for indexes, and for tests that serve what a hostile registry would.
    pub fn put_manifest(&self, body: &[u8], media_type: &str) -> Result<String, Error> {
        let ct = http::HeaderValue::from_str(media_type).map_err(|_| Error::Manifest {
            reference: self.name.clone(),
            source: media::Error::UnknownMediaType(media_type.to_string()),
        })?;
        self.rt
            .block_on(self.oci.push_manifest_raw(&self.reference, body.to_vec(), ct))
            .map_err(|e| self.registry_err("manifest upload", e))
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", image::layer::hex(&Sha256::digest(bytes)))
}

/// A file read in 4 MiB chunks (the registry client's chunk size).
fn file_stream(
    f: File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    futures_util::stream::try_unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 4 << 20];
        let mut n = 0;
        while n < buf.len() {
            let k = f.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), f)))
    })
}

/// A temp file removed on drop unless renamed away.
struct TempFile(PathBuf);

impl TempFile {
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// Blobs and unpacked layers one pull added, removed again unless it succeeds.
struct Added {
    blobs: Vec<PathBuf>,
    layers: Vec<PathBuf>,
    done: bool,
}

impl Drop for Added {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for b in &self.blobs {
            let _ = fs::remove_file(b);
        }
        for l in &self.layers {
            let _ = fs::remove_dir_all(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for r in ["127.0.0.1:5000", "127.9.0.1", "localhost:80", "[::1]:5000", "localhost"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["10.0.0.1:5000", "example.com", "[fe80::1]:5000", "registry.local:5000"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn references_must_name_the_registry() {
        assert!(parse_reference("cvbench/workload:latest").is_err());
        assert!(parse_reference("workload").is_err());
        let r = parse_reference("127.0.0.1:5000/cvbench/workload:v1").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "cvbench/workload", Some("v1")));
    }
}
