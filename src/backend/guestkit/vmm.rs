//! Handing `cvbench-vmm` its typed config: the file it reads with `--config`, and the guest
//! timeout as the VMM's old `--timeout-s` flag resolved it (so a config is the same VM the
//! flags made).

use std::path::Path;
use std::time::Duration;

/// The guest timeout in milliseconds, as the VMM derived it from `--timeout-s {:.3}` when the
/// harness passed flags: seconds printed to three decimals, times 1000, truncated.
pub(crate) fn vmm_timeout_ms(t: Duration) -> u64 {
    let printed = format!("{:.3}", t.as_secs_f64());
    printed.parse::<f64>().map(|s| (s * 1000.0) as u64).unwrap_or(t.as_millis() as u64)
}

/// The guest timeout as a `Duration`, as the bare VMM derived it from `--timeout-s {:.3}`.
pub(crate) fn vmm_timeout(t: Duration) -> Duration {
    let printed = format!("{:.3}", t.as_secs_f64());
    printed.parse::<f64>().map(Duration::from_secs_f64).unwrap_or(t)
}

/// Write a VMM config (`builder::Config` or `BareConfig`) for `cvbench-vmm ... --config FILE`.
pub(crate) fn write_vmm_config(path: &Path, config: &impl serde::Serialize) -> std::io::Result<()> {
    let json = serde_json::to_vec(config).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

/// What the backends' config tests share: the built `cvbench-vmm` and the config it resolves
/// from flags.
#[cfg(test)]
pub(crate) mod test_support {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// `cvbench-vmm`, built beside the test binary; `None` (after a loud skip) when it is not.
    pub(crate) fn vmm_or_skip() -> Option<PathBuf> {
        match super::super::kernel::vmm_binary() {
            Ok(p) => Some(p),
            Err(e) => {
                cvbench_testkit::skip(cvbench_testkit::Need::Other, &format!("cvbench-vmm not built: {e}"));
                None
            }
        }
    }

    /// `cvbench-vmm <flags> --print-config`: the config the VMM resolves from those flags.
    pub(crate) fn print_config<T: serde::de::DeserializeOwned>(vmm: &Path, flags: &[OsString]) -> T {
        let out = Command::new(vmm).args(flags).output().expect("spawn cvbench-vmm");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("the printed config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_the_old_flags_three_decimals() {
        assert_eq!(vmm_timeout_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(vmm_timeout_ms(Duration::from_micros(1_500_400)), 1_500);
        assert_eq!(vmm_timeout(Duration::from_micros(2_000_400)), Duration::from_secs(2));
    }
}
