//! Turning a pest error into one human diagnostic.
//!
//! pest gives a position and the rules it tried there ("positives"). The message names, in
//! words, what was expected and what was found (from the lexer's token at that position), e.g.
//! ``expected `=` after the state's shape, found `1` ``. Special cases come first: a character
//! the language does not know, an unterminated string or comment, an unclosed bracket at the end
//! of a declaration, and a line that does not start with a declaration at all.

use pest::error::{Error, ErrorVariant, InputLocation};

use super::lex::{is_deriv_word, TokKind, Token};
use super::limits::nesting_message;
use super::parser::Rule;
use super::KEYWORDS;
use crate::diag::{suggest, Diagnostic, Span};

/// Where a failed parse ran: the chunk's tokens from the declaration's first token on.
pub(crate) struct Context<'a> {
    /// The whole file.
    pub text: &'a str,
    /// Tokens from the declaration's first token to the end of its chunk.
    pub tokens: &'a [Token],
    /// Whether the chunk is the last in the file.
    pub last_chunk: bool,
}

/// What an error can say was expected, in the order messages list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    Name,
    Call,
    Expression,
    Lbrack,
    PerLayer,
    OnKnots,
    Layer,
    Knots,
    Eq,
    Tilde,
    Lparen,
    Over,
    Dt,
    Operator,
    Comma,
    Colon,
    Rparen,
    Rbrack,
}

impl Expect {
    fn of(rule: Rule) -> Option<Expect> {
        Some(match rule {
            Rule::ident => Expect::Name,
            Rule::call => Expect::Call,
            Rule::expr
            | Rule::operand
            | Rule::arg
            | Rule::binder
            | Rule::number
            | Rule::string
            | Rule::paren
            | Rule::list
            | Rule::neg
            | Rule::plus
            | Rule::index_item => Expect::Expression,
            Rule::lbrack | Rule::dims => Expect::Lbrack,
            Rule::per_layer | Rule::kw_per => Expect::PerLayer,
            Rule::knots | Rule::kw_on => Expect::OnKnots,
            Rule::kw_layer => Expect::Layer,
            Rule::kw_knots => Expect::Knots,
            Rule::eq => Expect::Eq,
            Rule::tilde => Expect::Tilde,
            Rule::lparen => Expect::Lparen,
            Rule::over => Expect::Over,
            Rule::dt => Expect::Dt,
            Rule::range
            | Rule::le
            | Rule::ge
            | Rule::eq_op
            | Rule::ne
            | Rule::lt
            | Rule::gt
            | Rule::add
            | Rule::sub
            | Rule::elem_mul
            | Rule::mul
            | Rule::div
            | Rule::pow
            | Rule::index
            | Rule::transpose => Expect::Operator,
            Rule::comma => Expect::Comma,
            Rule::colon => Expect::Colon,
            Rule::rparen => Expect::Rparen,
            Rule::rbrack => Expect::Rbrack,
            // The end of the declaration or the start of the next one: implied by the layout.
            _ => return None,
        })
    }

    fn words(self, decl: &str) -> &'static str {
        match self {
            Expect::Name => "a name",
            Expect::Call => match decl {
                "schedule" => "a method such as `rk4(...)`",
                "train" => "an optimizer such as `adam(...)`",
                "data" => "a data source such as `moons(...)`",
                "param" => "a distribution such as `normal(0, 1)`",
                _ => "a call",
            },
            Expect::Expression => "an expression",
            Expect::Lbrack => "`[`",
            Expect::PerLayer => "`per layer`",
            Expect::OnKnots => "`on knots(...)`",
            Expect::Layer => "`layer`",
            Expect::Knots => "`knots`",
            Expect::Eq => "`=`",
            Expect::Tilde => "`~`",
            Expect::Lparen => "`(`",
            Expect::Over => "`/`",
            Expect::Dt => "`dt`",
            Expect::Operator => "an operator",
            Expect::Comma => "`,`",
            Expect::Colon => "`:`",
            Expect::Rparen => "`)`",
            Expect::Rbrack => "`]`",
        }
    }
}

/// The diagnostic for a declaration that pest rejected.
pub(crate) fn describe(error: &Error<Rule>, cx: &Context<'_>) -> Diagnostic {
    let first = cx.tokens[0];
    let offset = first.start
        + match error.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((p, _)) => p,
        };
    let positives: &[Rule] = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives,
        ErrorVariant::CustomError { message } => {
            // pest's own limits; the pre-scans should make them unreachable.
            let span = Span::new(offset, offset);
            return if message.contains("stack") {
                Diagnostic::error(span, nesting_message())
            } else {
                Diagnostic::error(span, "declaration too complex to parse")
            };
        }
    };
    let found_index = cx.tokens.iter().position(|t| t.end > offset);
    let found = found_index.map(|i| cx.tokens[i]);

    // A character or token that is wrong wherever it stands.
    if let Some(token) = found {
        let whole = Span::new(token.start, token.end);
        match token.kind {
            TokKind::Unknown => {
                return Diagnostic::error(
                    whole,
                    format!("unexpected {}", describe_token(cx.text, &token)),
                )
            }
            TokKind::Str { closed: false } => {
                return Diagnostic::error(whole, "unterminated string")
                    .with_help("a string ends with `\"` on the line where it starts")
            }
            TokKind::OpenComment => {
                return Diagnostic::error(
                    Span::new(token.start, token.start + 2),
                    "unterminated comment: `/*` without `*/`",
                )
            }
            _ => {}
        }
    }

    // Nothing of a declaration was recognised: the line itself is wrong.
    let non_keyword_start =
        first.kind == TokKind::Ident && !KEYWORDS.contains(&first.text(cx.text));
    let second_is_over = cx.tokens.get(1).is_some_and(|t| t.is_punct(cx.text, "/"));
    if found_index == Some(0) || (found_index == Some(1) && non_keyword_start && !second_is_over) {
        return top_level(cx.text, cx.tokens);
    }

    // `data/dt = ...` is an equation for a state `ata`, `data x = ...` a data block.
    let word = first.text(cx.text);
    let decl = if is_deriv_word(word) && (second_is_over || non_keyword_start) {
        "equation"
    } else {
        word
    };
    let mut expected: Vec<Expect> = positives.iter().filter_map(|&r| Expect::of(r)).collect();
    expected.sort();
    expected.dedup();
    if expected.contains(&Expect::Operator) {
        // After an operand, `[` is the index operator, and `(` (a call) and `=` (a named
        // argument) are possible only after a bare name: "an operator" says enough.
        expected.retain(|&e| !matches!(e, Expect::Lbrack | Expect::Lparen | Expect::Eq));
    }
    let prev_index = found_index.unwrap_or(cx.tokens.len()).saturating_sub(1);
    let after = context(cx, decl, prev_index);
    if after.call_expected {
        for e in &mut expected {
            if *e == Expect::Name {
                *e = Expect::Call;
            }
        }
    }

    // At the end of the declaration with a bracket still open: say which.
    if found.is_none() && !expected.contains(&Expect::Expression) {
        if let Some(open) = unclosed_bracket(cx.text, cx.tokens) {
            let what = open.text(cx.text);
            return Diagnostic::error(
                Span::new(open.start, open.end),
                format!("unclosed `{what}`"),
            )
            .with_help(format!(
                "the declaration ends at the end of the {} without `{}`",
                if cx.last_chunk { "file" } else { "line" },
                if what == "(" { ")" } else { "]" }
            ));
        }
    }

    let (span, found_words) = match found {
        Some(token) => (
            Span::new(token.start, token.end),
            describe_token(cx.text, &token),
        ),
        None => {
            // Point just after the last token: that is where something is missing.
            let end = cx.tokens[cx.tokens.len() - 1].end;
            let what = if cx.last_chunk {
                "end of file"
            } else {
                "end of line"
            };
            (Span::new(end, end), what.to_string())
        }
    };
    let message = if expected.is_empty() {
        format!("unexpected {found_words}{}", after.text)
    } else {
        let words: Vec<&str> = expected.iter().map(|e| e.words(decl)).collect();
        format!(
            "expected {}{}, found {found_words}",
            join_or(&words),
            after.text
        )
    };
    let diag = Diagnostic::error(span, message);
    match found_index {
        Some(i) => power_help(number_dot_help(diag, cx, i), cx, i),
        None => diag,
    }
}

/// A help for Python's power operator: `x ** 2` stops at its second `*`.
fn power_help(diag: Diagnostic, cx: &Context<'_>, i: usize) -> Diagnostic {
    let text = cx.text;
    let star = cx.tokens[i];
    let after_star = i
        .checked_sub(1)
        .map(|j| cx.tokens[j])
        .is_some_and(|p| p.is_punct(text, "*") && p.end == star.start);
    if star.is_punct(text, "**") || (star.is_punct(text, "*") && after_star) {
        return diag.with_help("nodec writes powers as `x ^ 2`: replace `**` with `^`");
    }
    diag
}

/// A help for a dot that was meant as part of a number: `.5` or `2.`.
fn number_dot_help(diag: Diagnostic, cx: &Context<'_>, i: usize) -> Diagnostic {
    let text = cx.text;
    let dot = cx.tokens[i];
    if !dot.is_punct(text, ".") {
        return diag;
    }
    let number = |t: Option<&Token>| t.copied().filter(|t| t.kind == TokKind::Number);
    if let Some(after) = number(cx.tokens.get(i + 1)).filter(|t| t.start == dot.end) {
        return diag.with_help(format!(
            "write `0.{}`: a number needs a digit before its dot",
            after.text(text)
        ));
    }
    if let Some(before) =
        number(i.checked_sub(1).and_then(|j| cx.tokens.get(j))).filter(|t| t.end == dot.start)
    {
        return diag.with_help(format!(
            "write `{0}.0` or `{0}`: a number needs a digit after its dot",
            before.text(text)
        ));
    }
    diag
}

/// The error for a chunk whose first token starts no declaration.
fn top_level(text: &str, tokens: &[Token]) -> Diagnostic {
    let token = tokens[0];
    let span = Span::new(token.start, token.end);
    let word = token.text(text);
    if token.kind == TokKind::Ident {
        if let Some(keyword) = suggest(word, KEYWORDS) {
            return Diagnostic::error(
                span,
                format!("unknown declaration `{word}`; did you mean `{keyword}`?"),
            );
        }
    }
    let diag = Diagnostic::error(
        span,
        format!(
            "expected a declaration such as `state`, `param` or `dx/dt = ...`, found {}",
            describe_token(text, &token)
        ),
    );
    let next_is_eq = tokens.get(1).is_some_and(|t| t.is_punct(text, "="));
    if token.kind == TokKind::Ident && next_is_eq {
        return diag.with_help(format!("to name a value, write `let {word} = ...`"));
    }
    diag
}

/// What comes before the error, said in words (`after the state's shape`).
struct After {
    text: String,
    /// The call of `schedule`, `train`, `data ... =` or `param ... ~` is expected.
    call_expected: bool,
}

fn context(cx: &Context<'_>, decl: &str, prev: usize) -> After {
    let text = cx.text;
    let tok = |i: usize| cx.tokens.get(i).map(|t| t.text(text));
    let noun = match decl {
        "model" => "model",
        "const" => "constant",
        "param" => "parameter",
        "state" => "state",
        "input" => "input",
        "label" => "label",
        "observed" => "observation",
        "let" => "definition",
        "fn" => "function",
        "cost" => "cost",
        "data" => "data block",
        "metric" => "metric",
        "output" => "output",
        "event" => "event",
        _ => "",
    };
    let prev_text = tok(prev).unwrap_or("");
    let call_expected = match decl {
        "schedule" | "train" => prev == 0,
        "data" => prev_text == "=" && prev == 2,
        "param" => prev_text == "~",
        _ => false,
    };
    let text = if decl == "equation" {
        match prev {
            0 => format!(" after `{}`", tok(0).unwrap_or("")),
            2 => format!(" after `{}/dt`", tok(0).unwrap_or("")),
            _ => String::new(),
        }
    } else if prev == 0 {
        format!(" after `{decl}`")
    } else if prev == 1 && !noun.is_empty() {
        if decl == "cost" {
            " after the cost's kind".to_string()
        } else {
            format!(" after the {noun}'s name")
        }
    } else if !noun.is_empty() && prev_text == "]" && tok(2) == Some("[") && {
        // The `]` closes the shape that opens right after the name.
        prev.checked_sub(2).is_some()
            && matching_close(text, &cx.tokens[2..]) == prev.checked_sub(2)
    } {
        format!(" after the {noun}'s shape")
    } else {
        String::new()
    };
    After {
        text,
        call_expected,
    }
}

/// Index (in `tokens`) of the bracket closing `tokens[0]`.
fn matching_close(text: &str, tokens: &[Token]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == TokKind::Punct)
    {
        match t.text(text) {
            "(" | "[" => depth += 1,
            ")" | "]" => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The innermost bracket left open at the end of `tokens`.
fn unclosed_bracket(text: &str, tokens: &[Token]) -> Option<Token> {
    let mut open = Vec::new();
    for t in tokens.iter().filter(|t| t.kind == TokKind::Punct) {
        match t.text(text) {
            "(" | "[" => open.push(*t),
            ")" | "]" => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
}

/// A token as a message shows it: `` `x` ``, `` `)` ``, `a string`.
fn describe_token(text: &str, token: &Token) -> String {
    match token.kind {
        TokKind::Str { .. } => "a string".to_string(),
        TokKind::OpenComment => "a comment".to_string(),
        TokKind::Unknown => {
            let c = token.text(text).chars().next().unwrap_or(' ');
            if c.is_control() || c.is_whitespace() || c == '`' {
                format!("character U+{:04X}", u32::from(c))
            } else {
                format!("`{c}`")
            }
        }
        _ => {
            let word = token.text(text);
            match word.char_indices().nth(24) {
                Some((cut, _)) => format!("`{}...`", &word[..cut]),
                None => format!("`{word}`"),
            }
        }
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
