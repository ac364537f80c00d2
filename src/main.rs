//! The `nodec` binary: hands over to `nodec::cli::main`, which parses the command line.

use std::process::ExitCode;

/// Zeroed buffers written at allocation, large ones mapped (`nodec::alloc` says why).
#[global_allocator]
static ALLOCATOR: nodec::alloc::EagerZeroed = nodec::alloc::EagerZeroed;

fn main() -> ExitCode {
    nodec::alloc::fix_mmap_threshold();
    nodec::cli::main()
}
