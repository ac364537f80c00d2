//! The checks that tie a `csv` or `series` file to the model, made when `cli` has read the file
//! and before anything is solved: what a column range selects (a range with a name is only
//! known from the header) and whether a series' times lie in the schedule's span. Both report
//! at the model's data block, since that is what the user edits.

use super::{csv, Dataset};
use crate::diag::Diagnostic;
use crate::ir::{self, Column, DataSource};

/// The error when a `csv` block's input range or a `series` block's value range, with a column
/// name at either end, selects another number of columns than the model binds from it
/// ([`ir::ColumnBinding`]). Ranges of two indices were checked by `sema`. A file whose header
/// or columns do not resolve gives `None` here: [`super::parse_csv`] reports it.
pub fn check_columns(text: &str, block: &ir::DataBlock, file: &str) -> Option<Diagnostic> {
    let (range, role) = match &block.source {
        DataSource::Csv { input, .. } => (input, "input"),
        DataSource::Series {
            values,
            input,
            input_file,
            ..
        } => {
            if let (Some(input), Some(binding), None) = (input, &block.input_columns, input_file) {
                if let Some(d) = check_range(text, input, "input", binding, file) {
                    return Some(d);
                }
            }
            (values, "value")
        }
        _ => return None,
    };
    check_range(text, range, role, block.columns.as_ref()?, file)
}

/// [`check_columns`] for the `input` range of a series with an `input_file`, whose `text` this
/// is.
pub fn check_input_columns(text: &str, block: &ir::DataBlock, file: &str) -> Option<Diagnostic> {
    match (&block.source, &block.input_columns) {
        (
            DataSource::Series {
                input: Some(input), ..
            },
            Some(binding),
        ) => check_range(text, input, "input", binding, file),
        _ => None,
    }
}

/// [`check_columns`] for one range and what it binds.
fn check_range(
    text: &str,
    range: &(Column, Column),
    role: &'static str,
    binding: &ir::ColumnBinding,
    file: &str,
) -> Option<Diagnostic> {
    if matches!(range, (Column::Index(_), Column::Index(_))) {
        return None;
    }
    let csv::Selection {
        header,
        width,
        start,
        end,
    } = csv::selection(text, range, role, file).ok()?;
    let selected = end - start;
    let wanted = start + binding.elements;
    let fix = if binding.elements == 0 {
        Some(format!("declare them with `observed NAME[{selected}]`"))
    } else if wanted > width {
        Some(format!(
            "`{file}` has {} column{} from {} on",
            width - start,
            if width - start == 1 { "" } else { "s" },
            range.0
        ))
    } else if wanted == width {
        // No header names the end of a range that runs to the last column.
        Some(format!(
            "the range must end after the file's last column, which only an index names: write `{}..{width}`",
            range.0
        ))
    } else {
        // Propose the end by name when the header names it once, else by index.
        let end = header
            .as_ref()
            .and_then(|h| h.get(wanted))
            .filter(|name| !name.is_empty())
            .filter(|name| header.iter().flatten().filter(|h| h == name).count() == 1)
            .map_or(Column::Index(wanted), |name| Column::Name(name.clone()));
        Some(format!("write `{}..{end}`", range.0))
    };
    binding.mismatch(range, selected, fix)
}

/// The diagnostic when a series has observation times outside the schedule's span
/// `[t0, t1]` (either order: a backward span covers `[t1, t0]`), which the solve leaves out: an
/// error, or a warning when the span reads a const set with `--set`
/// ([`ir::Schedule::span_set`]), since then the user shortened it on purpose.
pub fn check_times(
    data: &Dataset,
    block: &ir::DataBlock,
    schedule: &ir::Schedule,
    file: &str,
) -> Option<Diagnostic> {
    let times = data.times.as_ref()?;
    let (t0, t1) = (schedule.t0, schedule.t1);
    let mut outside = times.iter().filter(|t| !schedule.contains(**t));
    let first = *outside.next()?;
    let count = 1 + outside.count();
    let of = format!("{count} of the {} observation times", times.len());
    if schedule.span_set {
        return Some(Diagnostic::warning(
            block.span,
            format!(
                "{of} in `{file}` lie outside the span [{t0}, {t1}] set with `--set` and are left out; the first is t = {first}"
            ),
        ));
    }
    let (lo, hi) = (t0.min(t1), t0.max(t1));
    if data.trajectories.is_some() {
        // Each trajectory's times increase, the file's need not: cover them all.
        let min = times.iter().copied().fold(lo, f64::min);
        let max = times.iter().copied().fold(hi, f64::max);
        let span = if t1 >= t0 {
            format!("[{min}, {max}]")
        } else {
            format!("[{max}, {min}]")
        };
        return Some(
            Diagnostic::error(
                block.span,
                format!(
                    "{of} in `{file}` lie outside the schedule's span [{t0}, {t1}]; the first is t = {first}"
                ),
            )
            .with_help(format!(
                "the span must cover every trajectory's observation times: `t = {span}`"
            )),
        );
    }
    // Times increase, so the rows inside the span are the leading ones when rows run past its
    // later end.
    let inside = times.iter().take_while(|t| **t <= hi).count();
    let help = if t1 > t0 && first < t0 {
        format!("the initial state is at t = {t0} and nothing is solved before it: start the span earlier or remove those rows")
    } else if t1 > t0 {
        let last = times.last().copied().unwrap_or(t1);
        format!(
            "end the span at the last observation, `t = [{t0}, {last}]`, or keep the rows inside it with `rows = 0..{inside}`"
        )
    } else if first < lo {
        format!(
            "the span runs backward and ends at t = {t1}: end it at the first observation, `t = [{t0}, {first}]`, or remove those rows"
        )
    } else {
        let last = times.last().copied().unwrap_or(t0);
        format!(
            "the span runs backward from the initial state at t = {t0} and nothing is solved after it: start it at the last observation, `t = [{last}, {t1}]`, or keep the rows inside it with `rows = 0..{inside}`"
        )
    };
    Some(
        Diagnostic::error(
            block.span,
            format!(
                "{of} in `{file}` lie outside the schedule's span [{t0}, {t1}]; the first is t = {first}"
            ),
        )
        .with_help(help),
    )
}

/// The error when a label that `cross_entropy` reads as a class index ([`ir::Label::classes`])
/// is bound to a value that is no class, an integer in `0..classes` (7 of 3 classes, −1, 2.5,
/// 1e300): `cross_entropy` would silently compare it with no class. At the data block, naming
/// the file, the row (its line when `text` is the CSV file the samples were parsed from) and
/// the value. `source` names the data as messages show it: "`data/points.csv`", "the `train`
/// data".
pub fn check_labels(
    data: &Dataset,
    block: &ir::DataBlock,
    labels: &[ir::Label],
    text: Option<&str>,
    source: &str,
) -> Option<Diagnostic> {
    // A data set's labels bind the model's first label.
    let label = labels.first()?;
    let classes = label.classes?;
    let values = data.labels.as_ref()?;
    let mut bad = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !ir::is_class(**v, classes));
    let (sample, &value) = bad.next()?;
    let others = bad.count();
    let line = text
        .and_then(|t| csv::sample_lines(t, &block.source, source))
        .and_then(|lines| lines.get(sample).copied());
    let place = match line {
        Some(line) => format!("{source} line {line}"),
        None => format!("sample {sample} of {source}"),
    };
    let more = match others {
        0 => String::new(),
        1 => " (and 1 more row)".to_string(),
        n => format!(" (and {n} more rows)"),
    };
    Some(
        Diagnostic::error(
            block.span,
            format!(
                "{place}: label `{}` = {value} is not a class of `cross_entropy`, which has {classes} classes{more}",
                label.name
            ),
        )
        .with_help(format!(
            "a class is an index {}, one per logit, counted from 0",
            ir::classes_text(classes)
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::{Severity, Span};
    use crate::ir::ColumnBinding;

    fn series(values: (Column, Column), elements: usize) -> ir::DataBlock {
        ir::DataBlock {
            name: "obs".into(),
            source: DataSource::Series {
                path: "f.csv".into(),
                t: Column::Index(0),
                values,
                rows: None,
                traj: None,
                input: None,
                input_file: None,
            },
            input_columns: None,
            columns: Some(ColumnBinding {
                span: Span::new(0, 1),
                elements,
                target: "`y` has N elements".into(),
            }),
            span: Span::new(0, 1),
        }
    }

    fn help(text: &str, values: (Column, Column), elements: usize) -> Option<String> {
        check_columns(text, &series(values, elements), "f.csv").map(|d| d.help.join("; "))
    }

    fn name(n: &str) -> Column {
        Column::Name(n.into())
    }

    #[test]
    fn a_named_range_is_checked_against_the_header() {
        let text = "t,a,b,c\n0,1,2,3\n";
        assert_eq!(help(text, (name("a"), name("c")), 2), None);
        assert_eq!(
            help(text, (name("a"), name("b")), 2).as_deref(),
            Some("write `\"a\"..\"c\"`")
        );
        assert_eq!(
            help(text, (name("a"), name("c")), 3).as_deref(),
            Some("the range must end after the file's last column, which only an index names: write `\"a\"..4`")
        );
        assert_eq!(
            help(text, (name("b"), name("c")), 5).as_deref(),
            Some("`f.csv` has 2 columns from \"b\" on")
        );
        // A header name given twice cannot be a range's end; the index can.
        assert_eq!(
            help("t,a,b,b,c\n0,1,2,3,4\n", (name("a"), Column::Index(2)), 2).as_deref(),
            Some("write `\"a\"..3`")
        );
        // Index ranges are sema's; an unknown name is the parser's to report.
        assert_eq!(help(text, (Column::Index(1), Column::Index(2)), 2), None);
        assert_eq!(help(text, (name("a"), name("nope")), 2), None);
    }

    #[test]
    fn times_outside_the_span_are_an_error_or_with_set_a_warning() {
        let block = series((Column::Index(1), Column::Index(2)), 1);
        let data = Dataset::series(vec![-1.0, 0.0, 1.0, 2.0, 3.0], 1, vec![0.0; 5]);
        let file = crate::diag::SourceFile::new(
            "m.node",
            "state x = 1\ndx/dt = -x\nschedule rk4(t = [0, 2], steps = 4)\n",
        );
        let (model, _) = crate::check_source(&file, &Default::default(), "m");
        let mut schedule = model.schedule.expect("the model has a schedule");
        let d = check_times(&data, &block, &schedule, "f.csv").expect("two times are outside");
        assert_eq!(d.severity, Severity::Error);
        assert!(d.message.starts_with("2 of the 5 observation times in `f.csv` lie outside the schedule's span [0, 2]; the first is t = -1"), "{}", d.message);
        schedule.span_set = true;
        let d = check_times(&data, &block, &schedule, "f.csv").expect("still reported");
        assert_eq!(d.severity, Severity::Warning);
        schedule.t0 = -1.0;
        schedule.t1 = 3.0;
        assert_eq!(check_times(&data, &block, &schedule, "f.csv"), None);
        // A backward span covers the same times from its other end.
        schedule.t0 = 3.0;
        schedule.t1 = -1.0;
        assert_eq!(check_times(&data, &block, &schedule, "f.csv"), None);
    }

    #[test]
    fn trajectories_outside_the_span_ask_for_a_span_that_covers_them_all() {
        let block = series((Column::Index(1), Column::Index(2)), 1);
        // Two trajectories: 0.5..3 and 0.2..1.
        let data = Dataset::trajectories(
            vec![0.5, 3.0, 0.2, 1.0],
            1,
            vec![0.0; 4],
            vec![0..2, 2..4],
            0,
            Vec::new(),
        );
        let file = crate::diag::SourceFile::new(
            "m.node",
            "state x = 1\ndx/dt = -x\nschedule rk4(t = [0, 2], steps = 4)\n",
        );
        let (model, _) = crate::check_source(&file, &Default::default(), "m");
        let schedule = model.schedule.expect("the model has a schedule");
        let d = check_times(&data, &block, &schedule, "f.csv").expect("t = 3 is outside");
        assert!(
            d.message.starts_with("1 of the 4 observation times"),
            "{}",
            d.message
        );
        assert_eq!(
            d.help,
            ["the span must cover every trajectory's observation times: `t = [0, 3]`"]
        );
    }

    #[test]
    fn times_outside_a_backward_span_are_an_error_with_its_own_help() {
        let block = series((Column::Index(1), Column::Index(2)), 1);
        let data = Dataset::series(vec![-1.0, 0.0, 1.0, 2.0, 3.0], 1, vec![0.0; 5]);
        let file = crate::diag::SourceFile::new(
            "m.node",
            "state x = 1\ndx/dt = -x\nschedule rk4(t = [2, 0], steps = 4)\n",
        );
        let (model, diags) = crate::check_source(&file, &Default::default(), "m");
        assert!(!diags.has_errors(), "a backward span is accepted");
        let mut schedule = model.schedule.expect("the model has a schedule");
        let d = check_times(&data, &block, &schedule, "f.csv").expect("two times are outside");
        assert_eq!(d.severity, Severity::Error);
        assert!(
            d.message.starts_with("2 of the 5 observation times in `f.csv` lie outside the schedule's span [2, 0]; the first is t = -1"),
            "{}",
            d.message
        );
        assert!(d.help[0].contains("`t = [2, -1]`"), "{:?}", d.help);
        // Only times after the initial state: start the span later or keep the leading rows.
        schedule.t1 = -1.0;
        let d = check_times(&data, &block, &schedule, "f.csv").expect("t = 3 is outside");
        assert!(
            d.help[0].contains("`t = [3, -1]`") && d.help[0].contains("rows = 0..4"),
            "{:?}",
            d.help
        );
    }
}
