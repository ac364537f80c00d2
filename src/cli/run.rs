//! `nodec run`: compile a model, solve it on its data, and report trajectories, costs, metrics
//! and solver statistics.

use std::path::Path;
use std::time::Instant;

use super::report::{
    DataSummary, RunReport, RunStats, SampleBlock, SampleGroup, SamplesReport, Series,
};
use super::{check_file, write_atomic, Output};
use crate::compile::{FitError, ParamEntry, Params, Program};
use crate::data::{self, Dataset};
use crate::diag::{Diagnostic, Severity, SourceFile, Span};
use crate::ir::{self, Shape};
use crate::sema::Overrides;
use crate::sens::{self, GradientOptions};
use crate::simulate::{self, Bound, Simulation};
use crate::solve::{OptionsError, SolveError, System};
use crate::train;

/// How `run` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Comma-separated values, every saved time.
    Csv,
    /// The JSON object of the spec.
    Json,
    /// One 2-D `f64` array of the CSV's columns (NumPy `.npy`, binary: needs `--out`).
    Npy,
    /// Named arrays (NumPy `.npz`, binary: needs `--out`).
    Npz,
}

impl Format {
    /// The format asked for, else the one `--out`'s extension names (`.csv`, `.json`, `.npy`,
    /// `.npz`), else a table; a binary format without `--out` is an error.
    pub fn resolve(format: Option<Format>, out: Option<&str>) -> Result<Format, String> {
        let by_name = out.and_then(|path| {
            [
                ("csv", Format::Csv),
                ("json", Format::Json),
                ("npy", Format::Npy),
                ("npz", Format::Npz),
            ]
            .into_iter()
            .find(|(ext, _)| super::has_extension(path, ext))
            .map(|(_, f)| f)
        });
        let format = format.or(by_name).unwrap_or(Format::Table);
        if matches!(format, Format::Npy | Format::Npz) && out.is_none() {
            let ext = if format == Format::Npy { "npy" } else { "npz" };
            return Err(format!(
                "--format {ext} writes a binary file: give it with `--out FILE.{ext}`"
            ));
        }
        Ok(format)
    }
}

/// Arguments of `nodec run`.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// The model file.
    pub file: String,
    /// `--set` overrides.
    pub overrides: Overrides,
    /// Seed of random parameter initialisations.
    pub seed: u64,
    /// `--max-memory`: the memory budget in bytes (default: [`super::memory_limit`]).
    pub max_memory: Option<u64>,
    /// A parameter file to load.
    pub params: Option<String>,
    /// `--params-partial`: the file may leave params out.
    pub params_partial: bool,
    /// Output format (`None`: from `--out`'s extension, else a table; see [`Format::resolve`]).
    pub format: Option<Format>,
    /// Write here (atomically) instead of stdout.
    pub out: Option<String>,
    /// Which sample's trajectory to report.
    pub sample: usize,
    /// Also report costates and the Hamiltonian.
    pub costate: bool,
    /// Report every sample's final states, outputs, costs and metrics instead of one trajectory.
    pub all_samples: bool,
    /// Leave wall times out of the report.
    pub no_timings: bool,
    /// `--ensemble SPEC`: solve many parameter sets (see [`super::ensemble`]).
    pub ensemble: Option<String>,
    /// `--members N` of a drawn ensemble.
    pub members: Option<usize>,
}

/// A model compiled with its parameters and data, ready to evaluate.
pub struct Loaded {
    /// The source, for diagnostics.
    pub file: SourceFile,
    /// The prepared IR.
    pub model: ir::Model,
    /// The compiled program.
    pub program: Program,
    /// Parameter values.
    pub params: Params,
    /// Data blocks in declaration order (a model without data gets one empty-input block).
    pub data: Vec<(String, Dataset)>,
    /// Seconds to parse, check, prepare and compile.
    pub compile_seconds: f64,
}

impl Loaded {
    /// The compiled model at the loaded parameters, on `data`.
    pub fn bind<'a>(&'a self, data: &'a Dataset) -> Bound<'a> {
        Bound::new(&self.model, &self.program, &self.params, data)
    }

    /// The block the model trains on (see [`train::training_block`]) and its name.
    pub fn training_block(&self) -> (&str, &Dataset) {
        train::training_block(&self.data).expect("load gives every model at least one data block")
    }
}

/// Reads, checks, compiles a model and loads its parameters and data; errors are rendered.
/// The parameter file must give every parameter.
pub fn load(
    path: &str,
    overrides: &Overrides,
    seed: u64,
    params_file: Option<&str>,
    out: &mut Output,
) -> Option<Loaded> {
    load_mapped(path, overrides, seed, None, params_file, &[], false, out)
}

/// [`load`] with a memory budget (`--max-memory`; `None`: [`super::memory_limit`]), with
/// `--map` renamings of the parameter file (see [`load_params`]), and with `partial`
/// (`--params-partial`), a file that leaves parameters out (they keep their initial values).
#[expect(
    clippy::too_many_arguments,
    reason = "one call per command, each passing its own flags"
)]
pub fn load_mapped(
    path: &str,
    overrides: &Overrides,
    seed: u64,
    max_memory: Option<u64>,
    params_file: Option<&str>,
    maps: &[ParamMap],
    partial: bool,
    out: &mut Output,
) -> Option<Loaded> {
    let started = Instant::now();
    let (file, model) = check_file(path, overrides, max_memory, out)?;
    let limit = super::memory_limit(max_memory);
    let model = crate::prepare_to_run(model);
    let program = Program::compile(&model);
    let compile_seconds = started.elapsed().as_secs_f64();
    let mut params = simulate::initial_params(&model, program.layout(), seed);
    if let Some(params_path) = params_file {
        // Parsed, a JSON number costs several times its text: a file far larger than the
        // model's parameters could need is refused before it is read.
        let limit = (16u64 << 20).max(4 * 64 * program.layout().total as u64);
        if let Ok(meta) = std::fs::metadata(params_path) {
            if meta.len() > limit {
                out.stderr.push_str(&format!(
                    "{params_path}: error: the parameter file has {} bytes, more than the {limit} that the {} parameter values of `{}` could need (4 × 64 bytes each, or 16 MiB); is it the right file?\n",
                    meta.len(),
                    program.layout().total,
                    model.name
                ));
                return None;
            }
        }
        let bytes = match std::fs::read(params_path) {
            Ok(bytes) => bytes,
            Err(e) => {
                out.stderr.push_str(&format!(
                    "{params_path}: error: cannot read the parameter file: {e}\n"
                ));
                return None;
            }
        };
        if let Err(e) = load_param_file(
            &bytes,
            params_path,
            &model,
            &program,
            &mut params,
            maps,
            partial,
        ) {
            match e.span {
                Some(span) => out
                    .stderr
                    .push_str(&Diagnostic::error(span, e.message).render(&file)),
                None => out
                    .stderr
                    .push_str(&format!("{params_path}: error: {}\n", e.message)),
            }
            return None;
        }
    }
    let data = load_data(&file, &model, limit, out)?;
    // Now that the data files are read, their real sizes (a CSV's rows, a series' times).
    let blocks: Vec<_> = data
        .iter()
        .zip(&model.data)
        .map(|((_, dataset), _)| crate::budget::BlockSize::of(dataset, 0))
        .collect();
    let estimate = crate::budget::estimate(&model, &blocks, rayon::current_num_threads());
    if let Some(refusal) = estimate.check(limit) {
        out.stderr.push_str(&refusal.render(&file));
        return None;
    }
    Some(Loaded {
        file,
        model,
        program,
        params,
        data,
        compile_seconds,
    })
}

/// `--map TARGET=SOURCE[LAYER]`: initialise parameter `TARGET` from `SOURCE` of the parameter
/// file, optionally from one layer (copy) of it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamMap {
    /// The model's parameter.
    pub target: String,
    /// The name in the parameter file.
    pub source: String,
    /// One copy of the source (a layer of a `per layer` param), if given.
    pub layer: Option<usize>,
}

/// Parses `TARGET=SOURCE` or `TARGET=SOURCE[LAYER]`.
pub fn parse_param_map(text: &str) -> Result<ParamMap, String> {
    let usage = "expected TARGET=SOURCE or TARGET=SOURCE[LAYER], e.g. `W0=W[0]`";
    let (target, source) = text.split_once('=').ok_or(usage)?;
    let (source, layer) = match source.split_once('[') {
        Some((name, rest)) => {
            let index = rest.strip_suffix(']').ok_or(usage)?;
            let layer = index
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("`{index}` is not a layer index; {usage}"))?;
            (name, Some(layer))
        }
        None => (source, None),
    };
    let (target, source) = (target.trim(), source.trim());
    if target.is_empty() || source.is_empty() {
        return Err(usage.into());
    }
    Ok(ParamMap {
        target: target.into(),
        source: source.into(),
        layer,
    })
}

/// The key of a JSON parameter file that records each parameter's shape: `"$shapes": {PARAM:
/// [sizes]}` beside the values, which stay `{PARAM: value}` (a `$` cannot start a name).
pub const SHAPES_KEY: &str = "$shapes";

/// Why a parameter file could not be loaded: the message, and the parameter's declaration when
/// the file's shape of it disagrees with the model's (the error is then shown there).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamsError {
    /// What is wrong.
    pub message: String,
    /// The declaration of the parameter concerned, for a shape mismatch.
    pub span: Option<crate::diag::Span>,
}

impl From<String> for ParamsError {
    fn from(message: String) -> Self {
        ParamsError {
            message,
            span: None,
        }
    }
}

/// One parameter of a file: its numbers, row-major with copies outermost, and its shape when
/// the file records one (`$shapes`, nested lists, or an `.npz` array).
#[derive(Clone, Debug, PartialEq)]
struct FileValue {
    numbers: Vec<f64>,
    shape: Option<Vec<usize>>,
}

/// `[2, 3]`, `[]`: a shape as the messages show it.
fn shape_text<T: ToString>(shape: &[T]) -> String {
    let sizes: Vec<String> = shape.iter().map(T::to_string).collect();
    format!("[{}]", sizes.join(", "))
}

/// The parameters of a file's bytes: an `.npz` archive (by its zip signature) of one array
/// per parameter, or a JSON object `{PARAM: value}`, where a value is a number, a row-major
/// list (the old form), or nested lists (numpy's `tolist()`), and an optional
/// [`SHAPES_KEY`] gives flat lists their shapes.
fn read_param_file(bytes: &[u8]) -> Result<Vec<(String, FileValue)>, String> {
    if crate::npy::is_zip(bytes) {
        let arrays = crate::npy::read_npz(bytes)?;
        return Ok(arrays
            .into_iter()
            .map(|(name, a)| {
                (
                    name,
                    FileValue {
                        numbers: a.values,
                        shape: Some(a.shape),
                    },
                )
            })
            .collect());
    }
    if bytes.starts_with(crate::npy::NPY_MAGIC) {
        return Err("an .npy file holds one array without a name; save parameters as .npz (`np.savez(\"p.npz\", W=W, b=b)`) or JSON".into());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "neither JSON text nor an .npz archive".to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    // `serde_json` keeps the last of two equal keys: one of the values would be dropped unseen.
    serde::de::DeserializeSeed::deserialize(
        NoDuplicateKeys,
        &mut serde_json::Deserializer::from_str(text),
    )
    .map_err(|e| e.to_string())?;
    let object = value
        .as_object()
        .ok_or("expected one JSON object {\"PARAM\": value, ...}")?;
    let mut shapes = serde_json::Map::new();
    if let Some(v) = object.get(SHAPES_KEY) {
        shapes = v.as_object().cloned().ok_or(format!(
            "`{SHAPES_KEY}` must be an object {{\"PARAM\": [sizes]}}"
        ))?;
    }
    let mut values = Vec::new();
    for (name, v) in object {
        if name == SHAPES_KEY {
            continue;
        }
        if name.starts_with('$') {
            return Err(format!(
                "unknown key `{name}`: the only reserved key is `{SHAPES_KEY}`"
            ));
        }
        let (numbers, nested) = json_numbers(name, v)?;
        let recorded = match shapes.get(name) {
            None => None,
            Some(s) => Some(
                s.as_array()
                    .and_then(|sizes| {
                        sizes
                            .iter()
                            .map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
                            .collect::<Option<Vec<usize>>>()
                    })
                    .ok_or(format!(
                        "`{SHAPES_KEY}` of `{name}` must be a list of sizes, e.g. [2, 3]"
                    ))?,
            ),
        };
        let shape = match (nested, recorded) {
            (Some(n), Some(r)) if n != r => {
                return Err(format!(
                    "`{name}` is nested as {} but `{SHAPES_KEY}` says {}",
                    shape_text(&n),
                    shape_text(&r)
                ))
            }
            (n, r) => n.or(r),
        };
        if let Some(shape) = &shape {
            let count = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
            if count != Some(numbers.len()) {
                return Err(format!(
                    "`{name}` has {} values but its shape {} holds {}",
                    numbers.len(),
                    shape_text(shape),
                    count.map_or("more than can be counted".into(), |c| c.to_string())
                ));
            }
        }
        values.push((name.clone(), FileValue { numbers, shape }));
    }
    if let Some(name) = shapes.keys().find(|k| !object.contains_key(*k)) {
        return Err(format!(
            "`{SHAPES_KEY}` gives a shape for `{name}`, which has no value in the file"
        ));
    }
    Ok(values)
}

/// Walks JSON text and fails on the first object that holds a key twice, with the key and the
/// place of its second occurrence.
struct NoDuplicateKeys;

impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicateKeys {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicateKeys)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice; give each parameter once"
                )));
            }
            map.next_value_seed(NoDuplicateKeys)?;
        }
        Ok(())
    }
}

/// Loads `{PARAM: value}` JSON text into `params`, some or all of them; see
/// [`load_param_file`], which also reads `.npz` archives and locates shape errors.
pub fn load_params(
    text: &str,
    model: &ir::Model,
    program: &Program,
    params: &mut Params,
    maps: &[ParamMap],
) -> Result<(), String> {
    load_param_file(
        text.as_bytes(),
        "the file",
        model,
        program,
        params,
        maps,
        true,
    )
    .map_err(|e| e.message)
}

/// Loads a parameter file (`{PARAM: value}` JSON, number or row-major list with per-layer
/// copies outermost, or an `.npz` archive), checking names, sizes and, where the file records
/// them, shapes: a recorded shape must be the param's (one copy) or the param's after an axis
/// of copies (`[L, ...]`, layers or knots). `file_name` is how messages name the file.
/// A file must give every parameter of the model (a value, or a map's source); with `partial`
/// (`--params-partial`), the parameters it leaves out keep their values.
///
/// `maps` rename (`W0=W`) and pick one layer of a per-layer value (`W0=W[0]`: a trained
/// ResNet's first layer is the initial value of an evolving weight). How a value's copies
/// fill the param's (one copy into every layer, another layer count resampled) is
/// [`ParamEntry::fit_copies`].
pub fn load_param_file(
    bytes: &[u8],
    file_name: &str,
    model: &ir::Model,
    program: &Program,
    params: &mut Params,
    maps: &[ParamMap],
    partial: bool,
) -> Result<(), ParamsError> {
    let values = read_param_file(bytes)?;
    let find = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let layout = program.layout();
    let names: Vec<&str> = layout.entries.iter().map(|e| e.name.as_str()).collect();
    let no_param = |name: &str| {
        let hint = crate::diag::suggest(name, names.iter().copied())
            .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
        format!("the model `{}` has no param `{name}`{hint}", model.name)
    };
    for map in maps {
        if !layout.entries.iter().any(|e| e.name == map.target) {
            return Err(format!("--map {}: {}", map.target, no_param(&map.target)).into());
        }
        if find(&map.source).is_none() {
            let hint = crate::diag::suggest(&map.source, values.iter().map(|(n, _)| n.as_str()))
                .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            return Err(format!(
                "--map {}={}: the file has no `{}`{hint}",
                map.target, map.source, map.source
            )
            .into());
        }
    }
    // Every file name must land somewhere: a param of the same name or a map's source.
    for (name, _) in &values {
        let mapped = maps.iter().any(|m| &m.source == name);
        if !mapped && !names.contains(&name.as_str()) {
            return Err(format!(
                "{}; to load it into another param, add `--map TARGET={name}`",
                no_param(name)
            )
            .into());
        }
    }
    for entry in &layout.entries {
        let map = maps.iter().find(|m| m.target == entry.name);
        let (source, layer) = match map {
            Some(m) => (m.source.as_str(), m.layer),
            None => (entry.name.as_str(), None),
        };
        let Some(v) = find(source) else {
            continue;
        };
        if let Some(shape) = &v.shape {
            let copy = entry.shape.dims();
            let fits = *shape == copy || shape.get(1..) == Some(copy.as_slice());
            if !fits {
                let declared = model.params.iter().find(|p| p.name == entry.name);
                let saved = entry.saved_shape();
                let model_shape = if saved == copy {
                    shape_text(&copy)
                } else {
                    format!(
                        "{} ({} copies of {})",
                        shape_text(&saved),
                        entry.copies,
                        shape_text(&copy)
                    )
                };
                let mut stacked = vec!["N".to_string()];
                stacked.extend(copy.iter().map(usize::to_string));
                let stacked = shape_text(&stacked);
                return Err(ParamsError {
                    message: format!(
                        "`{source}` in `{file_name}` has shape {}, but the model's `{}` has shape {model_shape}; a file may hold one copy {} or copies stacked outermost {stacked}",
                        shape_text(shape),
                        entry.name,
                        shape_text(&copy),
                    ),
                    span: declared.map(|p| p.span),
                });
            }
        }
        let values = fit_copies(&entry.name, source, file_name, &v.numbers, entry, layer).map_err(
            |message| ParamsError {
                message,
                span: model
                    .params
                    .iter()
                    .find(|p| p.name == entry.name)
                    .map(|p| p.span),
            },
        )?;
        if values.iter().any(|x| !x.is_finite()) {
            return Err(ParamsError {
                message: format!("param `{source}` in `{file_name}` holds a non-finite value"),
                span: model
                    .params
                    .iter()
                    .find(|p| p.name == entry.name)
                    .map(|p| p.span),
            });
        }
        params.values_mut()[entry.offset..entry.offset + values.len()].copy_from_slice(&values);
    }
    if !partial {
        let missing: Vec<&str> = layout
            .entries
            .iter()
            .filter(|e| !maps.iter().any(|m| m.target == e.name) && find(&e.name).is_none())
            .map(|e| e.name.as_str())
            .collect();
        if let Some(first) = missing.first() {
            let span = model
                .params
                .iter()
                .find(|p| p.name == *first)
                .map(|p| p.span);
            let missing: Vec<String> = missing.iter().map(|n| format!("`{n}`")).collect();
            let (s, them) = if missing.len() == 1 {
                ("", "it")
            } else {
                ("s", "them")
            };
            let message = format!(
                "`{file_name}` has no value for param{s} {} of the model `{}`; add {them} to the file, or pass `--params-partial` to keep {} initial value{s}",
                missing.join(", "),
                model.name,
                if missing.len() == 1 { "its" } else { "their" },
            );
            return Err(ParamsError { message, span });
        }
    }
    Ok(())
}

/// A JSON value's numbers, row-major, and its shape if it is a nested list (a number and a
/// flat list carry none: the old form, whose shape is the model's).
fn json_numbers(
    name: &str,
    v: &serde_json::Value,
) -> Result<(Vec<f64>, Option<Vec<usize>>), String> {
    use serde_json::Value;
    let not_number = || format!("param `{name}` holds a value that is not a number");
    match v {
        Value::Number(n) => Ok((vec![n.as_f64().unwrap_or(f64::NAN)], None)),
        Value::Array(items) if !items.iter().any(Value::is_array) => {
            let numbers = items
                .iter()
                .map(|x| x.as_f64().ok_or_else(not_number))
                .collect::<Result<_, _>>()?;
            Ok((numbers, None))
        }
        Value::Array(_) => {
            // Nested lists: every list at one depth has the same length, numbers at the bottom.
            let mut shape = Vec::new();
            let mut level = v;
            while let Value::Array(items) = level {
                shape.push(items.len());
                match items.first() {
                    Some(first) => level = first,
                    None => break,
                }
            }
            let mut numbers = Vec::new();
            fn walk(
                v: &Value,
                depth: usize,
                shape: &[usize],
                numbers: &mut Vec<f64>,
            ) -> Result<(), ()> {
                match v {
                    Value::Array(items) if depth < shape.len() && items.len() == shape[depth] => {
                        items
                            .iter()
                            .try_for_each(|x| walk(x, depth + 1, shape, numbers))
                    }
                    Value::Number(n) if depth == shape.len() => {
                        numbers.push(n.as_f64().unwrap_or(f64::NAN));
                        Ok(())
                    }
                    _ => Err(()),
                }
            }
            walk(v, 0, &shape, &mut numbers).map_err(|()| {
                format!("param `{name}` is a ragged nested list: every row must have the same length and hold numbers")
            })?;
            Ok((numbers, Some(shape)))
        }
        _ => Err(format!(
            "param `{name}` must be a number or a list of numbers"
        )),
    }
}

/// The values of every copy of `entry` from a file's `numbers` ([`ParamEntry::fit_copies`]),
/// with the reason rendered when they do not fit.
fn fit_copies(
    target: &str,
    source: &str,
    file_name: &str,
    numbers: &[f64],
    entry: &ParamEntry,
    layer: Option<usize>,
) -> Result<Vec<f64>, String> {
    let (len, copies) = (entry.len().max(1), entry.copies);
    let want = len * copies;
    let takes = || {
        format!(
            "the model's `{target}` takes {want} ({}{})",
            entry.shape,
            if copies > 1 {
                format!(" × {copies} copies")
            } else {
                String::new()
            }
        )
    };
    let count = |n: usize| format!("{n} value{}", if n == 1 { "" } else { "s" });
    entry.fit_copies(numbers, layer).map_err(|e| match e {
        FitError::Ragged { values } => {
            format!(
                "param `{source}` in `{file_name}` has {} but {}",
                count(values),
                takes()
            )
        }
        FitError::NoLayer {
            layer: k,
            copies: source_copies,
        } => format!(
            "`{source}[{k}]`: `{source}` in `{file_name}` has {source_copies} layer{} of {len} values",
            if source_copies == 1 { "" } else { "s" }
        ),
        FitError::Copies {
            values,
            copies: source_copies,
        } => format!(
            "param `{source}` in `{file_name}` has {} ({source_copies} copies of {len}) but {}{}",
            count(values),
            takes(),
            if copies == 1 {
                format!("; pick one layer with `--map {target}={source}[0]`")
            } else {
                String::new()
            }
        ),
    })
}

/// Generates or reads every data block; CSV paths are relative to the model file. A file's
/// columns and times are checked against the model here, before anything is solved.
/// Reads, parses and checks the model's data blocks; a data file larger than the memory
/// budget `limit` is refused before it is read.
fn load_data(
    file: &SourceFile,
    model: &ir::Model,
    limit: u64,
    out: &mut Output,
) -> Option<Vec<(String, Dataset)>> {
    let input_shapes: Vec<Shape> = model.inputs.iter().map(|i| i.shape).collect();
    let mut blocks = Vec::new();
    for block in &model.data {
        let result = match data::file_path(&block.source) {
            None => data::generate(&block.source, &model.pool, &input_shapes),
            Some(rel) => {
                let base = Path::new(&file.name).parent().unwrap_or(Path::new("."));
                let path = base.join(rel);
                let shown = path.display().to_string();
                let cannot_read = |e: std::io::Error| {
                    Diagnostic::error(block.span, format!("cannot read data file `{shown}`: {e}"))
                        .render(file)
                };
                if let Ok(meta) = std::fs::metadata(&path) {
                    if meta.len() > limit {
                        let message = format!(
                            "data file `{shown}` has {} bytes, more than the memory limit of {}",
                            meta.len(),
                            crate::budget::format_size(limit as f64)
                        );
                        out.stderr.push_str(
                            &Diagnostic::error(block.span, message)
                                .with_help("use a smaller file, or raise the limit with `--max-memory SIZE` if the machine has the memory")
                                .render(file),
                        );
                        return None;
                    }
                }
                // A series' `input_file`: read and parsed first, its columns checked.
                let keyed = match data::input_file(&block.source) {
                    None => None,
                    Some(input_rel) => {
                        let input_path = base.join(input_rel);
                        let input_shown = input_path.display().to_string();
                        let text = match std::fs::read_to_string(&input_path) {
                            Ok(text) => text,
                            Err(e) => {
                                out.stderr.push_str(
                                    &Diagnostic::error(
                                        block.span,
                                        format!("cannot read input file `{input_shown}`: {e}"),
                                    )
                                    .render(file),
                                );
                                return None;
                            }
                        };
                        if let Some(d) = data::check_input_columns(&text, block, &input_shown) {
                            out.stderr.push_str(&d.render(file));
                            return None;
                        }
                        match data::parse_input_file(&text, &block.source, &input_shown) {
                            Ok(keyed) => Some(keyed),
                            Err(e) => {
                                out.stderr.push_str(&data_error(&e, block, file));
                                return None;
                            }
                        }
                    }
                };
                let mut csv_text = None;
                let parsed = if super::has_extension(rel, "npy") {
                    match std::fs::read(&path) {
                        Ok(bytes) => match &keyed {
                            Some(k) => {
                                data::parse_npy_with_inputs(&bytes, &block.source, &shown, k)
                            }
                            None => data::parse_npy(&bytes, &block.source, &shown),
                        },
                        Err(e) => {
                            out.stderr.push_str(&cannot_read(e));
                            return None;
                        }
                    }
                } else {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => {
                            if let Some(d) = data::check_columns(&text, block, &shown) {
                                out.stderr.push_str(&d.render(file));
                                return None;
                            }
                            let parsed = match &keyed {
                                Some(k) => {
                                    data::parse_csv_with_inputs(&text, &block.source, &shown, k)
                                }
                                None => data::parse_csv(&text, &block.source, &shown),
                            };
                            csv_text = Some(text);
                            parsed
                        }
                        Err(e) => {
                            out.stderr.push_str(&cannot_read(e));
                            return None;
                        }
                    }
                };
                if let Ok(dataset) = &parsed {
                    let text = csv_text.as_deref();
                    let source = format!("`{shown}`");
                    if let Some(d) =
                        data::check_labels(dataset, block, &model.labels, text, &source)
                    {
                        out.stderr.push_str(&d.render(file));
                        return None;
                    }
                }
                if let (Ok(dataset), Some(schedule)) = (&parsed, &model.schedule) {
                    if let Some(d) = data::check_times(dataset, block, schedule, &shown) {
                        out.stderr.push_str(&d.render(file));
                        if d.severity == Severity::Error {
                            return None;
                        }
                    }
                }
                parsed
            }
        };
        if let (Ok(dataset), None) = (&result, data::file_path(&block.source)) {
            // A generated set's labels, against the classes too (`spirals` has 2).
            let name = format!("the `{}` data", block.name);
            if let Some(d) = data::check_labels(dataset, block, &model.labels, None, &name) {
                out.stderr.push_str(&d.render(file));
                return None;
            }
        }
        match result {
            Ok(dataset) => blocks.push((block.name.clone(), dataset)),
            Err(e) => {
                out.stderr.push_str(&data_error(&e, block, file));
                return None;
            }
        }
    }
    if blocks.is_empty() {
        blocks.push(("none".to_string(), Dataset::samples(1, 0, Vec::new(), None)));
    }
    Some(blocks)
}

/// A data error rendered where it is: at its place in a data file, or else (a column the header
/// lacks, a generated set too large) at the data block, naming the file.
fn data_error(e: &data::DataError, block: &ir::DataBlock, file: &SourceFile) -> String {
    if e.position().is_some() {
        return format!("{e}\n");
    }
    let message = match e.file() {
        Some(f) => format!("`{f}`: {}", e.message()),
        None => format!("data `{}`: {}", block.name, e.message()),
    };
    Diagnostic::error(block.span, message).render(file)
}

/// Renders a solver failure at the line that caused it.
pub fn solve_error(loaded: &Loaded, error: &SolveError, block: &str) -> String {
    let model = &loaded.model;
    let offsets = simulate::state_offsets(model);
    let schedule_span = model.schedule.as_ref().map(|s| s.span).unwrap_or_default();
    let sample_text = |sample: usize| {
        if model.inputs.is_empty() {
            String::new()
        } else {
            format!(" for sample {sample} of `{block}`")
        }
    };
    let (span, message, help) = match error {
        SolveError::NonFinite { t, sample, component } => {
            let state = offsets.windows(2).position(|w| (w[0]..w[1]).contains(component));
            match state {
                Some(i) => {
                    let s = &model.states[i];
                    let elem = component - offsets[i];
                    let name = if s.shape == Shape::Scalar { s.name.clone() } else { format!("{}[{elem}]", s.name) };
                    // The initial state is known: a division by zero there makes the first
                    // step NaN, wherever the solver notices it.
                    let division = loaded
                        .data
                        .iter()
                        .find(|(name, _)| name == block)
                        .and_then(|(_, dataset)| loaded.bind(dataset).zero_division_at_start(*sample));
                    if let Some(division) = division {
                        let denominator = loaded.file.slice(division.denominator_span);
                        let t0 = model.schedule.as_ref().map_or(0.0, |s| s.t0);
                        return Diagnostic::error(
                            division.span,
                            format!("division by zero: `{denominator}` is 0 at the start (t = {t0}){}, and state {name} became infinite or NaN at t = {t}", sample_text(*sample)),
                        )
                        .with_help("guard the denominator (e.g. add a small constant), or start where it is not zero")
                        .render(&loaded.file);
                    }
                    (
                        s.equation_span,
                        format!("state {name} became infinite or NaN at t = {t}{}", sample_text(*sample)),
                        "the solution blows up here; check the equation, the parameters or use a smaller time span",
                    )
                }
                None => (
                    model.costs.iter().find(|c| c.kind == ir::CostKind::Running).map_or(schedule_span, |c| c.span),
                    format!("the running cost became infinite or NaN at t = {t}{}", sample_text(*sample)),
                    "check the running cost's expression",
                ),
            }
        }
        SolveError::StepSizeTooSmall { t, sample } => (
            schedule_span,
            format!("the step size became too small at t = {t}{}", sample_text(*sample)),
            "the solution may blow up, or the problem is stiff: try `rodas4` or `bdf`",
        ),
        SolveError::MaxStepsExceeded { t, sample, max_steps } => (
            schedule_span,
            format!("more than {max_steps} steps were needed, stopped at t = {t}{}", sample_text(*sample)),
            "raise `max_steps`, loosen `rtol`/`atol`, or use a stiff method if the problem is stiff",
        ),
        SolveError::NewtonFailed { t, sample } => (
            schedule_span,
            format!("Newton's method did not converge at t = {t}{}", sample_text(*sample)),
            "use more steps or an adaptive stiff method (`rodas4`, `bdf`)",
        ),
        SolveError::InvalidOptions(OptionsError::NoBackprop { method }) => (
            schedule_span,
            format!("backprop through `{method}` is not supported"),
            "use `--method adjoint` (or `--method forward` for a few parameters)",
        ),
        SolveError::InvalidOptions(OptionsError::EventGradients) => (
            model.events.first().map_or(schedule_span, |e| e.span),
            "the events of this model cannot be differentiated".to_string(),
            "this is a bug in nodec: please report it with the model",
        ),
        SolveError::GrazingEvent { event, t, sample } => {
            let e = &model.events[(*event).min(model.events.len().saturating_sub(1))];
            (
                e.span,
                format!("event `{}` grazes its condition at t = {t}{}: the condition's rate is zero there, so the event time has no derivative", e.name, sample_text(*sample)),
                "move the threshold or the span so that the condition crosses 0 with a nonzero slope",
            )
        }
        SolveError::InvalidOptions(OptionsError::EventsMethod { method }) => (
            schedule_span,
            format!("events need an explicit Runge–Kutta method for now, not `{method}`"),
            "use `euler`, `midpoint`, `heun` or `rk4` (fixed step), or `bosh3`, `dopri5` or `tsit5` (adaptive)",
        ),
        other => (schedule_span, format!("the solver rejected its options: {other}"), "check the schedule's arguments"),
    };
    Diagnostic::error(span, message)
        .with_help(help)
        .render(&loaded.file)
}

/// `nodec run`.
pub fn run(args: &RunArgs, out: &mut Output) -> u8 {
    run_across(args, &crate::dist::Local, out)
}

/// [`run`] with an ensemble's members shared among `ranks` (an MPI run).
pub fn run_across(args: &RunArgs, ranks: &dyn crate::dist::Ranks, out: &mut Output) -> u8 {
    let format = match Format::resolve(args.format, args.out.as_deref()) {
        Ok(format) => format,
        Err(message) => {
            out.stderr.push_str(&format!("error: {message}\n"));
            return 2;
        }
    };
    if !super::outputs_writable([&args.out], out) {
        return super::exit::MODEL;
    }
    let plan = match &args.ensemble {
        None => None,
        Some(spec) => match super::ensemble::Plan::parse(spec, args.members, args.seed) {
            Ok(plan) => Some(plan),
            Err(super::ensemble::SpecError::File(message)) => {
                out.stderr.push_str(&format!("{message}\n"));
                return super::exit::MODEL;
            }
            Err(super::ensemble::SpecError::Usage(message)) => {
                out.stderr
                    .push_str(&format!("error: --ensemble: {message}\n"));
                return super::exit::USAGE;
            }
        },
    };
    let Some(loaded) = load_mapped(
        &args.file,
        &args.overrides,
        args.seed,
        args.max_memory,
        args.params.as_deref(),
        &[],
        args.params_partial,
        out,
    ) else {
        return 1;
    };
    if let Some(plan) = &plan {
        return super::ensemble::run(
            &loaded,
            &args.overrides,
            plan,
            format,
            args.out.as_deref(),
            ranks,
            out,
        );
    }
    if args.all_samples {
        return all_samples(&loaded, args, format, out);
    }
    let model = &loaded.model;
    let has_data = !model.data.is_empty();
    let started = Instant::now();
    let mut summaries = Vec::new();
    let mut first: Option<Simulation> = None;
    for (name, dataset) in &loaded.data {
        if has_data && args.sample >= dataset.n && first.is_none() {
            out.stderr.push_str(&format!(
                "{}: error: --sample {} is out of range: data `{name}` has {} samples\n",
                args.file, args.sample, dataset.n
            ));
            return 1;
        }
        // Only the first block's trajectories are reported; the others need just the final time.
        let save = if first.is_none() {
            None
        } else {
            model.schedule.as_ref().map(|s| vec![s.t1])
        };
        let progress = super::progress::Progress::start("solving");
        let sim = loaded.bind(dataset).simulate(save);
        drop(progress);
        let sim = match sim {
            Ok(sim) => sim,
            Err(e) => {
                out.stderr.push_str(&solve_error(&loaded, &e, name));
                return super::exit::solve(&e);
            }
        };
        if has_data || !model.costs.is_empty() || !model.metrics.is_empty() {
            summaries.push(DataSummary {
                // A model without data reports its costs under no block name.
                name: if has_data {
                    name.clone()
                } else {
                    String::new()
                },
                samples: dataset.n,
                loss: sim.loss,
                costs: sim
                    .costs
                    .iter()
                    .map(|(k, v)| (k.name().to_string(), *v))
                    .collect(),
                metrics: model
                    .metrics
                    .iter()
                    .map(|m| m.name.clone())
                    .zip(sim.metrics.iter().copied())
                    .collect(),
            });
        }
        if first.is_none() {
            first = Some(sim);
        }
    }
    let solve_seconds = started.elapsed().as_secs_f64();
    let Some(sim) = first else { return 1 };
    let sample = if has_data { args.sample } else { 0 };
    let mut report = build_report(&loaded, &sim, sample, has_data, summaries, solve_seconds);
    report.stats.timings = !args.no_timings;
    if args.costate {
        match costate_series(&loaded, sample) {
            Ok(series) => report.costates = series,
            Err(message) => {
                out.stderr.push_str(&message);
                return 1;
            }
        }
    }
    if let Some((bad, span)) = non_finite(&report, &loaded.model) {
        out.stderr
            .push_str(&not_finite_error(&loaded, &args.file, &bad, span));
        return 1;
    }
    let bytes = match format {
        Format::Json => super::report::to_json(&report).into_bytes(),
        Format::Csv => super::report::to_csv(&report).into_bytes(),
        Format::Table => super::report::to_table(&report).into_bytes(),
        Format::Npy => super::report::to_npy(&report),
        Format::Npz => match super::report::to_npz(&report) {
            Ok(bytes) => bytes,
            Err(e) => {
                out.stderr.push_str(&format!("{}: error: {e}\n", args.file));
                return 1;
            }
        },
    };
    emit(args, bytes, out)
}

/// Writes a report to `--out` (atomically) or stdout.
fn emit(args: &RunArgs, bytes: Vec<u8>, out: &mut Output) -> u8 {
    match &args.out {
        Some(path) => {
            if let Err(e) = write_atomic(Path::new(path), &bytes) {
                out.stderr
                    .push_str(&format!("{path}: error: cannot write the report: {e}\n"));
                return 1;
            }
        }
        // `resolve` sends binary formats to a file, so this is text.
        None => out.stdout.push_str(&String::from_utf8_lossy(&bytes)),
    }
    0
}

/// Element labels of a value: `x`, `x[0]`, `W[1, 0]`.
pub(crate) fn element_labels(name: &str, shape: Shape) -> Vec<String> {
    match shape {
        Shape::Scalar => vec![name.to_string()],
        Shape::Vector(n) => (0..n).map(|i| format!("{name}[{i}]")).collect(),
        Shape::Matrix(m, n) => (0..m * n)
            .map(|k| format!("{name}[{}, {}]", k / n, k % n))
            .collect(),
    }
}

/// A named value of `shape` with one value per row (saved time or sample).
fn series(name: &str, shape: Shape, values: Vec<Vec<f64>>) -> Series {
    Series {
        name: name.to_string(),
        len: shape.len(),
        scalar: shape == Shape::Scalar,
        dims: shape.dims(),
        labels: element_labels(name, shape),
        values,
    }
}

/// `nodec run --all-samples`: every data block solved to the final time, and each sample's
/// label, outputs, final states, loss term, cost terms and metrics, blocks in declaration order
/// and samples in order. A model without data has one sample, its one trajectory.
fn all_samples(loaded: &Loaded, args: &RunArgs, format: Format, out: &mut Output) -> u8 {
    let model = &loaded.model;
    let has_data = !model.data.is_empty();
    let offsets = simulate::state_offsets(model);
    let mut blocks = Vec::new();
    for (name, dataset) in &loaded.data {
        let bound = loaded.bind(dataset);
        let sim = match bound.simulate(model.schedule.as_ref().map(|s| vec![s.t1])) {
            Ok(sim) => sim,
            Err(e) => {
                out.stderr.push_str(&solve_error(loaded, &e, name));
                return super::exit::solve(&e);
            }
        };
        let per = bound.per_sample(&sim.solution);
        let n = sim.solution.n_samples;
        let mut columns = Vec::new();
        if let Some(labels) = &dataset.labels {
            let values = labels.iter().map(|l| vec![*l]).collect();
            columns.push((SampleGroup::Label, series("label", Shape::Scalar, values)));
        }
        let outputs_len: usize = model.outputs.iter().map(|o| o.shape.len()).sum();
        let mut at = 0;
        for o in &model.outputs {
            let len = o.shape.len();
            let values = (0..n)
                .map(|s| per.outputs[s * outputs_len + at..][..len].to_vec())
                .collect();
            columns.push((SampleGroup::Output, series(&o.name, o.shape, values)));
            at += len;
        }
        for (i, state) in model.states.iter().enumerate() {
            let values = (0..n)
                .map(|s| sim.solution.final_state(s)[offsets[i]..offsets[i + 1]].to_vec())
                .collect();
            columns.push((SampleGroup::Final, series(&state.name, state.shape, values)));
        }
        if !per.costs.is_empty() {
            // The sample's term of the loss; the penalty belongs to no sample.
            let values = (0..n)
                .map(|s| vec![per.costs.iter().map(|(_, v)| v[s]).sum()])
                .collect();
            columns.push((SampleGroup::Loss, series("loss", Shape::Scalar, values)));
        }
        for (kind, v) in &per.costs {
            let values = v.iter().map(|x| vec![*x]).collect();
            columns.push((
                SampleGroup::Cost,
                series(kind.name(), Shape::Scalar, values),
            ));
        }
        for (m, v) in model.metrics.iter().zip(&per.metrics) {
            let values = v.iter().map(|x| vec![*x]).collect();
            columns.push((SampleGroup::Metric, series(&m.name, Shape::Scalar, values)));
        }
        // A non-finite result is refused, as `run` refuses it for one sample.
        for (group, s) in &columns {
            if let Some(k) = s
                .values
                .iter()
                .position(|v| v.iter().any(|x| !x.is_finite()))
            {
                let label = if group.key() == s.name {
                    s.name.clone()
                } else {
                    format!("{}.{}", group.key(), s.name)
                };
                let of = if has_data {
                    format!(" of sample {k} of `{name}`")
                } else {
                    String::new()
                };
                let span = declaration(model, group.key(), &s.name);
                let bad = format!("`{label}`{of}");
                out.stderr
                    .push_str(&not_finite_error(loaded, &args.file, &bad, span));
                return 1;
            }
        }
        blocks.push(SampleBlock {
            name: if has_data {
                name.clone()
            } else {
                String::new()
            },
            n,
            columns,
        });
    }
    let report = SamplesReport {
        model: model.name.clone(),
        blocks,
    };
    let bytes = match format {
        Format::Json => super::report::samples_to_json(&report).into_bytes(),
        Format::Csv => super::report::samples_to_csv(&report).into_bytes(),
        Format::Table => super::report::samples_to_table(&report).into_bytes(),
        Format::Npy => super::report::samples_to_npy(&report),
        Format::Npz => match super::report::samples_to_npz(&report) {
            Ok(bytes) => bytes,
            Err(e) => {
                out.stderr.push_str(&format!("{}: error: {e}\n", args.file));
                return 1;
            }
        },
    };
    emit(args, bytes, out)
}

pub(crate) fn build_report(
    loaded: &Loaded,
    sim: &Simulation,
    sample: usize,
    has_data: bool,
    data: Vec<DataSummary>,
    solve_seconds: f64,
) -> RunReport {
    let model = &loaded.model;
    let solution = &sim.solution;
    let offsets = simulate::state_offsets(model);
    let states = model
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let values = (0..solution.t.len())
                .map(|k| solution.state(k, sample)[offsets[i]..offsets[i + 1]].to_vec())
                .collect();
            series(&s.name, s.shape, values)
        })
        .collect();
    // Outputs at every saved time for the reported sample, with its inputs bound.
    let program = &loaded.program;
    let mut outputs: Vec<Series> = model
        .outputs
        .iter()
        .map(|o| series(&o.name, o.shape, Vec::new()))
        .collect();
    if !outputs.is_empty() {
        let bound = loaded.bind(&loaded.data[0].1);
        let mut ws = bound.system().workspace(sample..sample + 1);
        let dim = program.dim();
        let mut values = vec![0.0; program.outputs_len()];
        for (k, t) in solution.t.iter().enumerate() {
            let y = &solution.state(k, sample)[..dim];
            bound.outputs(*t, y, &mut values, &mut ws);
            let mut at = 0;
            for o in outputs.iter_mut() {
                o.values.push(values[at..at + o.len].to_vec());
                at += o.len;
            }
        }
    }
    let s = &sim.stats;
    RunReport {
        model: model.name.clone(),
        sample: has_data.then_some(sample),
        t: solution.t.clone(),
        states,
        outputs,
        costates: Vec::new(),
        data,
        events: (!model.events.is_empty()).then(|| {
            solution
                .events
                .get(sample)
                .map(|hits| {
                    hits.iter()
                        .filter_map(|h| {
                            let e = model.events.get(h.event)?;
                            Some((e.name.clone(), h.t, e.terminate))
                        })
                        .collect()
                })
                .unwrap_or_default()
        }),
        stats: RunStats {
            steps: s.steps,
            rejected: s.rejected,
            rhs_evals: s.rhs_evals,
            jac_evals: s.jac_evals,
            lu_decompositions: s.lu_decompositions,
            compile_seconds: loaded.compile_seconds,
            solve_seconds,
            timings: true,
            precision: loaded.program.precision(),
        },
    }
}

/// The costate of every state of `sample` at the saved times, then the Hamiltonian, computed
/// on that sample alone (its costate depends on its own loss term only).
fn costate_series(loaded: &Loaded, sample: usize) -> Result<Vec<Series>, String> {
    let model = &loaded.model;
    if model.costs.is_empty() {
        return Err(format!(
            "{}: error: --costate needs a cost: the costate is the loss's sensitivity to the state\n",
            loaded.file.name
        ));
    }
    let (name, dataset) = &loaded.data[0];
    let one = if (dataset.times.is_some() && dataset.trajectories.is_none()) || dataset.n == 0 {
        dataset.clone()
    } else {
        dataset.select(&[sample])
    };
    let mut options = GradientOptions::new(sens::costate_method(model));
    options.costates = true;
    let g = sens::gradient(&loaded.bind(&one), &options)
        .map_err(|e| super::grad::gradient_error(loaded, &e, name))?;
    let Some(c) = g.costates else {
        return Err(format!(
            "{}: error: the gradient method gave no costates\n",
            loaded.file.name
        ));
    };
    let offsets = simulate::state_offsets(model);
    let dim = loaded.program.dim();
    let mut series: Vec<Series> = model
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let len = s.shape.len();
            Series {
                name: s.name.clone(),
                len,
                scalar: s.shape == Shape::Scalar,
                dims: s.shape.dims(),
                labels: if s.shape == Shape::Scalar {
                    vec![format!("p({})", s.name)]
                } else {
                    (0..len).map(|j| format!("p({}[{j}])", s.name)).collect()
                },
                values: (0..c.t.len())
                    .map(|k| c.p[k * dim + offsets[i]..k * dim + offsets[i + 1]].to_vec())
                    .collect(),
            }
        })
        .collect();
    series.push(Series {
        name: "H".into(),
        len: 1,
        scalar: true,
        dims: vec![],
        labels: vec!["H".into()],
        values: c.hamiltonian.iter().map(|h| vec![*h]).collect(),
    });
    Ok(series)
}

/// The error for a result that is not finite (`bad` names it), at the declaration it comes
/// from when there is one, else at the model file.
pub fn not_finite_error(loaded: &Loaded, path: &str, bad: &str, span: Option<Span>) -> String {
    let message = format!("{bad} is not finite; refusing to print it as a result");
    match span {
        Some(span) => Diagnostic::error(span, message)
            .with_help("it overflowed or is 0/0 or ∞ − ∞: check this expression, the parameters and the data, or use a shorter time span")
            .render(&loaded.file),
        None => format!("{path}: error: {message}\n"),
    }
}

/// Where the reported value `name` of `group` (`states`, `outputs`, `costs`, `metrics`, as
/// the JSON report keys them) is declared: a state's equation, an output, a cost or a metric.
pub fn declaration(model: &ir::Model, group: &str, name: &str) -> Option<Span> {
    match group {
        "states" | "final" => model
            .states
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.equation_span),
        "outputs" => model
            .outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.span),
        "metrics" => model
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.span),
        "costs" => model
            .costs
            .iter()
            .find(|c| c.kind.name() == name)
            .map(|c| c.span),
        "loss" => model.costs.first().map(|c| c.span),
        _ => None,
    }
}

/// The first non-finite reported number, named (with its saved time for a series), and its
/// declaration ([`declaration`]). A non-finite loss is shown at its first non-finite cost.
fn non_finite(report: &RunReport, model: &ir::Model) -> Option<(String, Option<Span>)> {
    let groups = [
        ("states", &report.states),
        ("outputs", &report.outputs),
        ("costates", &report.costates),
    ];
    for (group, series) in groups {
        for s in series {
            if let Some(k) = s
                .values
                .iter()
                .position(|v| v.iter().any(|x| !x.is_finite()))
            {
                let at = report
                    .t
                    .get(k)
                    .map_or(String::new(), |t| format!(" at t = {t}"));
                return Some((
                    format!("`{}`{at}", s.name),
                    declaration(model, group, &s.name),
                ));
            }
        }
    }
    for d in &report.data {
        let cost = d.costs.iter().find(|(_, v)| !v.is_finite());
        if !d.loss.is_finite() {
            let span = cost
                .and_then(|(name, _)| declaration(model, "costs", name))
                .or_else(|| model.costs.first().map(|c| c.span));
            return Some((format!("the loss on `{}`", d.name), span));
        }
        if let Some((name, _)) = cost {
            let span = declaration(model, "costs", name);
            return Some((format!("`{name}` on `{}`", d.name), span));
        }
        if let Some((name, _)) = d.metrics.iter().find(|(_, v)| !v.is_finite()) {
            let span = declaration(model, "metrics", name);
            return Some((format!("`{name}` on `{}`", d.name), span));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceFile;

    fn program(text: &str) -> (ir::Model, Program, Params) {
        let file = SourceFile::new("m.node", text.to_string());
        let (model, diags) = crate::check_source(&file, &Overrides::default(), "model");
        assert!(!diags.has_errors(), "{}", diags.render(&file));
        let model = crate::prepare(model);
        let program = Program::compile(&model);
        let params = simulate::initial_params(&model, program.layout(), 0);
        (model, program, params)
    }

    const MODEL: &str = "model m\n\
        param A[2] per layer = 0\n\
        param c = 0\n\
        state x = 1\n\
        dx/dt = -x\n\
        schedule euler(t = [0, 1], steps = 4)\n";

    fn loaded(json: &str, maps: &[&str]) -> Result<Vec<f64>, String> {
        let (model, program, mut params) = program(MODEL);
        let maps: Vec<ParamMap> = maps.iter().map(|m| parse_param_map(m).unwrap()).collect();
        load_params(json, &model, &program, &mut params, &maps)?;
        Ok(params.values().to_vec())
    }

    #[test]
    fn maps_parse_with_and_without_a_layer() {
        let m = parse_param_map("W0=W[3]").unwrap();
        assert_eq!(
            (m.target.as_str(), m.source.as_str(), m.layer),
            ("W0", "W", Some(3))
        );
        assert_eq!(parse_param_map("a = b").unwrap().layer, None);
        for bad in ["W0", "=W", "W0=", "W0=W[x]", "W0=W[1"] {
            assert!(parse_param_map(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_value_fills_the_params_copies() {
        // The resampling rules are `ParamEntry::fit_copies`'s (tested there); this checks that a
        // file's value reaches them and lands at the param's place.
        assert_eq!(
            loaded(r#"{"A": [1, 2, 3, 4], "c": 5}"#, &[]).unwrap(),
            [1., 2., 1., 2., 3., 4., 3., 4., 5.]
        );
    }

    #[test]
    fn a_map_renames_and_picks_one_layer() {
        let v = loaded(r#"{"W": [1, 2, 3, 4, 5, 6], "c": 7}"#, &["A=W[2]"]).unwrap();
        assert_eq!(v, [5., 6., 5., 6., 5., 6., 5., 6., 7.]);
        // One file name may feed two params; a scalar picks one element as its "layer".
        let v = loaded(r#"{"B": [1, 2, 3, 4, 5, 6, 7, 8]}"#, &["A=B", "c=B[3]"]).unwrap();
        assert_eq!(v, [1., 2., 3., 4., 5., 6., 7., 8., 4.]);
    }

    #[test]
    fn recorded_and_nested_shapes_load_and_are_checked() {
        let expected = [1., 2., 1., 2., 3., 4., 3., 4., 5.];
        let v = loaded(
            r#"{"A": [1, 2, 3, 4], "c": 5, "$shapes": {"A": [2, 2], "c": []}}"#,
            &[],
        );
        assert_eq!(v.unwrap(), expected);
        assert_eq!(
            loaded(r#"{"A": [[1, 2], [3, 4]], "c": 5}"#, &[]).unwrap(),
            expected
        );
        // One copy of a per-layer param, by its shape.
        let v = loaded(r#"{"A": [1, 2], "$shapes": {"A": [2]}}"#, &[]).unwrap();
        assert_eq!(v[..8], [1., 2., 1., 2., 1., 2., 1., 2.]);
        let (model, program, mut params) = program(MODEL);
        let e = load_param_file(
            br#"{"A": [1, 2, 3, 4], "$shapes": {"A": [4]}}"#,
            "p.json",
            &model,
            &program,
            &mut params,
            &[],
            true,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "`A` in `p.json` has shape [4], but the model's `A` has shape [4, 2] (4 copies of [2]); a file may hold one copy [2] or copies stacked outermost [N, 2]"
        );
        assert_eq!(e.span, Some(model.params[0].span));
        for (file, says) in [
            (
                r#"{"A": [1, 2], "$shapes": {"A": [3]}}"#,
                "has 2 values but its shape [3] holds 3",
            ),
            (
                r#"{"$shapes": {"A": [2]}}"#,
                "which has no value in the file",
            ),
            (
                r#"{"A": [1, 2], "$shapes": {"A": "2"}}"#,
                "must be a list of sizes",
            ),
            (r#"{"A": [[1, 2], [3]]}"#, "ragged"),
            (
                r#"{"A": [[1, 2]], "$shapes": {"A": [2]}}"#,
                "nested as [1, 2] but `$shapes` says [2]",
            ),
            (r#"{"$model": "m"}"#, "unknown key `$model`"),
        ] {
            let e = loaded(file, &[]).unwrap_err();
            assert!(e.contains(says), "{file}: {e}");
        }
    }

    #[test]
    fn npz_parameter_files_load_and_npy_is_refused() {
        use crate::npy::{write_npy, write_npz, Array};
        let (model, program, mut params) = program(MODEL);
        let npz = write_npz(&[
            ("A".into(), Array::new(vec![2, 2], vec![1., 2., 3., 4.])),
            ("c".into(), Array::new(vec![], vec![5.])),
        ])
        .unwrap();
        load_param_file(&npz, "p.npz", &model, &program, &mut params, &[], false).unwrap();
        assert_eq!(params.values(), [1., 2., 1., 2., 3., 4., 3., 4., 5.]);
        let npy = write_npy(&Array::new(vec![2], vec![1., 2.]));
        let e =
            load_param_file(&npy, "p.npy", &model, &program, &mut params, &[], true).unwrap_err();
        assert!(
            e.message.contains("save parameters as .npz"),
            "{}",
            e.message
        );
        let e = load_param_file(
            &npz[..40],
            "p.npz",
            &model,
            &program,
            &mut params,
            &[],
            true,
        );
        assert!(e.unwrap_err().message.contains("not a readable .npz"));
    }

    #[test]
    fn bad_names_and_sizes_say_what_to_do() {
        let e = loaded(r#"{"K": [1, 2]}"#, &[]).unwrap_err();
        assert!(
            e.contains("has no param `K`") && e.contains("--map TARGET=K"),
            "{e}"
        );
        let e = loaded(r#"{"A": [1, 2]}"#, &["Q=A"]).unwrap_err();
        assert!(e.contains("--map Q") && e.contains("no param `Q`"), "{e}");
        let e = loaded(r#"{"A": [1, 2, 3]}"#, &[]).unwrap_err();
        assert!(e.contains("has 3 values"), "{e}");
        let e = loaded(r#"{"c": [1, 2]}"#, &[]).unwrap_err();
        assert!(e.contains("`--map c=c[0]`"), "{e}");
        let e = loaded(r#"{"W": [1, 2]}"#, &["A=W[1]"]).unwrap_err();
        assert!(
            e.contains("`W[1]`: `W` in `the file` has 1 layer of 2 values"),
            "{e}"
        );
    }
}
