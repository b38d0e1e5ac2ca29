//! cvbench micro-VM monitor (filled by the micro-VM issues).
