//! [`DataError`]: why a data block could not be read or generated, with the place in the file.

use std::fmt;

/// Why a data set could not be built.
///
/// Errors inside a CSV file carry the file name, a 1-based line and a 1-based column counted
/// in characters (`θ` counts once), so that `cli` can render them as
/// `FILE:LINE:COL: error: MESSAGE` like every other diagnostic; [`DataError::file`],
/// [`DataError::line`], [`DataError::column`] and [`DataError::message`] give the parts, and
/// `Display` joins them in that format. Errors about the model's data declaration rather than a
/// place in the file (an unknown column name, `rows` out of range) have a file but no line;
/// generator errors have neither.
#[derive(Clone, Debug, PartialEq)]
pub enum DataError {
    /// A cell that should hold a number does not.
    NotANumber {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The cell's text, trimmed.
        text: String,
        /// 0-based CSV column of the cell.
        field: usize,
        /// That column's header name, if the file has a header.
        name: Option<String>,
    },
    /// A cell holds `inf`, `NaN` or a number too large for `f64`.
    NonFinite {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The cell's text, trimmed.
        text: String,
        /// 0-based CSV column of the cell.
        field: usize,
        /// That column's header name, if the file has a header.
        name: Option<String>,
    },
    /// A row has a different number of cells from the first row.
    RowWidth {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column: the first extra cell, or the end of a short line.
        column: usize,
        /// Cells on this row.
        found: usize,
        /// Cells on the first row.
        expected: usize,
    },
    /// The first row mixes text and numbers, and a text cell sits above a number: it could be
    /// a header with a numeric name or a data row with a typo.
    AmbiguousHeader {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column of the text cell.
        column: usize,
        /// The cell's text, trimmed.
        text: String,
        /// 0-based CSV column of the cell.
        field: usize,
    },
    /// A quoted cell is not closed on its line.
    UnclosedQuote {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column of the opening quote.
        column: usize,
    },
    /// Text follows the closing quote of a quoted cell.
    TextAfterQuote {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column of the unexpected character.
        column: usize,
    },
    /// A series' times do not increase.
    TimesNotIncreasing {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column of the time cell.
        column: usize,
        /// The time on the previous data row.
        previous: f64,
        /// The time on this row.
        time: f64,
        /// The trajectory, for a series with a trajectory column.
        trajectory: Option<String>,
    },
    /// An input cell of a series differs from the trajectory's first row: a trajectory's
    /// inputs (its initial conditions) are constant.
    InputNotConstant {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column of the cell.
        column: usize,
        /// 0-based field.
        field: usize,
        /// Its header name.
        name: Option<String>,
        /// The trajectory (`None`: the series is one trajectory).
        trajectory: Option<String>,
        /// The value on the trajectory's first row.
        first: f64,
        /// The value on this row.
        value: f64,
    },
    /// A trajectory key appears on two rows of a series' `input_file`.
    DuplicateKey {
        /// The input file.
        file: String,
        /// 1-based line of the second row.
        line: usize,
        /// 1-based column of its key cell.
        column: usize,
        /// The key.
        key: String,
        /// 1-based line of the first row with it.
        first_line: usize,
    },
    /// A trajectory of a series has no row in its `input_file`.
    NoInputRow {
        /// The series file.
        file: String,
        /// 1-based line of the trajectory's first row.
        line: usize,
        /// 1-based column of its trajectory cell.
        column: usize,
        /// The trajectory.
        key: String,
        /// The input file.
        input_file: String,
    },
    /// The file has no data rows.
    NoRows {
        /// The file.
        file: String,
    },
    /// A column name that the file's header does not have.
    UnknownColumn {
        /// The file.
        file: String,
        /// The name asked for.
        name: String,
        /// The nearest header name, if one is close.
        suggestion: Option<String>,
    },
    /// A column is named but the file has no header row.
    NoHeader {
        /// The file.
        file: String,
        /// The name asked for.
        name: String,
    },
    /// A column name appears more than once in the header.
    DuplicateColumn {
        /// The file.
        file: String,
        /// The name.
        name: String,
        /// Its first 0-based column.
        first: usize,
        /// Its second 0-based column.
        second: usize,
    },
    /// A column index past the file's last column.
    ColumnOutOfRange {
        /// The file.
        file: String,
        /// What the column is for: "input", "label", "time", "value".
        role: &'static str,
        /// The 0-based column asked for (for a range, its exclusive end).
        column: usize,
        /// How many columns the file has.
        width: usize,
    },
    /// A column range whose end is not after its start (after resolving names).
    EmptyColumnRange {
        /// The file.
        file: String,
        /// What the columns are for: "input", "value".
        role: &'static str,
        /// 0-based start.
        start: usize,
        /// 0-based exclusive end.
        end: usize,
    },
    /// `rows = A..B` does not fit the file's data rows.
    RowsOutOfRange {
        /// The file.
        file: String,
        /// Start of the range.
        start: usize,
        /// Exclusive end of the range.
        end: usize,
        /// Data rows in the file.
        rows: usize,
    },
    /// An `.npy` data file that cannot be read or used: its format, shape, a named column (an
    /// array has no header), a value that is not finite or times that do not increase.
    Npy {
        /// The file.
        file: String,
        /// What is wrong, with the row and column (0-based) where there is one.
        message: String,
    },
    /// The wrong kind of source for the function: a file source passed to `generate`, or a
    /// generator passed to `parse_csv`.
    WrongSource {
        /// What the function handles.
        expected: &'static str,
    },
    /// A generator argument out of its domain.
    InvalidArgument {
        /// The generator.
        source: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `uniform`'s `dim` differs from the total size of the model's inputs that its label reads.
    InputWidth {
        /// The generator's `dim`.
        dim: usize,
        /// The total size of the model's inputs.
        width: usize,
    },
    /// `uniform`'s label reads an input element that the model does not declare.
    LabelInput {
        /// Input index.
        input: u32,
        /// Element.
        elem: u32,
    },
    /// `uniform`'s label reads something other than an input (a state, a parameter, time).
    LabelVariable {
        /// The variable, as `Debug` text.
        var: String,
    },
    /// `uniform`'s label is not finite for a sample.
    NonFiniteLabel {
        /// 0-based sample.
        sample: usize,
        /// The value.
        value: f64,
    },
}

impl DataError {
    /// The file the error is in, if it concerns one.
    pub fn file(&self) -> Option<&str> {
        use DataError::*;
        match self {
            NotANumber { file, .. }
            | NonFinite { file, .. }
            | RowWidth { file, .. }
            | AmbiguousHeader { file, .. }
            | UnclosedQuote { file, .. }
            | TextAfterQuote { file, .. }
            | TimesNotIncreasing { file, .. }
            | InputNotConstant { file, .. }
            | DuplicateKey { file, .. }
            | NoInputRow { file, .. }
            | NoRows { file }
            | UnknownColumn { file, .. }
            | NoHeader { file, .. }
            | DuplicateColumn { file, .. }
            | ColumnOutOfRange { file, .. }
            | EmptyColumnRange { file, .. }
            | RowsOutOfRange { file, .. }
            | Npy { file, .. } => Some(file),
            WrongSource { .. }
            | InvalidArgument { .. }
            | InputWidth { .. }
            | LabelInput { .. }
            | LabelVariable { .. }
            | NonFiniteLabel { .. } => None,
        }
    }

    /// 1-based line and column (in characters) in [`DataError::file`], for errors at a place
    /// in the file.
    pub fn position(&self) -> Option<(usize, usize)> {
        use DataError::*;
        match self {
            NotANumber { line, column, .. }
            | NonFinite { line, column, .. }
            | RowWidth { line, column, .. }
            | AmbiguousHeader { line, column, .. }
            | UnclosedQuote { line, column, .. }
            | TextAfterQuote { line, column, .. }
            | TimesNotIncreasing { line, column, .. }
            | InputNotConstant { line, column, .. }
            | DuplicateKey { line, column, .. }
            | NoInputRow { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }

    /// 1-based line, for errors at a place in the file.
    pub fn line(&self) -> Option<usize> {
        self.position().map(|(l, _)| l)
    }

    /// 1-based column in characters, for errors at a place in the file.
    pub fn column(&self) -> Option<usize> {
        self.position().map(|(_, c)| c)
    }

    /// The message alone: lower case, no trailing period, no file or position.
    pub fn message(&self) -> String {
        use DataError::*;
        let column_name = |field: &usize, name: &Option<String>| match name {
            Some(n) => format!("column {field} (`{n}`)"),
            None => format!("column {field}"),
        };
        match self {
            NotANumber {
                text, field, name, ..
            } if text.is_empty() => format!("empty cell in {}", column_name(field, name)),
            NotANumber {
                text, field, name, ..
            } => format!(
                "`{text}` in {} is not a number",
                column_name(field, name)
            ),
            NonFinite {
                text, field, name, ..
            } => format!(
                "`{text}` in {} is not a finite number",
                column_name(field, name)
            ),
            RowWidth {
                found, expected, ..
            } => format!(
                "this row has {found} cell{} but the first row has {expected}",
                plural(*found)
            ),
            AmbiguousHeader { text, field, .. } => format!(
                "cannot tell whether the first row is a header: `{text}` in column {field} is not a number but the cell below it is (a header row holds no numbers, a data row only numbers in the columns used)"
            ),
            UnclosedQuote { .. } => {
                "this quoted cell is not closed on its line (line breaks inside quotes are not supported)"
                    .to_string()
            }
            TextAfterQuote { .. } => {
                "unexpected text after a closing quote; expected `,` or the end of the line"
                    .to_string()
            }
            TimesNotIncreasing {
                previous,
                time,
                trajectory: None,
                ..
            } => format!("the times of a series must increase, but {time} follows {previous}"),
            TimesNotIncreasing {
                previous,
                time,
                trajectory: Some(traj),
                ..
            } => format!(
                "the times of trajectory `{traj}` must increase, but {time} follows {previous}"
            ),
            InputNotConstant {
                field,
                name,
                trajectory,
                first,
                value,
                ..
            } => format!(
                "input {} is {value} here but {first} on the first row of {}; a trajectory's inputs must be constant",
                column_name(field, name),
                match trajectory {
                    Some(t) => format!("trajectory `{t}`"),
                    None => "the series".to_string(),
                }
            ),
            NoRows { .. } => "the file has no data rows".to_string(),
            UnknownColumn {
                name, suggestion, ..
            } => match suggestion {
                Some(s) => format!("the header has no column `{name}`; did you mean `{s}`?"),
                None => format!("the header has no column `{name}`"),
            },
            NoHeader { name, .. } => format!(
                "column `{name}` is named but the file has no header row (its first row is numbers); use a column index"
            ),
            DuplicateColumn {
                name,
                first,
                second,
                ..
            } => format!(
                "column name `{name}` is ambiguous: it names columns {first} and {second}; use an index"
            ),
            ColumnOutOfRange {
                role,
                column,
                width,
                ..
            } => format!(
                "{role} column {column} is out of range: the file has {width} column{} (0..{width})",
                plural(*width)
            ),
            EmptyColumnRange {
                role, start, end, ..
            } => format!("the {role} columns {start}..{end} are empty"),
            RowsOutOfRange {
                start, end, rows, ..
            } => {
                if start >= end {
                    format!("`rows = {start}..{end}` is empty")
                } else {
                    format!(
                        "`rows = {start}..{end}` is out of range: the file has {rows} data row{} (0..{rows})",
                        plural(*rows)
                    )
                }
            }
            DuplicateKey {
                key, first_line, ..
            } => format!(
                "trajectory `{key}` has a second row here (the first is on line {first_line}); an input file holds one row per trajectory"
            ),
            NoInputRow {
                key, input_file, ..
            } => format!(
                "trajectory `{key}` has no row in the input file `{input_file}`; add one with its inputs"
            ),
            Npy { message, .. } => message.clone(),
            WrongSource { expected } => format!("expected {expected}"),
            InvalidArgument { source, message } => format!("`{source}`: {message}"),
            InputWidth { dim, width } => format!(
                "`uniform` draws {dim} value{} per sample but the model's inputs take {width}",
                plural(*dim)
            ),
            LabelInput { input, elem } => format!(
                "the label reads element {elem} of input {input}, which the model does not declare"
            ),
            LabelVariable { var } => {
                format!("a generated label may read only the sample's inputs, not {var}")
            }
            NonFiniteLabel { sample, value } => {
                format!("the label of sample {sample} is {value}, not a finite number")
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file(), self.position()) {
            (Some(file), Some((line, column))) => write!(f, "{file}:{line}:{column}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, _) => {}
        }
        write!(f, "error: {}", self.message())
    }
}

impl std::error::Error for DataError {}
