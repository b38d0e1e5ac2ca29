//! cvbench harness library.
