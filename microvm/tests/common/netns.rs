//! A network namespace made for one test (the Linux-guest tests' taps go there), deleted on drop.

use std::path::PathBuf;
use std::process::Command;

/// A network namespace made for one test, deleted on drop.
pub struct Netns(String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("cvbvm-{tag}-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(ok.success(), "ip netns add {name} failed");
        Netns(name)
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
    pub fn links(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.0, "ip", "-o", "link"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
