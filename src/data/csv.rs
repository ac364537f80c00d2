//! CSV text to a [`Dataset`]: `csv(...)` and `series(...)` data blocks.
//!
//! The format is plain comma-separated values: one row per line (`\n` or `\r\n`), cells
//! separated by `,`, a cell optionally in double quotes (`""` inside quotes is one quote; a
//! quoted cell may not span lines). Spaces around a cell are ignored. Blank lines are skipped;
//! every other line is a row, and every row must have as many cells as the first. A leading
//! byte-order mark is ignored.
//!
//! Only the cells a block uses (its input or value columns, label, time) must be numbers, so a
//! file may carry text columns it does not use; a used cell that is empty, text, `inf` or `NaN`
//! is an error at its line and column. Nothing is skipped silently.
//!
//! **Header detection.** The first row is a header when none of its cells is a number. When
//! every cell is a number it is data. When it mixes text and numbers it is data, unless one of
//! its text cells sits above a number on the second row: then it could be either a header with
//! a numeric name or a data row with a typo, and that is an error rather than a guess.
//!
//! This module is written by hand rather than with the `csv` crate so that every error can name
//! its column in characters, which is what the diagnostics renderer expects.

use std::borrow::Cow;

use super::{DataError, Dataset};
use crate::diag::suggest;
use crate::ir::{Column, DataSource};
use crate::rng::Rng;

/// One cell of a line: its text (unquoted, not trimmed of inner spaces) and where it starts.
struct Cell<'a> {
    text: Cow<'a, str>,
    /// 1-based character column of the cell's first non-space character (or of where the cell
    /// begins, for an empty cell).
    column: usize,
}

/// A non-blank line split into cells.
struct Row<'a> {
    line: usize,
    cells: Vec<Cell<'a>>,
    /// Characters on the line, for pointing past its end.
    chars: usize,
}

/// Splits `line` (no line terminator) into cells.
fn split_line<'a>(text: &'a str, line: usize, file: &str) -> Result<Row<'a>, DataError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut cells = Vec::new();
    let mut i = 0; // index into `chars`, which is the 0-based character column
    loop {
        while i < chars.len() && matches!(chars[i].1, ' ' | '\t') {
            i += 1;
        }
        if i < chars.len() && chars[i].1 == '"' {
            let open = i;
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(DataError::UnclosedQuote {
                            file: file.to_string(),
                            line,
                            column: open + 1,
                        })
                    }
                    Some((_, '"')) if chars.get(i + 1).is_some_and(|c| c.1 == '"') => {
                        value.push('"');
                        i += 2;
                    }
                    Some((_, '"')) => {
                        i += 1;
                        break;
                    }
                    Some((_, c)) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            while i < chars.len() && matches!(chars[i].1, ' ' | '\t') {
                i += 1;
            }
            if i < chars.len() && chars[i].1 != ',' {
                return Err(DataError::TextAfterQuote {
                    file: file.to_string(),
                    line,
                    column: i + 1,
                });
            }
            cells.push(Cell {
                text: Cow::Owned(value),
                column: open + 1,
            });
        } else {
            let start = i;
            while i < chars.len() && chars[i].1 != ',' {
                i += 1;
            }
            let byte = |k: usize| chars.get(k).map_or(text.len(), |c| c.0);
            cells.push(Cell {
                text: Cow::Borrowed(text[byte(start)..byte(i)].trim_end()),
                column: start + 1,
            });
        }
        // Here `i` is at a comma or the end of the line.
        if i < chars.len() {
            i += 1;
        } else {
            break;
        }
    }
    Ok(Row {
        line,
        cells,
        chars: chars.len(),
    })
}

/// The non-blank lines of `text` with their 1-based line numbers, `\r` and a leading BOM removed.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// A cell's number, with an error naming its place if it is not a finite number.
fn number(
    cell: &Cell,
    row: &Row,
    field: usize,
    header: Option<&[String]>,
    file: &str,
) -> Result<f64, DataError> {
    let text = cell.text.trim();
    let name = || header.and_then(|h| h.get(field)).cloned();
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(DataError::NonFinite {
            file: file.to_string(),
            line: row.line,
            column: cell.column,
            text: text.to_string(),
            field,
            name: name(),
        }),
        Err(_) => Err(DataError::NotANumber {
            file: file.to_string(),
            line: row.line,
            column: cell.column,
            text: text.to_string(),
            field,
            name: name(),
        }),
    }
}

fn is_number(cell: &Cell) -> bool {
    cell.text.trim().parse::<f64>().is_ok()
}

/// Whether the first row is a header (see the module docs), or an error if it cannot tell.
fn first_row_is_header(first: &Row, second: Option<&Row>, file: &str) -> Result<bool, DataError> {
    let numbers = first.cells.iter().filter(|c| is_number(c)).count();
    if numbers == 0 {
        return Ok(true);
    }
    if numbers == first.cells.len() {
        return Ok(false);
    }
    if let Some(second) = second {
        for (field, cell) in first.cells.iter().enumerate() {
            if !is_number(cell) && second.cells.get(field).is_some_and(is_number) {
                return Err(DataError::AmbiguousHeader {
                    file: file.to_string(),
                    line: first.line,
                    column: cell.column,
                    text: cell.text.trim().to_string(),
                    field,
                });
            }
        }
    }
    Ok(false)
}

/// Resolves a column to its 0-based index, against the header for a name.
fn resolve(column: &Column, header: Option<&[String]>, file: &str) -> Result<usize, DataError> {
    let name = match column {
        Column::Index(i) => return Ok(*i),
        Column::Name(name) => name,
    };
    let Some(header) = header else {
        return Err(DataError::NoHeader {
            file: file.to_string(),
            name: name.clone(),
        });
    };
    let mut found = header
        .iter()
        .enumerate()
        .filter(|(_, h)| *h == name)
        .map(|(i, _)| i);
    match (found.next(), found.next()) {
        (Some(i), None) => Ok(i),
        (Some(first), Some(second)) => Err(DataError::DuplicateColumn {
            file: file.to_string(),
            name: name.clone(),
            first,
            second,
        }),
        (None, _) => Err(DataError::UnknownColumn {
            file: file.to_string(),
            name: name.clone(),
            suggestion: suggest(name, header.iter().map(String::as_str)).map(str::to_string),
        }),
    }
}

/// Resolves `start..end` (end exclusive, names too) and checks it against the file's width.
fn resolve_range(
    range: &(Column, Column),
    role: &'static str,
    header: Option<&[String]>,
    width: usize,
    file: &str,
) -> Result<(usize, usize), DataError> {
    let start = resolve(&range.0, header, file)?;
    let end = resolve(&range.1, header, file)?;
    if start >= end {
        return Err(DataError::EmptyColumnRange {
            file: file.to_string(),
            role,
            start,
            end,
        });
    }
    if end > width {
        return Err(DataError::ColumnOutOfRange {
            file: file.to_string(),
            role,
            column: end,
            width,
        });
    }
    Ok((start, end))
}

/// Resolves a single column and checks it against the file's width.
fn resolve_one(
    column: &Column,
    role: &'static str,
    header: Option<&[String]>,
    width: usize,
    file: &str,
) -> Result<usize, DataError> {
    let c = resolve(column, header, file)?;
    if c >= width {
        return Err(DataError::ColumnOutOfRange {
            file: file.to_string(),
            role,
            column: c,
            width,
        });
    }
    Ok(c)
}

/// The first two rows, split, and what they say about the file.
struct Head<'a, I> {
    first: Row<'a>,
    second: Option<Row<'a>>,
    /// The first row's cells when it is a header.
    header: Option<Vec<String>>,
    /// Cells per row: the first row's.
    width: usize,
    /// The non-blank lines after the second.
    rest: I,
}

fn head<'a>(
    text: &'a str,
    file: &str,
) -> Result<Head<'a, impl Iterator<Item = (usize, &'a str)>>, DataError> {
    let mut all = lines(text);
    let Some((line, first)) = all.next() else {
        return Err(DataError::NoRows {
            file: file.to_string(),
        });
    };
    let first = split_line(first, line, file)?;
    let second = match all.next() {
        Some((line, l)) => Some(split_line(l, line, file)?),
        None => None,
    };
    let header = first_row_is_header(&first, second.as_ref(), file)?.then(|| {
        first
            .cells
            .iter()
            .map(|c| c.text.trim().to_string())
            .collect()
    });
    Ok(Head {
        width: first.cells.len(),
        first,
        second,
        header,
        rest: all,
    })
}

/// The columns a `csv` block's inputs or a `series` block's values select.
pub(super) struct Selection {
    /// The header's cells, if the file has one.
    pub header: Option<Vec<String>>,
    /// Cells per row.
    pub width: usize,
    /// The first selected column.
    pub start: usize,
    /// One past the last selected column.
    pub end: usize,
}

/// The [`Selection`] of a file block's column `range` (its `role` for errors), from the file's
/// first rows alone; see [`super::check_columns`].
pub(super) fn selection(
    text: &str,
    range: &(Column, Column),
    role: &'static str,
    file: &str,
) -> Result<Selection, DataError> {
    let Head { header, width, .. } = head(text, file)?;
    let (start, end) = resolve_range(range, role, header.as_deref(), width, file)?;
    Ok(Selection {
        header,
        width,
        start,
        end,
    })
}

/// Each trajectory's inputs from a series' `input_file`: one row per trajectory, found by the
/// text of its trajectory cell.
#[derive(Clone, Debug)]
pub struct KeyedInputs {
    /// The input file, for errors.
    pub file: String,
    /// Inputs per trajectory.
    pub width: usize,
    rows: std::collections::HashMap<String, Vec<f64>>,
}

impl KeyedInputs {
    /// The inputs of trajectory `key`, if the file has its row.
    pub fn inputs(&self, key: &str) -> Option<Vec<f64>> {
        self.rows.get(key).cloned()
    }
}

/// See [`super::parse_input_file`].
pub(super) fn keyed_inputs(
    text: &str,
    key: &Column,
    input: &(Column, Column),
    file: &str,
) -> Result<KeyedInputs, DataError> {
    let Head {
        first,
        second,
        header,
        width,
        rest,
    } = head(text, file)?;
    let header = header.as_deref();
    let key = resolve_one(key, "trajectory", header, width, file)?;
    let (start, end) = resolve_range(input, "input", header, width, file)?;
    let first_data = header.is_none().then_some(Ok(first));
    let rest = rest.map(|(line, l)| split_line(l, line, file));
    let mut rows = std::collections::HashMap::new();
    let mut lines = std::collections::HashMap::new();
    for row in first_data.into_iter().chain(second.map(Ok)).chain(rest) {
        let row = row?;
        if row.cells.len() != width {
            return Err(DataError::RowWidth {
                file: file.to_string(),
                line: row.line,
                column: row.cells.get(width).map_or(row.chars + 1, |c| c.column),
                found: row.cells.len(),
                expected: width,
            });
        }
        let name = row.cells[key].text.trim().to_string();
        if let Some(&first_line) = lines.get(&name) {
            return Err(DataError::DuplicateKey {
                file: file.to_string(),
                line: row.line,
                column: row.cells[key].column,
                key: name,
                first_line,
            });
        }
        let values = (start..end)
            .map(|f| number(&row.cells[f], &row, f, header, file))
            .collect::<Result<Vec<_>, _>>()?;
        lines.insert(name.clone(), row.line);
        rows.insert(name, values);
    }
    if rows.is_empty() {
        return Err(DataError::NoRows {
            file: file.to_string(),
        });
    }
    Ok(KeyedInputs {
        file: file.to_string(),
        width: end - start,
        rows,
    })
}

/// See [`super::parse_csv`]; `keyed` holds the inputs of a series with an `input_file`.
pub(super) fn parse(
    text: &str,
    source: &DataSource,
    file: &str,
    keyed: Option<&KeyedInputs>,
) -> Result<Dataset, DataError> {
    let Head {
        first,
        second,
        header,
        width,
        rest: all,
    } = head(text, file)?;
    let header = header.as_deref();

    // The data rows, split lazily after the two already split.
    let first_data = if header.is_some() {
        None
    } else {
        Some(Ok(first))
    };
    let rest = all.map(|(line, l)| split_line(l, line, file));
    let rows = first_data.into_iter().chain(second.map(Ok)).chain(rest);
    let check_width = |row: &Row| -> Result<(), DataError> {
        if row.cells.len() == width {
            return Ok(());
        }
        let column = row.cells.get(width).map_or(row.chars + 1, |c| c.column);
        Err(DataError::RowWidth {
            file: file.to_string(),
            line: row.line,
            column,
            found: row.cells.len(),
            expected: width,
        })
    };

    match source {
        DataSource::Csv {
            input,
            label,
            shuffle,
            rows: keep,
            ..
        } => {
            let (start, end) = resolve_range(input, "input", header, width, file)?;
            let label = match label {
                Some(c) => Some(resolve_one(c, "label", header, width, file)?),
                None => None,
            };
            let dim = end - start;
            let mut inputs = Vec::new();
            let mut labels = Vec::new();
            let mut n = 0;
            for row in rows {
                let row = row?;
                check_width(&row)?;
                for field in start..end {
                    inputs.push(number(&row.cells[field], &row, field, header, file)?);
                }
                if let Some(field) = label {
                    labels.push(number(&row.cells[field], &row, field, header, file)?);
                }
                n += 1;
            }
            if n == 0 {
                return Err(DataError::NoRows {
                    file: file.to_string(),
                });
            }
            let data = Dataset::samples(n, dim, inputs, label.map(|_| labels));
            keep_rows(data, *shuffle, *keep, file)
        }
        DataSource::Series {
            t,
            values,
            rows: keep,
            traj: None,
            input: None,
            ..
        } => {
            let t = resolve_one(t, "time", header, width, file)?;
            let (start, end) = resolve_range(values, "value", header, width, file)?;
            let mut times: Vec<f64> = Vec::new();
            let mut observed = Vec::new();
            for row in rows {
                let row = row?;
                check_width(&row)?;
                let cell = &row.cells[t];
                let time = number(cell, &row, t, header, file)?;
                if let Some(&previous) = times.last() {
                    if time <= previous {
                        return Err(DataError::TimesNotIncreasing {
                            file: file.to_string(),
                            line: row.line,
                            column: cell.column,
                            previous,
                            time,
                            trajectory: None,
                        });
                    }
                }
                times.push(time);
                for field in start..end {
                    observed.push(number(&row.cells[field], &row, field, header, file)?);
                }
            }
            if times.is_empty() {
                return Err(DataError::NoRows {
                    file: file.to_string(),
                });
            }
            window(times, end - start, observed, *keep, file)
        }
        DataSource::Series {
            t,
            values,
            rows: keep,
            traj,
            input,
            ..
        } => {
            let t = resolve_one(t, "time", header, width, file)?;
            let values = resolve_range(values, "value", header, width, file)?;
            let traj = match traj {
                Some(c) => Some(resolve_one(c, "trajectory", header, width, file)?),
                None => None,
            };
            // With an input file the inputs are its columns, not this file's.
            let input = match (input, keyed) {
                (Some(r), None) => resolve_range(r, "input", header, width, file)?,
                _ => (0, 0),
            };
            let mut parsed = Vec::new();
            let mut places = Vec::new();
            for row in rows {
                let row = row?;
                check_width(&row)?;
                let cells = |(a, b): (usize, usize)| -> Result<Vec<f64>, DataError> {
                    (a..b)
                        .map(|f| number(&row.cells[f], &row, f, header, file))
                        .collect()
                };
                let key = traj.map(|c| row.cells[c].text.trim().to_string());
                let inputs = match (keyed, &key, traj) {
                    (Some(keyed), Some(key), Some(c)) => {
                        keyed.inputs(key).ok_or_else(|| DataError::NoInputRow {
                            file: file.to_string(),
                            line: row.line,
                            column: row.cells[c].column,
                            key: key.clone(),
                            input_file: keyed.file.clone(),
                        })?
                    }
                    _ => cells(input)?,
                };
                parsed.push(SeriesRow {
                    time: number(&row.cells[t], &row, t, header, file)?,
                    values: cells(values)?,
                    inputs,
                    key,
                });
                let column = |f: usize| row.cells[f].column;
                places.push((
                    row.line,
                    column(t),
                    (input.0..input.1).map(column).collect::<Vec<_>>(),
                ));
            }
            let located = |problem: SeriesProblem| match problem {
                SeriesProblem::Time {
                    row,
                    previous,
                    time,
                    trajectory,
                } => DataError::TimesNotIncreasing {
                    file: file.to_string(),
                    line: places[row].0,
                    column: places[row].1,
                    previous,
                    time,
                    trajectory,
                },
                SeriesProblem::Input {
                    row,
                    index,
                    first,
                    value,
                    trajectory,
                } => DataError::InputNotConstant {
                    file: file.to_string(),
                    line: places[row].0,
                    column: places[row].2[index],
                    field: input.0 + index,
                    name: header.and_then(|h| h.get(input.0 + index)).cloned(),
                    trajectory,
                    first,
                    value,
                },
            };
            assemble(
                parsed,
                values.1 - values.0,
                keyed.map_or(input.1 - input.0, |k| k.width),
                traj.is_some(),
                *keep,
                file,
            )
            .map_err(|e| match e {
                SeriesError::Data(d) => d,
                SeriesError::At(p) => located(p),
            })
        }
        _ => Err(DataError::WrongSource {
            expected: "a `csv` or `series` data source",
        }),
    }
}

/// The 1-based line of the file each sample of a `csv` block's [`parse`] comes from, in the
/// samples' order (after `shuffle` and `rows`), so that a check of the parsed values can point
/// at the row; `None` for another source or a file [`parse`] refuses.
pub(super) fn sample_lines(text: &str, source: &DataSource, file: &str) -> Option<Vec<usize>> {
    let DataSource::Csv {
        shuffle,
        rows: keep,
        ..
    } = source
    else {
        return None;
    };
    let Head {
        first,
        second,
        header,
        rest,
        ..
    } = head(text, file).ok()?;
    let mut lines = Vec::new();
    if header.is_none() {
        lines.push(first.line);
    }
    lines.extend(second.map(|r| r.line));
    lines.extend(rest.map(|(line, _)| line));
    let n = lines.len();
    let numbers = lines.into_iter().map(|l| l as f64).collect();
    let kept = keep_rows(
        Dataset::samples(n, 0, Vec::new(), Some(numbers)),
        *shuffle,
        *keep,
        file,
    )
    .ok()?;
    Some(kept.labels?.into_iter().map(|l| l as usize).collect())
}

/// A `csv` block's samples after `shuffle = SEED` permuted them and `rows = A..B` kept a range
/// of that order (see [`super::parse_csv`]).
pub(super) fn keep_rows(
    data: Dataset,
    shuffle: Option<u64>,
    keep: Option<(usize, usize)>,
    file: &str,
) -> Result<Dataset, DataError> {
    let n = data.n;
    let mut order: Vec<usize> = match shuffle {
        Some(seed) => Rng::new(seed).permutation(n),
        None => (0..n).collect(),
    };
    if let Some((a, b)) = keep {
        check_rows((a, b), n, file)?;
        order = order[a..b].to_vec();
    }
    Ok(data.select(&order))
}

/// A `series` block's observations, `rows = A..B` keeping a window of them (e.g. a short one
/// to fit first).
pub(super) fn window(
    times: Vec<f64>,
    dim: usize,
    observed: Vec<f64>,
    keep: Option<(usize, usize)>,
    file: &str,
) -> Result<Dataset, DataError> {
    match keep {
        Some((a, b)) => {
            check_rows((a, b), times.len(), file)?;
            Ok(Dataset::series(
                times[a..b].to_vec(),
                dim,
                observed[a * dim..b * dim].to_vec(),
            ))
        }
        None => Ok(Dataset::series(times, dim, observed)),
    }
}

/// One data row of a `series` with a trajectory column or input columns, parsed.
pub(super) struct SeriesRow {
    pub time: f64,
    pub values: Vec<f64>,
    pub inputs: Vec<f64>,
    /// The trajectory column's cell (its text; for an array, the number as written by `{}`).
    pub key: Option<String>,
}

/// What is wrong with a parsed row (0-based among all data rows), for the caller to locate.
pub(super) enum SeriesProblem {
    /// A time does not increase within its trajectory.
    Time {
        row: usize,
        previous: f64,
        time: f64,
        trajectory: Option<String>,
    },
    /// Input `index` (within the input columns) differs from the trajectory's first row.
    Input {
        row: usize,
        index: usize,
        first: f64,
        value: f64,
        trajectory: Option<String>,
    },
}

pub(super) enum SeriesError {
    Data(DataError),
    At(SeriesProblem),
}

/// A series' rows to a [`Dataset`] when it has a trajectory column or input columns.
///
/// With a trajectory column, `rows = A..B` keeps data rows `A..B` of the file first; the rows
/// are then grouped by the column's value, trajectories in order of first appearance, each
/// trajectory's rows in file order, its times increasing strictly. Without one the series is
/// one trajectory (`rows` keeps a window of it after the times were checked, as without
/// inputs). A trajectory's inputs are its first row's and must be the same on its other rows.
pub(super) fn assemble(
    rows: Vec<SeriesRow>,
    obs_dim: usize,
    input_dim: usize,
    has_traj: bool,
    keep: Option<(usize, usize)>,
    file: &str,
) -> Result<Dataset, SeriesError> {
    if rows.is_empty() {
        return Err(SeriesError::Data(DataError::NoRows {
            file: file.to_string(),
        }));
    }
    let (first, last) = match keep {
        Some((a, b)) if has_traj => {
            check_rows((a, b), rows.len(), file).map_err(SeriesError::Data)?;
            (a, b)
        }
        _ => (0, rows.len()),
    };
    // Trajectories in order of first appearance, each its rows' indices.
    let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    let mut index: std::collections::HashMap<Option<String>, usize> =
        std::collections::HashMap::new();
    for (r, row) in rows.iter().enumerate().take(last).skip(first) {
        let g = *index.entry(row.key.clone()).or_insert_with(|| {
            groups.push((row.key.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(r);
    }
    let mut times = Vec::with_capacity(last - first);
    let mut observed = Vec::with_capacity((last - first) * obs_dim);
    let mut inputs = Vec::with_capacity(groups.len() * input_dim);
    let mut ranges = Vec::with_capacity(groups.len());
    for (key, members) in &groups {
        let start = times.len();
        let head = &rows[members[0]];
        for &r in members {
            let row = &rows[r];
            if let Some(&previous) = times[start..].last() {
                if row.time <= previous {
                    return Err(SeriesError::At(SeriesProblem::Time {
                        row: r,
                        previous,
                        time: row.time,
                        trajectory: key.clone(),
                    }));
                }
            }
            for (i, (&value, &first)) in row.inputs.iter().zip(&head.inputs).enumerate() {
                if value != first {
                    return Err(SeriesError::At(SeriesProblem::Input {
                        row: r,
                        index: i,
                        first,
                        value,
                        trajectory: key.clone(),
                    }));
                }
            }
            times.push(row.time);
            observed.extend_from_slice(&row.values);
        }
        inputs.extend_from_slice(&head.inputs);
        ranges.push(start..times.len());
    }
    if has_traj {
        return Ok(Dataset::trajectories(
            times, obs_dim, observed, ranges, input_dim, inputs,
        ));
    }
    let mut data = window(times, obs_dim, observed, keep, file).map_err(SeriesError::Data)?;
    data.input_dim = input_dim;
    data.inputs = inputs;
    Ok(data)
}

/// `rows = A..B` must select at least one of the file's `n` rows.
fn check_rows((start, end): (usize, usize), n: usize, file: &str) -> Result<(), DataError> {
    if start >= end || end > n {
        return Err(DataError::RowsOutOfRange {
            file: file.to_string(),
            start,
            end,
            rows: n,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(line: &str) -> Vec<(String, usize)> {
        split_line(line, 1, "f.csv")
            .map(|r| {
                r.cells
                    .iter()
                    .map(|c| (c.text.to_string(), c.column))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn splits_cells_with_character_columns() {
        assert_eq!(
            cells("1, 2 ,3"),
            [("1".into(), 1), ("2".into(), 4), ("3".into(), 7)]
        );
        assert_eq!(cells("θ,x"), [("θ".into(), 1), ("x".into(), 3)]);
        assert_eq!(
            cells("a,,"),
            [("a".into(), 1), ("".into(), 3), ("".into(), 4)]
        );
        assert_eq!(
            cells(r#""a,b", "say ""hi""""#),
            [("a,b".into(), 1), (r#"say "hi""#.into(), 8)]
        );
    }

    #[test]
    fn quoting_errors_have_positions() {
        let err = split_line(r#"1,"abc"#, 4, "f.csv").err().unwrap();
        assert_eq!(err.position(), Some((4, 3)));
        let err = split_line(r#""a"b,1"#, 2, "f.csv").err().unwrap();
        assert!(
            matches!(err, DataError::TextAfterQuote { column: 4, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn blank_lines_bom_and_crlf() {
        let got: Vec<(usize, &str)> = lines("\u{feff}a\r\n\r\n  \nb\n").collect();
        assert_eq!(got, [(1, "a"), (4, "b")]);
    }
}
