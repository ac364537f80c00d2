//! nodec compiles continuous-time deep-learning models written in the `.node` language.
//!
//! The pipeline: [`syntax::parse`] turns text into an AST; [`sema::check`] resolves names, checks
//! shapes and lowers to the symbolic IR of [`ir`], where calculus is already expanded;
//! [`ir::prepare`] simplifies the DAG and adds the derivative IR that later stages compile.
//! [`diag`] (spans and diagnostics) sits below everything; [`cli`] owns all IO.

pub mod cli;
pub mod diag;
pub mod ir;
pub mod sema;
pub mod solve;
pub mod syntax;

use diag::{Diagnostics, SourceFile};

/// Parses and checks a source file. Semantic analysis runs only when the file parsed cleanly,
/// so that a broken declaration does not cascade into errors about what it would have declared.
pub fn check_source(
    file: &SourceFile,
    overrides: &sema::Overrides,
    default_name: &str,
) -> (ir::Model, Diagnostics) {
    let (ast, mut diags) = syntax::parse(file);
    if diags.has_errors() {
        return (ir::Model::default(), diags);
    }
    let (model, sema_diags) = sema::check(&ast, overrides, default_name);
    diags.extend(sema_diags);
    (model, diags)
}

/// Simplifies a checked model and adds its derivative IR.
pub fn prepare(mut model: ir::Model) -> ir::Model {
    ir::prepare(&mut model);
    model
}
