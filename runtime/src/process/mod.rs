//! The container process: `clone3` with the namespace flags (SIGCHLD blocked around it), the
//! parent↔child channel, the code that runs inside the child up to `execve`, and the privilege
//! drop it shares with `exec`, and the pidfd kill path every verb uses.

pub mod channel;
pub mod clone;
pub mod init;
pub mod kill;
pub mod privileges;

/// Errors starting or talking to the container process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("clone3 with flags {flags:#x} failed")]
    Clone {
        flags: u64,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create the parent/child channel")]
    Channel(#[source] nix::Error),
    #[error("cannot talk to the container process {pid}")]
    Talk {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("container setup failed at step `{step}`: {source}")]
    ChildStep {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the container process {0} exited before reporting")]
    ChildVanished(i32),
    #[error("argument or environment string contains a NUL byte: {0:?}")]
    Nul(String),
    #[error("no command given")]
    NoCommand,
    #[error("cannot write {path}")]
    IdMap {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for pid {pid} failed")]
    Wait {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot signal pid {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
}
