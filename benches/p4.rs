//! The neural-ODE benchmark P4 (`benches/data/p4/`) as the benches load it: the model compiled
//! with its weights and initial points, the weights again as plain arrays, and the hand-written
//! blocked field `f(x) = W2 tanh(W1 x + b1) + b2` the baselines share.

#![allow(dead_code, reason = "each bench uses its own subset")]

use nodec::compile::Program;
use nodec::diag::SourceFile;
use nodec::sema::Overrides;

pub struct Problem {
    pub model: nodec::ir::Model,
    pub program: Program,
    pub params: nodec::compile::Params,
    pub data: nodec::data::Dataset,
    pub weights: Weights,
}

pub struct Weights {
    pub d: usize,
    pub w1: Vec<f64>,
    pub b1: Vec<f64>,
    pub w2: Vec<f64>,
    pub b2: Vec<f64>,
}

pub const H: usize = 64;
pub const BLOCK: usize = 32;

pub fn load(d: usize) -> Problem {
    load_with_train(d, "")
}

/// [`load`] with a line (such as a `train` declaration) added to the model.
pub fn load_with_train(d: usize, extra: &str) -> Problem {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/p4");
    let path = format!("{dir}/node_d{d}.node");
    let text = std::fs::read_to_string(&path).expect("bench model") + "\n" + extra + "\n";
    let file = SourceFile::new(path.clone(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "bench");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare(model);
    let program = Program::compile(&model);
    let mut params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let json = std::fs::read_to_string(format!("{dir}/params_d{d}.json")).expect("params");
    nodec::cli::run::load_params(&json, &model, &program, &mut params, &[]).expect("params load");
    let csv = std::fs::read_to_string(format!("{dir}/x0_d{d}.csv")).expect("x0");
    let data = nodec::data::parse_csv(&csv, &model.data[0].source, "x0.csv").expect("x0 parses");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let get = |k: &str| -> Vec<f64> {
        value[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let weights = Weights {
        d,
        w1: get("W1"),
        b1: get("b1"),
        w2: get("W2"),
        b2: get("b2"),
    };
    Problem {
        model,
        program,
        params,
        data,
        weights,
    }
}

impl Problem {
    /// The compiled model bound to its weights and initial points.
    pub fn bound(&self) -> nodec::simulate::Bound<'_> {
        nodec::simulate::Bound::new(&self.model, &self.program, &self.params, &self.data)
    }
}

/// f(x) = W2 tanh(W1 x + b1) + b2 for one block, component-major.
pub fn field(w: &Weights, x: &[f64], dx: &mut [f64], hidden: &mut [f64]) {
    let d = w.d;
    for h in 0..H {
        let row = &mut hidden[h * BLOCK..(h + 1) * BLOCK];
        row.fill(w.b1[h]);
        for j in 0..d {
            let c = w.w1[h * d + j];
            let xj = &x[j * BLOCK..(j + 1) * BLOCK];
            for s in 0..BLOCK {
                row[s] += c * xj[s];
            }
        }
        nodec::compile::tanh_in_place(row);
    }
    for i in 0..d {
        let out = &mut dx[i * BLOCK..(i + 1) * BLOCK];
        out.fill(w.b2[i]);
        for h in 0..H {
            let c = w.w2[i * H + h];
            let a = &hidden[h * BLOCK..(h + 1) * BLOCK];
            for s in 0..BLOCK {
                out[s] += c * a[s];
            }
        }
    }
}

/// Times `baseline` and `ours` alternately, `rounds` times each after one warm-up call, and
/// prints the median of the per-round ratios `ours / baseline` with its quartiles. On a shared
/// machine whose speed drifts by 10–20% over a minute, pairs taken back to back give a ratio
/// that separately timed criterion groups do not. Skipped by `cargo bench -- --test` and when a
/// filter is given that `label` does not contain.
#[allow(clippy::print_stdout, reason = "a bench reports on standard output")]
pub fn interleaved_ratio(
    label: &str,
    rounds: usize,
    mut baseline: impl FnMut(),
    mut ours: impl FnMut(),
) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !label.contains(f.as_str())) {
        return;
    }
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    time(&mut baseline);
    time(&mut ours);
    let mut pairs: Vec<(f64, f64)> = (0..rounds)
        .map(|_| (time(&mut baseline), time(&mut ours)))
        .collect();
    let mut ratios: Vec<f64> = pairs.iter().map(|(b, o)| o / b).collect();
    ratios.sort_by(f64::total_cmp);
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let base_median = pairs[rounds / 2].0;
    pairs.sort_by(|x, y| x.1.total_cmp(&y.1));
    let ours_median = pairs[rounds / 2].1;
    println!(
        "{label}: ratio {:.3} (quartiles {:.3}–{:.3}, {rounds} interleaved pairs; medians {:.2} ms vs {:.2} ms)",
        ratios[rounds / 2],
        ratios[rounds / 4],
        ratios[3 * rounds / 4],
        ours_median * 1e3,
        base_median * 1e3,
    );
}
