//! cvbench's test orchestration, behind `scripts/test`: which test binaries run on which host
//! ([`binaries`]), reading libtest's output ([`libtest`]) into typed results and the tally
//! ([`tally`]), running commands ([`run`]), the pass inside the test host ([`pass`]) and the
//! boots around it ([`boots`]). The `cvbench-xtask` binary is the command line over these.

pub mod binaries;
pub mod boots;
pub mod libtest;
pub mod pass;
pub mod run;
pub mod tally;
