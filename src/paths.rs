//! Where the suite's binaries and state live: the workload ELF, the sibling
//! binaries (`cvbench-vmm`, `cvbench-runtime`), the results directory.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error("workload binary not found at {0} (build it: cargo build --release, or set CVBENCH_WORKLOAD)")]
    WorkloadMissing(PathBuf),
    #[error("{name} not found at {path} (build it: cargo build --release, or set {env})")]
    SiblingMissing { name: String, path: PathBuf, env: String },
    #[error("cannot locate the running executable")]
    CurrentExe(#[source] std::io::Error),
}

/// The `cvbench-workload` ELF: `$CVBENCH_WORKLOAD`, else the one `build.rs`
/// built for this checkout.
pub fn workload_binary() -> Result<PathBuf, PathsError> {
    let p = match std::env::var_os("CVBENCH_WORKLOAD") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CVBENCH_WORKLOAD_BUILT")),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(PathsError::WorkloadMissing(p))
    }
}

/// A binary built alongside `cvbench` (same target directory), or `$ENV`.
/// Test executables live one level deeper (`target/<profile>/deps`), so the
/// parent directory is tried too.
pub fn sibling_binary(name: &str, env: &str) -> Result<PathBuf, PathsError> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PathsError::SiblingMissing { name: name.into(), path: p, env: env.into() })
        };
    }
    let exe = std::env::current_exe().map_err(PathsError::CurrentExe)?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    Err(PathsError::SiblingMissing { name: name.into(), path: candidates[0].clone(), env: env.into() })
}

/// The repository root (where `reports/` lives), from the build.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_binary_reports_the_env_var_on_a_bad_override() {
        let var = "CVBENCH_TEST_NONEXISTENT_SIBLING";
        std::env::set_var(var, "/nonexistent/cvbench-x");
        let err = sibling_binary("cvbench-x", var).unwrap_err().to_string();
        std::env::remove_var(var);
        assert!(err.contains("/nonexistent/cvbench-x") && err.contains(var), "{err}");
    }
}
