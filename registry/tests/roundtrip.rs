//! Push and pull through a real private registry (Debian's docker-registry): the workload
//! image byte for byte, blobs that are already there skipped, gzip and zstd layers, and an
//! image index resolved to its linux/amd64 manifest.

mod common;

use cvbench_registry::media::MEDIA_LAYER_ZSTD;
use cvbench_registry::{Client, Options};
use cvbench_runtime::image::{self, MEDIA_INDEX};
use std::fs;

#[test]
fn push_then_pull_round_trips_the_workload_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (Some(reg), Some(bin)) = (common::registry(&tmp), common::workload()) else { return };
    let src = common::store(&tmp, "src");
    image::build::ensure_default_image(&src, &bin).unwrap();
    let reference = reg.reference("cvbench/workload:rt");

    let pushed = Client::new(&reference, &Options::default()).unwrap().push(&src, image::DEFAULT_IMAGE).unwrap();
    let dst = common::store(&tmp, "dst");
    let pulled = Client::new(&reference, &Options::default()).unwrap().pull(&dst).unwrap();

    assert_eq!(pulled.manifest_digest, src.find(image::DEFAULT_IMAGE).unwrap().digest);
    assert_eq!(pushed.manifest_digest, pulled.manifest_digest);
    let r = dst.resolve(&reference).unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("cvbench-workload")).unwrap(), fs::read(&bin).unwrap());
    assert_eq!(r.config.config.entrypoint, Some(vec!["/cvbench-workload".to_string()]));
}

#[test]
fn second_push_and_pull_skip_blobs_already_there() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = common::registry(&tmp) else { return };
    let src = common::store(&tmp, "src");
    common::small_image(&src, "t/small", b"one");
    let reference = reg.reference("t/small:v1");
    let c = Client::new(&reference, &Options::default()).unwrap();
    c.push(&src, "t/small").unwrap();

    let again = c.push(&src, "t/small").unwrap();
    let dst = common::store(&tmp, "dst");
    let first = c.pull(&dst).unwrap();
    let second = c.pull(&dst).unwrap();

    assert_eq!((again.blobs_pushed, again.blobs_skipped), (0, 2));
    assert_eq!((first.blobs_fetched, first.blobs_skipped), (2, 0));
    assert_eq!((second.blobs_fetched, second.blobs_skipped, second.bytes_fetched), (0, 2, 0));
}

#[test]
fn gzip_and_zstd_layers_pull_and_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = common::registry(&tmp) else { return };
    let src = common::store(&tmp, "src");
    let gz_tar = common::tar_of(&[("g", b"gzip layer")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &gz_tar).unwrap();
    let zs_tar = common::tar_of(&[("z", b"zstd layer")]);
    let zs = zstd_cli(&zs_tar);
    common::commit_layers(
        &src,
        "t/comp",
        &[(gz.finish().unwrap(), image::MEDIA_LAYER_GZIP, gz_tar), (zs, MEDIA_LAYER_ZSTD, zs_tar)],
    );
    let reference = reg.reference("t/comp:v1");
    let c = Client::new(&reference, &Options::default()).unwrap();
    c.push(&src, "t/comp").unwrap();

    let dst = common::store(&tmp, "dst");
    c.pull(&dst).unwrap();

    let r = dst.resolve(&reference).unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("g")).unwrap(), b"gzip layer");
    assert_eq!(fs::read(r.layer_dirs[1].join("z")).unwrap(), b"zstd layer");
}

/// zstd-compress with the zstd CLI (a second, independent encoder).
fn zstd_cli(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("zstd").args(["-q", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
    match child.as_mut() {
        Ok(c) => {
            c.stdin.take().unwrap().write_all(data).unwrap();
        }
        Err(e) => panic!("zstd CLI: {e}"),
    }
    let out = child.unwrap().wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn an_index_resolves_to_its_linux_amd64_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = common::registry(&tmp) else { return };
    let src = common::store(&tmp, "src");
    let amd = common::small_image(&src, "t/amd", b"amd64");
    let arm = common::small_image(&src, "t/arm", b"arm64");
    for (name, tag) in [("t/amd", "amd"), ("t/arm", "arm")] {
        Client::new(&reg.reference(&format!("t/multi:{tag}")), &Options::default()).unwrap().push(&src, name).unwrap();
    }
    let entry = |d: &image::Descriptor, arch: &str| {
        serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size,
                           "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                   "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")]});
    let reference = reg.reference("t/multi:latest");
    let c = Client::new(&reference, &Options::default()).unwrap();
    c.put_manifest(&serde_json::to_vec(&index).unwrap(), MEDIA_INDEX).unwrap();

    let dst = common::store(&tmp, "dst");
    let pulled = c.pull(&dst).unwrap();

    assert_eq!(pulled.manifest_digest, amd.digest);
    let r = dst.resolve(&reference).unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("hello")).unwrap(), b"amd64");
}

#[test]
fn registry_process_is_gone_after_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = common::registry(&tmp) else { return };
    let pid = reg.pid().unwrap() as i32;
    let addr = reg.addr();

    drop(reg);

    assert!(!cvbench_registry::server::api_up(addr));
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(), "pid {pid} still exists");
}

#[test]
fn pull_trades_credentials_for_a_bearer_token_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = common::registry(&tmp) else { return };
    let src = common::store(&tmp, "src");
    common::small_image(&src, "t/auth", b"secret");
    Client::new(&reg.reference("t/auth:v1"), &Options::default()).unwrap().push(&src, "t/auth").unwrap();
    let proxy = common::Proxy::start(reg.addr(), common::Fault::RequireToken);
    let reference = format!("{}/t/auth:v1", proxy.addr);
    let opts = Options { credentials: Some(("u".into(), "p".into())) };

    let dst = common::store(&tmp, "dst");
    Client::new(&reference, &opts).unwrap().pull(&dst).unwrap();

    let r = dst.resolve(&reference).unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("hello")).unwrap(), b"secret");
}

#[test]
fn pull_without_credentials_is_refused_by_a_token_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = common::registry(&tmp) else { return };
    let src = common::store(&tmp, "src");
    common::small_image(&src, "t/auth", b"secret");
    Client::new(&reg.reference("t/auth:v1"), &Options::default()).unwrap().push(&src, "t/auth").unwrap();
    let proxy = common::Proxy::start(reg.addr(), common::Fault::RequireToken);
    let reference = format!("{}/t/auth:v1", proxy.addr);

    let dst = common::store(&tmp, "dst");
    let e = Client::new(&reference, &Options::default()).unwrap().pull(&dst).unwrap_err();

    assert!(e.to_string().contains(&reference), "{e}");
    assert!(dst.find(&reference).is_err());
}
