//! Shared by the registry tests: a private registry per test, stores in temp dirs, images
//! made through the store's own API, a snapshot of what a store holds, and a small HTTP proxy
//! that makes a well-behaved registry misbehave.
#![allow(dead_code)]

use cvbench_registry::LocalRegistry;
use cvbench_runtime::image::{self, Descriptor, ImageConfig, ProcessDefaults, RootFs, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A registry in a temp dir, or None (with a loud SKIPPED) when it is not installed.
pub fn registry(tmp: &tempfile::TempDir) -> Option<LocalRegistry> {
    if !Path::new(cvbench_registry::server::REGISTRY_BIN).is_file() {
        eprintln!("SKIPPED: {} is not installed", cvbench_registry::server::REGISTRY_BIN);
        return None;
    }
    Some(LocalRegistry::start(&tmp.path().join("registry"), false).expect("starting docker-registry"))
}

pub fn store(tmp: &tempfile::TempDir, name: &str) -> Store {
    Store::open(&tmp.path().join(name)).unwrap()
}

/// The workload binary (env CVBENCH_WORKLOAD or the repo's release build).
pub fn workload() -> Option<PathBuf> {
    let p = std::env::var_os("CVBENCH_WORKLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../workload/target/release/cvbench-workload"));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: workload binary {} missing (cargo build builds it)", p.display());
        None
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", image::layer::hex(&Sha256::digest(b)))
}

/// A tar holding `files`.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Commit an image whose layers are the given (blob bytes, media type, uncompressed tar).
pub fn commit_layers(store: &Store, name: &str, layers: &[(Vec<u8>, &str, Vec<u8>)]) -> Descriptor {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, media, tar) in layers {
        let (digest, size) = store.put_bytes(blob).unwrap();
        descs.push(Descriptor {
            media_type: media.to_string(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        });
        diff_ids.push(sha256(tar));
    }
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ProcessDefaults::default(),
        rootfs: RootFs { kind: "layers".into(), diff_ids },
    };
    store.commit(name, &config, descs, BTreeMap::new()).unwrap()
}

/// A one-layer image with one small file; returns its manifest descriptor.
pub fn small_image(store: &Store, name: &str, content: &[u8]) -> Descriptor {
    let tar = tar_of(&[("hello", content)]);
    commit_layers(store, name, &[(tar.clone(), image::MEDIA_LAYER_TAR, tar)])
}

/// Incompressible bytes (a counter through sha256), so a layer cannot shrink.
pub fn noise(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(i.to_le_bytes()));
        i += 1;
    }
    out.truncate(len);
    out
}

/// Everything a store holds: blob names, unpacked layers, temp files, tagged names.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub blobs: Vec<String>,
    pub layers: Vec<String>,
    pub tmp: Vec<String>,
    pub names: Vec<String>,
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn snapshot(store: &Store) -> Snapshot {
    let root = store.root();
    Snapshot {
        blobs: names_in(&root.join("oci/blobs/sha256")),
        layers: names_in(&root.join("layers")),
        tmp: names_in(&root.join("tmp")),
        names: store.index().unwrap().manifests.iter().filter_map(|d| d.annotations.values().next().cloned()).collect(),
    }
}

/// How the proxy misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer every request with a 500.
    Status500,
    /// Pass the headers of blob responses over 4 KiB but only half their body, then close.
    TruncateBlobs,
    /// Ask for a bearer token (`WWW-Authenticate: Bearer realm=<proxy>/token`), hand one out at
    /// `/token` only for Basic `u:p`, and pass only requests that carry it.
    RequireToken,
}

/// The token [`Fault::RequireToken`] hands out.
pub const TOKEN: &str = "cvbench-test-token";

/// A one-request-per-connection HTTP proxy in front of `upstream`; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = serve(c, upstream, fault);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read up to the end of the head (and a body of Content-Length bytes).
fn read_message(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((head, body))
}

fn serve(mut c: TcpStream, upstream: SocketAddr, fault: Fault) -> std::io::Result<()> {
    let (head, body) = read_message(&mut c)?;
    if fault == Fault::Status500 {
        let msg = b"injected failure";
        write!(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", msg.len())?;
        return c.write_all(msg);
    }
    if fault == Fault::RequireToken {
        let lower = head.to_ascii_lowercase();
        let first = lower.lines().next().unwrap_or("").to_string();
        if first.contains(" /token") {
            // base64("u:p")
            let (status, body) = if lower.contains("authorization: basic dtpw") {
                ("200 OK", format!("{{\"token\":\"{TOKEN}\",\"expires_in\":300}}"))
            } else {
                ("401 Unauthorized", "{}".to_string())
            };
            write!(c, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
            return Ok(());
        }
        if !lower.contains(&format!("authorization: bearer {}", TOKEN.to_ascii_lowercase())) {
            let me = c.local_addr()?;
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#;
            write!(
                c,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"cvbench-test\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
    }
    let is_blob_get = head.starts_with("GET ") && head.lines().next().is_some_and(|l| l.contains("/blobs/sha256:"));
    // Ask upstream to close after its answer, so its whole response is one read-to-end.
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let head = head.trim_end_matches("\r\n").to_string() + "\r\nConnection: close\r\n\r\n";
    let mut u = TcpStream::connect(upstream)?;
    u.write_all(head.as_bytes())?;
    u.write_all(&body)?;
    let mut resp = Vec::new();
    u.read_to_end(&mut resp)?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
    let body_len = resp.len() - split;
    if fault == Fault::TruncateBlobs && is_blob_get && body_len > 4096 {
        c.write_all(&resp[..split + body_len / 2])?;
        return Ok(());
    }
    c.write_all(&resp)
}
