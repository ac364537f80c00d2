//! The memory budget: what a model will need, estimated from its declarations before anything
//! that size is allocated, so that a model too large for the machine is a located error with
//! the figure, rather than an allocation abort or a machine that swaps.
//!
//! [`estimate`] adds up the large allocations of a run: saved trajectories (states × samples ×
//! saved points), the report of one sample's trajectory, data sets, parameters with their
//! per-layer copies, gradients and optimizer moments, dense Jacobians of stiff methods, and
//! the compiled model. Each [`Item`] keeps the declaration that drives it, so
//! [`Estimate::check`] can point there. `cli` decides the limit (`--max-memory`, else
//! [`default_limit`] of the machine's memory) and calls this twice: after `check`, with the
//! sample counts the declarations give, and after data files are read, with their real counts.
//!
//! The figures are calibrated against measured peak RSS (release build): a run dominated by its
//! saved trajectories measures within a few percent of the estimate; see `tests/it/budget.rs`.

use crate::diag::{Diagnostic, Span};
use crate::ir::{self, DataSource, MethodFamily, Save};

/// Bytes of one `f64`.
const F64: f64 = 8.0;

/// Bytes of the report per value of the reported sample's trajectory (time, states, outputs):
/// the series as nested vectors and their rendering as text, measured at 80–110 bytes.
const REPORT_BYTES_PER_VALUE: f64 = 120.0;

/// Copies of the parameters alive at once while training: values, gradient, two Adam moments
/// and the best parameters so far.
const PARAM_COPIES: f64 = 5.0;

/// Bytes per tensor IR node, with its derivative IR and the compiled kernel that reads it.
const BYTES_PER_TENSOR_NODE: f64 = 512.0;

/// The process itself: code, the thread stacks it touches, allocator arenas (measured: 9 MiB
/// for a one-state model); counted in [`Estimate::total`], never the part blamed.
const BASE_BYTES: f64 = 16.0 * 1024.0 * 1024.0;

/// The budget used when the machine's memory cannot be read.
pub const FALLBACK_LIMIT: u64 = 8 << 30;

/// One large allocation the model will need.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// What it is, with the product that sizes it (`16 states × 1000 samples × …`).
    pub what: String,
    /// Estimated bytes.
    pub bytes: f64,
    /// The declaration whose size drives it.
    pub span: Span,
    /// How to make it smaller.
    pub help: &'static str,
}

/// The estimate of a model's memory, item by item.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimate {
    /// The items, in a fixed order.
    pub items: Vec<Item>,
}

/// What is known of a data block's size: from its declaration before its file is read, then
/// from the data set.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct BlockSize {
    /// Samples (trajectories of a series).
    pub samples: usize,
    /// Numbers held per sample (inputs and label) plus, for a series, its observations.
    pub values: f64,
    /// Observation times the solver must also save at (a series).
    pub times: usize,
    /// Bytes of the file's text, read whole before it is parsed.
    pub file_bytes: u64,
}

impl BlockSize {
    /// What a data declaration says before its file is read: a generator's `n`, a file's row
    /// range if it has one, else one sample (the file's real size is counted once it is read).
    pub fn declared(model: &ir::Model, block: &ir::DataBlock) -> BlockSize {
        let per_sample = model.inputs.iter().map(|i| i.shape.len()).sum::<usize>()
            + usize::from(!model.labels.is_empty());
        let samples = match &block.source {
            DataSource::Toy { n, .. }
            | DataSource::Normal { n, .. }
            | DataSource::Uniform { n, .. } => *n,
            DataSource::Csv { rows, .. } | DataSource::Series { rows, .. } => {
                rows.map_or(1, |(a, b)| b.saturating_sub(a).max(1))
            }
        };
        let dim = match &block.source {
            DataSource::Normal { dim, .. } | DataSource::Uniform { dim, .. } => *dim,
            _ => per_sample,
        };
        BlockSize {
            samples,
            values: (dim + usize::from(!model.labels.is_empty())) as f64,
            times: 0,
            file_bytes: 0,
        }
    }

    /// The size of a data set that has been read.
    pub fn of(dataset: &crate::data::Dataset, file_bytes: u64) -> BlockSize {
        let times = dataset.times.as_ref().map_or(0, Vec::len);
        let observed = dataset.observed.as_ref().map_or(0, Vec::len);
        let samples = dataset.n.max(1);
        BlockSize {
            samples,
            values: (dataset.input_dim + usize::from(dataset.labels.is_some())) as f64
                + (observed + times) as f64 / samples as f64,
            times,
            file_bytes,
        }
    }
}

/// The number of save points of a schedule, before observation times: every step of a
/// fixed-step method by default, start and end of the others, every `dt`, or the times given.
pub fn save_points(schedule: &ir::Schedule) -> f64 {
    match &schedule.save {
        Save::Default => match schedule.method.family() {
            MethodFamily::Fixed => schedule.steps.unwrap_or(1) as f64 + 1.0,
            _ => 2.0,
        },
        Save::Every(dt) => ((schedule.t1 - schedule.t0).abs() / dt.abs()).floor() + 2.0,
        Save::Times(times) => times.len() as f64,
    }
}

/// Estimates the memory `model` needs with data blocks of these sizes (one per
/// `model.data`, in order), solving with `threads` worker threads.
pub fn estimate(model: &ir::Model, blocks: &[BlockSize], threads: usize) -> Estimate {
    let mut items = Vec::new();
    let states = model.state_len();
    let largest_state = model.states.iter().max_by_key(|s| s.shape.len());
    let state_span = largest_state.map_or(Span::default(), |s| s.span);
    let running = model.costs.iter().any(|c| c.kind == ir::CostKind::Running);
    // Components per sample the solver saves: the states and a running cost's quadrature.
    let components = (states + usize::from(running)) as f64;
    if let Some(schedule) = &model.schedule {
        let declared_points = save_points(schedule);
        // The block whose trajectories are the largest; a model without data solves one sample.
        let (samples, times, block_span) = model
            .data
            .iter()
            .zip(blocks)
            .map(|(b, size)| (size.samples.max(1), size.times, b.span))
            .max_by(|a, b| {
                let size =
                    |(n, t, _): &(usize, usize, Span)| *n as f64 * (declared_points + *t as f64);
                size(a).total_cmp(&size(b))
            })
            .unwrap_or((1, 0, schedule.span));
        let points = declared_points + times as f64;
        // Point at the factor that is largest: more samples than points is the data's doing.
        let (span, help) = if samples as f64 > points && samples as f64 >= components {
            (block_span, "use fewer samples")
        } else if components > points {
            (state_span, "use fewer state elements")
        } else {
            (
                schedule.span,
                "save fewer points (`save = DT` or `save = [T, ...]`)",
            )
        };
        items.push(Item {
            what: format!(
                "saved trajectories: {components} values × {samples} samples × {points} saved points × 8 bytes"
            ),
            bytes: components * samples as f64 * points * F64,
            span,
            help,
        });
        let outputs: usize = model.outputs.iter().map(|o| o.shape.len()).sum();
        let reported = (1 + states + outputs) as f64;
        items.push(Item {
            what: format!(
                "the report of one sample's trajectory: {reported} values × {points} saved points × {REPORT_BYTES_PER_VALUE} bytes"
            ),
            bytes: reported * points * REPORT_BYTES_PER_VALUE,
            span: schedule.span,
            help: "save fewer points (`save = DT` or `save = [T, ...]`)",
        });
        if schedule.method.family() == MethodFamily::Stiff
            || schedule.method == ir::Method::ImplicitEuler
        {
            // A dense Jacobian and its LU factors per sample in flight, one per thread.
            let dim = components;
            items.push(Item {
                what: format!(
                    "dense Jacobians of `{}`: 2 × {dim}² values × 8 bytes × {threads} threads",
                    schedule.method.name()
                ),
                bytes: 2.0 * dim * dim * F64 * threads as f64,
                span: schedule.span,
                help: "use an explicit method, or fewer state elements",
            });
        }
    }
    for (block, size) in model.data.iter().zip(blocks) {
        items.push(Item {
            what: format!(
                "data `{}`: {} samples × {} values × 8 bytes{}",
                block.name,
                size.samples,
                size.values,
                if size.file_bytes > 0 {
                    format!(" and its {} bytes of text", size.file_bytes)
                } else {
                    String::new()
                }
            ),
            bytes: size.samples as f64 * size.values * F64 + size.file_bytes as f64,
            span: block.span,
            help: "use fewer samples (`rows = A..B` keeps a range of a file)",
        });
    }
    let copies = model.layer_count() as f64;
    let param_values: f64 = model
        .params
        .iter()
        .map(|p| {
            let copies = match &p.time {
                ir::ParamTime::Constant => 1.0,
                ir::ParamTime::PerLayer => copies,
                ir::ParamTime::Knots(knots) => knots.len() as f64,
            };
            p.shape.len() as f64 * copies
        })
        .sum();
    if let Some(largest) = model.params.iter().max_by_key(|p| p.shape.len()) {
        items.push(Item {
            what: format!(
                "parameters: {param_values} values (every copy) × {PARAM_COPIES} (values, gradient, optimizer moments, best so far) × 8 bytes"
            ),
            bytes: param_values * PARAM_COPIES * F64,
            span: largest.span,
            help: "use smaller or fewer parameters, or fewer layers",
        });
    }
    let nodes = model.tensors.len() as f64;
    items.push(Item {
        what: format!("the compiled model: {nodes} tensor nodes × {BYTES_PER_TENSOR_NODE} bytes"),
        bytes: nodes * BYTES_PER_TENSOR_NODE,
        span: state_span,
        help: "write a smaller model",
    });
    Estimate { items }
}

impl Estimate {
    /// The estimated total in bytes, the process itself included.
    pub fn total(&self) -> f64 {
        BASE_BYTES + self.items.iter().map(|i| i.bytes).sum::<f64>()
    }

    /// The largest item.
    pub fn largest(&self) -> Option<&Item> {
        self.items.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes))
    }

    /// A located error when the estimate exceeds `limit` bytes: at the declaration of the
    /// largest item, with the total, that item's product, and the flag that raises the limit.
    pub fn check(&self, limit: u64) -> Option<Diagnostic> {
        let total = self.total();
        if total <= limit as f64 {
            return None;
        }
        let largest = self.largest()?;
        Some(
            Diagnostic::error(
                largest.span,
                format!(
                    "this model needs an estimated {} of memory, more than the limit of {}; the largest part is {} = {}",
                    format_size(total),
                    format_size(limit as f64),
                    largest.what,
                    format_size(largest.bytes)
                ),
            )
            .with_help(format!(
                "{}, or raise the limit with `--max-memory {}` if the machine has that much",
                largest.help,
                format_size(total * 1.1).replace(' ', "").replace("iB", "").replace('B', "")
            )),
        )
    }
}

/// Bytes in the units a person reads: `512 MiB`, `24.0 GiB`.
pub fn format_size(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses `--max-memory`: bytes, or a number with `K`, `M`, `G` or `T` (powers of 1024,
/// optionally followed by `iB` or `B`): `512M`, `8G`, `1.5GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(upper.len());
    let (number, unit) = upper.split_at(digits_end);
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{trimmed}`: write a size such as 512M or 8G"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{trimmed}` is not a size: write one such as 512M or 8G"))?;
    let bytes = value * scale;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("`{trimmed}` is not a usable memory limit"));
    }
    Ok(bytes as u64)
}

/// The default limit: three quarters of the machine's memory, from the text of
/// `/proc/meminfo` (`MemTotal`), or [`FALLBACK_LIMIT`] where there is none. Three quarters
/// leaves room for the system and the page cache; `--max-memory` overrides it.
pub fn default_limit(meminfo: Option<&str>) -> u64 {
    meminfo
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(FALLBACK_LIMIT, |kib| kib * 1024 / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("1e400").is_err());
    }

    #[test]
    fn the_default_is_three_quarters_of_mem_total() {
        let meminfo = "MemTotal:       24683584 kB\nMemFree:  100 kB\n";
        assert_eq!(default_limit(Some(meminfo)), 24683584 * 1024 / 4 * 3);
        assert_eq!(default_limit(None), FALLBACK_LIMIT);
        assert_eq!(default_limit(Some("nothing here")), FALLBACK_LIMIT);
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(format_size(512.0), "512 B");
        assert_eq!(format_size(1536.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(format_size(24.0 * 1024.0 * 1024.0 * 1024.0), "24 GiB");
    }

    /// The trajectory item is the product the docs give: states × samples × points × 8.
    #[test]
    fn saved_trajectories_are_states_times_samples_times_points() {
        let text = "input u[16]\nstate x[16] = u\ndx/dt = -x\nschedule rk4(t = [0, 1], steps = 999)\ndata train = normal(n = 1000, dim = 16)\n";
        let file = crate::diag::SourceFile::new("m.node", text);
        let (model, diags) = crate::check_source(&file, &Default::default(), "m");
        assert!(!diags.has_errors());
        let blocks: Vec<BlockSize> = model
            .data
            .iter()
            .map(|b| BlockSize::declared(&model, b))
            .collect();
        let estimate = estimate(&model, &blocks, 1);
        let largest = estimate.largest().unwrap();
        assert_eq!(largest.bytes, 16.0 * 1000.0 * 1000.0 * 8.0);
        assert!(largest.what.starts_with("saved trajectories"));
        // 1000 samples and 1000 points: the points are the schedule's doing.
        assert_eq!(
            file.slice(largest.span),
            "schedule rk4(t = [0, 1], steps = 999)"
        );
        let error = estimate.check(100 << 20).unwrap().render(&file);
        assert!(
            error.starts_with("m.node:4:1: error: this model needs an estimated 1"),
            "{error}"
        );
        assert!(error.contains("--max-memory"), "{error}");
        assert!(estimate.check(1 << 30).is_none());
    }
}
