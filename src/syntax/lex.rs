//! A small lexer that runs before pest, over the whole file.
//!
//! pest does the real parsing; these tokens serve the driver around it: cutting the file into
//! declaration chunks ([`chunk_starts`]), the bracket-depth pre-scan, and naming the token an error
//! points at. The lexer agrees with `grammar/node.pest` on comments, strings, numbers and names,
//! and never fails: anything else becomes an [`TokKind::Unknown`] token.

use super::KEYWORDS;

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// A name or keyword.
    Ident,
    /// `2`, `2.5`, `1e-3`.
    Number,
    /// A string literal; `closed` is false if the line or file ended first.
    Str { closed: bool },
    /// An operator or bracket the grammar knows.
    Punct,
    /// One character the grammar does not know.
    Unknown,
    /// `/*` without `*/`: runs to the end of the file.
    OpenComment,
}

/// One token: its kind, byte range and whether a line break precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
    /// The first token of the file, or a line break lies between it and the previous token.
    pub line_start: bool,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }

    /// Whether this is the punctuation `p`.
    pub fn is_punct(&self, text: &str, p: &str) -> bool {
        self.kind == TokKind::Punct && self.text(text) == p
    }
}

const MULTI_PUNCT: [&str; 6] = ["..", ".*", "<=", ">=", "==", "!="];
const SINGLE_PUNCT: &str = "()[],=~+-*/^':<>.!";

fn is_ident_start(c: char) -> bool {
    c == '_' || pest::unicode::XID_START(c)
}

fn is_ident_continue(c: char) -> bool {
    pest::unicode::XID_CONTINUE(c)
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{FEFF}')
}

/// Splits `text` into tokens, skipping whitespace and comments. Linear in the text's length.
pub(crate) fn lex(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < text.len() {
        let c = text[i..]
            .chars()
            .next()
            .expect("i is a char boundary below len");
        if is_space(c) {
            line_start |= c == '\n';
            i += c.len_utf8();
            continue;
        }
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(text.len(), |n| i + n);
            continue;
        }
        if text[i..].starts_with("/*") {
            match text[i + 2..].find("*/") {
                Some(n) => {
                    line_start |= text[i..i + 2 + n].contains('\n');
                    i += 2 + n + 2;
                }
                None => {
                    tokens.push(Token {
                        kind: TokKind::OpenComment,
                        start: i,
                        end: text.len(),
                        line_start,
                    });
                    break;
                }
            }
            continue;
        }
        let start = i;
        let kind = if is_ident_start(c) {
            i += c.len_utf8();
            while let Some(c) = text[i..].chars().next().filter(|&c| is_ident_continue(c)) {
                i += c.len_utf8();
            }
            TokKind::Ident
        } else if c.is_ascii_digit() {
            i = number_end(bytes, i);
            TokKind::Number
        } else if c == '"' {
            let (end, closed) = string_end(text, i);
            i = end;
            TokKind::Str { closed }
        } else if let Some(p) = MULTI_PUNCT.iter().find(|p| text[i..].starts_with(**p)) {
            i += p.len();
            TokKind::Punct
        } else if SINGLE_PUNCT.contains(c) {
            i += 1;
            TokKind::Punct
        } else {
            i += c.len_utf8();
            TokKind::Unknown
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
            line_start,
        });
        line_start = false;
    }
    tokens
}

/// `number = @{ ASCII_DIGIT+ ~ ("." ~ ASCII_DIGIT+)? ~ (^"e" ~ ("+" | "-")? ~ ASCII_DIGIT+)? }`
fn number_end(bytes: &[u8], mut i: usize) -> usize {
    let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
    while digit(i) {
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') && digit(i + 1) {
        i += 1;
        while digit(i) {
            i += 1;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        if digit(i + 1 + sign) {
            i += 1 + sign;
            while digit(i) {
                i += 1;
            }
        }
    }
    i
}

/// `string = ${ "\"" ~ string_body ~ "\"" }`; returns the end and whether the quote was closed.
fn string_end(text: &str, start: usize) -> (usize, bool) {
    let mut chars = text[start + 1..].char_indices();
    while let Some((n, c)) = chars.next() {
        match c {
            '"' => return (start + 1 + n + 1, true),
            '\n' => return (start + 1 + n, false),
            '\\' => match chars.next() {
                Some((_, '\n')) | None => return (start + 1 + n + 1, false),
                Some(_) => {}
            },
            _ => {}
        }
    }
    (text.len(), false)
}

/// Punctuation that, after a keyword at the start of a line, shows that the keyword is a name in
/// an expression continued from the line before (`label)`, `data[0]`, `train = 1`).
const CONTINUATION: [&str; 22] = [
    "=", "(", ")", "[", "]", ",", ":", "'", "..", ".*", ".", "+", "-", "*", "/", "^", "<", "<=",
    ">", ">=", "==", "!=",
];

/// Indices of the tokens that start declaration chunks: the first token, and every token at the
/// start of a line that begins a declaration. A line begins a declaration when it starts with
/// - two names on the same line (`state x`, `train adam`, or a typo such as `parm x`), except
///   `per layer` and `on knots`, which continue a `param`; two names in a row never occur inside
///   an expression, so this never cuts a valid declaration;
/// - `dNAME / dt =`;
/// - a keyword followed on its line by something that cannot continue an expression (`state 3`).
pub(crate) fn chunk_starts(text: &str, tokens: &[Token]) -> Vec<usize> {
    let mut starts = Vec::new();
    if !tokens.is_empty() {
        starts.push(0);
    }
    for i in 1..tokens.len() {
        if tokens[i].line_start && starts_declaration(text, &tokens[i..]) {
            starts.push(i);
        }
    }
    starts
}

fn starts_declaration(text: &str, toks: &[Token]) -> bool {
    let first = toks[0];
    if first.kind != TokKind::Ident {
        return false;
    }
    let word = first.text(text);
    let next = toks.get(1).copied();
    let same_line = next.filter(|t| !t.line_start);
    if let Some(next) = same_line.filter(|t| t.kind == TokKind::Ident) {
        let pair = (word, next.text(text));
        return pair != ("per", "layer") && pair != ("on", "knots");
    }
    if is_deriv_word(word)
        && toks.len() >= 4
        && toks[1].is_punct(text, "/")
        && toks[2].kind == TokKind::Ident
        && toks[2].text(text) == "dt"
        && toks[3].is_punct(text, "=")
    {
        return true;
    }
    if KEYWORDS.contains(&word) {
        if let Some(next) = same_line {
            let continues = next.kind == TokKind::Punct && CONTINUATION.contains(&next.text(text));
            return !continues;
        }
    }
    false
}

/// `deriv_word = @{ "d" ~ (XID_START | "_") ~ XID_CONTINUE* }`
pub(crate) fn is_deriv_word(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next() == Some('d') && chars.next().is_some_and(is_ident_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(TokKind, &str)> {
        lex(text).iter().map(|t| (t.kind, t.text(text))).collect()
    }

    #[test]
    fn lexes_like_the_grammar() {
        use TokKind::*;
        assert_eq!(
            kinds("x[0..64] 1e-3 2.5 2. .5 \"a\\\"b\" θ' // c\n /* d */ @"),
            vec![
                (Ident, "x"),
                (Punct, "["),
                (Number, "0"),
                (Punct, ".."),
                (Number, "64"),
                (Punct, "]"),
                (Number, "1e-3"),
                (Number, "2.5"),
                (Number, "2"),
                (Punct, "."),
                (Punct, "."),
                (Number, "5"),
                (Str { closed: true }, "\"a\\\"b\""),
                (Ident, "θ"),
                (Punct, "'"),
                (Unknown, "@"),
            ]
        );
        assert_eq!(
            kinds("\"abc\nx"),
            vec![(Str { closed: false }, "\"abc"), (Ident, "x")]
        );
        assert_eq!(kinds("a /* b"), vec![(Ident, "a"), (OpenComment, "/* b")]);
    }

    #[test]
    fn chunks_start_at_declaration_lines_only() {
        let text = "state x = f(a,\n  label = 1,\n  label)\nparm y = 2\nparam w per layer\n  per layer\ndx / dt = 1\nlet q = a\n  + b";
        let tokens = lex(text);
        let starts: Vec<&str> = chunk_starts(text, &tokens)
            .iter()
            .map(|&i| tokens[i].text(text))
            .collect();
        assert_eq!(starts, vec!["state", "parm", "param", "dx", "let"]);
    }
}
