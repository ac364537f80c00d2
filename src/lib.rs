//! nodec compiles continuous-time deep-learning models written in the `.node` language.
//!
//! The pipeline: [`syntax::parse`] turns text into an AST; [`sema::check`] resolves names, checks
//! shapes and lowers to the tensor IR of [`ir`], where calculus is already expanded;
//! [`ir::prepare`] expands it into the scalar IR, simplifies the DAG and adds the derivative IR
//! that later stages compile.
//! [`diag`] (spans and diagnostics) sits below everything; [`cli`] owns all IO.

pub mod alloc;
pub mod budget;
pub mod cli;
pub mod compile;
pub mod data;
pub mod diag;
pub mod dist;
pub mod ir;
pub mod npy;
pub mod optim;
pub mod plot;
pub mod real;
pub mod rng;
pub mod sema;
pub mod sens;
pub mod simulate;
pub mod solve;
pub mod syntax;
pub mod train;

use diag::{Diagnostics, SourceFile};

/// Parses and checks a source file. Semantic analysis runs even when some declarations failed
/// to parse, so every independent error is reported; names those declarations would have
/// declared are known to `sema` and stay quiet instead of cascading.
pub fn check_source(
    file: &SourceFile,
    overrides: &sema::Overrides,
    default_name: &str,
) -> (ir::Model, Diagnostics) {
    let (ast, mut diags) = syntax::parse(file);
    if diags.iter().any(|d| d.span.is_none()) {
        // The file as a whole was rejected (too large); there is nothing to check.
        return (ir::Model::default(), diags);
    }
    let (model, sema_diags) = sema::check(&ast, overrides, default_name);
    diags.extend(sema_diags);
    (model, diags)
}

/// Expands a checked model into the scalar IR, simplifies it and adds its derivative IR
/// ([`ir::prepare`]).
pub fn prepare(mut model: ir::Model) -> ir::Model {
    ir::prepare(&mut model);
    model
}

/// Prepares a checked model for running: the scalar IR only where it pays
/// ([`ir::prepare_to_run`]); [`compile::Program::compile`] picks the kernels that match.
pub fn prepare_to_run(mut model: ir::Model) -> ir::Model {
    ir::prepare_to_run(&mut model);
    model
}
