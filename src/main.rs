//! The `cvbench` binary: parses the command line and prints errors with their
//! whole cause chain.

mod cli;

fn main() {
    match cli::main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cvbench: error: {e:#}");
            std::process::exit(2);
        }
    }
}
