//! What a hostile or broken registry can send, against the real registry (tampered storage or
//! a misbehaving proxy in front of it): every case is refused with an error naming the
//! reference, and the store holds exactly what it held before.

mod common;

use common::{Fault, Proxy};
use cvbench_registry::client::Error;
use cvbench_registry::{Client, LocalRegistry, Options};
use cvbench_runtime::image::{self, Store};

/// A registry holding `t/bad:v1` (a 64 KiB layer of noise and its config) and the manifest.
fn pushed(tmp: &tempfile::TempDir) -> Option<(LocalRegistry, image::Manifest)> {
    let reg = common::registry(tmp)?;
    let src = common::store(tmp, "src");
    let tar = common::tar_of(&[("noise", &common::noise(64 << 10))]);
    let d = common::commit_layers(&src, "t/bad", &[(tar.clone(), image::MEDIA_LAYER_TAR, tar)]);
    Client::new(&reg.reference("t/bad:v1"), &Options::default()).unwrap().push(&src, "t/bad").unwrap();
    let m: image::Manifest = src.blob_json(&d.digest).unwrap();
    Some((reg, m))
}

/// Pull `reference` into a fresh store; the error, and proof that nothing was kept.
fn pull_fails(tmp: &tempfile::TempDir, reference: &str) -> Error {
    let dst = common::store(tmp, "dst");
    let before = common::snapshot(&dst);
    let e = Client::new(reference, &Options::default()).unwrap().pull(&dst).unwrap_err();
    assert_eq!(common::snapshot(&dst), before, "the failed pull left something in the store");
    assert!(matches!(dst.find(reference), Err(image::Error::NotFound(_))));
    assert!(e.to_string().contains(reference), "error does not name {reference}: {e}");
    e
}

fn blob_path(reg: &LocalRegistry, digest: &str) -> std::path::PathBuf {
    let p = reg.blob_data_path(digest).unwrap();
    assert!(p.is_file(), "registry layout changed: {} missing", p.display());
    p
}

#[test]
fn tampered_blob_is_rejected_and_nothing_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, m)) = pushed(&tmp) else { return };
    let p = blob_path(&reg, &m.layers[0].digest);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();

    let e = pull_fails(&tmp, &reg.reference("t/bad:v1"));

    assert!(matches!(e, Error::DigestMismatch { ref digest, .. } if *digest == m.layers[0].digest), "{e}");
}

#[test]
fn truncated_blob_is_rejected_and_nothing_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, m)) = pushed(&tmp) else { return };
    let proxy = Proxy::start(reg.addr(), Fault::TruncateBlobs);

    let e = pull_fails(&tmp, &format!("{}/t/bad:v1", proxy.addr));

    assert!(
        matches!(e, Error::Truncated { ref digest, got, expected, .. }
        if *digest == m.layers[0].digest && got < expected),
        "{e}"
    );
}

#[test]
fn registry_that_is_down_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, _)) = pushed(&tmp) else { return };
    let reference = reg.reference("t/bad:v1");
    drop(reg);

    let e = pull_fails(&tmp, &reference);

    assert!(matches!(e, Error::Registry { .. }), "{e}");
}

#[test]
fn registry_answering_500_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, _)) = pushed(&tmp) else { return };
    let proxy = Proxy::start(reg.addr(), Fault::Status500);

    let e = pull_fails(&tmp, &format!("{}/t/bad:v1", proxy.addr));

    assert!(matches!(e, Error::Registry { .. }), "{e}");
    assert!(format!("{:?}", e).contains("500"), "{e:?}");
}

#[test]
fn blob_missing_from_the_registry_is_a_404_and_nothing_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, m)) = pushed(&tmp) else { return };
    std::fs::remove_file(blob_path(&reg, &m.layers[0].digest)).unwrap();

    let e = pull_fails(&tmp, &reg.reference("t/bad:v1"));

    assert!(matches!(e, Error::NotFound { .. } | Error::Registry { .. }), "{e}");
    assert!(format!("{e:?}").to_lowercase().contains("blob"), "{e:?}");
}

#[test]
fn missing_tag_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, _)) = pushed(&tmp) else { return };

    let e = pull_fails(&tmp, &reg.reference("t/bad:no-such-tag"));

    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

#[test]
fn unknown_layer_media_type_is_refused_before_any_blob_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, mut m)) = pushed(&tmp) else { return };
    m.layers[0].media_type = "application/x-mystery".into();
    let reference = reg.reference("t/bad:odd");
    let c = Client::new(&reference, &Options::default()).unwrap();
    c.put_manifest(&serde_json::to_vec(&m).unwrap(), image::MEDIA_MANIFEST).unwrap();

    let e = pull_fails(&tmp, &reference);

    assert!(matches!(e, Error::Manifest { .. }), "{e}");
    assert!(format!("{e:?}").contains("application/x-mystery"), "{e:?}");
}

#[test]
fn failed_pull_keeps_blobs_the_store_had_before() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((reg, m)) = pushed(&tmp) else { return };
    let dst: Store = common::store(&tmp, "dst");
    // The config is already here (from an earlier pull of another image, say).
    let src = common::store(&tmp, "src");
    let cfg = std::fs::read(src.blob_path(&m.config.digest).unwrap()).unwrap();
    dst.put_bytes(&cfg).unwrap();
    let p = blob_path(&reg, &m.layers[0].digest);
    std::fs::write(&p, b"short").unwrap();
    let before = common::snapshot(&dst);

    let r = Client::new(&reg.reference("t/bad:v1"), &Options::default()).unwrap().pull(&dst);

    assert!(matches!(r, Err(Error::SizeMismatch { .. })), "{r:?}");
    assert_eq!(common::snapshot(&dst), before);
}
