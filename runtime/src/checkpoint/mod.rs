//! Checkpoint and restore of a container: the image directory's manifest and checks
//! ([`image`], shared with the harness's runc and gVisor paths).

pub mod image;
