//! Image store: build, import of OCI layouts and docker-save archives (both forms, dirs and
//! tarballs), layer stacking with whiteouts on a real overlay, concurrent imports, ls/rm.

mod common;

use common::{busybox_layer, gzip, layer_tar, root, run_capture, store_contents, write_oci_layout, Entry, Env};
use cvbench_runtime::image::import::import;
use std::fs;

#[test]
fn oci_layout_with_whiteouts_stacks_layers_on_overlay() {
    if !root("oci_layout_with_whiteouts_stacks_layers_on_overlay") {
        return;
    }
    let env = Env::new();
    let base = busybox_layer();
    let l1 = layer_tar(&[
        Entry::Dir("data"),
        Entry::File("data/keep", b"keep", 0o600),
        Entry::File("data/gone", b"gone", 0o644),
        Entry::Dir("opaque"),
        Entry::File("opaque/old", b"old", 0o644),
        Entry::Hardlink("data/keep-link", "data/keep"),
    ]);
    let l2 = layer_tar(&[
        Entry::File("data/.wh.gone", b"", 0o644),
        Entry::File("opaque/.wh..wh..opq", b"", 0o644),
        Entry::File("opaque/new", b"new", 0o644),
    ]);
    let src = tempfile::tempdir().unwrap();
    // Mix compressed and plain layers: detection is by magic bytes.
    write_oci_layout(src.path(), "test/layers:1", &[(gzip(&base), base.clone()), (l1.clone(), l1), (gzip(&l2), l2)]);
    let names = import(&env.store(), src.path()).unwrap();
    assert_eq!(names, ["test/layers:1"]);
    let cfg = env.config(
        "test/layers:1",
        &["/bin/busybox", "sh", "-c", "ls /data; ls /opaque; stat -c %a /data/keep; cat /data/keep-link"],
    );
    let (r, out, err) = run_capture(&cfg);
    assert_eq!(r.unwrap().exit.code, Some(0), "{err}");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["keep", "keep-link", "new", "600", "keep"], "{out}");
}

#[test]
fn oci_layout_tarball_imports() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::File("hello", b"hi", 0o644)]);
    write_oci_layout(src.path(), "latest", &[(l.clone(), l)]);
    let tarball = env.state.path().join("../cvbench-test-oci.tar");
    common::tar_dir(src.path(), &tarball);
    let names = import(&env.store(), &tarball).unwrap();
    fs::remove_file(&tarball).unwrap();
    assert_eq!(names, ["imported/cvbench-test-oci:latest"]);
    let r = env.store().resolve(&names[0]).unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("hello")).unwrap(), b"hi");
}

fn docker_config(diffs: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diffs}}))
    .unwrap()
}

#[test]
fn docker_save_old_form_imports() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::File("hello", b"old", 0o644)]);
    fs::create_dir(src.path().join("abc123")).unwrap();
    fs::write(src.path().join("abc123/layer.tar"), &l).unwrap();
    fs::write(src.path().join("abc123/VERSION"), "1.0").unwrap();
    let cfg = docker_config(&[common::digest(&l)]);
    let cfg_name = format!("{}.json", &common::digest(&cfg)[7..]);
    fs::write(src.path().join(&cfg_name), &cfg).unwrap();
    fs::write(
        src.path().join("manifest.json"),
        serde_json::to_vec(&serde_json::json!([{
            "Config": cfg_name, "RepoTags": ["docker/old:v1"], "Layers": ["abc123/layer.tar"]}]))
        .unwrap(),
    )
    .unwrap();
    let tarball = env.state.path().join("../cvbench-test-docker-old.tar");
    common::tar_dir(src.path(), &tarball);
    let names = import(&env.store(), &tarball).unwrap();
    fs::remove_file(&tarball).unwrap();
    assert_eq!(names, ["docker/old:v1"]);
    let r = env.store().resolve("docker/old:v1").unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("hello")).unwrap(), b"old");
    assert_eq!(r.config.config.cmd, Some(vec!["/hello".to_string()]));
}

#[test]
fn docker_save_oci_form_imports() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::File("hello", b"new", 0o644)]);
    let blobs = src.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let ld = common::digest(&l);
    fs::write(blobs.join(&ld[7..]), &l).unwrap();
    let cfg = docker_config(std::slice::from_ref(&ld));
    let cd = common::digest(&cfg);
    fs::write(blobs.join(&cd[7..]), &cfg).unwrap();
    fs::write(
        src.path().join("manifest.json"),
        serde_json::to_vec(&serde_json::json!([{
            "Config": format!("blobs/sha256/{}", &cd[7..]), "RepoTags": ["docker/new:v2"],
            "Layers": [format!("blobs/sha256/{}", &ld[7..])]}]))
        .unwrap(),
    )
    .unwrap();
    fs::write(src.path().join("index.json"), r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
    fs::write(src.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let names = import(&env.store(), src.path()).unwrap();
    assert_eq!(names, ["docker/new:v2"]);
    let r = env.store().resolve("docker/new:v2").unwrap();
    assert_eq!(fs::read(r.layer_dirs[0].join("hello")).unwrap(), b"new");
}

#[test]
fn concurrent_imports_of_the_same_image_both_succeed() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::File("f", &[7u8; 100_000], 0o644)]);
    write_oci_layout(src.path(), "test/same:1", &[(gzip(&l), l)]);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let state = env.state.path().to_path_buf();
            let p = src.path().to_path_buf();
            std::thread::spawn(move || {
                let store = cvbench_runtime::image::Store::open(&state).unwrap();
                import(&store, &p).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), ["test/same:1"]);
    }
    let (blobs, layers, names) = store_contents(env.state.path());
    assert_eq!((blobs, layers, names), (3, 1, 1));
    assert_eq!(fs::read_dir(env.state.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn ls_and_rm_manage_the_store() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("x"), "x").unwrap();
    cvbench_runtime::image::build::build(&env.store(), src.path(), "test/rm").unwrap();
    assert_eq!(env.store().list().unwrap()[0].name, "test/rm:latest");
    env.store().remove("test/rm").unwrap();
    assert_eq!(store_contents(env.state.path()), (0, 0, 0));
}

/// Every file under `dir` (relative path, mode, content), sorted.
fn tree(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if m.is_dir() {
                stack.push(p.clone());
            }
            let content = if m.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
            out.push((rel, m.mode(), content));
        }
    }
    out.sort();
    out
}

/// A tarball of `layout` with every path under the top-level directory `top` (`tar cf x.tar top/`).
fn tar_under(layout: &std::path::Path, top: &str, out: &std::path::Path) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(top, layout).unwrap();
    b.into_inner().unwrap();
}

#[test]
fn oci_layout_tarred_with_its_directory_imports_like_the_flat_form() {
    let (flat_env, dir_env) = (Env::new(), Env::new());
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::Dir("etc"), Entry::File("etc/hello", b"hi", 0o640), Entry::Symlink("h", "etc/hello")]);
    write_oci_layout(src.path(), "v1", &[(gzip(&l), l)]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (flat, topdir) = (a.path().join("img.tar"), b.path().join("img.tar"));
    common::tar_dir(src.path(), &flat);
    tar_under(src.path(), "img", &topdir);

    let flat_names = import(&flat_env.store(), &flat).unwrap();
    let dir_names = import(&dir_env.store(), &topdir).unwrap();

    assert_eq!(dir_names, flat_names);
    assert_eq!(dir_names, ["imported/img:v1"]);
    let list = |e: &Env| {
        e.store().list().unwrap().into_iter().map(|i| (i.name, i.digest, i.layers, i.size)).collect::<Vec<_>>()
    };
    assert_eq!(list(&dir_env), list(&flat_env));
    for sub in ["oci", "layers"] {
        let (x, y) = (tree(&dir_env.state.path().join(sub)), tree(&flat_env.state.path().join(sub)));
        assert!(!x.is_empty());
        assert_eq!(x, y, "{sub}");
    }
}

#[test]
fn archive_with_two_top_dirs_or_a_top_dir_without_index_is_a_clear_error() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    let l = layer_tar(&[Entry::File("hello", b"hi", 0o644)]);
    write_oci_layout(src.path(), "v1", &[(l.clone(), l)]);
    let out = tempfile::tempdir().unwrap();
    let two = out.path().join("two.tar");
    let mut b = tar::Builder::new(fs::File::create(&two).unwrap());
    b.append_dir_all("img", src.path()).unwrap();
    b.append_dir_all("other", src.path()).unwrap();
    b.into_inner().unwrap();
    fs::remove_file(src.path().join("index.json")).unwrap();
    let no_index = out.path().join("noindex.tar");
    tar_under(src.path(), "img", &no_index);

    let two_err = import(&env.store(), &two).unwrap_err().to_string();
    let no_index_err = import(&env.store(), &no_index).unwrap_err().to_string();

    assert!(two_err.contains("2 top-level entries (`img`, `other`)"), "{two_err}");
    assert!(
        no_index_err.contains("top-level directory `img` is not an OCI image layout (no `index.json`)"),
        "{no_index_err}"
    );
    assert_eq!(store_contents(env.state.path()), (0, 0, 0));
}
