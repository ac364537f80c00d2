//! Forward + backward (loss and parameter gradient) of the neural-ODE benchmark P4
//! (`benches/data/p4/`): batch 1024, width 64, classic RK4 × 20 on [0, 1], loss = mean |x(1)|²,
//! D = 2 and D = 32.
//!
//! Baseline, measured in the same run: the blocked hand-written reverse sweep a good engineer
//! would write (32 samples per block, component-major, every stage input stored, rayon over
//! blocks, block gradients added in order), using the same vectorizable tanh as nodec's
//! kernels. nodec runs `sens::gradient` with backprop (default checkpointing, √20 segments)
//! and with every step stored.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{criterion_group, criterion_main, Criterion};
use rayon::prelude::*;

mod p4;

use p4::{field, load, Problem, Weights, BLOCK, H};

/// Parameter gradients of one block or the batch: W1, b1, W2, b2.
#[derive(Clone)]
struct Grads {
    w1: Vec<f64>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
}

impl Grads {
    fn zeros(d: usize) -> Self {
        Grads {
            w1: vec![0.0; H * d],
            b1: vec![0.0; H],
            w2: vec![0.0; d * H],
            b2: vec![0.0; d],
        }
    }

    fn add(&mut self, o: &Grads) {
        for (a, b) in [
            (&mut self.w1, &o.w1),
            (&mut self.b1, &o.b1),
            (&mut self.w2, &o.w2),
            (&mut self.b2, &o.b2),
        ] {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x += y;
            }
        }
    }
}

/// out = kbᵀ ∂f/∂x at x and the parameter gradients, for one block.
fn field_vjp(w: &Weights, x: &[f64], kb: &[f64], out: &mut [f64], g: &mut Grads, a: &mut [f64]) {
    let d = w.d;
    let mut gh = [0.0; BLOCK];
    out.fill(0.0);
    for h in 0..H {
        let row = &mut a[..BLOCK];
        row.fill(w.b1[h]);
        for j in 0..d {
            let c = w.w1[h * d + j];
            let xj = &x[j * BLOCK..(j + 1) * BLOCK];
            for s in 0..BLOCK {
                row[s] += c * xj[s];
            }
        }
        nodec::compile::tanh_in_place(row);
        gh.fill(0.0);
        for i in 0..d {
            let c = w.w2[i * H + h];
            let k = &kb[i * BLOCK..(i + 1) * BLOCK];
            let mut acc = 0.0;
            for s in 0..BLOCK {
                gh[s] += c * k[s];
                acc += k[s] * row[s];
            }
            g.w2[i * H + h] += acc;
        }
        let mut bsum = 0.0;
        for s in 0..BLOCK {
            gh[s] *= 1.0 - row[s] * row[s];
            bsum += gh[s];
        }
        g.b1[h] += bsum;
        for j in 0..d {
            let c = w.w1[h * d + j];
            let xj = &x[j * BLOCK..(j + 1) * BLOCK];
            let o = &mut out[j * BLOCK..(j + 1) * BLOCK];
            let mut acc = 0.0;
            for s in 0..BLOCK {
                o[s] += c * gh[s];
                acc += gh[s] * xj[s];
            }
            g.w1[h * d + j] += acc;
        }
    }
    for i in 0..d {
        g.b2[i] += kb[i * BLOCK..(i + 1) * BLOCK].iter().sum::<f64>();
    }
}

/// Hand-written blocked RK4 × 20 forward, storing every stage input, then the reverse sweep;
/// returns the mean loss and its gradient.
fn baseline(p: &Problem) -> (f64, Grads) {
    let w = &p.weights;
    let d = w.d;
    let n = p.data.n;
    let steps = 20;
    let h = 1.0 / steps as f64;
    let partial: Vec<(f64, Grads)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let width = BLOCK.min(n - b * BLOCK);
            let len = d * BLOCK;
            let mut x = vec![0.0; len];
            for s in 0..width {
                for j in 0..d {
                    x[j * BLOCK + s] = p.data.inputs[(b * BLOCK + s) * d + j];
                }
            }
            let mut stages = vec![0.0; steps * 4 * len];
            let mut k = vec![vec![0.0; len]; 4];
            let mut hidden = vec![0.0; H * BLOCK];
            let c = [0.0, 0.5, 0.5, 1.0];
            for n in 0..steps {
                for st in 0..4 {
                    let base = (n * 4 + st) * len;
                    if st == 0 {
                        stages[base..base + len].copy_from_slice(&x);
                    } else {
                        for i in 0..len {
                            stages[base + i] = x[i] + c[st] * h * k[st - 1][i];
                        }
                    }
                    let (input, rest) = stages.split_at(base + len);
                    let _ = rest;
                    field(w, &input[base..], &mut k[st], &mut hidden);
                }
                for i in 0..len {
                    x[i] += h / 6.0 * (k[0][i] + 2.0 * k[1][i] + 2.0 * k[2][i] + k[3][i]);
                }
            }
            // Padding lanes carry zero cotangent.
            let mut lambda = vec![0.0; len];
            let mut loss = 0.0;
            for s in 0..width {
                for j in 0..d {
                    let v = x[j * BLOCK + s];
                    loss += v * v;
                    lambda[j * BLOCK + s] = 2.0 * v / n as f64;
                }
            }
            let mut g = Grads::zeros(d);
            let mut kb = vec![vec![0.0; len]; 4];
            let mut pulled = vec![0.0; len];
            let bw = [1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0];
            for n in (0..steps).rev() {
                for st in 0..4 {
                    for i in 0..len {
                        kb[st][i] = h * bw[st] * lambda[i];
                    }
                }
                for st in (0..4).rev() {
                    let base = (n * 4 + st) * len;
                    field_vjp(
                        w,
                        &stages[base..base + len],
                        &kb[st],
                        &mut pulled,
                        &mut g,
                        &mut hidden,
                    );
                    for i in 0..len {
                        lambda[i] += pulled[i];
                    }
                    if st > 0 {
                        for i in 0..len {
                            kb[st - 1][i] += c[st] * h * pulled[i];
                        }
                    }
                }
            }
            (loss, g)
        })
        .collect();
    let mut total = Grads::zeros(d);
    let mut loss = 0.0;
    for (l, g) in &partial {
        loss += l;
        total.add(g);
    }
    (loss / n as f64, total)
}

fn nodec_gradient(p: &Problem, segment: Option<usize>) -> nodec::sens::Gradient {
    let mut options = nodec::sens::GradientOptions::new(nodec::ir::GradientMethod::Backprop);
    options.segment = segment;
    nodec::sens::gradient(&p.bound(), &options).expect("gradient")
}

fn backward(c: &mut Criterion) {
    for (d, expected) in [(2, 3.93834273556), (32, 68.5813899156)] {
        let p = load(d);
        // Both must agree on the loss and the gradient before their speed means anything.
        let (loss, g) = baseline(&p);
        let ours = nodec_gradient(&p, None);
        assert!(
            ((loss - expected) / expected).abs() < 1e-9,
            "baseline D={d}: {loss}"
        );
        let ours_loss = ours.simulation.loss;
        assert!(
            ((ours_loss - expected) / expected).abs() < 1e-9,
            "nodec D={d}: {ours_loss}"
        );
        let layout = p.program.layout();
        let reference: Vec<f64> = [&g.w1, &g.b1, &g.w2, &g.b2]
            .iter()
            .flat_map(|v| v.iter().copied())
            .collect();
        let names = ["W1", "b1", "W2", "b2"];
        let flat: Vec<f64> = names
            .iter()
            .flat_map(|name| {
                let e = layout.entries.iter().find(|e| e.name == *name).unwrap();
                ours.grad[e.offset..e.offset + e.len()].to_vec()
            })
            .collect();
        let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in flat.iter().zip(&reference) {
            assert!(
                (a - b).abs() <= 1e-10 * scale,
                "D={d}: gradient {a} vs baseline {b}"
            );
        }
        c.bench_function(
            &format!("P4 fwd+bwd D={d} hand-written blocked reverse sweep"),
            |b| b.iter(|| baseline(&p)),
        );
        c.bench_function(&format!("P4 fwd+bwd D={d} nodec backprop"), |b| {
            b.iter(|| nodec_gradient(&p, None))
        });
        c.bench_function(
            &format!("P4 fwd+bwd D={d} nodec backprop, every step stored"),
            |b| b.iter(|| nodec_gradient(&p, Some(20))),
        );
    }
}

/// nodec's backprop over the hand-written sweep in interleaved pairs (see
/// [`p4::interleaved_ratio`]).
fn backward_ratio(_: &mut Criterion) {
    for d in [2, 32] {
        let p = load(d);
        p4::interleaved_ratio(
            &format!("P4 fwd+bwd D={d} ratio nodec backprop / hand-written"),
            41,
            || {
                criterion::black_box(baseline(&p));
            },
            || {
                criterion::black_box(nodec_gradient(&p, None));
            },
        );
    }
}

criterion_group!(benches, backward, backward_ratio);
criterion_main!(benches);
