//! Data sets: the seeded generators and CSV/series parsing, from a model's `data` blocks to a
//! [`Dataset`], plus the mini-batch schedule.
//!
//! `sema` turns each `data NAME = SOURCE(ARGS)` into an [`ir::DataSource`]. For a generator,
//! [`generate`] builds the samples; for `csv(...)` and `series(...)`, `cli` reads the file
//! (relative to the model) and [`parse_csv`] parses its text. Nothing here touches files,
//! the clock or the environment, and every random draw comes from [`crate::rng::Rng`], so
//! the same model and seeds give the same bits everywhere. `train` cuts a data set into
//! mini-batches with [`batches`].
//!
//! `docs/data.md` states exactly what every generator produces.
//!
//! Before a file's rows are parsed, [`check_columns`] checks what a column range with a name
//! selects against the model, and after, [`check_times`] a series' times against the schedule.
//!
//! **API boundary:** [`Dataset`], [`DataError`], [`generate`], [`parse_csv`], [`parse_npy`],
//! [`batches`],
//! [`file_path`], [`check_columns`], [`check_times`] and the generator functions; the CSV
//! reader's internals stay private.

mod array;
mod bind;
mod csv;
mod error;
mod toy;

use std::cell::RefCell;
use std::ops::Range;

pub use bind::{check_columns, check_input_columns, check_labels, check_times};
pub use csv::KeyedInputs;
pub use error::DataError;
pub use toy::{annulus, checkerboard, circles, gaussians, moons, normal, spirals, uniform};

use crate::ir::{self, DataSource, Pool, Shape, ToyKind, Var};
use crate::rng::Rng;

/// The most numbers one data set may hold (2²⁷, 1 GiB of `f64`): a larger `n` or `dim` is an
/// error rather than an allocation failure.
pub const MAX_VALUES: usize = 1 << 27;

/// The samples of one data block.
///
/// A sample set (`csv` and every generator) has `n` samples of `input_dim` inputs each, with
/// an optional label per sample; the series fields are `None`. A `series` block is one
/// trajectory observed at several times: `n = 1`, `input_dim = 0` (or the width of its
/// `input` columns), and `times`/`observed` hold the observations. A `series` with a
/// trajectory column (`traj = COL`) holds `n` trajectories, the samples: `trajectories[i]` is
/// the range of sample `i`'s rows in `times`/`observed`, and its inputs come from its first row.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Number of samples.
    pub n: usize,
    /// Input values per sample: the total size of the model's inputs, in declaration order.
    pub input_dim: usize,
    /// Sample-major inputs, `n × input_dim`: sample `i` is `inputs[i * input_dim..][..input_dim]`.
    pub inputs: Vec<f64>,
    /// One label per sample (a class index as a number, or a regression target), if the source
    /// gives labels.
    pub labels: Option<Vec<f64>>,
    /// A series' observation times, strictly increasing.
    pub times: Option<Vec<f64>>,
    /// A series' observed values, time-major, `times.len() × obs_dim`.
    pub observed: Option<Vec<f64>>,
    /// Observed values per time (0 without a series).
    pub obs_dim: usize,
    /// A series of several trajectories: sample `i`'s rows of `times` and `observed`, ranges
    /// that follow each other; each trajectory's times increase strictly. `None`: every sample
    /// is observed at every time (a single trajectory).
    pub trajectories: Option<Vec<Range<usize>>>,
}

impl Dataset {
    /// A sample set.
    pub fn samples(
        n: usize,
        input_dim: usize,
        inputs: Vec<f64>,
        labels: Option<Vec<f64>>,
    ) -> Dataset {
        debug_assert_eq!(inputs.len(), n * input_dim);
        debug_assert!(labels.as_ref().is_none_or(|l| l.len() == n));
        Dataset {
            n,
            input_dim,
            inputs,
            labels,
            times: None,
            observed: None,
            obs_dim: 0,
            trajectories: None,
        }
    }

    /// A series: one trajectory observed at `times`, `obs_dim` values per time.
    pub fn series(times: Vec<f64>, obs_dim: usize, observed: Vec<f64>) -> Dataset {
        debug_assert_eq!(observed.len(), times.len() * obs_dim);
        Dataset {
            n: 1,
            input_dim: 0,
            inputs: Vec::new(),
            labels: None,
            times: Some(times),
            observed: Some(observed),
            obs_dim,
            trajectories: None,
        }
    }

    /// A series of `trajectories.len()` trajectories (the samples), sample `i` observed at
    /// `times[trajectories[i]]`, with `input_dim` inputs per sample in `inputs`.
    pub fn trajectories(
        times: Vec<f64>,
        obs_dim: usize,
        observed: Vec<f64>,
        trajectories: Vec<Range<usize>>,
        input_dim: usize,
        inputs: Vec<f64>,
    ) -> Dataset {
        debug_assert_eq!(observed.len(), times.len() * obs_dim);
        debug_assert_eq!(inputs.len(), trajectories.len() * input_dim);
        Dataset {
            n: trajectories.len(),
            input_dim,
            inputs,
            labels: None,
            times: Some(times),
            observed: Some(observed),
            obs_dim,
            trajectories: Some(trajectories),
        }
    }

    /// The rows of `times`/`observed` at which sample `i` is observed: its own trajectory's,
    /// or every row when the series is one trajectory.
    pub fn observation_rows(&self, i: usize) -> Range<usize> {
        match &self.trajectories {
            Some(t) => t.get(i).cloned().unwrap_or(0..0),
            None => 0..self.times.as_ref().map_or(0, Vec::len),
        }
    }

    /// The row of sample `i`'s observation at time `t`, if it has one.
    pub fn observation_at(&self, i: usize, t: f64) -> Option<usize> {
        let times = self.times.as_ref()?;
        let rows = self.observation_rows(i);
        let start = rows.start;
        times[rows]
            .binary_search_by(|s| s.total_cmp(&t))
            .ok()
            .map(|k| start + k)
    }

    /// Sample `i`'s inputs.
    pub fn input(&self, i: usize) -> &[f64] {
        &self.inputs[i * self.input_dim..(i + 1) * self.input_dim]
    }

    /// Sample `i`'s label, if the set has labels.
    pub fn label(&self, i: usize) -> Option<f64> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// The samples at `indices`, in that order (a mini-batch, or a row selection); series
    /// fields are copied unchanged, except that a series of trajectories keeps those
    /// trajectories' rows.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut inputs = Vec::with_capacity(indices.len() * self.input_dim);
        for &i in indices {
            inputs.extend_from_slice(self.input(i));
        }
        if let (Some(ranges), Some(times), Some(observed)) =
            (&self.trajectories, &self.times, &self.observed)
        {
            let d = self.obs_dim;
            let (mut t, mut o, mut kept) = (Vec::new(), Vec::new(), Vec::new());
            for &i in indices {
                let r = ranges[i].clone();
                let start = t.len();
                t.extend_from_slice(&times[r.clone()]);
                o.extend_from_slice(&observed[r.start * d..r.end * d]);
                kept.push(start..t.len());
            }
            return Dataset::trajectories(t, d, o, kept, self.input_dim, inputs);
        }
        Dataset {
            n: indices.len(),
            input_dim: self.input_dim,
            inputs,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            times: self.times.clone(),
            observed: self.observed.clone(),
            obs_dim: self.obs_dim,
            trajectories: None,
        }
    }
}

/// The path of a file source (`csv` or `series`), relative to the model file; `None` for a
/// generator. `cli` reads it and passes the text to [`parse_csv`].
pub fn file_path(source: &DataSource) -> Option<&str> {
    match source {
        DataSource::Csv { path, .. } | DataSource::Series { path, .. } => Some(path),
        _ => None,
    }
}

fn invalid(source: &'static str, message: impl Into<String>) -> DataError {
    DataError::InvalidArgument {
        source,
        message: message.into(),
    }
}

fn check_size(source: &'static str, n: usize, dim: usize) -> Result<(), DataError> {
    match n.checked_mul(dim) {
        Some(v) if v <= MAX_VALUES => Ok(()),
        _ => Err(invalid(
            source,
            format!("{n} samples of {dim} values exceed the limit of {MAX_VALUES} numbers"),
        )),
    }
}

/// Builds the samples of a generated source (a toy set, `normal` or `uniform`).
///
/// `input_shapes` are the shapes of the model's `input` declarations in declaration order. Only
/// `uniform(..., label = EXPR)` needs them: `EXPR` reads `Var::Input { input, elem }`, which is
/// sample element `offset(input) + elem`, where `offset(input)` is the total size of the inputs
/// declared before it (so with `input a[2]` and `input b`, `b` is element 2 of each sample).
/// Their total size must equal `dim`. The label is evaluated with [`ir::eval`] per sample and
/// must be finite.
///
/// A file source is an error ([`DataError::WrongSource`]): use [`parse_csv`].
pub fn generate(
    source: &DataSource,
    pool: &Pool,
    input_shapes: &[Shape],
) -> Result<Dataset, DataError> {
    match source {
        DataSource::Toy {
            kind,
            n,
            noise,
            seed,
            factor,
        } => {
            let name = match kind {
                ToyKind::Circles => "circles",
                ToyKind::Moons => "moons",
                ToyKind::Spirals => "spirals",
                ToyKind::Gaussians => "gaussians",
                ToyKind::Checkerboard => "checkerboard",
                ToyKind::Annulus => "annulus",
            };
            if !(noise.is_finite() && *noise >= 0.0) {
                return Err(invalid(
                    name,
                    format!("`noise` must be finite and not negative, found {noise}"),
                ));
            }
            check_size(name, *n, 2)?;
            Ok(match kind {
                ToyKind::Circles => {
                    // scikit-learn validates factor in [0, 1).
                    if !(0.0..1.0).contains(factor) {
                        return Err(invalid(
                            name,
                            format!("`factor` must be in [0, 1), found {factor}"),
                        ));
                    }
                    circles(*n, *noise, *seed, *factor)
                }
                ToyKind::Moons => moons(*n, *noise, *seed),
                ToyKind::Spirals => spirals(*n, *noise, *seed),
                ToyKind::Gaussians => gaussians(*n, *noise, *seed),
                ToyKind::Checkerboard => checkerboard(*n, *noise, *seed),
                ToyKind::Annulus => annulus(*n, *noise, *seed),
            })
        }
        DataSource::Normal {
            n,
            dim,
            seed,
            mean,
            std,
        } => {
            if mean.len() != *dim {
                return Err(invalid(
                    "normal",
                    format!("`mean` has {} values but `dim` is {dim}", mean.len()),
                ));
            }
            if !(std.is_finite() && *std >= 0.0) || mean.iter().any(|m| !m.is_finite()) {
                return Err(invalid(
                    "normal",
                    "`mean` and `std` must be finite and `std` not negative",
                ));
            }
            check_size("normal", *n, *dim)?;
            Ok(normal(*n, *dim, *seed, mean, *std))
        }
        DataSource::Uniform {
            n,
            dim,
            lo,
            hi,
            seed,
            label,
        } => {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(invalid(
                    "uniform",
                    format!("needs finite lo < hi, found {lo} and {hi}"),
                ));
            }
            check_size("uniform", *n, *dim)?;
            let mut data = uniform(*n, *dim, *lo, *hi, *seed);
            if let Some(label) = label {
                data.labels = Some(eval_labels(&data, *label, pool, input_shapes)?);
            }
            Ok(data)
        }
        DataSource::Csv { .. } | DataSource::Series { .. } => Err(DataError::WrongSource {
            expected: "a generated data source (csv and series files are read with parse_csv)",
        }),
    }
}

/// `uniform`'s label of every sample; see [`generate`].
fn eval_labels(
    data: &Dataset,
    label: ir::ExprId,
    pool: &Pool,
    input_shapes: &[Shape],
) -> Result<Vec<f64>, DataError> {
    let mut offsets = Vec::with_capacity(input_shapes.len());
    let mut width = 0;
    for s in input_shapes {
        offsets.push(width);
        width += s.len();
    }
    if width != data.input_dim {
        return Err(DataError::InputWidth {
            dim: data.input_dim,
            width,
        });
    }
    let problem: RefCell<Option<DataError>> = RefCell::new(None);
    let mut labels = Vec::with_capacity(data.n);
    for i in 0..data.n {
        let sample = data.input(i);
        let value_of = |var: Var| -> f64 {
            let found = match var {
                Var::Input { input, elem } => input_shapes
                    .get(input as usize)
                    .filter(|s| (elem as usize) < s.len())
                    .map(|_| sample[offsets[input as usize] + elem as usize])
                    .ok_or(DataError::LabelInput { input, elem }),
                other => Err(DataError::LabelVariable {
                    var: format!("{other:?}"),
                }),
            };
            found.unwrap_or_else(|e| {
                problem.borrow_mut().get_or_insert(e);
                f64::NAN
            })
        };
        let value = ir::eval(pool, &[label], &value_of)[0];
        if let Some(e) = problem.borrow_mut().take() {
            return Err(e);
        }
        if !value.is_finite() {
            return Err(DataError::NonFiniteLabel { sample: i, value });
        }
        labels.push(value);
    }
    Ok(labels)
}

/// Parses the text of a `csv(...)` or `series(...)` file (read by `cli`); `file_name` is how
/// errors name the file.
///
/// For `csv`: the input columns `start..end` (end exclusive, by index or header name; a name
/// range `"a".."b"` also excludes `b`) become each row's inputs and the `label` column its
/// label. `shuffle = SEED` permutes the data rows with [`Rng::new`]`(SEED)`'s
/// [`Rng::permutation`] (Fisher–Yates) *before* `rows = A..B` keeps positions `A..B` of that
/// order, so blocks that share a seed and take disjoint ranges are disjoint. `rows` must lie
/// within the data rows (the header is not a row).
///
/// For `series`: the `t` column gives the times, which must increase strictly, and the
/// `values` columns the observations at each time. With `traj = COL`, each distinct value of
/// that column is one trajectory (a sample), in order of first appearance, whose times must
/// increase strictly within it (`rows = A..B` keeps file rows before they are grouped); with
/// `input = A..B`, each trajectory's inputs are its first row's, the same on its other rows.
///
/// The format, header detection and what counts as an error are described in the `csv`
/// submodule docs and `docs/data.md`; every error names the file, and a cell's error its line
/// and column.
///
/// A series with `input_file` takes its inputs from that file: read it with
/// [`parse_input_file`] and pass it to [`parse_csv_with_inputs`]; here it is an error.
pub fn parse_csv(text: &str, source: &DataSource, file_name: &str) -> Result<Dataset, DataError> {
    without_input_file(source)?;
    csv::parse(text, source, file_name, None)
}

/// [`parse_csv`] for a series whose `input_file` [`parse_input_file`] has read: each
/// trajectory's inputs are its row there, and a trajectory without one is an error at its first
/// row.
pub fn parse_csv_with_inputs(
    text: &str,
    source: &DataSource,
    file_name: &str,
    inputs: &KeyedInputs,
) -> Result<Dataset, DataError> {
    csv::parse(text, source, file_name, Some(inputs))
}

/// The `input_file` of a series with one, relative to the model file.
pub fn input_file(source: &DataSource) -> Option<&str> {
    match source {
        DataSource::Series {
            input_file: Some(f),
            ..
        } => Some(f),
        _ => None,
    }
}

/// Parses the CSV text of a series' `input_file` (read by `cli`): one row per trajectory, whose
/// trajectory column (the series' `traj`, by name in the header or by index) holds the key and
/// whose `input` columns the trajectory's inputs. Keys are compared as text (for an `.npy`
/// series, the number as `{}` writes it: `1`, `2.5`); a key on two rows is an error at the
/// second, and rows whose key no trajectory has are not used (the series may keep a window of
/// its trajectories with `rows`).
pub fn parse_input_file(
    text: &str,
    source: &DataSource,
    file_name: &str,
) -> Result<KeyedInputs, DataError> {
    match source {
        DataSource::Series {
            traj: Some(key),
            input: Some(input),
            input_file: Some(_),
            ..
        } => csv::keyed_inputs(text, key, input, file_name),
        _ => Err(DataError::WrongSource {
            expected: "a `series` with `traj`, `input` and `input_file`",
        }),
    }
}

fn without_input_file(source: &DataSource) -> Result<(), DataError> {
    match input_file(source) {
        Some(_) => Err(DataError::WrongSource {
            expected: "the inputs of the series' `input_file`, read by `parse_input_file`",
        }),
        None => Ok(()),
    }
}

/// Parses the bytes of a `csv(...)` or `series(...)` file whose name ends in `.npy` (read by
/// `cli`): a NumPy array of rows × columns (a 1-D array is one column) whose columns the block
/// selects by index, as [`parse_csv`] does for CSV text. Errors name the file, and a value's
/// row and column.
pub fn parse_npy(bytes: &[u8], source: &DataSource, file_name: &str) -> Result<Dataset, DataError> {
    without_input_file(source)?;
    array::parse(bytes, source, file_name, None)
}

/// [`parse_npy`] for a series whose `input_file` [`parse_input_file`] has read.
pub fn parse_npy_with_inputs(
    bytes: &[u8],
    source: &DataSource,
    file_name: &str,
    inputs: &KeyedInputs,
) -> Result<Dataset, DataError> {
    array::parse(bytes, source, file_name, Some(inputs))
}

/// One epoch's mini-batches: sample indices, each batch in drawing order.
///
/// With `batch = Some(b)` and `0 < b < n`, the epoch is the permutation
/// [`Rng::permutation`]`(n)` cut into consecutive batches of `b`; the last batch holds the
/// remaining `n mod b` samples when `b` does not divide `n` (it is kept, not dropped, so every
/// sample is seen once per epoch). `None`, `Some(0)` or `b ≥ n` is the full batch `0..n` in
/// order, and draws nothing. `n = 0` gives no batches. Call it once per epoch with the same
/// generator: each call continues its stream.
pub fn batches(n: usize, batch: Option<usize>, rng: &mut Rng) -> Vec<Vec<usize>> {
    if n == 0 {
        return Vec::new();
    }
    match batch {
        Some(b) if b > 0 && b < n => rng
            .permutation(n)
            .chunks(b)
            .map(<[usize]>::to_vec)
            .collect(),
        _ => vec![(0..n).collect()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_sample_once() {
        let mut rng = Rng::new(3);
        let epoch = batches(10, Some(4), &mut rng);
        assert_eq!(epoch.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = epoch.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        // The next epoch is a different permutation from the same stream.
        assert_ne!(batches(10, Some(4), &mut rng), epoch);
        // Deterministic from the seed.
        assert_eq!(batches(10, Some(4), &mut Rng::new(3)), epoch);
    }

    #[test]
    fn full_batch_draws_nothing() {
        let mut rng = Rng::new(3);
        let before = rng.state();
        assert_eq!(batches(3, None, &mut rng), [[0, 1, 2]]);
        assert_eq!(batches(3, Some(3), &mut rng), [[0, 1, 2]]);
        assert_eq!(batches(3, Some(0), &mut rng), [[0, 1, 2]]);
        assert!(batches(0, Some(2), &mut rng).is_empty());
        assert_eq!(rng.state(), before);
    }

    #[test]
    fn select_keeps_rows_and_labels_together() {
        let d = Dataset::samples(
            3,
            2,
            vec![0., 1., 10., 11., 20., 21.],
            Some(vec![0., 1., 2.]),
        );
        let s = d.select(&[2, 0]);
        assert_eq!(s.n, 2);
        assert_eq!(s.inputs, [20., 21., 0., 1.]);
        assert_eq!(s.labels, Some(vec![2., 0.]));
    }

    #[test]
    fn generate_rejects_bad_arguments() {
        let pool = Pool::new();
        let toy = |kind, noise, factor| DataSource::Toy {
            kind,
            n: 4,
            noise,
            seed: 0,
            factor,
        };
        assert!(generate(&toy(ToyKind::Circles, 0.0, 1.0), &pool, &[]).is_err());
        assert!(generate(&toy(ToyKind::Moons, -1.0, 0.5), &pool, &[]).is_err());
        assert!(generate(&toy(ToyKind::Moons, f64::NAN, 0.5), &pool, &[]).is_err());
        let huge = DataSource::Normal {
            n: usize::MAX,
            dim: 2,
            seed: 0,
            mean: vec![0.0; 2],
            std: 1.0,
        };
        assert!(matches!(
            generate(&huge, &pool, &[]),
            Err(DataError::InvalidArgument { .. })
        ));
        let csv = DataSource::Series {
            path: "x.csv".into(),
            t: ir::Column::Index(0),
            values: (ir::Column::Index(1), ir::Column::Index(2)),
            rows: None,
            traj: None,
            input: None,
            input_file: None,
        };
        assert!(matches!(
            generate(&csv, &pool, &[]),
            Err(DataError::WrongSource { .. })
        ));
        assert_eq!(file_path(&csv), Some("x.csv"));
    }
}
