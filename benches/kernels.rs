//! Compiled kernels against hand-written Rust: what a good engineer writes without nodec (plain
//! loops over slices, blocked over 32 samples, f64), measured in the same run.
//!
//! - Lorenz right-hand side, batch 1024;
//! - whole solves of Lorenz, Van der Pol and Robertson, batch 1024, native kernels against the
//!   interpreter;
//! - neural field `W2 tanh(W1 x + b1) + b2`, hidden width 64, D = 2 and D = 32, batch 1024:
//!   evaluation, and the VJP with respect to the state and the parameters (which recomputes the
//!   hidden activations, as nodec's kernel does); nodec with and without fusion.
//!
//! Both sides use the same vectorized `tanh` (`nodec::compile::tanh_in_place`), so the comparison
//! measures the kernels, not the math library; `f64::tanh` is 3–5× slower than either.
//! Run: `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use nodec::compile::{tanh_in_place, Params, Program, Workspace};
use nodec::diag::SourceFile;
use nodec::sema::Overrides;

mod p4;

const BATCH: usize = 1024;
const BLOCK: usize = 32;
const H: usize = 64;

fn model(text: &str) -> nodec::ir::Model {
    let file = SourceFile::new("bench.node".to_string(), text.to_string());
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "bench");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    nodec::prepare(model)
}

/// Deterministic weights in (−0.5, 0.5).
fn weights(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect()
}

/// The batch as component-major blocks of 32 samples.
fn blocks(dim: usize, seed: u64) -> Vec<Vec<f64>> {
    (0..BATCH / BLOCK)
        .map(|b| {
            let mut y = vec![0.0; dim * BLOCK];
            for s in 0..BLOCK {
                for j in 0..dim {
                    let n = ((b * BLOCK + s) * dim + j) as f64;
                    y[j * BLOCK + s] =
                        2.0 * (0.618_033_988_749_894_9 * n + 0.5 + seed as f64).sin();
                }
            }
            y
        })
        .collect()
}

// ------------------------------------------------------------------------------------ Lorenz

fn lorenz_hand(p: [f64; 3], y: &[f64], dy: &mut [f64]) {
    let [sigma, rho, beta] = p;
    let (x, rest) = y.split_at(BLOCK);
    let (yy, z) = rest.split_at(BLOCK);
    let (dx, rest) = dy.split_at_mut(BLOCK);
    let (dyy, dz) = rest.split_at_mut(BLOCK);
    for s in 0..BLOCK {
        dx[s] = sigma * (yy[s] - x[s]);
        dyy[s] = x[s] * (rho - z[s]) - yy[s];
        dz[s] = x[s] * yy[s] - beta * z[s];
    }
}

fn bench_lorenz(c: &mut Criterion) {
    let m = model(include_str!("../models/lorenz.node"));
    let program = Program::compile(&m);
    let params = Params::initial(&m, program.layout());
    let ys = blocks(3, 0);
    let mut dy = vec![0.0; 3 * BLOCK];
    let t = vec![0.0; BLOCK];
    let mut ws = program.workspace(BLOCK);
    let p = [10.0, 28.0, 8.0 / 3.0];
    let mut g = c.benchmark_group("lorenz rhs, batch 1024");
    g.bench_function("hand-written", |b| {
        b.iter(|| {
            for y in &ys {
                lorenz_hand(p, black_box(y), &mut dy);
                black_box(&dy);
            }
        })
    });
    g.bench_function("nodec", |b| {
        b.iter(|| {
            for y in &ys {
                program.rhs(&params, &t, black_box(y), &mut dy, &mut ws);
                black_box(&dy);
            }
        })
    });
    g.finish();
    // The batch 200 times per timing, so that a pair is long enough for the clock.
    let mut dy2 = dy.clone();
    p4::interleaved_ratio(
        "lorenz rhs ratio nodec / hand-written",
        41,
        || {
            for _ in 0..200 {
                for y in &ys {
                    lorenz_hand(p, black_box(y), &mut dy);
                    black_box(&dy);
                }
            }
        },
        || {
            for _ in 0..200 {
                for y in &ys {
                    program.rhs(&params, &t, black_box(y), &mut dy2, &mut ws);
                    black_box(&dy2);
                }
            }
        },
    );
}

// ------------------------------------------------------------------------------ neural field

fn field_text(d: usize) -> String {
    format!(
        "const D = {d}\nconst H = {H}\nparam W1[H, D]\nparam b1[H]\nparam W2[D, H]\n\
         param b2[D]\nstate x[D] = 0\ndx/dt = W2 * tanh(W1 * x + b1) + b2\n\
         schedule rk4(t = [0, 1], steps = 20)\ncost terminal = sumsq(x)\n"
    )
}

/// The hand-written field: weights row-major, scratch for the hidden layer.
struct Field {
    d: usize,
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
}

/// Scratch of the hand-written field, allocated once.
struct Scratch {
    a: Vec<f64>,
    g: Vec<f64>,
}

impl Field {
    fn hidden(&self, x: &[f64], a: &mut [f64]) {
        for h in 0..H {
            let row = &mut a[h * BLOCK..(h + 1) * BLOCK];
            row.fill(self.b1[h]);
            for j in 0..self.d {
                let c = self.w1[h * self.d + j];
                let xj = &x[j * BLOCK..(j + 1) * BLOCK];
                for s in 0..BLOCK {
                    row[s] += c * xj[s];
                }
            }
            tanh_in_place(row);
        }
    }

    fn eval(&self, x: &[f64], dx: &mut [f64], sc: &mut Scratch) {
        self.hidden(x, &mut sc.a);
        for k in 0..self.d {
            let out = &mut dx[k * BLOCK..(k + 1) * BLOCK];
            out.fill(self.b2[k]);
            for h in 0..H {
                let c = self.w2[k * H + h];
                let ah = &sc.a[h * BLOCK..(h + 1) * BLOCK];
                for s in 0..BLOCK {
                    out[s] += c * ah[s];
                }
            }
        }
    }

    /// `xbar = wᵀ ∂f/∂x` and `grad += Σ_s wᵀ ∂f/∂θ` (W1, b1, W2, b2 concatenated).
    fn vjp(&self, x: &[f64], w: &[f64], xbar: &mut [f64], grad: &mut [f64], sc: &mut Scratch) {
        let d = self.d;
        self.hidden(x, &mut sc.a);
        let (gw1, rest) = grad.split_at_mut(H * d);
        let (gb1, rest) = rest.split_at_mut(H);
        let (gw2, gb2) = rest.split_at_mut(d * H);
        for h in 0..H {
            let ah = &sc.a[h * BLOCK..(h + 1) * BLOCK];
            let gh = &mut sc.g[h * BLOCK..(h + 1) * BLOCK];
            gh.fill(0.0);
            for k in 0..d {
                let c = self.w2[k * H + h];
                let wk = &w[k * BLOCK..(k + 1) * BLOCK];
                let mut acc = 0.0;
                for s in 0..BLOCK {
                    gh[s] += c * wk[s];
                    acc += wk[s] * ah[s];
                }
                gw2[k * H + h] += acc;
            }
            let mut acc = 0.0;
            for s in 0..BLOCK {
                gh[s] *= 1.0 - ah[s] * ah[s];
                acc += gh[s];
            }
            gb1[h] += acc;
        }
        for k in 0..d {
            gb2[k] += w[k * BLOCK..(k + 1) * BLOCK].iter().sum::<f64>();
        }
        for j in 0..d {
            let out = &mut xbar[j * BLOCK..(j + 1) * BLOCK];
            out.fill(0.0);
            let xj = &x[j * BLOCK..(j + 1) * BLOCK];
            for h in 0..H {
                let c = self.w1[h * d + j];
                let gh = &sc.g[h * BLOCK..(h + 1) * BLOCK];
                let mut acc = 0.0;
                for s in 0..BLOCK {
                    out[s] += c * gh[s];
                    acc += gh[s] * xj[s];
                }
                gw1[h * d + j] += acc;
            }
        }
    }
}

fn bench_field(c: &mut Criterion, d: usize) {
    let m = model(&field_text(d));
    let w1 = weights(H * d, 1)
        .iter()
        .map(|w| w * 1.5 / (d as f64).sqrt())
        .collect();
    let b1 = weights(H, 2);
    let w2 = weights(d * H, 3).iter().map(|w| w * 0.25).collect();
    let b2 = weights(d, 4);
    let field = Field { d, w1, b1, w2, b2 };
    let mut sc = Scratch {
        a: vec![0.0; H * BLOCK],
        g: vec![0.0; H * BLOCK],
    };
    // nodec's parameter layout is declaration order: W1, b1, W2, b2, as the hand-written one.
    let mut values = field.w1.clone();
    values.extend(&field.b1);
    values.extend(&field.w2);
    values.extend(&field.b2);
    let params = Params::from_values(values);
    let ys = blocks(d, 0);
    let ws_ = blocks(d, 7);
    let t = vec![0.0; BLOCK];
    let mut out = vec![0.0; d * BLOCK];
    let mut grad = vec![0.0; params.values().len()];

    // The compiled kernels must compute what the hand-written code computes.
    {
        let program = Program::compile(&m);
        let mut ws = program.workspace(BLOCK);
        let mut hand = vec![0.0; d * BLOCK];
        field.eval(&ys[0], &mut hand, &mut sc);
        program.rhs(&params, &t, &ys[0], &mut out, &mut ws);
        let err = hand
            .iter()
            .zip(&out)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-12, "evaluation differs by {err}");
        let mut hand_g = vec![0.0; grad.len()];
        field.vjp(&ys[0], &ws_[0], &mut hand, &mut hand_g, &mut sc);
        program.vjp(&params, &t, &ys[0], &ws_[0], &mut out, &mut grad, &mut ws);
        let err = hand
            .iter()
            .zip(&out)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let gerr = hand_g
            .iter()
            .zip(&grad)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-11 && gerr < 1e-11, "vjp differs by {err}, {gerr}");
    }

    let mut g = c.benchmark_group(format!("neural field D={d} H={H}, batch 1024"));
    g.bench_function("eval hand-written", |b| {
        b.iter(|| {
            for y in &ys {
                field.eval(black_box(y), &mut out, &mut sc);
                black_box(&out);
            }
        })
    });
    for (name, fuse) in [("eval nodec", true), ("eval nodec unfused", false)] {
        let program = Program::compile_with(&m, fuse);
        let mut ws: Workspace = program.workspace(BLOCK);
        g.bench_function(name, |b| {
            b.iter(|| {
                for y in &ys {
                    program.rhs(&params, &t, black_box(y), &mut out, &mut ws);
                    black_box(&out);
                }
            })
        });
    }
    g.bench_function("vjp hand-written", |b| {
        b.iter(|| {
            for (y, w) in ys.iter().zip(&ws_) {
                field.vjp(black_box(y), w, &mut out, &mut grad, &mut sc);
                black_box(&out);
            }
        })
    });
    for (name, fuse) in [("vjp nodec", true), ("vjp nodec unfused", false)] {
        let program = Program::compile_with(&m, fuse);
        let mut ws: Workspace = program.workspace(BLOCK);
        g.bench_function(name, |b| {
            b.iter(|| {
                for (y, w) in ys.iter().zip(&ws_) {
                    program.vjp(&params, &t, black_box(y), w, &mut out, &mut grad, &mut ws);
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

fn bench_fields(c: &mut Criterion) {
    bench_field(c, 2);
    bench_field(c, 32);
}

// ------------------------------------------------------------------------- whole solves

/// A whole solve of 1024 samples of small elementwise models, with native kernels and with
/// the interpreter only: what native code gains a user, solver work included.
fn bench_solves(_: &mut Criterion) {
    for name in ["lorenz", "vdp", "robertson"] {
        let path = format!("{}/models/{name}.node", env!("CARGO_MANIFEST_DIR"));
        let m = model(&std::fs::read_to_string(path).expect("model readable"));
        let native = Program::compile(&m);
        let interpreted = native.clone().interpreted();
        let params = nodec::simulate::initial_params(&m, native.layout(), 0);
        let data = nodec::data::Dataset::samples(BATCH, 0, Vec::new(), None);
        let solve = |program: &Program| {
            let bound = nodec::simulate::Bound::new(&m, program, &params, &data);
            let s = bound.simulate(None).expect("solves");
            black_box(s);
        };
        p4::interleaved_ratio(
            &format!("{name} solve, batch 1024, ratio native / interpreted"),
            11,
            || solve(&interpreted),
            || solve(&native),
        );
    }
}

criterion_group!(benches, bench_lorenz, bench_fields, bench_solves);
criterion_main!(benches);
