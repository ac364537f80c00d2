//! Reports of `nodec run`: one value, three renderings (JSON as in the spec's contract, a table
//! a person can read, CSV for tools). Everything is in declaration order.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::npy::Array;

/// A named quantity saved over time: one row-major value per saved time.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its name.
    pub name: String,
    /// Elements per value (1 for a scalar); with `scalar` it decides the JSON form.
    pub len: usize,
    /// Whether it is declared as a scalar (printed as a number, not a list).
    pub scalar: bool,
    /// The shape of one value (`[]` for a scalar), for `.npz` arrays.
    pub dims: Vec<usize>,
    /// Element labels for tables: `x` or `x[0]`, `W[1, 0]`.
    pub labels: Vec<String>,
    /// `values[k]` is the value at the k-th saved time, row-major.
    pub values: Vec<Vec<f64>>,
}

/// Solver work and wall time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    /// Accepted steps, summed over samples.
    pub steps: u64,
    /// Rejected steps.
    pub rejected: u64,
    /// Right-hand-side evaluations (per sample).
    pub rhs_evals: u64,
    /// Jacobian evaluations.
    pub jac_evals: u64,
    /// LU factorizations.
    pub lu_decompositions: u64,
    /// Seconds spent parsing, checking and compiling.
    pub compile_seconds: f64,
    /// Seconds spent solving.
    pub solve_seconds: f64,
    /// Whether the two times above are reported (`--no-timings` leaves them out).
    pub timings: bool,
    /// The kernels' precision, reported when it is not the default `f64`.
    pub precision: crate::ir::Precision,
}

/// Loss, costs and metrics over one data block.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSummary {
    /// The block's name (`train`, `test`).
    pub name: String,
    /// Number of samples.
    pub samples: usize,
    /// Mean loss.
    pub loss: f64,
    /// Each cost kind's mean contribution, in declaration order.
    pub costs: Vec<(String, f64)>,
    /// Each metric's mean, in declaration order.
    pub metrics: Vec<(String, f64)>,
}

/// Everything `nodec run` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// The model's name.
    pub model: String,
    /// Which sample `states`, `final` and `outputs` describe, for a model with data.
    pub sample: Option<usize>,
    /// Saved times.
    pub t: Vec<f64>,
    /// States over the saved times.
    pub states: Vec<Series>,
    /// Outputs over the saved times.
    pub outputs: Vec<Series>,
    /// With `--costate`: the costate of each state, then the Hamiltonian `H`.
    pub costates: Vec<Series>,
    /// One summary per data block (training block first), empty for a model without data.
    pub data: Vec<DataSummary>,
    /// The reported sample's events in time order: name, time and whether it stopped the
    /// sample; `None` for a model without events (and then nothing is printed).
    pub events: Option<Vec<(String, f64, bool)>>,
    /// Solver statistics.
    pub stats: RunStats,
}

fn value_json(series: &Series, values: &[f64]) -> Value {
    if series.scalar {
        json!(values[0])
    } else {
        json!(values)
    }
}

fn named(pairs: &[(String, f64)]) -> Value {
    Value::Object(pairs.iter().map(|(n, v)| (n.clone(), json!(v))).collect())
}

/// The spec's JSON object: `model`, `t`, `states`, `final`, `outputs`, `stats`, and for a model
/// with data `loss`, `costs`, `metrics` (of the first block) plus `data` with every block.
pub fn to_json(report: &RunReport) -> String {
    let mut root = Map::new();
    root.insert("model".into(), json!(report.model));
    if let Some(sample) = report.sample {
        root.insert("sample".into(), json!(sample));
    }
    root.insert("t".into(), json!(report.t));
    let over_time = |list: &[Series]| -> Value {
        Value::Object(
            list.iter()
                .map(|s| {
                    let values: Vec<Value> = s.values.iter().map(|v| value_json(s, v)).collect();
                    (s.name.clone(), Value::Array(values))
                })
                .collect(),
        )
    };
    root.insert("states".into(), over_time(&report.states));
    let finals: Map<String, Value> = report
        .states
        .iter()
        .filter_map(|s| s.values.last().map(|v| (s.name.clone(), value_json(s, v))))
        .collect();
    root.insert("final".into(), Value::Object(finals));
    root.insert("outputs".into(), over_time(&report.outputs));
    if let Some((h, p)) = report.costates.split_last() {
        root.insert("costates".into(), over_time(p));
        let values: Vec<Value> = h.values.iter().map(|v| json!(v[0])).collect();
        root.insert("hamiltonian".into(), Value::Array(values));
    }
    if let Some(first) = report.data.first() {
        root.insert("loss".into(), json!(first.loss));
        root.insert("costs".into(), named(&first.costs));
        root.insert("metrics".into(), named(&first.metrics));
        let blocks: Map<String, Value> = report
            .data
            .iter()
            .filter(|d| !d.name.is_empty())
            .map(|d| {
                (
                    d.name.clone(),
                    json!({
                        "samples": d.samples,
                        "loss": d.loss,
                        "costs": named(&d.costs),
                        "metrics": named(&d.metrics),
                    }),
                )
            })
            .collect();
        if !blocks.is_empty() {
            root.insert("data".into(), Value::Object(blocks));
        }
    }
    if let Some(events) = &report.events {
        let list: Vec<Value> = events
            .iter()
            .map(|(name, t, stop)| {
                if *stop {
                    json!({ "name": name, "t": t, "terminate": true })
                } else {
                    json!({ "name": name, "t": t })
                }
            })
            .collect();
        root.insert("events".into(), Value::Array(list));
    }
    let s = &report.stats;
    let mut stats = json!({
        "steps": s.steps,
        "rejected": s.rejected,
        "rhs_evals": s.rhs_evals,
        "jac_evals": s.jac_evals,
        "lu_decompositions": s.lu_decompositions,
    });
    if s.precision != crate::ir::Precision::F64 {
        stats["precision"] = json!(s.precision.name());
    }
    if s.timings {
        stats["compile_seconds"] = json!(s.compile_seconds);
        stats["solve_seconds"] = json!(s.solve_seconds);
    }
    root.insert("stats".into(), stats);
    let mut text = serde_json::to_string_pretty(&Value::Object(root)).unwrap_or_default();
    text.push('\n');
    text
}

/// Column labels and the rows of values, one row per saved time.
fn columns(report: &RunReport) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut header = vec!["t".to_string()];
    for s in report
        .states
        .iter()
        .chain(&report.outputs)
        .chain(&report.costates)
    {
        header.extend(s.labels.iter().cloned());
    }
    let rows = report
        .t
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let mut row = vec![*t];
            for s in report
                .states
                .iter()
                .chain(&report.outputs)
                .chain(&report.costates)
            {
                row.extend_from_slice(&s.values[k]);
            }
            row
        })
        .collect();
    (header, rows)
}

/// CSV: a header `t,x[0],...` then every saved time, numbers in shortest round-trip form.
pub fn to_csv(report: &RunReport) -> String {
    let (header, rows) = columns(report);
    let mut out = header
        .iter()
        .map(|h| csv_field(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

pub(super) fn csv_field(text: &str) -> String {
    if text.contains(',') || text.contains('"') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A report as one 2-D `f64` array for `.npy`: the CSV's columns, one row per saved time.
pub fn to_npy(report: &RunReport) -> Vec<u8> {
    let (header, rows) = columns(report);
    let values: Vec<f64> = rows.concat();
    crate::npy::write_npy(&Array::new(vec![rows.len(), header.len()], values))
}

/// A report as an `.npz` archive of named arrays, keyed like the JSON's paths: `t` `[T]`,
/// `states.NAME` and `outputs.NAME` `[T, ...shape]`, with `--costate` `costates.NAME` and
/// `hamiltonian`.
pub fn to_npz(report: &RunReport) -> Result<Vec<u8>, String> {
    let mut arrays = vec![(
        "t".to_string(),
        Array::new(vec![report.t.len()], report.t.clone()),
    )];
    let over_time = |prefix: &str, s: &Series| {
        let mut shape = vec![s.values.len()];
        shape.extend_from_slice(&s.dims);
        (
            format!("{prefix}.{}", s.name),
            Array::new(shape, s.values.concat()),
        )
    };
    arrays.extend(report.states.iter().map(|s| over_time("states", s)));
    arrays.extend(report.outputs.iter().map(|s| over_time("outputs", s)));
    if let Some((h, p)) = report.costates.split_last() {
        arrays.extend(p.iter().map(|s| over_time("costates", s)));
        arrays.push((
            "hamiltonian".to_string(),
            Array::new(vec![h.values.len()], h.values.concat()),
        ));
    }
    crate::npy::write_npz(&arrays)
}

/// What a column of a per-sample report holds; it decides the column's JSON place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleGroup {
    /// The sample's label (`label`).
    Label,
    /// An output at the final time (`outputs.NAME`).
    Output,
    /// A state at the final time (`final.NAME`).
    Final,
    /// The sample's term of the loss (`loss`).
    Loss,
    /// One cost kind's term (`costs.KIND`).
    Cost,
    /// A metric (`metrics.NAME`).
    Metric,
}

impl SampleGroup {
    /// The JSON key of the group, and the prefix of its columns' names.
    pub fn key(self) -> &'static str {
        match self {
            SampleGroup::Label => "label",
            SampleGroup::Output => "outputs",
            SampleGroup::Final => "final",
            SampleGroup::Loss => "loss",
            SampleGroup::Cost => "costs",
            SampleGroup::Metric => "metrics",
        }
    }

    /// Whether the group is one value named by the group (`label`, `loss`), not a map.
    fn single(self) -> bool {
        matches!(self, SampleGroup::Label | SampleGroup::Loss)
    }
}

/// One data block's samples: columns whose `values[k]` belong to sample `k`.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleBlock {
    /// The block's name (empty for a model without data).
    pub name: String,
    /// Its samples.
    pub n: usize,
    /// The columns, each in its group: label, outputs, final states, loss, costs, metrics.
    pub columns: Vec<(SampleGroup, Series)>,
}

/// Everything `nodec run --all-samples` reports: every block's samples in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplesReport {
    /// The model's name.
    pub model: String,
    /// The data blocks in declaration order.
    pub blocks: Vec<SampleBlock>,
}

/// A column's element names: `loss`, `final.x[0]`, `outputs.W[1, 0]`.
fn sample_labels(group: SampleGroup, s: &Series) -> Vec<String> {
    if group.single() {
        return vec![group.key().to_string()];
    }
    s.labels
        .iter()
        .map(|l| format!("{}.{l}", group.key()))
        .collect()
}

/// The header (`data`, `sample`, then every column's elements) and the cells of every row.
fn sample_rows(report: &SamplesReport) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let mut header = vec!["data".to_string(), "sample".to_string()];
    if let Some(first) = report.blocks.first() {
        for (group, s) in &first.columns {
            header.extend(sample_labels(*group, s));
        }
    }
    let mut rows = Vec::new();
    for block in &report.blocks {
        for k in 0..block.n {
            let mut row = vec![k as f64];
            for (_, s) in &block.columns {
                row.extend_from_slice(&s.values[k]);
            }
            rows.push((block.name.clone(), row));
        }
    }
    (header, rows)
}

/// CSV of every sample: a header `data,sample,label,outputs.p,final.x[0],...,loss,costs.terminal,
/// metrics.accuracy`, then one row per sample, blocks in declaration order.
pub fn samples_to_csv(report: &SamplesReport) -> String {
    let (header, rows) = sample_rows(report);
    let mut out = header
        .iter()
        .map(|h| csv_field(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for (name, row) in rows {
        out.push_str(&csv_field(&name));
        for v in row {
            let _ = write!(out, ",{v}");
        }
        out.push('\n');
    }
    out
}

/// JSON of every sample: `{"model", "samples": [{"data", "sample", "label", "outputs": {..},
/// "final": {..}, "loss", "costs": {..}, "metrics": {..}}, ...]}`, values as in `run`'s JSON.
pub fn samples_to_json(report: &SamplesReport) -> String {
    let mut samples = Vec::new();
    for block in &report.blocks {
        for k in 0..block.n {
            let mut row = Map::new();
            row.insert("data".into(), json!(block.name));
            row.insert("sample".into(), json!(k));
            for (group, s) in &block.columns {
                let v = value_json(s, &s.values[k]);
                if group.single() {
                    row.insert(group.key().into(), v);
                } else if let Value::Object(map) = row
                    .entry(group.key())
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    map.insert(s.name.clone(), v);
                }
            }
            // Every row has the same keys in the same order; a map group may be empty.
            let mut ordered = Map::new();
            for key in [
                "data", "sample", "label", "outputs", "final", "loss", "costs", "metrics",
            ] {
                match row.remove(key) {
                    Some(v) => {
                        ordered.insert(key.into(), v);
                    }
                    None if !matches!(key, "label" | "loss") => {
                        ordered.insert(key.into(), Value::Object(Map::new()));
                    }
                    None => {}
                }
            }
            samples.push(Value::Object(ordered));
        }
    }
    let root = json!({"model": report.model, "samples": samples});
    let mut text = serde_json::to_string_pretty(&root).unwrap_or_default();
    text.push('\n');
    text
}

/// Every sample as one 2-D `f64` array for `.npy`: the CSV's columns, with `data` the block's
/// index (0 for the first block).
pub fn samples_to_npy(report: &SamplesReport) -> Vec<u8> {
    let (header, rows) = sample_rows(report);
    let mut values = Vec::with_capacity(rows.len() * header.len());
    for (name, row) in &rows {
        let index = report
            .blocks
            .iter()
            .position(|b| &b.name == name)
            .unwrap_or(0);
        values.push(index as f64);
        values.extend_from_slice(row);
    }
    crate::npy::write_npy(&Array::new(vec![rows.len(), header.len()], values))
}

/// Every sample as an `.npz` archive: `BLOCK/final.x` `[n, ...shape]`, `BLOCK/loss` `[n]`, ...
/// (keys as the CSV's columns, without `BLOCK/` for a model without data).
pub fn samples_to_npz(report: &SamplesReport) -> Result<Vec<u8>, String> {
    let mut arrays = Vec::new();
    for block in &report.blocks {
        let prefix = if block.name.is_empty() {
            String::new()
        } else {
            format!("{}/", block.name)
        };
        for (group, s) in &block.columns {
            let key = if group.single() {
                group.key().to_string()
            } else {
                format!("{}.{}", group.key(), s.name)
            };
            let mut shape = vec![block.n];
            shape.extend_from_slice(&s.dims);
            arrays.push((
                format!("{prefix}{key}"),
                Array::new(shape, s.values.concat()),
            ));
        }
    }
    crate::npy::write_npz(&arrays)
}

/// Every sample as an aligned table: the first and last few rows when there are many.
pub fn samples_to_table(report: &SamplesReport) -> String {
    let (header, rows) = sample_rows(report);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, row)| {
            let mut cells = vec![name.clone()];
            cells.extend(row.iter().enumerate().map(|(j, v)| {
                if j == 0 {
                    format!("{v}")
                } else {
                    format_sig(*v)
                }
            }));
            cells
        })
        .collect();
    let mut out = format!("model {}\n", report.model);
    aligned(&mut out, &header, &cells, "use --format csv for all");
    out
}

/// Writes `header` and `cells` right-aligned in columns, the middle rows of a long table left
/// out with a line that says how many and `how` to see them.
fn aligned(out: &mut String, header: &[String], cells: &[Vec<String>], how: &str) {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(j, h)| {
            cells
                .iter()
                .map(|r| r[j].chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| -> String {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{}", line(header));
    // Omitting fewer than a few rows saves nothing; show them all then.
    let omitted = match cells.len().saturating_sub(2 * TABLE_EDGE_ROWS) {
        n if n <= 3 => 0,
        n => n,
    };
    for (k, row) in cells.iter().enumerate() {
        if omitted > 0 && k == TABLE_EDGE_ROWS {
            let _ = writeln!(out, "... {omitted} rows omitted ({how})");
        }
        if omitted == 0 || k < TABLE_EDGE_ROWS || k >= cells.len() - TABLE_EDGE_ROWS {
            let _ = writeln!(out, "{}", line(row));
        }
    }
}

/// Rows shown at each end of a long table.
const TABLE_EDGE_ROWS: usize = 5;

/// A table for people: aligned columns, 6 significant digits, the first and last few rows of a
/// long run with a line saying how many were omitted, then data summaries and statistics.
pub fn to_table(report: &RunReport) -> String {
    let (header, rows) = columns(report);
    let mut out = String::new();
    let _ = writeln!(out, "model {}", report.model);
    if let Some(sample) = report.sample {
        let _ = writeln!(out, "sample {sample}");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|v| format_sig(*v)).collect())
        .collect();
    aligned(&mut out, &header, &cells, "use --format csv for all");
    for d in &report.data {
        if d.name.is_empty() {
            let _ = write!(out, "\nloss {}", format_sig(d.loss));
        } else {
            let _ = write!(
                out,
                "\n{} ({} samples): loss {}",
                d.name,
                d.samples,
                format_sig(d.loss)
            );
        }
        for (name, v) in d.costs.iter().chain(&d.metrics) {
            let _ = write!(out, ", {name} {}", format_sig(*v));
        }
        out.push('\n');
    }
    if let Some(events) = &report.events {
        const SHOWN: usize = 10;
        let _ = write!(out, "\nevents: {}", events.len());
        for (i, (name, t, stop)) in events.iter().enumerate().take(SHOWN) {
            let sep = if i == 0 { " — " } else { ", " };
            let what = if *stop { " (terminated)" } else { "" };
            let _ = write!(out, "{sep}{name} at t = {}{what}", format_sig(*t));
        }
        if events.len() > SHOWN {
            let _ = write!(out, ", … (use --format json for all)");
        }
        out.push('\n');
    }
    let s = &report.stats;
    let _ = writeln!(
        out,
        "\nsteps {}, rejected {}, rhs evaluations {}, jacobians {}, LU factorizations {}{}",
        s.steps,
        s.rejected,
        s.rhs_evals,
        s.jac_evals,
        s.lu_decompositions,
        match s.precision {
            crate::ir::Precision::F64 => "",
            crate::ir::Precision::F32 => ", kernels in f32",
        }
    );
    if s.timings {
        let _ = writeln!(
            out,
            "time: parse+compile {}, solve {}",
            format_duration(s.compile_seconds),
            format_duration(s.solve_seconds)
        );
    }
    out
}

/// A wall time with three significant digits in the unit a person reads it in: `0.412 ms`,
/// `12.3 ms`, `1.25 s`. A sub-millisecond solve printed in seconds (`0.000 s`) says nothing.
pub fn format_duration(seconds: f64) -> String {
    let (value, unit) = if seconds < 1.0 {
        (seconds * 1e3, "ms")
    } else {
        (seconds, "s")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else if value >= 1.0 {
        2
    } else {
        3
    };
    format!("{value:.decimals$} {unit}")
}

/// Six significant digits, without trailing noise: `0.270671`, `-4.90269`, `3e7`.
pub fn format_sig(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let magnitude = v.abs().log10().floor();
    if !(-4.0..6.0).contains(&magnitude) {
        let text = format!("{v:.5e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exponent}");
    }
    let decimals = (5.0 - magnitude).max(0.0) as usize;
    rounded_shortest(v, decimals).unwrap_or_else(|| {
        let text = format!("{v:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    })
}

/// `v` rounded to `decimals` places, from its shortest round-trip digits (zmij's, which are fast)
/// rather than from its exact binary value (`{v:.N}` through `fmt`: a third of
/// `nodec run models/lorenz.node`'s instructions went there). The two agree except
/// when the shortest digits end exactly on a tie at the rounding place, where the exact value
/// may lie on either side: then `None`, and the caller formats the exact value.
fn rounded_shortest(v: f64, decimals: usize) -> Option<String> {
    // zmij (serde_json's float printer) writes the shortest digits without `fmt`'s machinery,
    // and without an exponent for the magnitudes `format_sig` sends here (1e-4 to 1e6).
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(v);
    if text.contains('e') {
        return None;
    }
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() <= decimals {
        let mut out = String::with_capacity(text.len());
        out.push_str(sign);
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        return Some(out);
    }
    let (kept, dropped) = frac.split_at(decimals);
    let first = dropped.as_bytes()[0];
    if dropped == "5" {
        return None;
    }
    let mut number: Vec<u8> = int.bytes().chain(kept.bytes()).collect();
    if first >= b'5' {
        // Round up: carry through the nines.
        let mut i = number.len();
        loop {
            if i == 0 {
                number.insert(0, b'1');
                break;
            }
            i -= 1;
            if number[i] == b'9' {
                number[i] = b'0';
            } else {
                number[i] += 1;
                break;
            }
        }
    }
    let split = number.len() - decimals;
    let (int, frac) = number.split_at(split);
    let frac = std::str::from_utf8(frac).ok()?.trim_end_matches('0');
    let int = std::str::from_utf8(int).ok()?;
    let mut out = String::with_capacity(sign.len() + int.len() + 1 + frac.len());
    out.push_str(sign);
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path gives the bytes of formatting the exact binary value, for values across
    /// the range `format_sig` prints without an exponent, ties at the rounding place included.
    #[test]
    fn rounding_shortest_digits_matches_exact_formatting() {
        let exact = |v: f64, decimals: usize| {
            let text = format!("{v:.decimals$}");
            if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                text
            }
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            let bits = next();
            let mantissa = (bits >> 11) as f64 / (1u64 << 53) as f64;
            let exponent = (bits % 10) as i32 - 4;
            let mut v = (1.0 + 9.0 * mantissa) * 10f64.powi(exponent);
            if bits & 1 == 1 {
                v = -v;
            }
            // Short decimals too (ties and carries: 9.999995, 0.12345650).
            if bits & 6 == 0 {
                v = (v * 1e6).round() / 1e7;
            }
            let magnitude = v.abs().log10().floor();
            if !(-4.0..6.0).contains(&magnitude) {
                continue;
            }
            let decimals = (5.0 - magnitude).max(0.0) as usize;
            if let Some(fast) = rounded_shortest(v, decimals) {
                assert_eq!(fast, exact(v, decimals), "{v:e} at {decimals} places");
                checked += 1;
            }
        }
        assert!(checked > 150_000, "{checked}");
        for v in [
            9.999995f64,
            99999.95,
            0.000999999,
            1.0000005,
            2.5e-4,
            123456.5,
        ] {
            let magnitude = v.abs().log10().floor();
            let decimals = (5.0 - magnitude).max(0.0) as usize;
            if let Some(fast) = rounded_shortest(v, decimals) {
                assert_eq!(fast, exact(v, decimals), "{v}");
            }
        }
    }

    #[test]
    fn durations_keep_three_significant_digits() {
        assert_eq!(format_duration(0.000_412_3), "0.412 ms");
        assert_eq!(format_duration(0.004_56), "4.56 ms");
        assert_eq!(format_duration(0.012_34), "12.3 ms");
        assert_eq!(format_duration(0.345), "345 ms");
        assert_eq!(format_duration(1.254), "1.25 s");
        assert_eq!(format_duration(42.0), "42.0 s");
    }

    fn report(n: usize) -> RunReport {
        RunReport {
            events: None,
            model: "m".into(),
            sample: None,
            t: (0..n).map(|k| k as f64 * 0.5).collect(),
            states: vec![
                Series {
                    name: "x".into(),
                    len: 1,
                    scalar: true,
                    dims: vec![],
                    labels: vec!["x".into()],
                    values: (0..n)
                        .map(|k| vec![2.0 * (-0.25 * k as f64).exp()])
                        .collect(),
                },
                Series {
                    name: "v".into(),
                    len: 2,
                    scalar: false,
                    dims: vec![2],
                    labels: vec!["v[0]".into(), "v[1]".into()],
                    values: (0..n).map(|k| vec![k as f64, -1.0]).collect(),
                },
            ],
            outputs: vec![],
            costates: vec![],
            data: vec![],
            stats: RunStats::default(),
        }
    }

    #[test]
    fn json_follows_the_contract() {
        let v: Value = serde_json::from_str(&to_json(&report(3))).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v["t"], json!([0.0, 0.5, 1.0]));
        assert_eq!(v["states"]["x"][0], json!(2.0));
        assert_eq!(v["states"]["v"][2], json!([2.0, -1.0]));
        assert_eq!(v["final"]["v"], json!([2.0, -1.0]));
        assert!(v["stats"]["steps"].is_u64());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["model", "t", "states", "final", "outputs", "stats"]);
    }

    #[test]
    fn long_tables_show_both_ends() {
        let text = to_table(&report(1000));
        assert!(text.contains("... 990 rows omitted"), "{text}");
        assert!(text.contains("499.5"), "{text}");
        let short = to_table(&report(3));
        assert!(!short.contains("omitted"));
        assert!(short.lines().nth(1).unwrap().trim_start().starts_with("t"));
    }

    #[test]
    fn csv_has_every_row() {
        let text = to_csv(&report(4));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "t,x,v[0],v[1]");
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1], "0,2,0,-1");
    }

    #[test]
    fn significant_digits() {
        assert_eq!(format_sig(0.2706705664732254), "0.270671");
        assert_eq!(format_sig(-4.902687541134646), "-4.90269");
        assert_eq!(format_sig(24.690858102790557), "24.6909");
        assert_eq!(format_sig(3e7), "3e7");
        assert_eq!(format_sig(1.0), "1");
        assert_eq!(format_sig(1.5e-6), "1.5e-6");
    }
}
