//! The `nodec` binary: parses the command line and hands over to `nodec::cli::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    nodec::cli::main()
}
