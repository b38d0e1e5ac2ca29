//! Link the workload as a static, non-PIE ELF with no C runtime: the bare
//! micro-VM loads its segments at their link addresses.
fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
