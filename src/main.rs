//! The `nodec` binary: hands over to `nodec::cli::main`, which parses the command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    nodec::cli::main()
}
