//! Parsing: `.node` text to an [`ast::Model`] plus diagnostics.
//!
//! [`parse`] never fails. It checks the file size, lexes the file once (`lex`), cuts it into
//! declaration chunks at lines that start a declaration, and for each chunk pre-scans bracket
//! depth (`limits`), runs the pest grammar `grammar/node.pest` one declaration at a time, and
//! lowers the pairs to AST (`lower`). A chunk that fails gives exactly one diagnostic
//! (`errors`) and parsing resumes at the next chunk, so a file reports all its broken
//! declarations and keeps all its good ones. [`to_sexpr`] prints expressions for tests.
//!
//! **API boundary:** `parse(&SourceFile) -> (ast::Model, Diagnostics)`; the AST is plain data
//! with a byte [`Span`] on every node, and knows nothing of shapes.

pub mod ast;
mod errors;
mod lex;
pub mod limits;
mod lower;
mod print;
#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;

use pest::Parser as _;

use crate::diag::{Diagnostic, Diagnostics, SourceFile, Span};
pub use print::to_sexpr;

/// The declaration keywords, in the spec's order.
pub const KEYWORDS: [&str; 16] = [
    "model", "const", "param", "state", "input", "label", "observed", "let", "fn", "schedule",
    "cost", "data", "train", "metric", "output", "event",
];

mod parser {
    //! The pest parser generated from `grammar/node.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "grammar/node.pest"]
    pub(crate) struct NodeParser;
}

use lex::Token;
use parser::{NodeParser, Rule};

/// Parses a source file. Never fails: problems are diagnostics, and the model holds every
/// declaration that parsed.
pub fn parse(file: &SourceFile) -> (ast::Model, Diagnostics) {
    let mut model = ast::Model::default();
    let mut diags = Diagnostics::new();
    let text = file.text.as_str();
    if text.len() > limits::MAX_FILE_SIZE {
        diags.push(Diagnostic::global_error(format!(
            "file is too large: {} bytes, the limit is 1 MiB ({} bytes)",
            text.len(),
            limits::MAX_FILE_SIZE
        )));
        return (model, diags);
    }
    // Set on every call because the setting is process-wide; the value never changes.
    pest::set_call_limit(NonZeroUsize::new(limits::PEST_CALL_LIMIT));

    let tokens = lex::lex(text);
    let starts = lex::chunk_starts(text, &tokens);
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(tokens.len());
        let end_offset = tokens.get(end).map_or(text.len(), |t| t.start);
        parse_chunk(
            text,
            &tokens[start..end],
            end_offset,
            end == tokens.len(),
            &mut model,
            &mut diags,
        );
    }
    (model, diags)
}

/// Parses the declarations of one chunk: normally one, or several written on one line.
/// Reports at most one diagnostic per failed declaration and gives up on the rest of the chunk
/// after a syntax error.
fn parse_chunk(
    text: &str,
    tokens: &[Token],
    end_offset: usize,
    last_chunk: bool,
    model: &mut ast::Model,
    diags: &mut Diagnostics,
) {
    if let Some(bracket) = limits::too_deep_bracket(text, tokens) {
        diags.error(
            Span::new(bracket.start, bracket.end),
            limits::nesting_message(),
        );
        return;
    }
    let mut i = 0;
    while i < tokens.len() {
        let start = tokens[i].start;
        let input = &text[start..end_offset];
        // decl_item = { decl ~ &(EOI | decl_head) }
        let error = match NodeParser::parse(Rule::decl_item, input) {
            Ok(mut pairs) => {
                let item = pairs.next().expect("grammar: decl_item matched");
                let decl = item
                    .into_inner()
                    .next()
                    .expect("grammar: decl_item holds a decl");
                i = lower_decl(text, decl, start, tokens, i, model, diags);
                continue;
            }
            Err(error) => error,
        };
        // The declaration may be complete and followed by a line that starts with a name but no
        // declaration (`y = 2`, `d1/dt = 0`): keep it, and report that line on its own.
        // decl_prefix = { decl }
        if let Ok(mut pairs) = NodeParser::parse(Rule::decl_prefix, input) {
            let prefix = pairs.next().expect("grammar: decl_prefix matched");
            let decl = prefix
                .into_inner()
                .next()
                .expect("grammar: decl_prefix holds a decl");
            let end = start + decl.as_span().end();
            let next = tokens[i..].iter().find(|t| t.start >= end);
            if next.is_some_and(|t| t.line_start && t.kind == lex::TokKind::Ident) {
                i = lower_decl(text, decl, start, tokens, i, model, diags);
                continue;
            }
        }
        let cx = errors::Context {
            text,
            tokens: &tokens[i..],
            last_chunk,
        };
        diags.push(errors::describe(&error, &cx));
        model.broken.push(broken_decl(text, &tokens[i..]));
        return;
    }
}

/// The keyword and name of a declaration that failed, read off its first tokens.
fn broken_decl(text: &str, tokens: &[Token]) -> ast::BrokenDecl {
    let word = |k: usize| {
        tokens
            .get(k)
            .filter(|t| t.kind == lex::TokKind::Ident)
            .map(|t| (t.text(text), Span::new(t.start, t.end)))
    };
    let span = tokens
        .first()
        .map_or(Span::default(), |t| Span::new(t.start, t.end));
    let (keyword, name) = match word(0) {
        Some((w, _)) if KEYWORDS.contains(&w) => (w.to_string(), word(1)),
        // `dNAME/dt = ...`: the state's name without the leading `d`.
        Some((w, s))
            if lex::is_deriv_word(w) && tokens.get(1).is_some_and(|t| t.text(text) == "/") =>
        {
            let name = &w[1..];
            (
                "equation".to_string(),
                Some((name, Span::new(s.start as usize + 1, s.end as usize))),
            )
        }
        _ => (String::new(), None),
    };
    ast::BrokenDecl {
        keyword,
        name: name.map(|(n, span)| ast::Ident {
            name: n.to_string(),
            span,
        }),
        span,
        mentions: tokens
            .iter()
            .filter(|t| t.kind == lex::TokKind::Ident)
            .map(|t| t.text(text).to_string())
            .collect(),
    }
}

/// Lowers one parsed declaration that starts at token `i` (offset `start`) into the model or a
/// diagnostic; returns the index of the first token after it.
fn lower_decl(
    text: &str,
    decl: pest::iterators::Pair<'_, Rule>,
    start: usize,
    tokens: &[Token],
    i: usize,
    model: &mut ast::Model,
    diags: &mut Diagnostics,
) -> usize {
    let end = start + decl.as_span().end();
    match lower::decl(decl, start) {
        Ok(decl) => model.decls.push(decl),
        Err(diag) => {
            diags.push(diag);
            model.broken.push(broken_decl(text, &tokens[i..]));
        }
    }
    let next = i + tokens[i..].iter().take_while(|t| t.start < end).count();
    // A declaration consumes at least its first token; guard against a loop anyway.
    next.max(i + 1)
}
