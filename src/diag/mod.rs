//! Source files, spans and diagnostics: the bottom layer every stage reports through.
//!
//! A [`Span`] is a byte range into a [`SourceFile`]. Line and column are computed only when a
//! [`Diagnostic`] is rendered, through the file's [`LineIndex`]. Analysis stages never fail: they
//! push diagnostics into a [`Diagnostics`] collection and carry on, and `cli` renders them once.

use std::fmt::Write as _;

/// A byte range `start..end` into one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First byte of the range.
    pub start: u32,
    /// One past the last byte of the range.
    pub end: u32,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The span moved right by `offset` bytes.
    pub fn shifted(self, offset: usize) -> Span {
        Span::new(self.start as usize + offset, self.end as usize + offset)
    }
}

/// Byte offsets of line starts, so that line/column look-ups are a binary search.
#[derive(Clone, Debug)]
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes the line starts of `text`.
    pub fn new(text: &str) -> LineIndex {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { line_starts }
    }

    /// 0-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next - 1,
        }
    }

    /// Byte range of a 0-based line, without its line break.
    pub fn line_range(&self, text: &str, line: usize) -> (usize, usize) {
        let start = self.line_starts[line];
        let mut end = self
            .line_starts
            .get(line + 1)
            .map_or(text.len(), |next| next - 1);
        if end > start && text.as_bytes()[end - 1] == b'\r' {
            end -= 1;
        }
        (start, end)
    }
}

/// Longest part of a source line shown under a diagnostic.
const MAX_SHOWN_COLUMNS: usize = 100;

/// One model file: its name as the user gave it, its text and its line index.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as given on the command line; diagnostics print it verbatim.
    pub name: String,
    /// The whole text, valid UTF-8.
    pub text: String,
    index: LineIndex,
}

impl SourceFile {
    /// A source file from its name and text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let index = LineIndex::new(&text);
        SourceFile {
            name: name.into(),
            text,
            index,
        }
    }

    /// 1-based line and 1-based column in characters (so `θ` counts once) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp_to_char(offset.min(self.text.len()));
        let line = self.index.line_of(offset);
        let (start, _) = self.index.line_range(&self.text, line);
        let column = self.text[start..offset].chars().count() + 1;
        (line + 1, column)
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let (start, end) = self.index.line_range(&self.text, line - 1);
        &self.text[start..end]
    }

    /// The text covered by a span.
    pub fn slice(&self, span: Span) -> &str {
        let start = self.clamp_to_char((span.start as usize).min(self.text.len()));
        let end = self.clamp_to_char((span.end as usize).min(self.text.len()));
        &self.text[start..end.max(start)]
    }

    fn clamp_to_char(&self, mut offset: usize) -> usize {
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }
}

/// How serious a diagnostic is: errors fail the command, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The model is rejected.
    Error,
    /// The model is accepted; something looks unintended.
    Warning,
}

/// One message about one place in a source file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem is; the caret goes under it. `None` for problems that belong to the
    /// command line rather than a place in the file (a `--set` naming no const or param).
    pub span: Option<Span>,
    /// Lower case, no trailing period, names both sides of a conflict.
    pub message: String,
    /// Extra lines printed as `= help: ...` below the caret.
    pub help: Vec<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span: Some(span),
            message: message.into(),
            help: Vec::new(),
        }
    }

    /// A warning at `span`.
    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            span: Some(span),
            message: message.into(),
            help: Vec::new(),
        }
    }

    /// An error about the file as a whole or the command line, printed as `FILE: error: MESSAGE`.
    pub fn global_error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span: None,
            message: message.into(),
            help: Vec::new(),
        }
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    /// Renders the diagnostic as `FILE:LINE:COL: error: MESSAGE`, the source line and a caret line.
    pub fn render(&self, file: &SourceFile) -> String {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let Some(span) = self.span else {
            let mut out = format!("{}: {}: {}\n", file.name, severity, self.message);
            for help in &self.help {
                let _ = writeln!(out, "  = help: {help}");
            }
            return out;
        };
        let (line, column) = file.line_col(span.start as usize);
        let mut out = format!(
            "{}:{}:{}: {}: {}\n",
            file.name, line, column, severity, self.message
        );
        if file.text.is_empty() {
            for help in &self.help {
                let _ = writeln!(out, "  = help: {help}");
            }
            return out;
        }
        let source_line = file.line_text(line);
        let gutter = line.to_string().len().max(3);
        let chars: Vec<char> = source_line
            .chars()
            .map(|c| if c == '\t' || c.is_control() { ' ' } else { c })
            .collect();
        // The caret covers the span's part on its first line, at least one character.
        let (end_line, end_column) = file.line_col(span.end as usize);
        let caret_end = if end_line == line {
            end_column.max(column + 1)
        } else {
            chars.len().max(column) + 1
        };
        // Long lines are shown as a window around the caret so the report stays readable.
        let (first, last) = if chars.len() <= MAX_SHOWN_COLUMNS {
            (0, chars.len())
        } else {
            let last = ((column - 1).saturating_sub(MAX_SHOWN_COLUMNS / 4) + MAX_SHOWN_COLUMNS)
                .min(chars.len());
            (last - MAX_SHOWN_COLUMNS, last)
        };
        let prefix = if first > 0 { "..." } else { "" };
        let suffix = if last < chars.len() { "..." } else { "" };
        let shown: String = chars[first..last].iter().collect();
        let _ = writeln!(out, "{line:>gutter$} | {prefix}{shown}{suffix}");
        let caret_start = column - 1 - first + prefix.len();
        let caret_len = (caret_end - column)
            .min(last.saturating_sub(column - 1))
            .max(1);
        let _ = writeln!(
            out,
            "{:gutter$} | {}{}",
            "",
            " ".repeat(caret_start),
            "^".repeat(caret_len)
        );
        for help in &self.help {
            let _ = writeln!(out, "{:gutter$} = help: {help}", "");
        }
        out
    }
}

/// The diagnostics of one analysis, in the order they were found until [`Diagnostics::sorted`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// No diagnostics.
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// Adds one diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Adds an error.
    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::error(span, message));
    }

    /// Adds a warning.
    pub fn warning(&mut self, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::warning(span, message));
    }

    /// Moves all of `other` into `self`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Whether there are no diagnostics at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The diagnostics, sorted by position (stable, so equal positions keep their order),
    /// with exact duplicates removed.
    pub fn sorted(&self) -> Vec<Diagnostic> {
        let mut items = self.items.clone();
        items.sort_by_key(|d| d.span.map(|s| (s.start, s.end)));
        items.dedup();
        items
    }

    /// All diagnostics rendered one after another, sorted by position.
    pub fn render(&self, file: &SourceFile) -> String {
        self.sorted().iter().map(|d| d.render(file)).collect()
    }

    /// The diagnostics in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

/// Edit distance between two strings in characters, counting an insertion, a deletion, a
/// substitution or a swap of two adjacent characters as one edit (optimal string alignment), so
/// that `adma` is one edit from `adam`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// The candidate nearest to `name` if it is close enough to be a plausible typo: at most a third
/// of the name's length in edits (at least one), counted by [`edit_distance`] (Damerau's
/// distance, so a swap of two adjacent letters is one edit). Among equally near candidates one
/// with the same letters as `name` wins: a swap keeps the letters and a dropped or changed one
/// does not, so `tahn` is `tanh` with two letters swapped rather than `tan` with one added.
/// Remaining ties go to the first candidate, so callers pass candidates in declaration order to
/// keep suggestions deterministic.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let letters = sorted_chars(name);
    // (edits, 0 if the candidate has the same letters, else 1): smaller is nearer.
    let mut best: Option<((usize, usize), &str)> = None;
    for candidate in candidates {
        if candidate == name {
            continue;
        }
        let distance = edit_distance(name, candidate);
        let rank = (distance, usize::from(sorted_chars(candidate) != letters));
        if distance <= limit && best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// The characters of `text`, sorted: equal for two words with the same letters.
fn sorted_chars(text: &str) -> Vec<char> {
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort_unstable();
    chars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_not_bytes() {
        let file = SourceFile::new("m.node", "param θ = 1\nstate x = θ + y\n");
        let y = file.text.rfind('y').unwrap();
        assert_eq!(file.line_col(y), (2, 15));
        let rendered = Diagnostic::error(Span::new(y, y + 1), "unknown name `y`").render(&file);
        assert_eq!(
            rendered,
            "m.node:2:15: error: unknown name `y`\n  2 | state x = θ + y\n    |               ^\n"
        );
    }

    #[test]
    fn caret_spans_the_range_and_help_follows() {
        let file = SourceFile::new("a.node", "dx/dt = a * b");
        let d = Diagnostic::error(Span::new(8, 13), "cannot multiply [3] by [3]")
            .with_help("use dot(a, b) or a .* b");
        assert_eq!(
            d.render(&file),
            "a.node:1:9: error: cannot multiply [3] by [3]\n  1 | dx/dt = a * b\n    |         ^^^^^\n    = help: use dot(a, b) or a .* b\n"
        );
    }

    #[test]
    fn spans_at_end_of_file_and_empty_files_render() {
        let file = SourceFile::new("e.node", "state x = ");
        let d = Diagnostic::error(Span::new(10, 10), "expected an expression");
        assert!(d.render(&file).starts_with("e.node:1:11: error:"));
        let empty = SourceFile::new("empty.node", "");
        let d = Diagnostic::error(Span::new(0, 0), "the file is empty");
        assert_eq!(
            d.render(&empty),
            "empty.node:1:1: error: the file is empty\n"
        );
    }

    #[test]
    fn long_lines_show_a_window_around_the_caret() {
        let text = format!("dx/dt = {}y", "x + ".repeat(100));
        let file = SourceFile::new("l.node", text.clone());
        let y = text.rfind('y').unwrap();
        let rendered = Diagnostic::error(Span::new(y, y + 1), "unknown name `y`").render(&file);
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(
            lines[1].starts_with("  1 | ...") && lines[1].len() < 130,
            "{rendered}"
        );
        let source_caret = lines[1].find('y').unwrap();
        assert_eq!(lines[2].find('^'), Some(source_caret), "{rendered}");
    }

    #[test]
    fn suggestions_pick_the_nearest_plausible_name() {
        assert_eq!(edit_distance("sigma", "sigmoid"), 3);
        assert_eq!(
            suggest("sigmoi", ["sin", "sigmoid", "sign"]),
            Some("sigmoid")
        );
        assert_eq!(suggest("y", ["x", "z"]), Some("x"));
        assert_eq!(suggest("velocity", ["x", "z"]), None);
        assert_eq!(edit_distance("adma", "adam"), 1);
        assert_eq!(
            suggest("adma", ["adam", "sgd", "lbfgs", "msa"]),
            Some("adam")
        );
    }

    #[test]
    fn a_transposition_beats_an_equally_near_insertion() {
        // `tahn` is one edit from both: `tan` by deleting `h`, `tanh` by swapping `h` and `n`.
        assert_eq!(edit_distance("tahn", "tan"), 1);
        assert_eq!(edit_distance("tahn", "tanh"), 1);
        // The swap wins whatever the order of the candidates.
        assert_eq!(suggest("tahn", ["tan", "tanh"]), Some("tanh"));
        assert_eq!(suggest("tahn", ["tanh", "tan"]), Some("tanh"));
        assert_eq!(suggest("sgimoid", ["sign", "sigmoid"]), Some("sigmoid"));
        // A plain Levenshtein distance would count a swap as two edits, beyond a short name's
        // limit of one: `ot` is still `to`.
        assert_eq!(edit_distance("ot", "to"), 1);
        assert_eq!(suggest("ot", ["at", "to"]), Some("to"));
        // Same letters only break ties: two swaps lose to one substitution.
        assert_eq!(edit_distance("abcdef", "bacdfe"), 2);
        assert_eq!(suggest("abcdef", ["bacdfe", "abcdex"]), Some("abcdex"));
    }
}
