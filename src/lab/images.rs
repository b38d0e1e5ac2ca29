//! Lab 3 (images and overlayfs): build a two-layer image in `docker save`
//! format whose top layer deletes a file with a `.wh.` whiteout, import it
//! into the runtime's store, run a container from it and read its overlay
//! root from the host; then time copy-up on an overlay mount of our own.

use crate::workload::Workload;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use cvbench_runtime::image::{self, Store};

use super::live::{self, Held};
use super::{backend_ready, progress, yes, LabOptions, LabReport, Table};
use crate::backend::BackendOptions;

pub fn run(opts: &LabOptions, r: &mut LabReport) {
    if !nix::unistd::geteuid().is_root() {
        r.unavailable("images and overlay mounts need root: run cvbench lab 3 as root");
        return;
    }
    image_part(r);
    copy_up(opts, r);
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn sha256_file(p: &Path) -> Result<String, String> {
    let bytes = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn write(p: &Path, text: &str) -> Result<(), String> {
    fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Build `dir/lab3.tar` (docker-save, two layers) and return its path.
fn build_tarball(dir: &Path, tag: &str) -> Result<PathBuf, String> {
    let workload = crate::paths::workload_binary().map_err(|e| e.to_string())?;
    let base = dir.join("base");
    let top = dir.join("top");
    for d in [base.join("etc"), top.join("etc")] {
        fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    fs::copy(&workload, base.join("cvbench-workload")).map_err(|e| format!("copying {}: {e}", workload.display()))?;
    write(&base.join("etc/motd"), "hello from the base layer\n")?;
    write(&base.join("etc/keep"), "kept\n")?;
    write(&top.join("etc/.wh.motd"), "")?;
    write(&top.join("etc/added"), "added by the top layer\n")?;
    let l1 = dir.join("layer1.tar");
    let l2 = dir.join("layer2.tar");
    sh(Command::new("tar").arg("-C").arg(&base).arg("-cf").arg(&l1).arg("."))?;
    sh(Command::new("tar").arg("-C").arg(&top).arg("-cf").arg(&l2).arg("."))?;
    let (d1, d2) = (sha256_file(&l1)?, sha256_file(&l2)?);
    write(
        &dir.join("config.json"),
        &format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/cvbench-workload"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{d1}","sha256:{d2}"]}}}}"#
        ),
    )?;
    write(
        &dir.join("manifest.json"),
        &format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":["layer1.tar","layer2.tar"]}}]"#),
    )?;
    let out = dir.join("lab3.tar");
    sh(Command::new("tar").arg("-C").arg(dir).arg("-cf").arg(&out).args([
        "manifest.json",
        "config.json",
        "layer1.tar",
        "layer2.tar",
    ]))?;
    Ok(out)
}

/// Removes the lab's image from the store on drop.
struct ImageGuard<'a> {
    store: &'a Store,
    name: String,
}

impl Drop for ImageGuard<'_> {
    fn drop(&mut self) {
        let _ = self.store.remove(&self.name);
    }
}

fn image_part(r: &mut LabReport) {
    let ct = match backend_ready(crate::backend::BackendId::Container) {
        Ok(b) => b,
        Err(reason) => {
            r.unavailable(format!("image part: {reason}"));
            return;
        }
    };
    let tmp = match tempfile::Builder::new().prefix("cvbench-lab3-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            r.check("a scratch directory can be made", false, e.to_string());
            return;
        }
    };
    let tag = format!("cvbench-lab3-{}:latest", std::process::id());
    progress("building a two-layer docker-save tarball (the top layer whites out /etc/motd) and importing it");
    let tarball = match build_tarball(tmp.path(), &tag) {
        Ok(p) => p,
        Err(e) => {
            r.check("the docker-save tarball can be built", false, e);
            return;
        }
    };
    let store = match Store::open(Path::new(cvbench_runtime::DEFAULT_STATE_DIR)) {
        Ok(s) => s,
        Err(e) => {
            r.check("the image store opens", false, live::error_chain(&e));
            return;
        }
    };
    let t0 = Instant::now();
    let imported = image::import::import(&store, &tarball);
    let import_ms = t0.elapsed().as_secs_f64() * 1e3;
    let _guard = ImageGuard { store: &store, name: tag.clone() };
    let names = match imported {
        Ok(n) => n,
        Err(e) => {
            r.check("the docker-save tarball imports", false, live::error_chain(&e));
            return;
        }
    };
    let resolved = store.resolve(&tag);
    let layer_dirs = resolved.as_ref().map(|x| x.layer_dirs.clone()).unwrap_or_default();
    // The whiteout as the runtime unpacked it: a 0/0 character device in the top layer.
    let wh = layer_dirs.last().map(|d| d.join("etc/motd"));
    let wh_meta = wh.as_ref().and_then(|p| fs::symlink_metadata(p).ok());
    let wh_is_dev00 = wh_meta.as_ref().is_some_and(|m| m.file_type().is_char_device() && m.rdev() == 0);
    let mut t = Table::new("The imported image (docker-save, two layers)", &["", "value"]);
    t.row(["tarball", &tarball.display().to_string()]);
    t.row(["import took", &format!("{import_ms:.1} ms")]);
    t.row(["names", &names.join(", ")]);
    t.row(["layers", &layer_dirs.len().to_string()]);
    for (i, d) in layer_dirs.iter().enumerate() {
        t.row([format!("layer {} (bottom first)", i + 1), d.display().to_string()]);
    }
    t.row([
        "top layer's etc/motd".to_string(),
        match &wh_meta {
            Some(m) if m.file_type().is_char_device() => format!(
                "character device {}:{} (an overlay whiteout)",
                nix::sys::stat::major(m.rdev()),
                nix::sys::stat::minor(m.rdev())
            ),
            Some(_) => "a regular file (NOT converted to a whiteout)".into(),
            None => "absent".into(),
        },
    ]);
    r.tables.push(t);
    r.check(
        "the docker-save tarball imports with two layers",
        layer_dirs.len() == 2,
        format!("{} layer(s)", layer_dirs.len()),
    );
    r.check("the .wh.motd entry became a 0/0 character device", wh_is_dev00, yes(wh_is_dev00).to_string());

    progress("running an idle container from the image and reading its root from the host");
    let options = BackendOptions { image: Some(tag.clone()), ..Default::default() };
    let held = match Held::start(ct.as_ref(), Workload::Idle, &[], &options, Duration::from_secs(60)) {
        Ok(h) => h,
        Err(e) => {
            r.check("a container runs from the imported image", false, live::error_chain(&e));
            return;
        }
    };
    let Some(pid) = held.payload_pid() else {
        r.check("the container's process is visible from the host", false, format!("pids {:?}", held.pids()));
        return;
    };
    let root = live::root_mount(pid);
    let lowers: Vec<String> = root
        .as_ref()
        .and_then(|(_, o)| o.split(',').find_map(|kv| kv.strip_prefix("lowerdir=")))
        .map(|l| l.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let upper = root
        .as_ref()
        .and_then(|(_, o)| o.split(',').find_map(|kv| kv.strip_prefix("upperdir=")))
        .unwrap_or("")
        .to_string();
    let etc = PathBuf::from(format!("/proc/{pid}/root/etc"));
    let mut listing: Vec<String> = fs::read_dir(&etc)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    listing.sort();
    drop(held);
    let mut t = Table::new("The container's root, read from the host", &["", "value"]);
    t.row(["root filesystem", root.as_ref().map(|(f, _)| f.as_str()).unwrap_or("unreadable")]);
    for (i, l) in lowers.iter().enumerate() {
        t.row([format!("lowerdir {} (top first)", i + 1), l.clone()]);
    }
    t.row(["upperdir", upper.as_str()]);
    t.row(["ls /etc in the container", &listing.join(" ")]);
    r.tables.push(t);
    let overlay = root.as_ref().is_some_and(|(f, _)| f == "overlay");
    r.check("the container's root is an overlay mount", overlay, yes(overlay).to_string());
    r.check("one lowerdir per image layer", lowers.len() == 2, format!("{} lowerdir(s)", lowers.len()));
    let hidden = !listing.iter().any(|n| n == "motd")
        && listing.iter().any(|n| n == "added")
        && listing.iter().any(|n| n == "keep");
    r.check(
        "the whiteout hides /etc/motd while /etc/keep and /etc/added show",
        hidden,
        format!("{} (/etc: {})", yes(hidden), listing.join(" ")),
    );
}

/// An overlay mount of our own, unmounted on drop.
struct Overlay {
    merged: PathBuf,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn append_ms(p: &Path) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut f = fs::OpenOptions::new().append(true).open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    f.write_all(b"more\n").map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

fn copy_up(opts: &LabOptions, r: &mut LabReport) {
    let tmp = match tempfile::Builder::new().prefix("cvbench-lab3-ovl-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            r.check("a scratch directory can be made", false, e.to_string());
            return;
        }
    };
    let sizes: &[u64] = if opts.quick { &[16, 64] } else { &[16, 64, 256] };
    progress(&format!("copy-up: first and second one-line append to lower files of {sizes:?} MiB"));
    let d = tmp.path();
    let (lower, upper, work, merged) = (d.join("lower"), d.join("upper"), d.join("work"), d.join("merged"));
    for p in [&lower, &upper, &work, &merged] {
        if let Err(e) = fs::create_dir_all(p) {
            r.check("overlay directories can be made", false, format!("{}: {e}", p.display()));
            return;
        }
    }
    let chunk = vec![0x5au8; 1 << 20];
    for mib in sizes {
        let p = lower.join(format!("big{mib}"));
        let res = fs::File::create(&p).and_then(|mut f| {
            for _ in 0..*mib {
                f.write_all(&chunk)?;
            }
            f.sync_all()
        });
        if let Err(e) = res {
            r.check("lower files can be written", false, format!("{}: {e}", p.display()));
            return;
        }
    }
    let _ = fs::write(lower.join("motd"), "from the lower layer\n");
    let data = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    if let Err(e) = nix::mount::mount(
        Some("cvbench-lab3"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    ) {
        r.check("an overlay can be mounted", false, format!("mount -t overlay … {}: {e}", merged.display()));
        return;
    }
    let ovl = Overlay { merged: merged.clone() };
    let mut t = Table::new(
        "Copy-up: one-line append to a file that lives in the lower layer (ms)",
        &["lower file", "first append (copy-up)", "second append", "ratio", "upper copy (bytes)"],
    );
    let mut all_slower = true;
    let mut errs = Vec::new();
    for mib in sizes {
        let f = merged.join(format!("big{mib}"));
        match (append_ms(&f), append_ms(&f)) {
            (Ok(a), Ok(b)) => {
                all_slower &= a > 5.0 * b;
                let copied = fs::metadata(upper.join(format!("big{mib}"))).map(|m| m.len()).unwrap_or(0);
                t.row([
                    format!("{mib} MiB"),
                    format!("{a:.3}"),
                    format!("{b:.3}"),
                    format!("{:.0}×", a / b.max(1e-6)),
                    copied.to_string(),
                ]);
            }
            (Err(e), _) | (_, Err(e)) => errs.push(e),
        }
    }
    let rm = fs::remove_file(merged.join("motd"));
    let wh = fs::symlink_metadata(upper.join("motd")).ok();
    drop(ovl);
    r.tables.push(t);
    r.check(
        "the first write to a lower file (copy-up) is much slower than the second",
        all_slower && errs.is_empty(),
        if errs.is_empty() { yes(all_slower).to_string() } else { errs.join(" | ") },
    );
    let dev00 = rm.is_ok() && wh.as_ref().is_some_and(|m| m.file_type().is_char_device() && m.rdev() == 0);
    r.check("deleting a lower file leaves a 0/0 character device in upperdir", dev00, yes(dev00).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_save_tarball_holds_manifest_config_and_two_layers_with_their_digests() {
        let dir = tempfile::tempdir().unwrap();
        let tar = build_tarball(dir.path(), "t:latest").unwrap();
        let out = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(names.lines().collect::<Vec<_>>(), ["manifest.json", "config.json", "layer1.tar", "layer2.tar"]);
        let config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
        let ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(ids[0], format!("sha256:{}", sha256_file(&dir.path().join("layer1.tar")).unwrap()));
        assert_eq!(ids[1], format!("sha256:{}", sha256_file(&dir.path().join("layer2.tar")).unwrap()));
        let top = Command::new("tar").arg("-tf").arg(dir.path().join("layer2.tar")).output().unwrap();
        assert!(String::from_utf8_lossy(&top.stdout).contains("./etc/.wh.motd"));
    }
}
