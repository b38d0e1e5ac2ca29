//! Checkpoint and restore of a container: the image directory's manifest and checks
//! ([`image`], shared with the harness's runc and gVisor paths) and our runtime's own
//! `checkpoint`/`restore` verbs through the `criu` binary ([`criu`]).

pub mod criu;
pub mod image;
