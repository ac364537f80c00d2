//! Unit tests of the compiled kernels.
