//! Input limits, so that no input can make the parser (or the stages after it) hang or overflow
//! the stack.
//!
//! - The file size is checked first ([`MAX_FILE_SIZE`]).
//! - Bracket nesting is checked per declaration chunk by `too_deep_bracket` before pest runs, so
//!   pest's recursion (which follows brackets only: expressions are flat in the grammar) is bounded.
//! - Chains that nest without brackets — `----x`, `x^x^...^x`, `x'''` — are counted by the
//!   lowering before it recurses, with the same [`MAX_NESTING`].
//! - The depth of every expression tree is at most [`MAX_EXPR_DEPTH`], so long chains such as
//!   `a + a + ... + a` cannot make later recursive passes (or `Drop`) overflow.
//! - pest's own call limit (`PEST_CALL_LIMIT`) and stack guard are a last line of defence.

use super::lex::{TokKind, Token};

/// Largest accepted file: 1 MiB.
pub const MAX_FILE_SIZE: usize = 1 << 20;

/// Most nesting levels of brackets `(` `[`, of prefix operators, of `^` and of postfix operators.
pub const MAX_NESTING: usize = 64;

/// Greatest depth of an expression tree.
pub const MAX_EXPR_DEPTH: u32 = 256;

/// pest calls allowed for one declaration; far above what any 1 MiB declaration needs when the
/// grammar is linear (it is), so reaching it means a bug, reported as an error instead of a hang.
pub(crate) const PEST_CALL_LIMIT: usize = 200_000_000;

/// The message for nesting beyond [`MAX_NESTING`].
pub(crate) fn nesting_message() -> String {
    format!("expression nested too deeply (more than {MAX_NESTING} levels)")
}

/// The first opening bracket whose nesting depth exceeds [`MAX_NESTING`], if any. Comments and
/// strings are already skipped by the lexer; unmatched closing brackets do not go below zero.
pub(crate) fn too_deep_bracket<'t>(text: &str, tokens: &'t [Token]) -> Option<&'t Token> {
    let mut depth = 0usize;
    for token in tokens.iter().filter(|t| t.kind == TokKind::Punct) {
        match token.text(text) {
            "(" | "[" => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(token);
                }
            }
            ")" | "]" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}
