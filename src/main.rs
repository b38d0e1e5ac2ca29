//! The `cvbench` binary: parses the command line, prints errors with their
//! whole cause chain, and exits 0 ok, 1 run failed, 2 usage, 3 cannot run here.

mod cli;

fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`cvbench doctor | head`) instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread
    // exists has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match cli::main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cvbench: error: {e:#}");
            std::process::exit(cli::exit::code_for(&e));
        }
    }
}
