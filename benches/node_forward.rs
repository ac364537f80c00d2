//! End-to-end forward solve of the neural-ODE benchmark P4 (`../shared/bench`): batch 1024,
//! width 64, classic RK4 × 20 on [0, 1], loss = mean |x(1)|², D = 2 and D = 32.
//!
//! Baseline, measured in the same run: the blocked hand-written Rust a good engineer would write
//! (32 samples per block, component-major, rayon over blocks), using the same vectorizable tanh
//! as nodec's kernels so that the comparison measures the code around it.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{criterion_group, criterion_main, Criterion};
use nodec::compile::Program;
use nodec::diag::SourceFile;
use nodec::sema::Overrides;
use rayon::prelude::*;

struct Problem {
    model: nodec::ir::Model,
    program: Program,
    params: nodec::compile::Params,
    data: nodec::data::Dataset,
    weights: Weights,
}

struct Weights {
    d: usize,
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
}

const H: usize = 64;
const BLOCK: usize = 32;

fn load(d: usize) -> Problem {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench");
    let path = format!("{dir}/node_d{d}.node");
    let text = std::fs::read_to_string(&path).expect("bench model");
    let file = SourceFile::new(path.clone(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "bench");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare(model);
    let program = Program::compile(&model);
    let mut params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let json = std::fs::read_to_string(format!("{dir}/params_d{d}.json")).expect("params");
    nodec::cli::run::load_params(&json, &model, &program, &mut params).expect("params load");
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

/// f(x) = W2 tanh(W1 x + b1) + b2 for one block, component-major.
fn field(w: &Weights, x: &[f64], dx: &mut [f64], hidden: &mut [f64]) {
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
        for v in row.iter_mut() {
            *v = nodec::compile::tanh(*v);
        }
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

/// Hand-written blocked RK4 × 20, mean |x(1)|² over the batch.
fn baseline(p: &Problem) -> f64 {
    let w = &p.weights;
    let d = w.d;
    let n = p.data.n;
    let partial: Vec<f64> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut x = vec![0.0; d * BLOCK];
            for s in 0..BLOCK.min(n - b * BLOCK) {
                for j in 0..d {
                    x[j * BLOCK + s] = p.data.inputs[(b * BLOCK + s) * d + j];
                }
            }
            let (mut k1, mut k2, mut k3, mut k4, mut tmp) = (
                vec![0.0; d * BLOCK],
                vec![0.0; d * BLOCK],
                vec![0.0; d * BLOCK],
                vec![0.0; d * BLOCK],
                vec![0.0; d * BLOCK],
            );
            let mut hidden = vec![0.0; H * BLOCK];
            let h = 1.0 / 20.0;
            for _ in 0..20 {
                field(w, &x, &mut k1, &mut hidden);
                for i in 0..x.len() {
                    tmp[i] = x[i] + 0.5 * h * k1[i];
                }
                field(w, &tmp, &mut k2, &mut hidden);
                for i in 0..x.len() {
                    tmp[i] = x[i] + 0.5 * h * k2[i];
                }
                field(w, &tmp, &mut k3, &mut hidden);
                for i in 0..x.len() {
                    tmp[i] = x[i] + h * k3[i];
                }
                field(w, &tmp, &mut k4, &mut hidden);
                for i in 0..x.len() {
                    x[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
                }
            }
            (0..BLOCK.min(n - b * BLOCK))
                .map(|s| (0..d).map(|j| x[j * BLOCK + s].powi(2)).sum::<f64>())
                .sum::<f64>()
        })
        .collect();
    partial.iter().sum::<f64>() / n as f64
}

fn nodec_forward(p: &Problem) -> f64 {
    let t1 = p.model.schedule.as_ref().unwrap().t1;
    nodec::simulate::simulate(&p.model, &p.program, &p.params, &p.data, Some(vec![t1]))
        .expect("solves")
        .loss
}

fn forward(c: &mut Criterion) {
    for (d, expected) in [(2, 3.93834273556), (32, 68.5813899156)] {
        let p = load(d);
        // Both must compute the benchmark's loss before their speed means anything.
        for (name, loss) in [("baseline", baseline(&p)), ("nodec", nodec_forward(&p))] {
            assert!(
                ((loss - expected) / expected).abs() < 1e-9,
                "{name} D={d}: {loss}"
            );
        }
        c.bench_function(&format!("P4 forward D={d} hand-written blocked RK4"), |b| {
            b.iter(|| baseline(&p))
        });
        c.bench_function(&format!("P4 forward D={d} nodec simulate"), |b| {
            b.iter(|| nodec_forward(&p))
        });
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
