//! nodec compiles continuous-time deep-learning models written in the `.node` language.
//!
//! The pipeline: `syntax::parse` turns text into an AST; `sema::check` resolves names, checks
//! shapes and lowers to the symbolic IR of `ir`, where calculus is expanded and the expression
//! DAG simplified; later stages compile the IR to closures, solve, differentiate and train.
//! `diag` (spans and diagnostics) sits below everything; `cli` owns all IO.

pub mod cli;
pub mod diag;
pub mod ir;
pub mod sema;
pub mod syntax;
