//! `nodec plot`: evaluates a model (solves, grids of inputs, costs on a plane) into a
//! [`Figure`] and writes it as SVG or PNG. What each kind shows, and which kind `auto` picks,
//! is [`HELP`] and the `Kind` docs; drawing is `crate::plot`'s.

use std::path::Path;

use super::run::{self, Loaded};
use super::{write_atomic, Output};
use crate::data::Dataset;
use crate::ir::{CostKind, Shape};
use crate::plot::{self, Color, ColorMap, Figure, Heat, Line, Panel, Points};
use crate::sema::Overrides;
use crate::simulate;

/// The end of `nodec plot --help`: which kind `auto` picks, and examples.
pub const HELP: &str = "Kind auto picks the first that fits:
  training      if --log is given
  decision      a classifier: a `label` and a 2-value input
  density       a flow: a 2-value input, no label, states a 2-vector and a scalar (its
                log-density), and a terminal cost (its negative log-likelihood)
  trajectories  another model with a 2-value input and a running cost
  grid          any other model with a 2-value input
  phase         states with 2 or 3 components in all
  series        otherwise

A trained classifier's regions: `nodec train` it with `--out p.json --log log.csv`, then
`nodec plot` it with `--params p.json --out regions.png` (and `--log log.csv` for its curves).

Example:
  nodec plot models/lorenz.node --vars x,y,z --out butterfly.png";

/// What to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Pick one from the model (see the rule below).
    Auto,
    /// States and outputs against time, for the first sample.
    Series,
    /// A phase portrait of two or three state components (--vars), 3-D for three.
    Phase,
    /// A classifier's decision regions over a grid of its 2-D input, with the data by label.
    Decision,
    /// A flow's density exp(−terminal cost) over a grid of its 2-D input, with data samples.
    Density,
    /// Sample trajectories over a heat map of the running cost (what the model penalises).
    Trajectories,
    /// How the flow moves a grid of its 2-D input plane (the grid lines' images at the end).
    Grid,
    /// Training curves from a `nodec train --log` file.
    Training,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Auto => "auto",
            Kind::Series => "series",
            Kind::Phase => "phase",
            Kind::Decision => "decision",
            Kind::Density => "density",
            Kind::Trajectories => "trajectories",
            Kind::Grid => "grid",
            Kind::Training => "training",
        }
    }
}

/// Arguments of `nodec plot`.
#[derive(Clone, Debug)]
pub struct PlotArgs {
    /// The model file.
    pub file: String,
    /// `--set` overrides.
    pub overrides: Overrides,
    /// Seed of random parameter initialisations.
    pub seed: u64,
    /// `--max-memory` (`None`: the default limit).
    pub max_memory: Option<u64>,
    /// A parameter file to load (all params).
    pub params: Option<String>,
    /// The picture's path (`.svg` or `.png`); default `<model stem>-<kind>.svg`.
    pub out: Option<String>,
    /// What to draw.
    pub kind: Kind,
    /// The variables of a phase portrait, trajectories or grid (element labels as `nodec run`
    /// prints them: `x`, `z[0]`), or the series to show.
    pub vars: Option<Vec<String>>,
    /// A training log (`nodec train --log`).
    pub log: Option<String>,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

/// Parses `--size WxH`.
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let usage = "expected WIDTHxHEIGHT in pixels, e.g. 800x600";
    let (w, h) = text.split_once(['x', 'X']).ok_or(usage)?;
    let (w, h) = (
        w.trim().parse::<u32>().map_err(|_| usage)?,
        h.trim().parse::<u32>().map_err(|_| usage)?,
    );
    const RANGE: std::ops::RangeInclusive<u32> = 120..=8000;
    if !RANGE.contains(&w) || !RANGE.contains(&h) {
        return Err(format!(
            "{w}x{h} is outside {}..={} pixels a side",
            RANGE.start(),
            RANGE.end()
        ));
    }
    Ok((w, h))
}

/// The names of `--vars`, one argument (clap would read a `Vec` as repeated arguments).
#[derive(Clone, Debug, PartialEq)]
pub struct VarList(pub Vec<String>);

/// Parses `--vars A,B[,C]`.
pub fn parse_vars(text: &str) -> Result<VarList, String> {
    let vars: Vec<String> = text.split(',').map(|v| v.trim().to_string()).collect();
    if vars.iter().any(|v| v.is_empty()) {
        return Err("expected names separated by commas, e.g. x,y or z[0],z[1]".into());
    }
    Ok(VarList(vars))
}

/// A failure: the message (rendered) and the exit code.
struct Failed(String, u8);

impl Failed {
    fn usage(message: String) -> Failed {
        Failed(format!("error: {message}\n"), super::exit::USAGE)
    }
}

/// `nodec plot`.
pub fn plot(args: &PlotArgs, out: &mut Output) -> u8 {
    match plot_inner(args, out) {
        Ok(()) => super::exit::OK,
        Err(Failed(message, code)) => {
            out.stderr.push_str(&message);
            code
        }
    }
}

fn plot_inner(args: &PlotArgs, out: &mut Output) -> Result<(), Failed> {
    let format = match &args.out {
        Some(path) if super::has_extension(path, "png") => plot::Format::Png,
        Some(path) if super::has_extension(path, "svg") => plot::Format::Svg,
        Some(path) => {
            return Err(Failed::usage(format!(
                "--out `{path}`: a picture is written as .svg or .png; name the file so"
            )))
        }
        None => plot::Format::Svg,
    };
    if args.log.is_some() && !matches!(args.kind, Kind::Auto | Kind::Training) {
        return Err(Failed::usage(format!(
            "--log is read by --kind training, not --kind {}",
            args.kind.name()
        )));
    }
    if args.kind == Kind::Training && args.log.is_none() {
        return Err(Failed::usage(
            "--kind training draws a training log: give it with --log LOG.csv (from `nodec train --log`)".into(),
        ));
    }
    if let Some(path) = &args.out {
        if let Err(e) = super::check_output(Path::new(path)) {
            return Err(Failed(format!("{path}: error: {e}\n"), super::exit::MODEL));
        }
    }
    let Some(loaded) = run::load_mapped(
        &args.file,
        &args.overrides,
        args.seed,
        args.max_memory,
        args.params.as_deref(),
        &[],
        false,
        out,
    ) else {
        return Err(Failed(String::new(), super::exit::MODEL));
    };
    let kind = match args.kind {
        Kind::Auto if args.log.is_some() => Kind::Training,
        Kind::Auto => auto_kind(&loaded),
        kind => kind,
    };
    let out_path = args.out.clone().unwrap_or_else(|| {
        let stem = Path::new(&args.file)
            .file_stem()
            .map_or("model".to_string(), |s| s.to_string_lossy().into_owned());
        format!("{stem}-{}.svg", kind.name())
    });
    if args.out.is_none() {
        if let Err(e) = super::check_output(Path::new(&out_path)) {
            return Err(Failed(
                format!("{out_path}: error: {e}\n"),
                super::exit::MODEL,
            ));
        }
    }
    let picture = Picture {
        loaded: &loaded,
        args,
        cells: heat_cells(args.size),
    };
    let figure = match kind {
        Kind::Auto => unreachable!("auto is resolved above"),
        Kind::Series => picture.series()?,
        Kind::Phase => picture.phase()?,
        Kind::Decision => picture.decision()?,
        Kind::Density => picture.density()?,
        Kind::Trajectories => picture.trajectories()?,
        Kind::Grid => picture.grid()?,
        Kind::Training => training(args.log.as_deref().unwrap_or_default(), &loaded)?,
    };
    let bytes = plot::render(&figure, format, args.size.0, args.size.1)
        .map_err(|e| Failed(format!("{out_path}: error: {e}\n"), super::exit::MODEL))?;
    write_atomic(Path::new(&out_path), &bytes).map_err(|e| {
        Failed(
            format!("{out_path}: error: cannot write the picture: {e}\n"),
            super::exit::MODEL,
        )
    })
}

/// Heat-map cells across: about one per 7 pixels, so that a cell is near the size of a
/// pixel block a reader sees, bounded to keep the solves quick.
fn heat_cells(size: (u32, u32)) -> usize {
    (size.0.min(size.1) as usize / 7).clamp(16, 110)
}

/// The size of the model's inputs, all concatenated.
fn input_len(loaded: &Loaded) -> usize {
    loaded.model.inputs.iter().map(|i| i.shape.len()).sum()
}

fn is_classifier(loaded: &Loaded) -> bool {
    !loaded.model.labels.is_empty() && input_len(loaded) == 2
}

/// A flow: a 2-value input, no label, and states a 2-vector and a scalar (the log-density).
fn is_flow(loaded: &Loaded) -> bool {
    let m = &loaded.model;
    let shapes: Vec<Shape> = m.states.iter().map(|s| s.shape).collect();
    m.labels.is_empty()
        && input_len(loaded) == 2
        && shapes.len() == 2
        && shapes.contains(&Shape::Vector(2))
        && shapes.contains(&Shape::Scalar)
}

fn has_cost(loaded: &Loaded, kind: CostKind) -> bool {
    loaded.model.costs.iter().any(|c| c.kind == kind)
}

/// The rule [`HELP`] states.
fn auto_kind(loaded: &Loaded) -> Kind {
    let components = loaded.program.dim();
    if is_classifier(loaded) {
        Kind::Decision
    } else if is_flow(loaded) && has_cost(loaded, CostKind::Terminal) {
        Kind::Density
    } else if input_len(loaded) == 2 && has_cost(loaded, CostKind::Running) {
        Kind::Trajectories
    } else if input_len(loaded) == 2 {
        Kind::Grid
    } else if (2..=3).contains(&components) {
        Kind::Phase
    } else {
        Kind::Series
    }
}

/// One plottable scalar: a state or output element and where to read it.
struct Var {
    label: String,
    /// The component of the state vector, or of the outputs for an output.
    index: usize,
    output: bool,
}

/// The model's state elements (and with `outputs`, its output elements), labelled as `nodec
/// run` labels them.
fn variables(loaded: &Loaded, outputs: bool) -> Vec<Var> {
    let model = &loaded.model;
    let states = model.states.iter().map(|s| (s.name.as_str(), s.shape));
    let mut vars = numbered(states, false);
    if outputs {
        let outs = model.outputs.iter().map(|o| (o.name.as_str(), o.shape));
        vars.extend(numbered(outs, true));
    }
    vars
}

/// The element labels of a group of values (states, or outputs), numbered within the group.
fn numbered<'a>(values: impl Iterator<Item = (&'a str, Shape)>, output: bool) -> Vec<Var> {
    values
        .flat_map(|(name, shape)| run::element_labels(name, shape))
        .enumerate()
        .map(|(index, label)| Var {
            label,
            index,
            output,
        })
        .collect()
}

/// The `--vars` asked for, checked against the model's, or `default` of them.
fn chosen<'v>(
    args: &PlotArgs,
    vars: &'v [Var],
    default: usize,
    allowed: std::ops::RangeInclusive<usize>,
    what: &str,
) -> Result<Vec<&'v Var>, Failed> {
    let names = vars.iter().map(|v| v.label.as_str());
    let list = || names.clone().collect::<Vec<_>>().join(", ");
    let picked: Vec<&Var> = match &args.vars {
        Some(asked) => {
            let mut picked = Vec::new();
            for name in asked {
                match vars.iter().find(|v| &v.label == name) {
                    Some(v) => picked.push(v),
                    None => {
                        let hint = crate::diag::suggest(name, names.clone())
                            .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                        return Err(Failed::usage(format!(
                            "--vars: `{}` has no {what} `{name}`{hint} (it has: {})",
                            args.file,
                            list()
                        )));
                    }
                }
            }
            picked
        }
        None => vars.iter().take(default).collect(),
    };
    if !allowed.contains(&picked.len()) {
        let (lo, hi) = (allowed.start(), allowed.end());
        let wanted = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(Failed::usage(format!(
            "this plot needs {wanted} variables, and `{}` gives {} ({}): choose with --vars from: {}",
            args.file,
            picked.len(),
            picked
                .iter()
                .map(|v| v.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            list()
        )));
    }
    Ok(picked)
}

/// What every kind reads.
struct Picture<'a> {
    loaded: &'a Loaded,
    args: &'a PlotArgs,
    /// Heat-map cells across (and up).
    cells: usize,
}

/// A kind that does not fit the model: a usage error naming what the kind needs.
fn misfit(args: &PlotArgs, kind: Kind, needs: &str) -> Failed {
    Failed::usage(format!(
        "--kind {} needs {needs}; `{}` is not one (--kind auto picks a kind that fits)",
        kind.name(),
        args.file
    ))
}

impl Picture<'_> {
    fn model_name(&self) -> &str {
        &self.loaded.model.name
    }

    /// Solves `data` saving at `save` (`None`: the schedule's saves).
    fn solve(
        &self,
        data: &Dataset,
        block: &str,
        save: Option<Vec<f64>>,
    ) -> Result<simulate::Simulation, Failed> {
        self.loaded.bind(data).simulate(save).map_err(|e| {
            Failed(
                run::solve_error(self.loaded, &e, block),
                super::exit::solve(&e),
            )
        })
    }

    fn t1(&self) -> Vec<f64> {
        vec![self.loaded.program.span().1]
    }

    /// The block the model trains on.
    fn training_data(&self) -> (&str, &Dataset) {
        self.loaded.training_block()
    }

    /// A sample set of `inputs` (2 values each) for this model, with every label `label`.
    fn inputs_dataset(&self, inputs: Vec<f64>, label: f64) -> Dataset {
        let n = inputs.len() / 2;
        let labels = (!self.loaded.model.labels.is_empty()).then(|| vec![label; n]);
        Dataset::samples(n, 2, inputs, labels)
    }

    /// The box around the training inputs with a margin, or `[-2, 2]²` without data.
    fn input_box(&self) -> ((f64, f64), (f64, f64)) {
        let (_, data) = self.training_data();
        if data.n == 0 || data.input_dim != 2 {
            return ((-2.0, 2.0), (-2.0, 2.0));
        }
        let range = |axis: usize| {
            let (lo, hi) = data
                .inputs
                .chunks_exact(2)
                .map(|u| u[axis])
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            let pad = 0.15 * (hi - lo).max(1e-6);
            (lo - pad, hi + pad)
        };
        (range(0), range(1))
    }

    /// The centres of a `cells × cells` grid over a box, rows from the bottom.
    fn grid_inputs(&self, x: (f64, f64), y: (f64, f64)) -> Vec<f64> {
        let n = self.cells;
        let mut inputs = Vec::with_capacity(2 * n * n);
        for j in 0..n {
            for i in 0..n {
                inputs.push(x.0 + (i as f64 + 0.5) * (x.1 - x.0) / n as f64);
                inputs.push(y.0 + (j as f64 + 0.5) * (y.1 - y.0) / n as f64);
            }
        }
        inputs
    }

    /// Up to `limit` training inputs, coloured by label when `by_label` and there are labels.
    fn data_points(&self, limit: usize, radius: u32, alpha: f64, by_label: bool) -> Vec<Points> {
        let (_, data) = self.training_data();
        if data.input_dim != 2 {
            return Vec::new();
        }
        let n = data.n.min(limit);
        let point = |s: usize| [data.inputs[2 * s], data.inputs[2 * s + 1]];
        match data.labels.as_ref().filter(|_| by_label) {
            Some(labels) => {
                let mut classes: Vec<usize> = labels[..n].iter().map(|l| *l as usize).collect();
                classes.sort_unstable();
                classes.dedup();
                classes
                    .into_iter()
                    .map(|k| Points {
                        label: Some(format!("label {k}")),
                        points: (0..n)
                            .filter(|s| labels[*s] as usize == k)
                            .map(point)
                            .collect(),
                        color: Color::palette(k).with_alpha(alpha),
                        radius,
                    })
                    .collect()
            }
            None => vec![Points {
                label: Some("data".into()),
                points: (0..n).map(point).collect(),
                color: Color::grey(250, alpha),
                radius,
            }],
        }
    }

    /// Each sample's terminal cost of `data`, solved to the final time.
    fn terminal_costs(&self, data: &Dataset, block: &str) -> Result<Vec<f64>, Failed> {
        let sim = self.solve(data, block, Some(self.t1()))?;
        let per = self.loaded.bind(data).per_sample(&sim.solution);
        Ok(per
            .costs
            .iter()
            .find(|(k, _)| *k == CostKind::Terminal)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| vec![0.0; data.n]))
    }

    fn series(&self) -> Result<Figure, Failed> {
        let loaded = self.loaded;
        let (name, data) = &loaded.data[0];
        let sim = self.solve(data, name, None)?;
        let report = run::build_report(loaded, &sim, 0, false, Vec::new(), 0.0);
        let vars = variables(loaded, true);
        // Up to 12 curves in all: more are unreadable.
        let picked = chosen(self.args, &vars, 12, 1..=12, "state or output")?;
        let column = |v: &Var| -> Vec<[f64; 3]> {
            let source = if v.output {
                &report.outputs
            } else {
                &report.states
            };
            let values: Vec<f64> = (0..report.t.len())
                .map(|k| {
                    source
                        .iter()
                        .flat_map(|s| s.values[k].iter())
                        .nth(v.index)
                        .copied()
                        .unwrap_or(f64::NAN)
                })
                .collect();
            report
                .t
                .iter()
                .zip(values)
                .map(|(t, x)| [*t, x, 0.0])
                .collect()
        };
        let mut panels = Vec::new();
        for (output, caption) in [(false, "states"), (true, "outputs")] {
            let lines: Vec<Line> = picked
                .iter()
                .filter(|v| v.output == output)
                .enumerate()
                .map(|(i, v)| Line {
                    label: Some(v.label.clone()),
                    points: column(v),
                    color: Color::palette(i),
                    width: 2,
                    by_progress: false,
                })
                .collect();
            if !lines.is_empty() {
                panels.push(Panel {
                    caption: caption.into(),
                    x_label: "t".into(),
                    y_label: "value".into(),
                    lines,
                    ..Panel::default()
                });
            }
        }
        let sample = if loaded.model.data.is_empty() {
            String::new()
        } else {
            format!(", sample 0 of `{name}`")
        };
        Ok(Figure {
            title: format!("{}: time series{sample}", self.model_name()),
            panels,
        })
    }

    fn phase(&self) -> Result<Figure, Failed> {
        let loaded = self.loaded;
        let vars = variables(loaded, false);
        let picked = chosen(self.args, &vars, 3, 2..=3, "state component")?;
        let (name, data) = &loaded.data[0];
        let sim = self.solve(data, name, None)?;
        let solution = &sim.solution;
        // Several samples show the flow of the field; one shows its direction by colour.
        let samples = solution.n_samples.min(8);
        let lines = (0..samples)
            .map(|s| Line {
                label: None,
                points: (0..solution.t.len())
                    .map(|k| {
                        let y = solution.state(k, s);
                        let at = |i: usize| picked.get(i).map_or(0.0, |v| y[v.index]);
                        [at(0), at(1), at(2)]
                    })
                    .collect(),
                color: Color::palette(s),
                width: if samples == 1 && picked.len() == 2 {
                    2
                } else {
                    1
                },
                by_progress: samples == 1,
            })
            .collect();
        let labels: Vec<&str> = picked.iter().map(|v| v.label.as_str()).collect();
        let three = picked.len() == 3;
        let time = if samples == 1 {
            format!(
                "; colour: t from {} (violet) to {} (yellow)",
                solution.t[0],
                solution.t[solution.t.len() - 1]
            )
        } else {
            format!("; {samples} samples of `{name}`")
        };
        Ok(Figure {
            title: format!(
                "{}: phase portrait of {}",
                self.model_name(),
                labels.join(", ")
            ),
            panels: vec![Panel {
                caption: if three {
                    format!(
                        "{} across, {} deep, {} up{time}",
                        labels[0], labels[1], labels[2]
                    )
                } else {
                    time.trim_start_matches("; ").to_string()
                },
                x_label: labels[0].into(),
                y_label: labels[1].into(),
                z_label: three.then(|| labels[2].to_string()),
                lines,
                equal_aspect: !three && data.n <= 1,
                ..Panel::default()
            }],
        })
    }

    fn decision(&self) -> Result<Figure, Failed> {
        let loaded = self.loaded;
        if !is_classifier(loaded) {
            return Err(misfit(
                self.args,
                Kind::Decision,
                "a classifier: a model with a `label` and a 2-value input",
            ));
        }
        if !has_cost(loaded, CostKind::Terminal) {
            return Err(misfit(
                self.args,
                Kind::Decision,
                "a classifier with a terminal cost on its label (bce, cross_entropy)",
            ));
        }
        let (_, data) = self.training_data();
        let classes = match loaded.model.labels[0].classes {
            Some(k) => k,
            None => {
                let labels = data.labels.as_deref().unwrap_or(&[]);
                if labels.iter().any(|l| !crate::ir::is_class(*l, 64)) {
                    return Err(misfit(
                        self.args,
                        Kind::Decision,
                        "class labels (0, 1, 2, …) in its data",
                    ));
                }
                labels.iter().fold(2, |k, l| k.max(*l as usize + 1))
            }
        };
        let (x, y) = self.input_box();
        let inputs = self.grid_inputs(x, y);
        // The class probabilities are softmax(−terminal cost with each class as the label):
        // exactly p for `bce` (costs −log p and −log(1 − p)) and softmax of the logits for
        // `cross_entropy` (costs logsumexp(z) − z_k).
        let mut costs = Vec::with_capacity(classes);
        for k in 0..classes {
            let grid = self.inputs_dataset(inputs.clone(), k as f64);
            costs.push(self.terminal_costs(&grid, "the grid")?);
        }
        let n = inputs.len() / 2;
        let values = (0..n)
            .map(|s| {
                let lowest = (0..classes)
                    .map(|k| costs[k][s])
                    .fold(f64::INFINITY, f64::min);
                let weights: Vec<f64> =
                    (0..classes).map(|k| (lowest - costs[k][s]).exp()).collect();
                let total: f64 = weights.iter().sum();
                if classes == 2 {
                    weights[1] / total
                } else {
                    let (best, w) = weights.iter().enumerate().fold((0, 0.0), |b, (k, w)| {
                        if *w > b.1 {
                            (k, *w)
                        } else {
                            b
                        }
                    });
                    // Confidence above chance, scaled to [0, 1).
                    let chance = 1.0 / classes as f64;
                    best as f64 + ((w / total - chance) / (1.0 - chance)).clamp(0.0, 0.999)
                }
            })
            .collect();
        Ok(Figure {
            title: format!("{}: decision regions", self.model_name()),
            panels: vec![Panel {
                caption: "shade: predicted class and its probability; points: data by label".into(),
                x_label: "input[0]".into(),
                y_label: "input[1]".into(),
                heat: Some(Heat {
                    x,
                    y,
                    nx: self.cells,
                    ny: self.cells,
                    values,
                    map: if classes == 2 {
                        ColorMap::TwoClass
                    } else {
                        ColorMap::Classes
                    },
                }),
                points: self.data_points(400, 3, 0.9, true),
                ..Panel::default()
            }],
        })
    }

    fn density(&self) -> Result<Figure, Failed> {
        let loaded = self.loaded;
        if !is_flow(loaded) || !has_cost(loaded, CostKind::Terminal) {
            return Err(misfit(
                self.args,
                Kind::Density,
                "a flow: a 2-value input, no label, states a 2-vector and a scalar (its log-density) and a terminal cost (its negative log-likelihood)",
            ));
        }
        let (x, y) = self.input_box();
        let grid = self.inputs_dataset(self.grid_inputs(x, y), 0.0);
        let values = self
            .terminal_costs(&grid, "the grid")?
            .into_iter()
            .map(|c| (-c).exp())
            .collect();
        Ok(Figure {
            title: format!("{}: learned density", self.model_name()),
            panels: vec![Panel {
                caption: "shade: the density exp(−terminal cost); points: data samples".into(),
                x_label: "input[0]".into(),
                y_label: "input[1]".into(),
                heat: Some(Heat {
                    x,
                    y,
                    nx: self.cells,
                    ny: self.cells,
                    values,
                    map: ColorMap::Viridis,
                }),
                points: self.data_points(300, 1, 0.7, false),
                ..Panel::default()
            }],
        })
    }

    fn trajectories(&self) -> Result<Figure, Failed> {
        let loaded = self.loaded;
        let vars = variables(loaded, false);
        let picked = chosen(self.args, &vars, 2, 2..=2, "state component")?;
        let (name, data) = self.training_data();
        if data.n < 2 {
            return Err(misfit(
                self.args,
                Kind::Trajectories,
                "a model with data: the samples whose trajectories are drawn",
            ));
        }
        let shown: Vec<usize> = (0..data.n.min(48)).collect();
        let subset = data.select(&shown);
        let sim = self.solve(&subset, name, None)?;
        let solution = &sim.solution;
        let path = |s: usize| -> Vec<[f64; 3]> {
            (0..solution.t.len())
                .map(|k| {
                    let y = solution.state(k, s);
                    [y[picked[0].index], y[picked[1].index], 0.0]
                })
                .collect()
        };
        let lines: Vec<Line> = (0..shown.len())
            .map(|s| Line {
                label: None,
                points: path(s),
                color: Color::grey(255, 0.9),
                width: 1,
                by_progress: false,
            })
            .collect();
        let ends = |k: usize| -> Vec<[f64; 2]> {
            (0..shown.len())
                .map(|s| {
                    let y = solution.state(k, s);
                    [y[picked[0].index], y[picked[1].index]]
                })
                .collect()
        };
        let points = vec![
            Points {
                label: Some(format!("start, t = {}", solution.t[0])),
                points: ends(0),
                color: Color::grey(255, 1.0),
                radius: 2,
            },
            Points {
                label: Some(format!("end, t = {}", solution.t[solution.t.len() - 1])),
                points: ends(solution.t.len() - 1),
                color: Color::palette(1),
                radius: 3,
            },
        ];
        let mut panel = Panel {
            x_label: picked[0].label.clone(),
            y_label: picked[1].label.clone(),
            lines,
            points,
            ..Panel::default()
        };
        // The running cost over the plane of the two components, when they are the whole
        // state (otherwise the cost needs values of components not drawn).
        if loaded.program.dim() == 2 && has_cost(loaded, CostKind::Running) {
            let all = || {
                (0..solution.t.len())
                    .flat_map(|k| (0..shown.len()).map(move |s| (k, s)))
                    .map(|(k, s)| solution.state(k, s))
            };
            let extent = |i: usize| {
                let (lo, hi) = all()
                    .map(|y| y[picked[i].index])
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(v), hi.max(v))
                    });
                let pad = 0.2 * (hi - lo).max(1e-6);
                (lo - pad, hi + pad)
            };
            let (x, y) = (extent(0), extent(1));
            // A square box around both ranges, so that the cost's level sets keep their shape.
            let half = ((x.1 - x.0).max(y.1 - y.0)) / 2.0;
            let (cx, cy) = ((x.0 + x.1) / 2.0, (y.0 + y.1) / 2.0);
            let (x, y) = ((cx - half, cx + half), (cy - half, cy + half));
            let values = self.running_cost_map(x, y, &[picked[0].index, picked[1].index])?;
            panel.heat = Some(Heat {
                x,
                y,
                nx: self.cells,
                ny: self.cells,
                values,
                map: ColorMap::Viridis,
            });
            panel.caption =
                "shade: the running cost, averaged over time (what the model penalises)".into();
        }
        Ok(Figure {
            title: format!(
                "{}: {} trajectories of `{name}`",
                self.model_name(),
                shown.len()
            ),
            panels: vec![panel],
        })
    }

    /// The running cost `L(t, y)` at the centre of every cell of a grid over the plane of
    /// state components `axes` (the whole state), averaged over 11 times of the span; inputs
    /// and labels are zero.
    fn running_cost_map(
        &self,
        x: (f64, f64),
        y: (f64, f64),
        axes: &[usize; 2],
    ) -> Result<Vec<f64>, Failed> {
        let program = &self.loaded.program;
        let params = &self.loaded.params;
        let states = self.grid_inputs(x, y);
        let n = states.len() / 2;
        let (t0, t1) = program.span();
        const TIMES: usize = 11;
        const WIDTH: usize = 256;
        let mut sums = vec![0.0; n];
        let mut block = vec![0.0; 2 * WIDTH];
        let mut cost = vec![0.0; WIDTH];
        for first in (0..n).step_by(WIDTH) {
            let width = WIDTH.min(n - first);
            let mut ws = program.workspace(width);
            ws.bind_inputs(&vec![0.0; width * program.input_len()]);
            ws.bind_labels(&vec![0.0; width * program.label_len()]);
            // Component-major, as the kernels read a block.
            for s in 0..width {
                for (c, axis) in axes.iter().enumerate() {
                    block[axis * width + s] = states[2 * (first + s) + c];
                }
            }
            for k in 0..TIMES {
                let t = t0 + (t1 - t0) * k as f64 / (TIMES - 1) as f64;
                let times = vec![t; width];
                program.cost(
                    CostKind::Running,
                    params,
                    &times,
                    &block[..2 * width],
                    &mut cost[..width],
                    &mut ws,
                );
                for s in 0..width {
                    sums[first + s] += cost[s] / TIMES as f64;
                }
            }
        }
        Ok(sums)
    }

    fn grid(&self) -> Result<Figure, Failed> {
        let loaded = self.loaded;
        if input_len(loaded) != 2 {
            return Err(misfit(
                self.args,
                Kind::Grid,
                "a model with a 2-value input: the plane whose grid the flow moves",
            ));
        }
        let vars = variables(loaded, false);
        let picked = chosen(self.args, &vars, 2, 2..=2, "state component")?;
        let (x, y) = self.input_box();
        const LINES: usize = 13;
        const POINTS: usize = 80;
        let at = |lo: f64, hi: f64, i: usize, n: usize| lo + (hi - lo) * i as f64 / (n - 1) as f64;
        // Horizontal lines, then vertical ones, each a run of POINTS inputs.
        let mut inputs = Vec::with_capacity(2 * 2 * LINES * POINTS);
        for j in 0..LINES {
            for i in 0..POINTS {
                inputs.extend([at(x.0, x.1, i, POINTS), at(y.0, y.1, j, LINES)]);
            }
        }
        for i in 0..LINES {
            for j in 0..POINTS {
                inputs.extend([at(x.0, x.1, i, LINES), at(y.0, y.1, j, POINTS)]);
            }
        }
        let grid = self.inputs_dataset(inputs.clone(), 0.0);
        let sim = self.solve(&grid, "the grid", Some(self.t1()))?;
        let moved = |s: usize| {
            let y = sim.solution.final_state(s);
            [y[picked[0].index], y[picked[1].index], 0.0]
        };
        let mut lines = Vec::new();
        for line in 0..2 * LINES {
            let family = line / LINES;
            let first = line * POINTS;
            lines.push(Line {
                label: (line % LINES == 0).then(|| {
                    if family == 0 {
                        "lines of constant input[1]".to_string()
                    } else {
                        "lines of constant input[0]".to_string()
                    }
                }),
                points: (first..first + POINTS).map(moved).collect(),
                color: Color::palette(family),
                width: 2,
                by_progress: false,
            });
        }
        Ok(Figure {
            title: format!("{}: the input grid moved by the flow", self.model_name()),
            panels: vec![Panel {
                caption: format!(
                    "a {LINES} × {LINES} grid over the data's inputs, at t = {}",
                    self.t1()[0]
                ),
                x_label: picked[0].label.clone(),
                y_label: picked[1].label.clone(),
                lines,
                equal_aspect: true,
                ..Panel::default()
            }],
        })
    }
}

/// The curves of a `nodec train --log` file: the loss and its terms on a log scale (when
/// positive), and the metrics.
fn training(path: &str, loaded: &Loaded) -> Result<Figure, Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failed(
            format!("{path}: error: cannot read the training log: {e}\n"),
            super::exit::MODEL,
        )
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    if header.first() != Some(&"epoch") || header.get(1) != Some(&"loss") {
        return Err(Failed(
            format!("{path}:1: error: not a training log: its header should start `epoch,loss` (as `nodec train --log` writes)\n"),
            super::exit::MODEL,
        ));
    }
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Result<Vec<f64>, _> = line.split(',').map(|v| v.trim().parse::<f64>()).collect();
        match row {
            Ok(row) if row.len() == header.len() => rows.push(row),
            _ => {
                return Err(Failed(
                    format!(
                        "{path}:{}: error: expected {} numbers separated by commas, as the header names",
                        i + 2,
                        header.len()
                    ) + "\n",
                    super::exit::MODEL,
                ))
            }
        }
    }
    if rows.is_empty() {
        return Err(Failed(
            format!("{path}: error: the training log has no epochs yet\n"),
            super::exit::MODEL,
        ));
    }
    let cost_names = ["loss", "terminal", "running", "penalty", "observed"];
    let bookkeeping = ["epoch", "grad_norm", "seconds", "rhs_evals", "skipped"];
    let column = |c: usize, log: bool| -> Vec<[f64; 3]> {
        rows.iter()
            .map(|r| [r[0], if log { r[c].log10() } else { r[c] }, 0.0])
            .collect()
    };
    let losses: Vec<usize> = (0..header.len())
        .filter(|c| cost_names.contains(&header[*c]))
        .collect();
    let metrics: Vec<usize> = (0..header.len())
        .filter(|c| !cost_names.contains(&header[*c]) && !bookkeeping.contains(&header[*c]))
        .collect();
    let positive = losses
        .iter()
        .all(|c| rows.iter().all(|r| r[*c] > 0.0 && r[*c].is_finite()));
    let curves = |columns: &[usize], log: bool| -> Vec<Line> {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| Line {
                label: Some(header[*c].to_string()),
                points: column(*c, log),
                color: Color::palette(i),
                width: 2,
                by_progress: false,
            })
            .collect()
    };
    let mut panels = vec![Panel {
        caption: "the loss and its terms".into(),
        x_label: "epoch".into(),
        y_label: if positive { "log10 of value" } else { "value" }.into(),
        lines: curves(&losses, positive),
        ..Panel::default()
    }];
    if !metrics.is_empty() {
        panels.push(Panel {
            caption: "metrics".into(),
            x_label: "epoch".into(),
            y_label: "value".into(),
            lines: curves(&metrics, false),
            ..Panel::default()
        });
    }
    Ok(Figure {
        title: format!("{}: training ({} epochs)", loaded.model.name, rows.len()),
        panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_vars_parse() {
        assert_eq!(parse_size("800x600"), Ok((800, 600)));
        assert_eq!(parse_size("640X480"), Ok((640, 480)));
        assert!(parse_size("800").is_err());
        assert!(parse_size("10x10").unwrap_err().contains("outside"));
        assert_eq!(parse_vars("x, z[0]").unwrap().0, vec!["x", "z[0]"]);
        assert!(parse_vars("x,,y").is_err());
    }
}
