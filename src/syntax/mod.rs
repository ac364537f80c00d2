//! Parsing: `.node` text to [`ast::Model`] plus diagnostics (placeholder; implemented in the syntax slice).

pub mod ast;

use crate::diag::{Diagnostics, SourceFile};

/// Parses a source file. Never fails: problems are diagnostics, and the model holds every
/// declaration that parsed.
pub fn parse(file: &SourceFile) -> (ast::Model, Diagnostics) {
    let _ = file;
    (ast::Model::default(), Diagnostics::new())
}
