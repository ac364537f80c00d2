//! Kernels in `f32` against the same kernels in `f64` (issue 19, first slice: `compile` only).
//!
//! Every entry point of every model in `models/` and `benches/data/wide/` (the tensor kernels),
//! compiled both as the scalar tape (where the model has a scalar IR) and as tensor kernels,
//! runs on the same block in both precisions; `f64` runs both as native code (where a kernel
//! has it) and interpreted, `f32` is always interpreted (native code is `f64` only).
//!
//! The inputs (states, directions, data, times, parameters) are drawn, then rounded to `f32`
//! before either precision sees them: both evaluate the same function at the same point, and
//! the difference is the `f32` arithmetic alone. Bound, normwise over each result block:
//! `‖out32 − out64‖∞ ≤ TOL · ‖out64‖∞` with `TOL = 2^-24 · 2^10 ≈ 6e-5`: the worst-case
//! relative error of an `f32` sum is `n u` with `u = 2^-24`, and the longest sums here are the
//! 1024-term products of `wide_1024` (`n = 2^10`); elementwise chains (`tanh`, `exp` at a few
//! ulps each, see `compile::math`) add a few `u` per level.
//!
//! The forward/reverse dot-product test `w·(J v) = (Jᵀ w)·v` (and `w·(∂f/∂θ u) = (wᵀ ∂f/∂θ)·u`)
//! runs in `f32`, against the sum of the products' magnitudes.

use nodec::compile::{Params, Program, Workspace};
use nodec::diag::SourceFile;
use nodec::ir::{CostKind, Model};
use nodec::real::Real;
use nodec::sema::Overrides;

use crate::support::{node_files, Lcg};

/// `2^-24 · 2^10`: see the module docs.
const TOL: f64 = 1024.0 * <f32 as Real>::UNIT_ROUNDOFF;

fn load(path: &std::path::Path) -> Model {
    let text = std::fs::read_to_string(path).expect("model file readable");
    let file = SourceFile::new(path.display().to_string(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "model");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    nodec::prepare_to_run(model)
}

fn round32(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| x as f32 as f64).collect()
}

/// One block's inputs, already representable in `f32`.
struct Block {
    width: usize,
    t: Vec<f64>,
    y: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
    /// A direction in the full parameter layout.
    u: Vec<f64>,
    inputs: Vec<f64>,
    labels: Vec<f64>,
    observed: Vec<f64>,
}

impl Block {
    fn new(p: &Program, width: usize, rng: &mut Lcg) -> Block {
        let (t0, t1) = p.span();
        let n = p.dim() * width;
        let mut fill = |len: usize| round32(rng.fill(len, -1.0, 1.0));
        Block {
            width,
            y: fill(n),
            v: fill(n),
            w: fill(n),
            u: fill(p.layout().total),
            inputs: fill(p.input_len() * width),
            labels: fill(p.label_len() * width),
            observed: fill(p.observed_len() * width),
            t: round32(
                (0..width)
                    .map(|s| t0 + (t1 - t0) * (s as f64 + 0.5) / width as f64)
                    .collect(),
            ),
        }
    }
}

fn cast<R: Real>(x: &[f64]) -> Vec<R> {
    x.iter().map(|&x| R::cast(x)).collect()
}

fn wide<R: Real>(x: &[R]) -> Vec<f64> {
    x.iter().map(|x| x.widen()).collect()
}

/// Every entry point's results on `b`, named, widened to `f64`.
fn results<R: Real>(p: &Program, params: &Params, b: &Block) -> Vec<(String, Vec<f64>)> {
    results_in(p, params, b, p.workspace_in::<R>(b.width))
}

/// [`results`] with the given workspace.
fn results_in<R: Real>(
    p: &Program,
    params: &Params,
    b: &Block,
    mut ws: Workspace<R>,
) -> Vec<(String, Vec<f64>)> {
    let width = b.width;
    let (dim, total) = (p.dim(), p.layout().total);
    ws.bind_inputs(&b.inputs);
    ws.bind_labels(&b.labels);
    ws.bind_observed(&b.observed);
    let (y, v, w, u) = (
        cast::<R>(&b.y),
        cast::<R>(&b.v),
        cast::<R>(&b.w),
        cast::<R>(&b.u),
    );
    let t = &b.t;
    let zeros = |n: usize| vec![R::zero(); n];
    let mut all = Vec::new();
    let mut put = |name: &str, x: &[R]| all.push((name.to_string(), wide(x)));

    let mut out = zeros(dim * width);
    p.rhs(params, t, &y, &mut out, &mut ws);
    put("rhs", &out);
    p.init(params, &mut out, &mut ws);
    put("init", &out);
    p.jvp_state(params, t, &y, &v, &mut out, &mut ws);
    put("jvp_state", &out);
    p.jvp_param(params, t, &y, &u, &mut out, &mut ws);
    put("jvp_param", &out);
    p.vjp_state(params, t, &y, &w, &mut out, &mut ws);
    put("vjp_state", &out);
    let mut grad = zeros(total);
    p.vjp(params, t, &y, &w, &mut out, &mut grad, &mut ws);
    put("vjp.out", &out);
    put("vjp.grad", &grad);
    let mut grad = zeros(total);
    p.vjp_param_accumulate(params, t, &y, &w, &mut grad, &mut ws);
    put("vjp_param", &grad);
    if p.saved_len() > 0 {
        let mut saved = zeros(p.saved_len() * width);
        p.rhs_saving(params, t, &y, &mut out, &mut saved, &mut ws);
        let mut grad = zeros(total);
        p.vjp_saved(params, t, &y, &saved, &w, &mut out, &mut grad, &mut ws);
        put("vjp_saved.out", &out);
        put("vjp_saved.grad", &grad);
    }
    p.rhs_time(params, t, &y, &mut out, &mut ws);
    put("rhs_time", &out);
    p.init_jvp_param(params, &u, &mut out, &mut ws);
    put("init_jvp_param", &out);
    let mut grad = zeros(total);
    p.init_vjp_param_accumulate(params, &w, &mut grad, &mut ws);
    put("init_vjp_param", &grad);
    let mut metrics = zeros(p.metrics_len() * width);
    p.metrics(params, t, &y, &mut metrics, &mut ws);
    put("metrics", &metrics);
    let mut outputs = zeros(p.outputs_len() * width);
    p.outputs(params, t, &y, &mut outputs, &mut ws);
    put("outputs", &outputs);
    for kind in p.cost_kinds() {
        if kind == CostKind::Penalty {
            let mut grad = zeros(total);
            let value = p.penalty(params, Some(&mut grad), &mut ws);
            all.push(("penalty".into(), vec![value]));
            all.push(("penalty.grad".into(), wide(&grad)));
            continue;
        }
        let mut value = zeros(width);
        p.cost(kind, params, t, &y, &mut value, &mut ws);
        all.push((format!("cost {kind:?}"), wide(&value)));
        let mut both = zeros((1 + dim) * width);
        let mut grad = zeros(total);
        p.cost_grad(kind, params, t, &y, &mut both, &mut grad, &mut ws);
        all.push((format!("cost_grad {kind:?}"), wide(&both)));
        all.push((format!("cost_grad {kind:?}.grad"), wide(&grad)));
    }
    if !p.events().is_empty() {
        let events = p.events().len();
        let jumps: usize = p
            .events()
            .iter()
            .flat_map(|e| e.targets.iter().map(|t| t.1))
            .sum();
        let mut conds = zeros(events * width);
        p.event_conditions(params, t, &y, &mut conds, &mut ws);
        all.push(("event_conditions".into(), wide(&conds)));
        let mut values = zeros(jumps * width);
        p.event_jumps(params, t, &y, &mut values, &mut ws);
        all.push(("event_jumps".into(), wide(&values)));
        let mut jvp = zeros(2 * (events + jumps) * width);
        p.event_jvp(params, t, &y, &v, &u, &mut jvp, &mut ws);
        all.push(("event_jvp".into(), wide(&jvp)));
    }
    if p.has_lm_k() {
        let k = p.lm_k(params, t[0], &mut ws);
        all.push(("lm_k".into(), vec![k.widen()]));
        let mut grad = zeros(total);
        p.lm_k_grad_accumulate(params, t[0], &mut grad, &mut ws);
        all.push(("lm_k.grad".into(), wide(&grad)));
    }
    if p.has_msa_mixed() {
        let mut grad = zeros(total);
        p.msa_mixed_accumulate(params, t, &y, &v, &w, &mut grad, &mut ws);
        all.push(("msa_mixed".into(), wide(&grad)));
    }
    // The Jacobian is a JVP over `dim` lanes: kept to the models where that is small.
    if dim <= 64 {
        let sample = width / 2;
        let point: Vec<R> = (0..dim).map(|i| y[i * width + sample]).collect();
        let mut jac = zeros(dim * dim);
        p.jacobian(params, t[sample], &point, sample, &mut jac, &mut ws);
        all.push(("jacobian".into(), wide(&jac)));
    }
    all
}

fn norm(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// The kernels a model compiles to: the tape (where it has a scalar IR) and tensor kernels.
fn programs(model: &Model) -> Vec<(&'static str, Program)> {
    let mut programs = vec![("tensor", Program::compile_tensor(model))];
    if model.has_scalar_ir() {
        programs.push(("tape", Program::compile_with(model, true)));
    }
    programs
}

fn model_files() -> Vec<std::path::PathBuf> {
    let mut files = node_files("models");
    files.extend(node_files("benches/data/wide"));
    files
}

/// Parameters from the model's initial values, drawn where they are not given, in `f32`.
fn params_for(p: &Program, model: &Model, rng: &mut Lcg) -> Params {
    let init = Params::initial(model, p.layout());
    let values = init
        .values()
        .iter()
        .map(|&x| if x == 0.0 { rng.uniform(-0.5, 0.5) } else { x })
        .collect();
    Params::from_values(round32(values))
}

#[test]
#[allow(
    clippy::print_stderr,
    reason = "reports the largest difference measured"
)]
fn every_entry_point_in_f32_agrees_with_f64_on_every_model() {
    let mut worst = (0.0f64, String::new());
    let mut compared = 0;
    for path in model_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let model = load(&path);
        for (kind, program) in programs(&model) {
            let mut rng = Lcg(19);
            let params = params_for(&program, &model, &mut rng);
            // A full block, and one whose width is not the lane loops' specialized 32.
            for width in [32, 13] {
                let block = Block::new(&program, width, &mut rng);
                let single = results::<f32>(&program, &params, &block);
                let native = results::<f64>(&program, &params, &block);
                let interpreted = results::<f64>(&program.clone().interpreted(), &params, &block);
                for reference in [&native, &interpreted] {
                    for ((what, a), (_, b)) in single.iter().zip(reference) {
                        assert_eq!(a.len(), b.len(), "{name} {kind} {what}");
                        if b.iter().any(|x| !x.is_finite()) {
                            // Outside the function's domain at this draw: both say so.
                            assert!(a.iter().any(|x| !x.is_finite()), "{name} {kind} {what}");
                            continue;
                        }
                        let err = a
                            .iter()
                            .zip(b)
                            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                        let rel = err / norm(b).max(f64::MIN_POSITIVE);
                        assert!(
                            err <= TOL * norm(b),
                            "{name} {kind} {what} width {width}: f32 differs from f64 by {rel:e} \
                             relative ({err:e} absolute)"
                        );
                        if rel > worst.0 {
                            worst = (rel, format!("{name} {kind} {what}"));
                        }
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 1000, "{compared} result blocks compared");
    // The margin under TOL, for the record (`cargo test precision -- --nocapture`).
    eprintln!(
        "largest f32/f64 relative difference {:e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn forward_and_reverse_products_agree_in_f32() {
    for path in model_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let model = load(&path);
        for (kind, p) in programs(&model) {
            let mut rng = Lcg(23);
            let params = params_for(&p, &model, &mut rng);
            let b = Block::new(&p, 32, &mut rng);
            let mut ws: Workspace<f32> = p.workspace_in(b.width);
            ws.bind_inputs(&b.inputs);
            ws.bind_labels(&b.labels);
            ws.bind_observed(&b.observed);
            let (y, v, w, u) = (cast::<f32>(&b.y), cast(&b.v), cast(&b.w), cast(&b.u));
            let n = y.len();
            let mut jv = vec![0.0f32; n];
            p.jvp_state(&params, &b.t, &y, &v, &mut jv, &mut ws);
            let mut jtw = vec![0.0f32; n];
            p.vjp_state(&params, &b.t, &y, &w, &mut jtw, &mut ws);
            let mut ju = vec![0.0f32; n];
            p.jvp_param(&params, &b.t, &y, &u, &mut ju, &mut ws);
            let mut g = vec![0.0f32; u.len()];
            p.vjp_param_accumulate(&params, &b.t, &y, &w, &mut g, &mut ws);
            // Sums of the products in f64, and of their magnitudes (the rounding's scale).
            let dot = |a: &[f32], b: &[f32]| -> (f64, f64) {
                a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&a, &b)| {
                    let p = a as f64 * b as f64;
                    (s + p, m + p.abs())
                })
            };
            for (what, (fwd, fm), (rev, rm)) in [
                ("state", dot(&w, &jv), dot(&jtw, &v)),
                ("param", dot(&w, &ju), dot(&g, &u)),
            ] {
                if !(fwd.is_finite() && rev.is_finite()) {
                    continue;
                }
                assert!(
                    (fwd - rev).abs() <= TOL * (fm + rm) + f64::MIN_POSITIVE,
                    "{name} {kind} {what}: w·(J v) = {fwd} but (Jᵀ w)·v = {rev} (scale {})",
                    fm + rm
                );
            }
        }
    }
}

/// A program compiled with `precision = f32` keeps the `f64` entry points the solvers call
/// and runs their kernels in `f32` behind them (`Program::run_single`): on every model and
/// entry point its results are the `f32` kernels' bits, widened. The Jacobian of the stiff
/// methods' Newton matrices and the uniform kernels (LM's `k`, penalties: functions of the
/// parameters alone) stay `f64` by design and are left out.
#[test]
fn f32_programs_behind_f64_entry_points_give_the_f32_kernels_bits() {
    let mut compared = 0;
    for path in model_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut model = load(&path);
        if let Some(s) = model.schedule.as_mut() {
            s.precision = nodec::ir::Precision::F32;
        }
        for (kind, program) in programs(&model) {
            assert_eq!(program.precision(), nodec::ir::Precision::F32);
            let mut rng = Lcg(23);
            let params = params_for(&program, &model, &mut rng);
            for width in [32, 13] {
                let block = Block::new(&program, width, &mut rng);
                let single = results::<f32>(&program, &params, &block);
                let mixed = results_in::<f64>(&program, &params, &block, program.workspace(width));
                for ((what, a), (_, b)) in single.iter().zip(&mixed) {
                    if what == "jacobian" || what.starts_with("lm_k") || what.starts_with("penalty")
                    {
                        continue;
                    }
                    let same = a.len() == b.len()
                        && a.iter()
                            .zip(b)
                            .all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan());
                    assert!(
                        same,
                        "{name} {kind} {what} width {width}: {a:?} against {b:?}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 500, "{compared} result blocks compared");
}
