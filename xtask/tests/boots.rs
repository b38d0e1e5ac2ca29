//! The boot loop and the resume, end to end on this host: the real `cvbench-xtask testhost-pass`
//! run by a stand-in for scripts/testhost that, on its first boot, stops the pass in its second
//! part the way a stalled test host does (everything killed, exit 126), and on the second boot
//! lets it finish. The state file alone carries what ended from one boot to the next. (The pass's
//! output goes to files: printed here, its `test result:` and `SKIPPED:` lines would count in
//! scripts/test's own tally, which reads this test's output.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cvbench_xtask::binaries::{TargetKind, TestBinary};
use cvbench_xtask::boots::{run_boots, BootsConfig};
use cvbench_xtask::pass::{Part, PassState};

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn binary(dir: &Path, name: &str, exe: PathBuf) -> Part {
    Part::TestBinary(TestBinary { name: name.into(), dir: dir.into(), exe, kind: TargetKind::Test, args: vec![] })
}

#[test]
fn a_stopped_boot_is_retried_and_the_next_resumes_after_the_parts_that_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Part one: a "test binary" that counts its runs and passes one test.
    script(
        &d.join("first"),
        &format!(
            "echo run >> {runs}\necho 'test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s'\n",
            runs = d.join("first-runs").display()
        ),
    );
    // Part two: hangs on its first run (its pid left for the stand-in to kill), passes on the next.
    script(
        &d.join("second"),
        &format!(
            "if [ ! -e {m} ]; then echo $$ > {m}.tmp && mv {m}.tmp {m}; exec sleep 60; fi\n\
             echo 'SKIPPED: [other] no peer here'\n\
             echo 'test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s'\n",
            m = d.join("second-pid").display()
        ),
    );
    // The stand-in for scripts/testhost: `--timeout SECS --keep FILE COMMAND...`.
    script(
        &d.join("testhost"),
        &format!(
            "keep=$4; shift 4\n\
             n=$(cat {boots} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {boots}\n\
             if [ $n = 1 ]; then\n\
                 CVBENCH_TESTHOST=1 CVBENCH_TH_KEEP=$keep \"$@\" > {d}/boot-$n.log 2>&1 & pass=$!\n\
                 i=0; while [ ! -e {pid} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done\n\
                 kill -KILL $pass $(cat {pid} 2>/dev/null); wait $pass\n\
                 exit 126\n\
             fi\n\
             CVBENCH_TESTHOST=1 CVBENCH_TH_KEEP=$keep exec \"$@\" > {d}/boot-$n.log 2>&1\n",
            d = d.display(),
            boots = d.join("boots").display(),
            pid = d.join("second-pid").display()
        ),
    );
    let state = d.join("state.json");
    PassState::new(vec![binary(d, "x:first", d.join("first")), binary(d, "x:second", d.join("second"))])
        .save(&state)
        .unwrap();
    let cfg = BootsConfig {
        testhost: d.join("testhost"),
        state: state.clone(),
        xtask: env!("CARGO_BIN_EXE_cvbench-xtask").into(),
        budget: 600,
    };

    let out = run_boots(&cfg).unwrap();

    assert_eq!(out.boots, 2);
    assert_eq!(out.retries.len(), 1);
    assert!(out.retries[0].contains("boot 1") && out.retries[0].contains("in part 'x:second'"), "{:?}", out.retries);
    // The first part ran once: the second boot took its result from the state file.
    assert_eq!(fs::read_to_string(d.join("first-runs")).unwrap().lines().count(), 1);
    let names: Vec<&str> = out.results.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["x:first", "x:second"]);
    let t = out.results.tally();
    assert_eq!((t.passed, t.failed, t.skipped), (2, 0, 1));
    assert!(out.results.ok());
    let s = PassState::load(&state).unwrap();
    assert!(s.finished);
    assert_eq!(s.boots, 2);
    assert!(fs::read_to_string(d.join("boot-2.log")).unwrap().contains("RESUMED: [testhost] x:first"));
}

#[test]
fn a_pass_that_ends_before_its_tally_is_a_failure_without_a_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The stand-in fails the way a test host without QEMU does (exit 125), running nothing.
    script(&d.join("testhost"), "exit 125\n");
    let state = d.join("state.json");
    PassState::new(vec![Part::Doctor]).save(&state).unwrap();
    let cfg = BootsConfig {
        testhost: d.join("testhost"),
        state,
        xtask: env!("CARGO_BIN_EXE_cvbench-xtask").into(),
        budget: 600,
    };

    let out = run_boots(&cfg).unwrap();

    assert_eq!(out.boots, 1);
    assert!(out.retries.is_empty());
    assert_eq!(out.results.tally().failed, 1);
    assert!(!out.results.ok());
}
