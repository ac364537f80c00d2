//! Solve and gradient of the wide models `wide_1024` and `mnist_sized` (`benches/data/wide/`,
//! batch 256, state 64, `dx/dt = K2 tanh(K1 x + b1)`, classic RK4 × 4 on [0, 1]) against
//! hand-written Rust built on GEMMs: nodec's tensor kernels (these models are too wide for the
//! scalar IR) next to code written for this one model.
//!
//! Baseline, measured in the same run: blocks of `NARROW_BLOCK` samples (nodec's for tensor kernels), component-major
//! (`x[i * BLOCK + s]`, i.e. a column-major `BLOCK × D` matrix) as nodec lays them out, rayon
//! over blocks, every layer one call of nodec's GEMM (`nodec::compile::gemm`, the `gemm`
//! crate, as nodec's tensor kernels call it), nodec's vectorizable `tanh`, block results added
//! in block order. The gradient is the reverse sweep of the same RK4 steps with every stage
//! input and its `tanh` activations stored (nodec's backprop also keeps the activations,
//! `rhs_saving`). Both start from nodec's own initial parameters (seed 0) and data, and must
//! agree on the loss and the gradient before their speed means anything.
//!
//! Each run also writes the parameters (in `--params` format), the data and nodec's loss and
//! gradient to `<target>/wide-export/MODEL.json` for `benches/torch_wide.py`.
//!
//! `cargo bench --bench wide [-- FILTER]`; `-- --test` checks the agreement only.

use std::io::Write;

use rayon::prelude::*;

use nodec::compile::{Params, Program, View};
use nodec::diag::SourceFile;
use nodec::ir::GradientMethod;
use nodec::sema::Overrides;
use nodec::sens::GradientOptions;

mod p4;

/// The block width nodec uses for tensor kernels.
const BLOCK: usize = nodec::solve::NARROW_BLOCK;
const CLASSES: usize = 10;

/// The terminal cost on `logits = head x(1)`.
#[derive(Clone, Copy, PartialEq)]
enum Cost {
    /// `sumsq(logits)` (the `wide_W` models).
    SumSq,
    /// `cross_entropy(logits, y)` (`mnist_sized`).
    CrossEntropy,
}

/// One model as nodec compiled it, and its weights as plain row-major arrays.
struct Problem {
    name: String,
    model: nodec::ir::Model,
    program: Program,
    params: Params,
    data: nodec::data::Dataset,
    cost: Cost,
    /// Inputs per sample.
    din: usize,
    /// State size.
    d: usize,
    /// Hidden width.
    w: usize,
    steps: usize,
    /// `x(0) = k0 u`, `d × din` (`K0`, or `E` in `mnist_sized`).
    k0: Vec<f64>,
    k1: Vec<f64>,
    b1: Vec<f64>,
    k2: Vec<f64>,
    head: Vec<f64>,
}

/// The parameters' names in the order [`Grads`] keeps them.
fn names(p: &Problem) -> [&'static str; 5] {
    let k0 = if p.cost == Cost::CrossEntropy {
        "E"
    } else {
        "K0"
    };
    [k0, "K1", "b1", "K2", "head"]
}

fn load(name: &str) -> Problem {
    let path = format!(
        "{}/benches/data/wide/{name}.node",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("bench model");
    let file = SourceFile::new(path, text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), name);
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare_to_run(model);
    let program = Program::compile(&model);
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let shapes: Vec<_> = model.inputs.iter().map(|i| i.shape).collect();
    let data =
        nodec::data::generate(&model.data[0].source, &model.pool, &shapes).expect("generated data");
    assert_eq!(data.n, 256, "the comparison is at batch 256");
    let schedule = model.schedule.as_ref().expect("a schedule");
    assert_eq!(schedule.method, nodec::ir::Method::Rk4);
    assert_eq!((schedule.t0, schedule.t1), (0.0, 1.0));
    let steps = schedule.steps.expect("fixed steps");
    let get = |n: &str| -> Vec<f64> {
        let e = program
            .layout()
            .entries
            .iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("param {n}"));
        assert_eq!(e.copies, 1);
        params.values()[e.offset..e.offset + e.len()].to_vec()
    };
    let cost = if data.labels.is_some() {
        Cost::CrossEntropy
    } else {
        Cost::SumSq
    };
    let k0 = get(if cost == Cost::CrossEntropy {
        "E"
    } else {
        "K0"
    });
    let (k1, b1, k2, head) = (get("K1"), get("b1"), get("K2"), get("head"));
    let w = b1.len();
    let d = k2.len() / w;
    Problem {
        name: name.to_string(),
        din: data.input_dim,
        d,
        w,
        steps,
        k0,
        k1,
        b1,
        k2,
        head,
        model,
        program,
        params,
        data,
        cost,
    }
}

/// A strided view of a matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct M<'a> {
    data: &'a [f64],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> M<'a> {
    /// A block of `BLOCK` samples × `cols` components, component-major.
    fn block(data: &'a [f64], cols: usize) -> Self {
        M {
            data,
            rows: BLOCK,
            cols,
            rs: 1,
            cs: BLOCK,
        }
    }

    /// A row-major `rows × cols` weight.
    fn weight(data: &'a [f64], rows: usize, cols: usize) -> Self {
        M {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose: the same storage read the other way, no copy.
    fn t(self) -> Self {
        M {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `c = a b + beta c` through nodec's own GEMM (`nodec::compile::gemm`, the `gemm` crate), so
/// that the comparison measures everything but the GEMM library; transposes are strides and
/// cost nothing. `c` is laid out like `like`; `beta` is 0 or 1.
fn gemm(c: &mut [f64], like: M, a: M, b: M, beta: f64) {
    assert_eq!((a.rows, b.cols, a.cols), (like.rows, like.cols, b.rows));
    fn view(m: M<'_>) -> View<'_> {
        View {
            data: m.data,
            rows: m.rows,
            cols: m.cols,
            rs: m.rs,
            cs: m.cs,
        }
    }
    nodec::compile::gemm(c, (like.rs, like.cs), view(a), view(b), beta != 0.0);
}

/// Parameter gradients in the layout of the weights: `k0, k1, b1, k2, head`.
struct Grads([Vec<f64>; 5]);

impl Grads {
    fn zeros(p: &Problem) -> Self {
        Grads([
            vec![0.0; p.k0.len()],
            vec![0.0; p.k1.len()],
            vec![0.0; p.b1.len()],
            vec![0.0; p.k2.len()],
            vec![0.0; p.head.len()],
        ])
    }

    fn add(&mut self, o: &Grads) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// Per-block storage of the forward pass.
struct Block {
    u: Vec<f64>,
    x: Vec<f64>,
    /// Samples of the block that exist (the rest are padding and carry no cost).
    width: usize,
    first: usize,
}

impl Problem {
    fn bind(&self, b: usize) -> Block {
        let first = b * BLOCK;
        let width = BLOCK.min(self.data.n - first);
        let mut u = vec![0.0; self.din * BLOCK];
        for s in 0..width {
            let row = &self.data.inputs[(first + s) * self.din..][..self.din];
            for (j, &v) in row.iter().enumerate() {
                u[j * BLOCK + s] = v;
            }
        }
        let mut x = vec![0.0; self.d * BLOCK];
        let like = M::block(&[], self.d);
        gemm(
            &mut x,
            like,
            M::block(&u, self.din),
            M::weight(&self.k0, self.d, self.din).t(),
            0.0,
        );
        Block { u, x, width, first }
    }

    /// `dx = K2 tanh(K1 x + b1)` for a block; `a` receives the activations.
    fn field(&self, x: &[f64], dx: &mut [f64], a: &mut [f64]) {
        for (h, col) in a.chunks_exact_mut(BLOCK).enumerate() {
            col.fill(self.b1[h]);
        }
        let hidden = M::block(&[], self.w);
        gemm(
            a,
            hidden,
            M::block(x, self.d),
            M::weight(&self.k1, self.w, self.d).t(),
            1.0,
        );
        nodec::compile::tanh_in_place(a);
        gemm(
            dx,
            M::block(&[], self.d),
            M::block(a, self.w),
            M::weight(&self.k2, self.d, self.w).t(),
            0.0,
        );
    }

    /// `out = kbᵀ ∂f/∂x` at the stage whose input is `x` and activations `a`; parameter
    /// gradients added to `g`.
    #[allow(
        clippy::too_many_arguments,
        reason = "scratch passed in, not allocated per call"
    )]
    fn field_vjp(
        &self,
        x: &[f64],
        a: &[f64],
        kb: &[f64],
        out: &mut [f64],
        g: &mut Grads,
        gz: &mut [f64],
    ) {
        let (d, w) = (self.d, self.w);
        // ∂/∂K2 = kbᵀ a, then the pull-back through K2 and tanh.
        gemm(
            &mut g.0[3],
            M::weight(&[], d, w),
            M::block(kb, d).t(),
            M::block(a, w),
            1.0,
        );
        gemm(
            gz,
            M::block(&[], w),
            M::block(kb, d),
            M::weight(&self.k2, d, w),
            0.0,
        );
        for (h, (gcol, acol)) in gz
            .chunks_exact_mut(BLOCK)
            .zip(a.chunks_exact(BLOCK))
            .enumerate()
        {
            let mut sum = 0.0;
            for (gv, av) in gcol.iter_mut().zip(acol) {
                *gv *= 1.0 - av * av;
                sum += *gv;
            }
            g.0[2][h] += sum;
        }
        gemm(
            &mut g.0[1],
            M::weight(&[], w, d),
            M::block(gz, w).t(),
            M::block(x, d),
            1.0,
        );
        gemm(
            out,
            M::block(&[], d),
            M::block(gz, w),
            M::weight(&self.k1, w, d),
            0.0,
        );
    }

    /// The summed terminal cost of the block's samples and `∂(cost / n)/∂logits` in `gl`.
    fn terminal(&self, blk: &Block, logits: &[f64], gl: &mut [f64]) -> f64 {
        let scale = 1.0 / self.data.n as f64;
        gl.fill(0.0);
        let mut total = 0.0;
        for s in 0..blk.width {
            let z = |k: usize| logits[k * BLOCK + s];
            match self.cost {
                Cost::SumSq => {
                    for k in 0..CLASSES {
                        total += z(k) * z(k);
                        gl[k * BLOCK + s] = 2.0 * z(k) * scale;
                    }
                }
                Cost::CrossEntropy => {
                    let labels = self.data.labels.as_ref().expect("labels");
                    let class = labels[blk.first + s] as usize;
                    let m = (0..CLASSES).map(z).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..CLASSES).map(|k| (z(k) - m).exp()).sum();
                    total += m + sum.ln() - z(class);
                    for k in 0..CLASSES {
                        let softmax = (z(k) - m).exp() / sum;
                        let onehot = if k == class { 1.0 } else { 0.0 };
                        gl[k * BLOCK + s] = (softmax - onehot) * scale;
                    }
                }
            }
        }
        total
    }

    fn logits(&self, x: &[f64], logits: &mut [f64]) {
        gemm(
            logits,
            M::block(&[], CLASSES),
            M::block(x, self.d),
            M::weight(&self.head, CLASSES, self.d).t(),
            0.0,
        );
    }

    /// One RK4 step as nodec's `rk_step` takes it: stages `y + (h a) k`, then
    /// `y += h (Σ b_j k_j)`. `stages` and `acts` receive each stage's input and activations.
    fn rk4_step(&self, y: &mut [f64], k: &mut [Vec<f64>; 4], stages: &mut [f64], acts: &mut [f64]) {
        let h = 1.0 / self.steps as f64;
        let len = y.len();
        let hw = self.w * BLOCK;
        for i in 0..4 {
            let stage = &mut stages[i * len..(i + 1) * len];
            stage.copy_from_slice(y);
            if i > 0 {
                let ha = h * [0.0, 0.5, 0.5, 1.0][i];
                for (s, kv) in stage.iter_mut().zip(&k[i - 1]) {
                    *s += ha * kv;
                }
            }
            self.field(stage, &mut k[i], &mut acts[i * hw..(i + 1) * hw]);
        }
        let b = [1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0];
        for m in 0..len {
            let acc = b[0] * k[0][m] + b[1] * k[1][m] + b[2] * k[2][m] + b[3] * k[3][m];
            y[m] += h * acc;
        }
    }

    /// Hand-written forward solve: the mean loss.
    fn solve(&self) -> f64 {
        let totals: Vec<f64> = (0..self.data.n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut blk = self.bind(b);
                let len = self.d * BLOCK;
                let mut k: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; len]);
                let mut stages = vec![0.0; 4 * len];
                let mut acts = vec![0.0; 4 * self.w * BLOCK];
                for _ in 0..self.steps {
                    self.rk4_step(&mut blk.x, &mut k, &mut stages, &mut acts);
                }
                let mut logits = vec![0.0; CLASSES * BLOCK];
                let mut gl = vec![0.0; CLASSES * BLOCK];
                self.logits(&blk.x, &mut logits);
                self.terminal(&blk, &logits, &mut gl)
            })
            .collect();
        totals.iter().sum::<f64>() / self.data.n as f64
    }

    /// Hand-written backprop: every stage stored, then the reverse sweep; the mean loss and
    /// the gradient.
    fn gradient(&self) -> (f64, Grads) {
        let parts: Vec<(f64, Grads)> = (0..self.data.n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut blk = self.bind(b);
                let (d, w) = (self.d, self.w);
                let len = d * BLOCK;
                let hw = w * BLOCK;
                let mut k: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; len]);
                let mut stages = vec![0.0; self.steps * 4 * len];
                let mut acts = vec![0.0; self.steps * 4 * hw];
                for n in 0..self.steps {
                    self.rk4_step(
                        &mut blk.x,
                        &mut k,
                        &mut stages[n * 4 * len..(n + 1) * 4 * len],
                        &mut acts[n * 4 * hw..(n + 1) * 4 * hw],
                    );
                }
                let mut g = Grads::zeros(self);
                let mut logits = vec![0.0; CLASSES * BLOCK];
                let mut gl = vec![0.0; CLASSES * BLOCK];
                self.logits(&blk.x, &mut logits);
                let loss = self.terminal(&blk, &logits, &mut gl);
                gemm(
                    &mut g.0[4],
                    M::weight(&[], CLASSES, d),
                    M::block(&gl, CLASSES).t(),
                    M::block(&blk.x, d),
                    1.0,
                );
                let mut lambda = vec![0.0; len];
                gemm(
                    &mut lambda,
                    M::block(&[], d),
                    M::block(&gl, CLASSES),
                    M::weight(&self.head, CLASSES, d),
                    0.0,
                );
                let h = 1.0 / self.steps as f64;
                let bw = [1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0];
                let a = [0.0, 0.5, 0.5, 1.0];
                let mut kb: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; len]);
                let mut pulled = vec![0.0; len];
                let mut gz = vec![0.0; hw];
                for n in (0..self.steps).rev() {
                    for (st, kbs) in kb.iter_mut().enumerate() {
                        for (kv, l) in kbs.iter_mut().zip(&lambda) {
                            *kv = h * bw[st] * l;
                        }
                    }
                    for st in (0..4).rev() {
                        let base = (n * 4 + st) * len;
                        let abase = (n * 4 + st) * hw;
                        self.field_vjp(
                            &stages[base..base + len],
                            &acts[abase..abase + hw],
                            &kb[st],
                            &mut pulled,
                            &mut g,
                            &mut gz,
                        );
                        for (l, p) in lambda.iter_mut().zip(&pulled) {
                            *l += p;
                        }
                        if st > 0 {
                            for (kv, p) in kb[st - 1].iter_mut().zip(&pulled) {
                                *kv += a[st] * h * p;
                            }
                        }
                    }
                }
                // x(0) = K0 u: ∂/∂K0 = λ(0)ᵀ u.
                gemm(
                    &mut g.0[0],
                    M::weight(&[], d, self.din),
                    M::block(&lambda, d).t(),
                    M::block(&blk.u, self.din),
                    1.0,
                );
                (loss, g)
            })
            .collect();
        let mut total = Grads::zeros(self);
        let mut loss = 0.0;
        for (l, g) in &parts {
            loss += l;
            total.add(g);
        }
        (loss / self.data.n as f64, total)
    }

    fn nodec_solve(&self) -> f64 {
        let t1 = self.model.schedule.as_ref().expect("schedule").t1;
        self.bound().simulate(Some(vec![t1])).expect("solves").loss
    }

    fn nodec_gradient(&self) -> nodec::sens::Gradient {
        let options = GradientOptions::new(GradientMethod::Backprop);
        nodec::sens::gradient(&self.bound(), &options).expect("gradient")
    }

    /// The compiled model bound to its parameters and data.
    fn bound(&self) -> nodec::simulate::Bound<'_> {
        nodec::simulate::Bound::new(&self.model, &self.program, &self.params, &self.data)
    }

    /// nodec's gradient in the baseline's layout.
    fn nodec_grads(&self, g: &nodec::sens::Gradient) -> Grads {
        let layout = self.program.layout();
        Grads(names(self).map(|n| {
            let e = layout.entries.iter().find(|e| e.name == n).expect("param");
            g.grad[e.offset..e.offset + e.len()].to_vec()
        }))
    }

    /// Writes parameters, data and nodec's results for `benches/torch_wide.py`.
    fn export(&self, loss: f64, grads: &Grads) -> std::path::PathBuf {
        // The bench runs as <target>/<profile>/deps/wide-HASH.
        let exe = std::env::current_exe().expect("own path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target directory")
            .to_path_buf();
        let dir = target.join("wide-export");
        std::fs::create_dir_all(&dir).expect("export directory");
        let weights = [&self.k0, &self.k1, &self.b1, &self.k2, &self.head];
        let object = |values: [&Vec<f64>; 5]| {
            let map: serde_json::Map<String, serde_json::Value> = names(self)
                .iter()
                .zip(values)
                .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
                .collect();
            serde_json::Value::Object(map)
        };
        let g = &grads.0;
        let value = serde_json::json!({
            "model": self.name,
            "n": self.data.n,
            "input_dim": self.din,
            "state": self.d,
            "width": self.w,
            "steps": self.steps,
            "cost": if self.cost == Cost::SumSq { "sumsq" } else { "cross_entropy" },
            "params": object(weights),
            "inputs": self.data.inputs,
            "labels": self.data.labels,
            "nodec_loss": loss,
            "nodec_grad": object([&g[0], &g[1], &g[2], &g[3], &g[4]]),
        });
        let path = dir.join(format!("{}.json", self.name));
        std::fs::write(&path, value.to_string()).expect("export written");
        path
    }
}

/// Largest difference relative to the largest magnitude, over every parameter.
fn grad_difference(a: &Grads, b: &Grads) -> f64 {
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (x, y) in a.0.iter().zip(&b.0) {
        for (u, v) in x.iter().zip(y) {
            diff = diff.max((u - v).abs());
            scale = scale.max(v.abs());
        }
    }
    diff / scale
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let mut out = std::io::stdout();
    for name in ["wide_1024", "mnist_sized"] {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let p = load(name);
        // Same parameters, same data, same steps: the losses and gradients must agree to
        // rounding before the times mean anything.
        let ours = p.nodec_gradient();
        let ours_grads = p.nodec_grads(&ours);
        let solve_loss = p.nodec_solve();
        let (base_loss, base_grads) = p.gradient();
        let base_solve = p.solve();
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        let loss_diff = rel(ours.simulation.loss, base_loss)
            .max(rel(solve_loss, base_solve))
            .max(rel(solve_loss, base_loss));
        let grad_diff = grad_difference(&ours_grads, &base_grads);
        let export = p.export(ours.simulation.loss, &ours_grads);
        let _ = writeln!(
            out,
            "{name}: loss nodec {:.15e} hand-written {base_loss:.15e} (rel. diff. {loss_diff:.1e}); \
             gradient max diff / max |g| {grad_diff:.1e}; exported to {}",
            ours.simulation.loss,
            export.display()
        );
        assert!(loss_diff < 1e-12, "{name}: losses disagree");
        assert!(grad_diff < 1e-10, "{name}: gradients disagree");
        p4::interleaved_ratio(
            &format!("{name} batch 256 solve ratio nodec / hand-written GEMM"),
            41,
            || {
                std::hint::black_box(p.solve());
            },
            || {
                std::hint::black_box(p.nodec_solve());
            },
        );
        p4::interleaved_ratio(
            &format!("{name} batch 256 gradient ratio nodec backprop / hand-written GEMM"),
            21,
            || {
                std::hint::black_box(p.gradient());
            },
            || {
                std::hint::black_box(p.nodec_gradient());
            },
        );
    }
}
