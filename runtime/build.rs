//! Links this package's executables with packed relative relocations (DT_RELR: GNU ld 2.38+,
//! and glibc 2.36+ where they run, as on Debian 12): the dynamic loader then walks a few
//! kilobytes of bitmaps at every start instead of one 24-byte `R_X86_64_RELATIVE` entry per
//! pointer (17 700 of them in `cvbench-runtime`: 0.1–0.4 ms of each start on the development
//! machine, benches/FLOORS.md). The executables stay position-independent. GNU ld before 2.38
//! ignores the option with a warning.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
