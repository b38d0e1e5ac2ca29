//! cvbench container runtime (filled by the container-runtime issue).
