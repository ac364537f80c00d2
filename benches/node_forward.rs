//! End-to-end forward solve of the neural-ODE benchmark P4 (`benches/data/p4/`): batch 1024,
//! width 64, classic RK4 × 20 on [0, 1], loss = mean |x(1)|², D = 2 and D = 32.
//!
//! Baseline, measured in the same run: the blocked hand-written Rust a good engineer would write
//! (32 samples per block, component-major, rayon over blocks), using the same vectorizable tanh
//! as nodec's kernels so that the comparison measures the code around it.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{criterion_group, criterion_main, Criterion};
use rayon::prelude::*;

mod p4;

use p4::{field, load, Problem, BLOCK, H};

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
    p.bound().simulate(Some(vec![t1])).expect("solves").loss
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

/// nodec's forward solve over the hand-written RK4 in interleaved pairs (see
/// [`p4::interleaved_ratio`]).
fn forward_ratio(_: &mut Criterion) {
    for d in [2, 32] {
        let p = load(d);
        p4::interleaved_ratio(
            &format!("P4 forward D={d} ratio nodec / hand-written"),
            41,
            || {
                criterion::black_box(baseline(&p));
            },
            || {
                criterion::black_box(nodec_forward(&p));
            },
        );
    }
}

criterion_group!(benches, forward, forward_ratio);
criterion_main!(benches);
