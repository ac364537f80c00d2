//! `nodec run FILE --ensemble SPEC`: many parameter sets solved at once, one row per member.
//!
//! A member is one assignment of values to scalar params; the model is compiled once and each
//! member solves the first data block (or the model alone) with its values. The members come
//! from a grid (`k=0.1:1.0:50,rho=20:30:11`: `count` evenly spaced values from `start` to
//! `stop`, both included; the product of the axes, the last axis fastest), a CSV file whose
//! header names the params (one member per row), or seeded draws (`'k~uniform(0.1,1)'` with
//! `--members N`: member `i` draws from its own stream `Rng::new(seed).fork(STREAM).fork(i)`,
//! so a member's values depend on the seed and `i` only). `name=value` fixes a param in any
//! form.
//!
//! Where the model's kernels are scalar f64 code on one sample, a chunk's members are the
//! samples of one batch, side by side in a block's lanes ([`Lanes`]), each with the bits of its
//! own solve; elsewhere they are solved one at a time. Members are solved in parallel in
//! chunks and their rows folded in member order
//! (`solve::blocks::in_order`), streamed to `--out` as they come: memory holds the chunks in
//! flight, not the trajectories (each member saves only its final time), plus the columns the
//! summary needs for its quantiles (8 bytes per member and column). Rows, summary and their
//! bytes do not depend on the number of threads.

use std::fmt::Write as _;
use std::path::Path;

use super::report::csv_field;
use super::run::{element_labels, solve_error, Format, Loaded};
use super::{AtomicFile, Output};
use crate::compile::{Params, Program};
use crate::data::Dataset;
use crate::diag::suggest;
use crate::dist::{self, Ranks, Reader, Writer};
use crate::ir::{self, CostKind};
use crate::rng::Rng;
use crate::sema::Overrides;

/// Members solved per chunk (one task of the parallel loop).
const CHUNK: usize = 64;

/// The most members one ensemble may have.
pub const MAX_MEMBERS: usize = 1 << 32;

/// The stream of [`Rng::fork`] that ensemble draws come from, apart from parameter
/// initialisation and data.
const STREAM: u64 = 0x656e_7365_6d62_6c65; // "ensemble"

/// How one param's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dist {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Normal(f64, f64),
}

impl Dist {
    fn draw(self, rng: &mut Rng) -> f64 {
        match self {
            Dist::Uniform(lo, hi) => rng.uniform(lo, hi),
            Dist::LogUniform(lo, hi) => rng.uniform(lo.ln(), hi.ln()).exp(),
            Dist::Normal(mean, std) => rng.normal(mean, std),
        }
    }
}

/// Where the members' values come from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// One axis of values per param; members are their product, the last axis fastest.
    Grid(Vec<Vec<f64>>),
    /// One row of values per member.
    Rows(Vec<Vec<f64>>),
    /// Per param a fixed value or a distribution; `members` draws.
    Draws {
        dists: Vec<Result<f64, Dist>>,
        members: usize,
        seed: u64,
    },
}

/// Why an `--ensemble` spec is refused: the spec itself (a usage error) or the members file it
/// names (located in that file).
#[derive(Clone, Debug, PartialEq)]
pub enum SpecError {
    /// The spec's text.
    Usage(String),
    /// The members file, its message located as `FILE:LINE:COL: error: ...`.
    File(String),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Usage(m) | SpecError::File(m) => f.write_str(m),
        }
    }
}

/// The members of an ensemble: the params they set and their values.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The params set, in the order of the spec (the rows' first columns).
    pub names: Vec<String>,
    source: Source,
}

impl Plan {
    /// Parses `--ensemble SPEC` (see the module docs). A spec that names a `.csv` file is read
    /// relative to the working directory. `members` is `--members`, `seed` is `--seed`.
    pub fn parse(spec: &str, members: Option<usize>, seed: u64) -> Result<Plan, SpecError> {
        let spec = spec.trim();
        if super::has_extension(spec, "csv") && !spec.contains(['=', '~']) {
            if members.is_some() {
                return Err(SpecError::Usage(
                    "--members is for drawn ensembles; a CSV file has one member per row".into(),
                ));
            }
            let text = std::fs::read_to_string(spec).map_err(|e| {
                SpecError::File(format!("{spec}: error: cannot read the ensemble file: {e}"))
            })?;
            return Self::from_csv(&text, spec).map_err(SpecError::File);
        }
        Self::parse_items(spec, members, seed).map_err(SpecError::Usage)
    }

    /// A spec of `NAME=…` and `NAME~…` items.
    fn parse_items(spec: &str, members: Option<usize>, seed: u64) -> Result<Plan, String> {
        let mut names = Vec::new();
        let mut grid = Vec::new();
        let mut dists = Vec::new();
        let mut any_grid = false;
        let mut any_draw = false;
        for item in split_top_level(spec) {
            let item = item.trim();
            let (name, value, drawn) = match (item.find('='), item.find('~')) {
                (Some(i), j) if j.is_none_or(|j| i < j) => (&item[..i], &item[i + 1..], false),
                (_, Some(j)) => (&item[..j], &item[j + 1..], true),
                _ => {
                    return Err(format!(
                        "`{item}` is not an ensemble item: write NAME=START:STOP:COUNT, NAME=VALUE or NAME~uniform(LO,HI)"
                    ))
                }
            };
            let name = name.trim();
            if !is_identifier(name) {
                return Err(format!("`{name}` in `{item}` is not a param name"));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("param `{name}` is given twice in the ensemble"));
            }
            names.push(name.to_string());
            let value = value.trim();
            if drawn {
                any_draw = true;
                let dist = parse_dist(value).map_err(|e| format!("`{item}`: {e}"))?;
                grid.push(Vec::new());
                dists.push(Err(dist));
            } else if value.contains(':') {
                any_grid = true;
                let axis = parse_axis(value).map_err(|e| format!("`{item}`: {e}"))?;
                grid.push(axis);
                dists.push(Ok(f64::NAN));
            } else {
                let v = number(value).map_err(|e| format!("`{item}`: {e}"))?;
                grid.push(vec![v]);
                dists.push(Ok(v));
            }
        }
        if names.is_empty() {
            return Err("the ensemble names no param: write e.g. `--ensemble k=0.1:1:10`".into());
        }
        if any_grid && any_draw {
            return Err("an ensemble is a grid or draws, not both: give the grid's values as draws' fixed values (NAME=VALUE), or run two ensembles".into());
        }
        let source = if any_draw {
            let members =
                members.ok_or("drawn values need the number of members: add `--members N`")?;
            Source::Draws {
                dists,
                members,
                seed,
            }
        } else {
            if members.is_some() {
                return Err("--members is for drawn ensembles (NAME~uniform(LO,HI)); a grid has the product of its axes' counts".into());
            }
            Source::Grid(grid)
        };
        let plan = Plan { names, source };
        match plan.checked_len() {
            Some(0) => Err("the ensemble has no members".into()),
            Some(n) if n <= MAX_MEMBERS => Ok(plan),
            _ => Err(format!(
                "the ensemble has more than {MAX_MEMBERS} members; split it into several runs"
            )),
        }
    }

    /// A CSV file of members: a header of param names, then one row of numbers per member.
    fn from_csv(text: &str, file: &str) -> Result<Plan, String> {
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| format!("{file}: error: the ensemble file is empty"))?;
        let names: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
        for (i, name) in names.iter().enumerate() {
            if !is_identifier(name) {
                return Err(format!(
                    "{file}:1: error: header cell {} `{name}` is not a param name; the first row names the params",
                    i + 1
                ));
            }
            if names[..i].contains(name) {
                return Err(format!("{file}:1: error: param `{name}` is named twice"));
            }
        }
        let mut rows = Vec::new();
        for (line, l) in lines {
            let mut row = Vec::with_capacity(names.len());
            let mut column = 1;
            for cell in l.split(',') {
                let v = number(cell.trim())
                    .map_err(|e| format!("{file}:{line}:{column}: error: {e}"))?;
                row.push(v);
                column += cell.chars().count() + 1;
            }
            if row.len() != names.len() {
                return Err(format!(
                    "{file}:{line}: error: this row has {} cells but the header names {} params",
                    row.len(),
                    names.len()
                ));
            }
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(format!("{file}: error: the ensemble file has no members"));
        }
        Ok(Plan {
            names,
            source: Source::Rows(rows),
        })
    }

    fn checked_len(&self) -> Option<usize> {
        match &self.source {
            Source::Grid(axes) => axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.len())),
            Source::Rows(rows) => Some(rows.len()),
            Source::Draws { members, .. } => Some(*members),
        }
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(0)
    }

    /// Whether the plan has no members (never, after [`Plan::parse`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Member `i`'s values, in the order of [`Plan::names`].
    pub fn member(&self, i: usize) -> Vec<f64> {
        match &self.source {
            Source::Grid(axes) => {
                let mut rest = i;
                let mut values = vec![0.0; axes.len()];
                for (v, axis) in values.iter_mut().zip(axes).rev() {
                    *v = axis[rest % axis.len()];
                    rest /= axis.len();
                }
                values
            }
            Source::Rows(rows) => rows[i].clone(),
            Source::Draws { dists, seed, .. } => {
                let mut rng = Rng::new(*seed).fork(STREAM).fork(i as u64);
                dists
                    .iter()
                    .map(|d| match d {
                        Ok(v) => *v,
                        Err(dist) => dist.draw(&mut rng),
                    })
                    .collect()
            }
        }
    }
}

/// Splits at commas outside parentheses (`k~uniform(0.1,1),rho=20:30:11`).
fn split_top_level(spec: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in spec.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&spec[start..]);
    items.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("`{text}` is not a finite number")),
    }
}

/// `START:STOP:COUNT`: `COUNT` values from `START` to `STOP`, both included (numpy's
/// `linspace`; the last is `STOP` exactly).
fn parse_axis(text: &str) -> Result<Vec<f64>, String> {
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    let [start, stop, count] = parts[..] else {
        return Err("a grid axis is START:STOP:COUNT, e.g. 0.1:1.0:50".into());
    };
    let (start, stop) = (number(start)?, number(stop)?);
    let count: usize = count
        .parse()
        .ok()
        .filter(|&c| c >= 1)
        .ok_or_else(|| format!("the count `{count}` is not a whole number ≥ 1"))?;
    if count > MAX_MEMBERS {
        return Err(format!("{count} values are more than {MAX_MEMBERS}"));
    }
    if count == 1 {
        return if start == stop {
            Ok(vec![start])
        } else {
            Err("one value from START to STOP: make them equal, or write NAME=VALUE".into())
        };
    }
    let step = (stop - start) / (count - 1) as f64;
    Ok((0..count)
        .map(|i| {
            if i + 1 == count {
                stop
            } else {
                start + i as f64 * step
            }
        })
        .collect())
}

/// `uniform(LO,HI)`, `loguniform(LO,HI)` (`0 < LO`) or `normal(MEAN,STD)`.
fn parse_dist(text: &str) -> Result<Dist, String> {
    let usage = "a distribution is uniform(LO,HI), loguniform(LO,HI) or normal(MEAN,STD)";
    let open = text.find('(').ok_or(usage)?;
    let args = text[open + 1..].strip_suffix(')').ok_or(usage)?;
    let args: Vec<f64> = args
        .split(',')
        .map(|a| number(a.trim()))
        .collect::<Result<_, _>>()?;
    let [a, b] = args[..] else {
        return Err(usage.into());
    };
    match text[..open].trim() {
        "uniform" if a < b => Ok(Dist::Uniform(a, b)),
        "loguniform" if 0.0 < a && a < b => Ok(Dist::LogUniform(a, b)),
        "normal" if b >= 0.0 => Ok(Dist::Normal(a, b)),
        "uniform" => Err(format!("uniform({a},{b}) needs LO < HI")),
        "loguniform" => Err(format!("loguniform({a},{b}) needs 0 < LO < HI")),
        "normal" => Err(format!("normal({a},{b}) needs STD ≥ 0")),
        other => Err(format!("unknown distribution `{other}`: {usage}")),
    }
}

/// What one member's row holds, after its param values.
struct Columns {
    names: Vec<String>,
    /// Final states and outputs are reported when the data block has one sample.
    per_sample: bool,
}

fn columns(loaded: &Loaded, plan: &Plan, n_samples: usize) -> Columns {
    let model = &loaded.model;
    let mut names = plan.names.clone();
    let per_sample = n_samples == 1;
    if per_sample {
        for s in &model.states {
            names.extend(element_labels(&s.name, s.shape));
        }
        for o in &model.outputs {
            names.extend(element_labels(&o.name, o.shape));
        }
    }
    let kinds = loaded.program.cost_kinds();
    if !kinds.is_empty() {
        names.push("loss".into());
    }
    for kind in kinds {
        names.push(kind.name().to_string());
    }
    for m in &model.metrics {
        names.push(m.name.clone());
    }
    Columns { names, per_sample }
}

/// Where rows go: nowhere (summary only), or a file in one format, written atomically.
enum Sink {
    None,
    Csv(AtomicFile),
    Json { file: AtomicFile, first: bool },
    Npy(AtomicFile),
}

impl Sink {
    /// What precedes the rows: the CSV header, the JSON object's opening, the `.npy` header.
    fn header(&mut self, model: &str, names: &[String], members: usize) -> std::io::Result<()> {
        match self {
            Sink::None => Ok(()),
            Sink::Csv(f) => {
                let cells: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
                f.write_all((cells.join(",") + "\n").as_bytes())
            }
            Sink::Json { file, .. } => file.write_all(
                format!(
                    "{{\n\"model\": {},\n\"members\": {members},\n\"columns\": {},\n\"rows\": [",
                    serde_json::to_string(model).unwrap_or_default(),
                    serde_json::to_string(names).unwrap_or_default()
                )
                .as_bytes(),
            ),
            Sink::Npy(f) => f.write_all(&crate::npy::npy_header(&[members, names.len()])),
        }
    }

    fn row(&mut self, row: &[f64]) -> std::io::Result<()> {
        match self {
            Sink::None => Ok(()),
            Sink::Csv(f) => {
                let mut line = String::new();
                for (i, v) in row.iter().enumerate() {
                    let _ = write!(line, "{}{v}", if i == 0 { "" } else { "," });
                }
                line.push('\n');
                f.write_all(line.as_bytes())
            }
            Sink::Json { file, first } => {
                let mut line = String::from(if *first { "\n  [" } else { ",\n  [" });
                *first = false;
                for (i, v) in row.iter().enumerate() {
                    let _ = write!(
                        line,
                        "{}{}",
                        if i == 0 { "" } else { ", " },
                        json_number(*v)
                    );
                }
                line.push(']');
                file.write_all(line.as_bytes())
            }
            Sink::Npy(f) => {
                let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
                f.write_all(&bytes)
            }
        }
    }
}

fn json_number(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or("null".into(), |n| n.to_string())
}

/// Summary statistics of one column over the members.
struct Stats {
    mean: f64,
    std: f64,
    min: f64,
    q05: f64,
    q50: f64,
    q95: f64,
    max: f64,
}

/// Mean, standard deviation (divided by n, numpy's default) and quantiles by linear
/// interpolation between order statistics (numpy's default `linear` method).
fn stats(values: &mut [f64]) -> Stats {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    values.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let at = q * (values.len() - 1) as f64;
        let (lo, frac) = (at.floor() as usize, at - at.floor());
        let hi = (lo + 1).min(values.len() - 1);
        values[lo] + frac * (values[hi] - values[lo])
    };
    Stats {
        mean,
        std,
        min: values[0],
        q05: quantile(0.05),
        q50: quantile(0.5),
        q95: quantile(0.95),
        max: values[values.len() - 1],
    }
}

/// Runs the ensemble of `plan` on the loaded model: rows to `out_path` (if any) in `format`,
/// the summary to stdout (a table, or JSON with `--format json` and no `--out`).
pub fn run(
    loaded: &Loaded,
    overrides: &Overrides,
    plan: &Plan,
    format: Format,
    out_path: Option<&str>,
    ranks: &dyn Ranks,
    out: &mut Output,
) -> u8 {
    let model = &loaded.model;
    let layout = loaded.program.layout();
    // Every name a scalar param of the model.
    let mut slots = Vec::with_capacity(plan.names.len());
    for name in &plan.names {
        let Some(entry) = layout.entries.iter().find(|e| &e.name == name) else {
            let hint = suggest(name, layout.entries.iter().map(|e| e.name.as_str()))
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            out.stderr.push_str(&format!(
                "error: the ensemble sets `{name}`, which is not a param of `{}`{hint}\n",
                loaded.file.name
            ));
            return super::exit::USAGE;
        };
        if entry.len() != 1 {
            out.stderr.push_str(&format!(
                "error: the ensemble sets `{name}`, a param of {} elements; an ensemble varies scalar params (declare a scalar param and use it in `{name}`'s place)\n",
                entry.len()
            ));
            return super::exit::USAGE;
        }
        slots.push((entry.offset, entry.copies));
    }
    let (block, dataset) = &loaded.data[0];
    let lanes = Lanes::new(loaded, overrides, plan, &slots, dataset);
    let columns = columns(loaded, plan, dataset.n);
    let width = columns.names.len();
    let n = plan.len();
    // Only rank 0 writes (see `run_shares`).
    let mut sink = match (out_path.filter(|_| ranks.is_root()), format) {
        (None, _) => Sink::None,
        (Some(path), f) => {
            let file = match AtomicFile::create(Path::new(path)) {
                Ok(f) => f,
                Err(e) => {
                    out.stderr
                        .push_str(&format!("{path}: error: cannot write the ensemble: {e}\n"));
                    return super::exit::MODEL;
                }
            };
            match f {
                Format::Csv | Format::Table => Sink::Csv(file),
                Format::Json => Sink::Json { file, first: true },
                Format::Npy => Sink::Npy(file),
                Format::Npz => {
                    out.stderr.push_str(&format!(
                        "{path}: error: an ensemble streams its rows, which an .npz archive cannot hold; write .npy, .csv or .json\n"
                    ));
                    return super::exit::USAGE;
                }
            }
        }
    };
    let header = if ranks.is_root() {
        sink.header(&model.name, &columns.names, n)
    } else {
        Ok(())
    };
    if let Err(e) = header {
        out.stderr
            .push_str(&format!("error: cannot write the ensemble: {e}\n"));
        return super::exit::MODEL;
    }

    let t1 = model.schedule.as_ref().map(|s| vec![s.t1]);
    let finite = |i: usize, values: &[f64], row: &[f64]| -> Result<(), (usize, String, u8)> {
        let Some(k) = row.iter().position(|v| !v.is_finite()) else {
            return Ok(());
        };
        let message = format!(
            "error: member {i} ({}) gives a non-finite `{}`; the solution blows up for these values\n",
            describe(plan, values),
            columns.names[k]
        );
        Err((i, message, super::exit::SOLVER))
    };
    let one_by_one = |members: std::ops::Range<usize>| -> Result<Vec<f64>, (usize, String, u8)> {
        let mut rows = Vec::with_capacity(members.len() * width);
        let mut params = loaded.params.clone();
        for i in members {
            let values = plan.member(i);
            set_member_values(&mut params, &slots, &values);
            let bound = loaded.bind(dataset).with_params(&params);
            let sim = bound
                .simulate(t1.clone())
                .map_err(|e| (i, solve_error(loaded, &e, block), super::exit::solve(&e)))?;
            let per = columns.per_sample.then(|| bound.per_sample(&sim.solution));
            let sample = per.as_ref().map(|per| {
                let state = &sim.solution.final_state(0)[..loaded.program.dim()];
                (state, &per.outputs[..])
            });
            let costs = sim.costs.iter().map(|(_, v)| *v);
            push_row(
                &mut rows,
                &values,
                sample,
                sim.loss,
                costs,
                sim.metrics.iter().copied(),
            );
            finite(i, &values, &rows[rows.len() - width..])?;
        }
        Ok(rows)
    };
    let work = |members: std::ops::Range<usize>| -> Result<Vec<f64>, (usize, String, u8)> {
        // A chunk whose batch fails is solved again member by member, which names the member
        // and says why as a lone solve would.
        match lanes.as_ref().and_then(|lanes| {
            lanes.rows(loaded, plan, &slots, dataset, members.clone(), t1.clone())
        }) {
            Some(rows) => {
                for (i, row) in members.zip(rows.chunks(width)) {
                    finite(i, &row[..plan.names.len()], row)?;
                }
                Ok(rows)
            }
            None => one_by_one(members),
        }
    };
    let mut kept: Vec<Vec<f64>> = vec![Vec::with_capacity(n.min(1 << 20)); width];
    let mut failure: Option<(String, u8)> = None;
    let mut fold = |result: Result<Vec<f64>, (usize, String, u8)>| match result {
        Ok(rows) => {
            for row in rows.chunks(width) {
                if let Err(e) = sink.row(row) {
                    failure = Some((
                        format!("error: cannot write the ensemble: {e}\n"),
                        super::exit::MODEL,
                    ));
                    return false;
                }
                for (column, v) in kept.iter_mut().zip(row) {
                    column.push(*v);
                }
            }
            true
        }
        Err((i, message, code)) => {
            let values = plan.member(i);
            failure = Some((
                format!(
                    "{message}note: the failing member is {i} of {n}: {}\n",
                    describe(plan, &values)
                ),
                code,
            ));
            false
        }
    };
    if ranks.size() == 1 {
        crate::solve::blocks::in_order(n, CHUNK, work, |_members, result| fold(result));
    } else if !run_shares(n, ranks, work, fold) {
        // Rank 0 reports and writes; the others only solved their share.
        return 0;
    }
    if let Some((message, code)) = failure {
        out.stderr.push_str(&message);
        return code;
    }
    let summary: Vec<(String, Stats)> = columns
        .names
        .iter()
        .cloned()
        .zip(kept.iter_mut().map(|c| stats(c)))
        .collect();
    let closing = match &mut sink {
        Sink::Json { file, .. } => {
            let text = format!("\n],\n\"summary\": {}\n}}\n", summary_json(&summary));
            file.write_all(text.as_bytes())
        }
        _ => Ok(()),
    };
    let committed = closing.and_then(|()| match sink {
        Sink::None => Ok(()),
        Sink::Csv(f) | Sink::Json { file: f, .. } | Sink::Npy(f) => f.commit(),
    });
    if let Err(e) = committed {
        out.stderr
            .push_str(&format!("error: cannot write the ensemble: {e}\n"));
        return super::exit::MODEL;
    }
    if out_path.is_none() && format == Format::Json {
        out.stdout.push_str(&format!(
            "{{\"model\": {}, \"members\": {n}, \"summary\": {}}}\n",
            serde_json::to_string(&model.name).unwrap_or_default(),
            summary_json(&summary)
        ));
    } else {
        out.stdout.push_str(&summary_table(&summary, n));
    }
    0
}

/// Appends a member's row in the order of its columns: its values, its final states and outputs
/// (`sample`, when the data block has one sample), the loss and each cost (when the model has
/// costs), its metrics.
fn push_row(
    rows: &mut Vec<f64>,
    values: &[f64],
    sample: Option<(&[f64], &[f64])>,
    loss: f64,
    costs: impl ExactSizeIterator<Item = f64>,
    metrics: impl Iterator<Item = f64>,
) {
    rows.extend_from_slice(values);
    if let Some((state, outputs)) = sample {
        rows.extend_from_slice(state);
        rows.extend_from_slice(outputs);
    }
    if costs.len() > 0 {
        rows.push(loss);
    }
    rows.extend(costs);
    rows.extend(metrics);
}

/// Writes a member's values into its params (every copy of each).
fn set_member_values(params: &mut Params, slots: &[(usize, usize)], values: &[f64]) {
    let flat = params.values_mut();
    for (&(offset, copies), v) in slots.iter().zip(values) {
        flat[offset..offset + copies].fill(*v);
    }
}

/// `Bound::summarize`'s mean of one sample's value: the sum from `0.0`, divided by 1. It is the
/// value itself but for the sign of a zero, which a member's row keeps as its own solve has it.
fn mean_of_one(value: f64) -> f64 {
    (0.0 + value) / 1.0
}

/// The members of a chunk solved side by side, one member per sample of one batch, so that a
/// block's lanes hold members: the model compiled again with the varied params read per
/// sample ([`crate::ir::Model::params_as_inputs`]), their values appended to the one sample's
/// inputs. A member's row has the bits its own solve gives: no solver lets a sample's
/// solution depend on the samples that share its block, and its costs and metrics are
/// reduced here as [`crate::simulate::Bound::summarize`] reduces a lone sample's. Taken when
/// the kernels are scalar code in f64 without GEMMs ([`Program::sums_in_order`]), the data
/// block has one sample, not a series (which is observed, not sampled), and the varied params
/// have one copy.
struct Lanes {
    model: ir::Model,
    program: Program,
}

impl Lanes {
    fn new(
        loaded: &Loaded,
        overrides: &Overrides,
        plan: &Plan,
        slots: &[(usize, usize)],
        dataset: &Dataset,
    ) -> Option<Lanes> {
        let model = &loaded.model;
        let eligible = std::env::var("NODEC_ENSEMBLE_LANES").as_deref() != Ok("0")
            // In f32 a product of params is rounded where a lone solve computes it (once, in
            // f64, or in the kernel): lanes would change the last bits.
            && loaded.program.precision() == ir::Precision::F64
            // A matrix product of params run as a GEMM (`a * K` times the state) becomes lane
            // loops when `a` is per sample, which sum in another order: other bits. GEMMs
            // keep the lanes busy anyway.
            && loaded.program.sums_in_order()
            && dataset.n == 1
            && dataset.times.is_none()
            && model.schedule.is_some()
            && slots.iter().all(|&(_, copies)| copies == 1)
            && !loaded.program.cost_kinds().contains(&CostKind::Observed);
        if !eligible {
            return None;
        }
        let params: Vec<u32> = plan
            .names
            .iter()
            .map(|name| {
                let p = model.params.iter().position(|p| &p.name == name)?;
                u32::try_from(p).ok()
            })
            .collect::<Option<_>>()?;
        let (mut lanes, diags) = crate::check_source(&loaded.file, overrides, &model.name);
        if diags.has_errors() {
            return None;
        }
        lanes.params_as_inputs(&params);
        let lanes = crate::prepare_to_run(lanes);
        let program = Program::compile(&lanes);
        let same = program.sums_in_order()
            && program.dim() == loaded.program.dim()
            && program.layout().total == loaded.program.layout().total
            && program.cost_kinds() == loaded.program.cost_kinds();
        same.then_some(Lanes {
            model: lanes,
            program,
        })
    }

    /// The rows of `members`, or `None` if their batch fails.
    fn rows(
        &self,
        loaded: &Loaded,
        plan: &Plan,
        slots: &[(usize, usize)],
        dataset: &Dataset,
        members: std::ops::Range<usize>,
        save: Option<Vec<f64>>,
    ) -> Option<Vec<f64>> {
        let n = members.len();
        let values: Vec<Vec<f64>> = members.map(|i| plan.member(i)).collect();
        let input_dim = dataset.input_dim + plan.names.len();
        let mut inputs = Vec::with_capacity(n * input_dim);
        for v in &values {
            inputs.extend_from_slice(&dataset.inputs);
            inputs.extend_from_slice(v);
        }
        let labels = dataset.labels.as_ref().map(|l| vec![l[0]; n]);
        let batch = Dataset::samples(n, input_dim, inputs, labels);
        let bound = crate::simulate::Bound::new(&self.model, &self.program, &loaded.params, &batch);
        let setup = bound.setup(save);
        let solution =
            crate::solve::solve_batch(&bound.system(), &setup.options, &setup.y0, setup.n).ok()?;
        let per = bound.per_sample(&solution);
        let dim = self.program.dim();
        let outputs_len = self.program.outputs_len();
        let kinds = self.program.cost_kinds();
        let mut params = loaded.params.clone();
        let mut ws = loaded.program.workspace(1);
        let mut rows = Vec::new();
        for (s, v) in values.iter().enumerate() {
            let mut sample_terms = per.costs.iter();
            let costs: Vec<f64> = kinds
                .iter()
                .map(|kind| match kind {
                    CostKind::Penalty => {
                        set_member_values(&mut params, slots, v);
                        loaded.program.penalty(&params, None, &mut ws)
                    }
                    _ => {
                        let (_, terms) = sample_terms.next().expect("a term per sample cost");
                        mean_of_one(terms[s])
                    }
                })
                .collect();
            let loss = costs.iter().fold(0.0, |loss, v| loss + v);
            let sample = (
                &solution.final_state(s)[..dim],
                &per.outputs[s * outputs_len..(s + 1) * outputs_len],
            );
            let metrics = per.metrics.iter().map(|m| mean_of_one(m[s]));
            push_row(&mut rows, v, Some(sample), loss, costs.into_iter(), metrics);
        }
        Some(rows)
    }
}

/// The ensemble across MPI ranks: each rank solves its contiguous share of the members (chunks
/// in parallel, in member order) and sends the rows, or the failure that stopped it, to rank
/// 0, which hands them to `fold` in member order as one process would: the same rows, the
/// same first failure, the same summary. Returns whether this is rank 0.
fn run_shares(
    n: usize,
    ranks: &dyn Ranks,
    work: impl Fn(std::ops::Range<usize>) -> Result<Vec<f64>, (usize, String, u8)> + Sync,
    mut fold: impl FnMut(Result<Vec<f64>, (usize, String, u8)>) -> bool + Send,
) -> bool {
    let mine = dist::share(n, ranks.rank(), ranks.size());
    let mut wire = Writer::default();
    crate::solve::blocks::in_order(
        mine.len(),
        CHUNK,
        |local| work(mine.start + local.start..mine.start + local.end),
        |_, result| match result {
            Ok(rows) => {
                wire.u64(0);
                wire.f64s(&rows);
                true
            }
            Err((member, message, code)) => {
                wire.u64(1);
                wire.u64(member as u64);
                wire.text(&message);
                wire.u64(u64::from(code));
                false
            }
        },
    );
    let shares = ranks.gather(&wire.0);
    if !ranks.is_root() {
        return false;
    }
    for bytes in &shares {
        let mut r = Reader(bytes);
        while !r.is_empty() {
            let result = match r.u64() {
                0 => Ok(r.f64s()),
                _ => {
                    let member = r.usize();
                    let message = r.text();
                    let code = u8::try_from(r.u64()).unwrap_or(super::exit::MODEL);
                    Err((member, message, code))
                }
            };
            if !fold(result) {
                return true;
            }
        }
    }
    true
}

fn describe(plan: &Plan, values: &[f64]) -> String {
    plan.names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary_json(summary: &[(String, Stats)]) -> String {
    let mut text = String::from("{");
    for (i, (name, s)) in summary.iter().enumerate() {
        let _ = write!(
            text,
            "{}{}: {{\"mean\": {}, \"std\": {}, \"min\": {}, \"q05\": {}, \"median\": {}, \"q95\": {}, \"max\": {}}}",
            if i == 0 { "" } else { ", " },
            serde_json::to_string(name).unwrap_or_default(),
            json_number(s.mean),
            json_number(s.std),
            json_number(s.min),
            json_number(s.q05),
            json_number(s.q50),
            json_number(s.q95),
            json_number(s.max),
        );
    }
    text.push('}');
    text
}

fn summary_table(summary: &[(String, Stats)], n: usize) -> String {
    use super::report::format_sig as f;
    let name_width = summary
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(6);
    let mut text = format!(
        "{n} members\n{:<name_width$} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}\n",
        "column", "mean", "std", "min", "q05", "median", "q95", "max"
    );
    for (name, s) in summary {
        let _ = writeln!(
            text,
            "{name:<name_width$} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            f(s.mean),
            f(s.std),
            f(s.min),
            f(s.q05),
            f(s.q50),
            f(s.q95),
            f(s.max)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Side by side only where a member's bits cannot change: scalar code in f64 without GEMMs,
    /// one sample that is not a series, varied params with one copy.
    #[test]
    fn members_run_side_by_side_only_where_their_bits_cannot_change() {
        let dir = std::env::temp_dir().join(format!("nodec-lanes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        let per_layer = write(
            "per_layer.node",
            "param c per layer = 1\nstate x = 1\ndx/dt = -c * x\nschedule rk4(t = [0, 1], steps = 4)\n",
        );
        let wide = write(
            "wide.node",
            "const n = 256\nparam K[n, n] ~ normal(0, 0.05)\nparam a = 1\nstate x[n] = ones(n)\n\
             dx/dt = a * tanh(K * x)\nschedule rk4(t = [0, 1], steps = 4)\n",
        );
        let gemm = write(
            "gemm.node",
            "param K1[16, 2] ~ normal(0, 0.5)\nparam K2[2, 16] ~ normal(0, 0.5)\nparam a = 1\n\
             state x[2] = [1, 0]\ndx/dt = a * K2 * tanh(K1 * x)\nschedule rk4(t = [0, 1], steps = 4)\n",
        );
        let root = env!("CARGO_MANIFEST_DIR");
        let model = |name: &str| format!("{root}/models/{name}.node");
        let f32 = Overrides {
            precision: Some(ir::Precision::F32),
            ..Overrides::default()
        };
        let side_by_side = |file: &str, spec: &str, overrides: &Overrides| {
            let mut out = Output::default();
            let loaded = super::super::run::load_mapped(
                file,
                overrides,
                0,
                None,
                None,
                &[],
                false,
                &mut out,
            )
            .unwrap_or_else(|| panic!("{file}: {}", out.stderr));
            let plan = Plan::parse(spec, None, 0).unwrap();
            let slots: Vec<(usize, usize)> = plan
                .names
                .iter()
                .map(|name| {
                    let layout = loaded.program.layout();
                    let entry = layout.entries.iter().find(|e| &e.name == name).unwrap();
                    (entry.offset, entry.copies)
                })
                .collect();
            if file.ends_with("wide.node") {
                assert!(loaded.program.runs_tensor_kernels());
            }
            if file.ends_with("gemm.node") {
                assert!(!loaded.program.runs_tensor_kernels() && !loaded.program.sums_in_order());
            }
            Lanes::new(&loaded, overrides, &plan, &slots, &loaded.data[0].1).is_some()
        };
        let none = Overrides::default();
        assert!(side_by_side(&model("lorenz"), "rho=20:30:3", &none));
        assert!(side_by_side(&model("robertson"), "k1=0.02:0.06:3", &none));
        assert!(!side_by_side(&model("lorenz"), "rho=20:30:3", &f32));
        assert!(!side_by_side(&model("circles_anode"), "bias=0:1:2", &none));
        assert!(!side_by_side(&model("bouncing_ball"), "e=0.5:0.9:3", &none));
        assert!(!side_by_side(&per_layer, "c=1:2:2", &none));
        assert!(!side_by_side(&wide, "a=1:2:2", &none));
        assert!(!side_by_side(&gemm, "a=1:2:2", &none));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grids_are_products_with_the_last_axis_fastest() {
        let plan = Plan::parse("a=0:1:3, b=10:20:2, c=5", None, 0).unwrap();
        assert_eq!(plan.names, ["a", "b", "c"]);
        assert_eq!(plan.len(), 6);
        let members: Vec<Vec<f64>> = (0..6).map(|i| plan.member(i)).collect();
        assert_eq!(
            members,
            [
                [0.0, 10.0, 5.0],
                [0.0, 20.0, 5.0],
                [0.5, 10.0, 5.0],
                [0.5, 20.0, 5.0],
                [1.0, 10.0, 5.0],
                [1.0, 20.0, 5.0]
            ]
        );
        // The last value is the stop exactly, as numpy's linspace.
        let axis = parse_axis("0.1:1.0:50").unwrap();
        assert_eq!(axis.len(), 50);
        assert_eq!(axis[49], 1.0);
        assert!((axis[1] - (0.1 + 0.9 / 49.0)).abs() < 1e-15);
    }

    #[test]
    fn draws_depend_on_the_seed_and_the_member_only() {
        let plan = Plan::parse("k~uniform(0.1,1), r=2, s~normal(0,1)", Some(1000), 7).unwrap();
        let again = Plan::parse("k~uniform(0.1,1), r=2, s~normal(0,1)", Some(10), 7).unwrap();
        for i in 0..10 {
            assert_eq!(plan.member(i), again.member(i), "member {i}");
        }
        let ks: Vec<f64> = (0..1000).map(|i| plan.member(i)[0]).collect();
        assert!(ks.iter().all(|k| (0.1..1.0).contains(k)));
        // The mean of 1000 uniform draws on [0.1, 1) is 0.55 ± 0.0082 (one standard error).
        let mean = ks.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.55).abs() < 0.04, "{mean}");
        assert!((0..1000).all(|i| plan.member(i)[1] == 2.0));
        let other = Plan::parse("k~uniform(0.1,1), r=2, s~normal(0,1)", Some(10), 8).unwrap();
        assert_ne!(plan.member(0), other.member(0));
        let logs = Plan::parse("k~loguniform(1e-3,1e3)", Some(2000), 1).unwrap();
        let below_one = (0..2000).filter(|&i| logs.member(i)[0] < 1.0).count();
        // Half the mass of a log-uniform on [1e-3, 1e3] lies below 1.
        assert!((900..1100).contains(&below_one), "{below_one}");
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        let err = |spec: &str, members| Plan::parse(spec, members, 0).unwrap_err().to_string();
        assert!(err("k", None).contains("NAME=START:STOP:COUNT"));
        assert!(err("k=1:2", None).contains("START:STOP:COUNT"));
        assert!(err("k=1:2:0", None).contains("≥ 1"));
        assert!(err("k=x", None).contains("not a finite number"));
        assert!(err("k~uniform(1,1)", Some(3)).contains("LO < HI"));
        assert!(err("k~gamma(1,1)", Some(3)).contains("unknown distribution"));
        assert!(err("k~uniform(0,1)", None).contains("--members"));
        assert!(err("k=0:1:3", Some(3)).contains("--members is for drawn"));
        assert!(err("k=0:1:3,r~normal(0,1)", Some(3)).contains("not both"));
        assert!(err("k=1,k=2", None).contains("twice"));
        assert!(err("a=0:1:70000,b=0:1:70000,c=0:1:70000", None).contains("more than"));
    }

    #[test]
    fn csv_members_are_rows_and_errors_are_located() {
        let plan = Plan::from_csv("k,rho\n0.5,28\n1,30\n", "m.csv").unwrap();
        assert_eq!(plan.names, ["k", "rho"]);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan.member(1), [1.0, 30.0]);
        let err = |text| Plan::from_csv(text, "m.csv").unwrap_err();
        assert_eq!(
            err("k,rho\n0.5,x\n"),
            "m.csv:2:5: error: `x` is not a finite number"
        );
        assert!(err("k,rho\n0.5\n").starts_with("m.csv:2: error: this row has 1 cells"));
        assert!(err("k,1x\n").starts_with("m.csv:1: error: header cell 2"));
        assert!(err("k\n").contains("no members"));
    }

    #[test]
    fn statistics_match_numpy_conventions() {
        // numpy: mean 2.5, std (ddof 0) sqrt(1.25), quantile(0.05) 1.15, median 2.5.
        let s = stats(&mut [4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.mean, 2.5);
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-15);
        assert!((s.q05 - 1.15).abs() < 1e-12);
        assert_eq!(s.q50, 2.5);
        assert!((s.q95 - 3.85).abs() < 1e-12);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }
}
