//! The `nodec` binary: hands over to `nodec::cli::main`, which parses the command line.

use std::process::ExitCode;

/// Zeroed buffers written at allocation (`nodec::alloc` says why).
#[global_allocator]
static ALLOCATOR: nodec::alloc::EagerZeroed = nodec::alloc::EagerZeroed;

fn main() -> ExitCode {
    nodec::cli::main()
}
