//! Compiled kernels against the reference interpreter `ir::eval` on every model, at block widths
//! 1, 5 (a remainder after chunks of four), 32 and 64 (the two block widths); JVP/VJP against finite differences and each
//! other; the Jacobian against stacked JVPs; time-varying parameters; thread safety.
//!
//! Tolerances. Primal values are computed in the interpreter's order, so they differ only
//! through the vectorized `tanh`/`exp`/`sigmoid` (≤ 3 ulps each) and matrix products of at
//! least 8×8 on 8 or more lanes, which run as GEMMs (own order, FMA): 1e-14 relative, with an
//! absolute floor of 1e-14 times the largest value of the block (a sum that cancels to nearly
//! zero keeps the absolute error of its terms). Derivative kernels reassociate products
//! (`W·(d·c)` for `(W·d)·c`), a few ulps per term: 1e-12 against the interpreter. Central
//! differences with `h = 1e-6 (1 + |x|)` are good to about 1e-9 relative, so 1e-7 holds with
//! margin; the dot-product test compares one bilinear form summed in two orders: 1e-12.

use nodec::compile::{ParamLayout, Params, Program, Workspace};
use nodec::diag::SourceFile;
use nodec::ir::{self, CostKind, Model, ParamInit, ParamTime, Point, Var};
use nodec::sema::Overrides;
use nodec::simulate::ModelSystem;
use nodec::solve::System;

use crate::support::{load_model, node_files, Lcg};

/// A block of samples and the parameters, with every value the interpreter needs.
struct Block {
    width: usize,
    t: Vec<f64>,
    /// Component-major blocks.
    y: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
    /// The running cost quadrature's cotangent, per sample.
    wq: Vec<f64>,
    /// Sample-major rows.
    inputs: Vec<f64>,
    labels: Vec<f64>,
    observed: Vec<f64>,
    params: Params,
    /// Parameter direction, full layout.
    u: Vec<f64>,
}

fn lens(shapes: impl Iterator<Item = ir::Shape>) -> Vec<usize> {
    shapes.map(|s| s.len()).collect()
}

fn block(model: &Model, program: &Program, width: usize, rng: &mut Lcg) -> Block {
    let dim = program.dim();
    let layout = program.layout();
    let mut values = Vec::with_capacity(layout.total);
    for (p, e) in model.params.iter().zip(&layout.entries) {
        for _ in 0..e.copies {
            match &p.init {
                ParamInit::Values(v) if v.iter().any(|x| *x != 0.0) => {
                    // Declared values, slightly different per copy so that layers differ.
                    let scale = rng.uniform(0.9, 1.1);
                    values.extend(v.iter().map(|x| x * scale));
                }
                _ => values.extend(rng.fill(e.len(), -0.5, 0.5)),
            }
        }
    }
    let (t0, t1) = program.span();
    Block {
        width,
        t: (0..width).map(|_| rng.uniform(t0, t1)).collect(),
        y: rng.fill(dim * width, 0.2, 1.2),
        v: rng.fill(dim * width, -1.0, 1.0),
        w: rng.fill(dim * width, -1.0, 1.0),
        wq: rng.fill(width, -1.0, 1.0),
        inputs: rng.fill(program.input_len() * width, -1.0, 1.0),
        labels: (0..program.label_len() * width)
            .map(|_| {
                if rng.uniform(0.0, 1.0) < 0.5 {
                    0.0
                } else {
                    1.0
                }
            })
            .collect(),
        observed: rng.fill(program.observed_len() * width, -1.0, 1.0),
        params: Params::from_values(values),
        u: rng.fill(layout.total, -1.0, 1.0),
    }
}

fn split(flat: &[f64], lens: &[usize]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    let mut k = 0;
    for &n in lens {
        out.push(flat[k..k + n].to_vec());
        k += n;
    }
    out
}

/// Component `i` of sample `s` of a component-major block.
fn column(block: &[f64], width: usize, s: usize) -> Vec<f64> {
    block.iter().skip(s).step_by(width).copied().collect()
}

/// The interpreter's point for sample `s`, with the parameters in force at its time.
fn point(model: &Model, layout: &ParamLayout, b: &Block, s: usize) -> Point {
    let t = b.t[s];
    let mut theta = vec![0.0; layout.view_len];
    layout.resolve(b.params.values(), layout.piece(t), &mut theta);
    let mut tangent = vec![0.0; layout.view_len];
    layout.resolve(&b.u, layout.piece(t), &mut tangent);
    let states = lens(model.states.iter().map(|x| x.shape));
    let params = lens(model.params.iter().map(|x| x.shape));
    let inputs = lens(model.inputs.iter().map(|x| x.shape));
    let observed = lens(model.observed.iter().map(|x| x.shape));
    let row = |data: &[f64], n: usize| data[s * n..(s + 1) * n].to_vec();
    let n_in: usize = inputs.iter().sum();
    let n_obs: usize = observed.iter().sum();
    Point {
        t,
        states: split(&column(&b.y, b.width, s), &states),
        params: split(&theta, &params),
        inputs: split(&row(&b.inputs, n_in), &inputs),
        labels: row(&b.labels, model.labels.len()),
        observed: split(&row(&b.observed, n_obs), &observed),
        state_tangents: split(&column(&b.v, b.width, s), &states),
        param_tangents: split(&tangent, &params),
        cotangents: split(&column(&b.w, b.width, s), &states),
        running_cotangent: Some(b.wq[s]),
    }
}

fn workspace(program: &Program, b: &Block) -> Workspace {
    let mut ws = program.workspace(b.width);
    ws.bind_inputs(&b.inputs);
    ws.bind_labels(&b.labels);
    ws.bind_observed(&b.observed);
    ws
}

/// `|a − b| ≤ rel · max(|b|, floor)`.
fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let floor = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    for (k, (a, b)) in got.iter().zip(want).enumerate() {
        let ok = (a - b).abs() <= rel * b.abs().max(floor * 1.0).max(1e-300)
            || (a.is_nan() && b.is_nan())
            || a == b;
        assert!(ok, "{what}[{k}]: compiled {a} vs interpreted {b}");
    }
}

/// A block of `rows × width` from per-sample interpreter rows.
fn to_block(per_sample: &[Vec<f64>], width: usize) -> Vec<f64> {
    let rows = per_sample.first().map_or(0, |r| r.len());
    let mut out = vec![0.0; rows * width];
    for (s, r) in per_sample.iter().enumerate() {
        for (i, &x) in r.iter().enumerate() {
            out[i * width + s] = x;
        }
    }
    out
}

/// Per-sample interpreted values of `roots` as a block.
fn interpreted(model: &Model, layout: &ParamLayout, b: &Block, roots: &[ir::ExprId]) -> Vec<f64> {
    let rows: Vec<Vec<f64>> = (0..b.width)
        .map(|s| point(model, layout, b, s).eval(&model.pool, roots))
        .collect();
    to_block(&rows, b.width)
}

/// Σ over samples of interpreted parameter-gradient roots, scattered into the full layout.
fn interpreted_grad(
    model: &Model,
    layout: &ParamLayout,
    b: &Block,
    roots: &[ir::ExprId],
) -> Vec<f64> {
    let mut grad = vec![0.0; layout.total];
    for s in 0..b.width {
        let g = point(model, layout, b, s).eval(&model.pool, roots);
        layout.scatter(&g, layout.piece(b.t[s]), &mut grad);
    }
    grad
}

fn check_against_interpreter(name: &str, model: &Model, width: usize, seed: u64) {
    let program = Program::compile(model);
    let layout = program.layout();
    let mut rng = Lcg(seed ^ (name.len() as u64) << 8);
    let b = block(model, &program, width, &mut rng);
    let mut ws = workspace(&program, &b);
    let dim = program.dim();
    let d = &model.derivatives;
    let what = |k: &str| format!("{name} width {width}: {k}");
    let p = &b.params;

    let mut out = vec![0.0; dim * width];
    program.rhs(p, &b.t, &b.y, &mut out, &mut ws);
    assert_close(
        &what("rhs"),
        &out,
        &interpreted(model, layout, &b, &model.rhs()),
        1e-14,
    );

    // Initial states are evaluated at t0.
    let mut at_t0 = Block { ..clone_block(&b) };
    at_t0.t.fill(program.span().0);
    let init: Vec<ir::ExprId> = model.states.iter().flat_map(|s| s.init.clone()).collect();
    program.init(p, &mut out, &mut ws);
    assert_close(
        &what("init"),
        &out,
        &interpreted(model, layout, &at_t0, &init),
        1e-14,
    );

    let outputs: Vec<ir::ExprId> = model.outputs.iter().flat_map(|o| o.value.clone()).collect();
    let mut o = vec![0.0; outputs.len() * width];
    program.outputs(p, &b.t, &b.y, &mut o, &mut ws);
    assert_close(
        &what("outputs"),
        &o,
        &interpreted(model, layout, &b, &outputs),
        1e-14,
    );
    let metrics: Vec<ir::ExprId> = model.metrics.iter().flat_map(|o| o.value.clone()).collect();
    let mut m = vec![0.0; metrics.len() * width];
    program.metrics(p, &b.t, &b.y, &mut m, &mut ws);
    assert_close(
        &what("metrics"),
        &m,
        &interpreted(model, layout, &b, &metrics),
        1e-14,
    );

    program.rhs_time(p, &b.t, &b.y, &mut out, &mut ws);
    assert_close(
        &what("rhs_time"),
        &out,
        &interpreted(model, layout, &b, &d.rhs_time),
        1e-12,
    );
    program.jvp_state(p, &b.t, &b.y, &b.v, &mut out, &mut ws);
    assert_close(
        &what("jvp_state"),
        &out,
        &interpreted(model, layout, &b, &d.jvp_state),
        1e-12,
    );
    program.jvp_param(p, &b.t, &b.y, &b.u, &mut out, &mut ws);
    assert_close(
        &what("jvp_param"),
        &out,
        &interpreted(model, layout, &b, &d.jvp_param),
        1e-12,
    );
    program.vjp_state(p, &b.t, &b.y, &b.w, &mut out, &mut ws);
    let want_vjp = interpreted(model, layout, &b, &d.vjp_state);
    assert_close(&what("vjp_state"), &out, &want_vjp, 1e-12);
    let want_grad = interpreted_grad(model, layout, &b, &d.vjp_param);
    let mut grad = vec![0.0; layout.total];
    out.fill(f64::NAN);
    program.vjp(p, &b.t, &b.y, &b.w, &mut out, &mut grad, &mut ws);
    assert_close(&what("vjp (state)"), &out, &want_vjp, 1e-12);
    assert_close(&what("vjp (param)"), &grad, &want_grad, 1e-12);
    grad.fill(0.0);
    program.vjp_param_accumulate(p, &b.t, &b.y, &b.w, &mut grad, &mut ws);
    assert_close(&what("vjp_param"), &grad, &want_grad, 1e-12);

    program.init_jvp_param(p, &b.u, &mut out, &mut ws);
    assert_close(
        &what("init_jvp_param"),
        &out,
        &interpreted(model, layout, &at_t0, &d.init_jvp_param),
        1e-12,
    );
    grad.fill(0.0);
    program.init_vjp_param_accumulate(p, &b.w, &mut grad, &mut ws);
    assert_close(
        &what("init_vjp_param"),
        &grad,
        &interpreted_grad(model, layout, &at_t0, &d.init_vjp_param),
        1e-12,
    );
    // A gradient skips this pull-back where the program says no initial state reads a
    // parameter: then the interpreter's must be zero.
    if !program.init_reads_params() {
        let pulled = interpreted_grad(model, layout, &at_t0, &d.init_vjp_param);
        assert!(
            pulled.iter().all(|&g| g == 0.0),
            "{}",
            what("init_reads_params")
        );
    }

    // The penalty: every term reading time-varying params on each of their copies.
    let (mut want, mut want_g) = (0.0, vec![0.0; layout.total]);
    let mut has_penalty = false;
    for c in d.costs.iter().filter(|c| c.kind == CostKind::Penalty) {
        has_penalty = true;
        for copy in 0..c.copies {
            let mut on_copy = point(model, layout, &at_t0, 0);
            let mut theta = vec![0.0; layout.view_len];
            layout.resolve_copy(p.values(), copy, &mut theta);
            on_copy.params = split(&theta, &lens(model.params.iter().map(|x| x.shape)));
            want += on_copy.eval(&model.pool, &[c.value])[0];
            let g_view = on_copy.eval(&model.pool, &c.param);
            layout.scatter_copy(&g_view, copy, &mut want_g);
        }
    }
    if has_penalty {
        let mut g = vec![0.0; layout.total];
        let v = program.penalty(p, Some(&mut g), &mut ws);
        assert_close(&what("penalty"), &[v], &[want], 1e-14);
        assert_close(&what("penalty grad"), &g, &want_g, 1e-12);
    }
    for c in &d.costs {
        let mut value = vec![0.0; width];
        if c.kind == CostKind::Penalty {
            continue;
        }
        assert!(program.cost(c.kind, p, &b.t, &b.y, &mut value, &mut ws));
        assert_close(
            &what(c.kind.name()),
            &value,
            &interpreted(model, layout, &b, &[c.value]),
            1e-14,
        );
        let mut rows = vec![0.0; (1 + dim) * width];
        let mut g = vec![0.0; layout.total];
        assert!(program.cost_grad(c.kind, p, &b.t, &b.y, &mut rows, &mut g, &mut ws));
        let mut lanes = vec![c.value];
        lanes.extend_from_slice(&c.state);
        assert_close(
            &what("cost grad (state)"),
            &rows,
            &interpreted(model, layout, &b, &lanes),
            1e-12,
        );
        assert_close(
            &what("cost grad (param)"),
            &g,
            &interpreted_grad(model, layout, &b, &c.param),
            1e-12,
        );
    }
    if program.has_fused_running_cost() {
        check_fused_running_cost(&what, model, &program, &b, &mut ws);
    }
    if program.has_lm_k() {
        let t = b.t[0];
        let k = program.lm_k(p, t, &mut ws);
        let roots = [model.schedule.as_ref().unwrap().lm_k.unwrap()];
        let want = point(model, layout, &b, 0).eval(&model.pool, &roots);
        assert_close(&what("lm_k"), &[k], &want, 1e-14);
    }
}

/// The field with its running cost in one kernel, and its VJP, against the interpreter and
/// against the separately derived field VJP plus `w_q` times the cost's gradient (two
/// symbolic derivations), with and without the saved activations.
fn check_fused_running_cost(
    what: &dyn Fn(&str) -> String,
    model: &Model,
    program: &Program,
    b: &Block,
    ws: &mut Workspace,
) {
    let (dim, width, p, layout) = (program.dim(), b.width, &b.params, program.layout());
    let d = &model.derivatives;
    let running = d.cost(CostKind::Running).expect("a running cost");
    let mut rows = model.rhs();
    rows.push(running.value);
    let mut dy = vec![0.0; (dim + 1) * width];
    let mut saved = vec![0.0; program.quad_saved_len() * width];
    program.rhs_quad_saving(p, &b.t, &b.y, &mut dy, &mut saved, ws);
    assert_close(
        &what("rhs with running cost"),
        &dy,
        &interpreted(model, layout, b, &rows),
        1e-14,
    );
    let want_state = interpreted(model, layout, b, &d.quad_vjp_state);
    let want_param = interpreted_grad(model, layout, b, &d.quad_vjp_param);
    // The same pull-back from the field's VJP and the cost's gradient, derived separately.
    let field_state = interpreted(model, layout, b, &d.vjp_state);
    let cost_state = interpreted(model, layout, b, &running.state);
    let separate_state: Vec<f64> = (0..dim * width)
        .map(|k| field_state[k] + b.wq[k % width] * cost_state[k])
        .collect();
    assert_close(
        &what("augmented VJP = field VJP + w_q ∂L/∂x"),
        &want_state,
        &separate_state,
        1e-12,
    );
    let mut separate_param = interpreted_grad(model, layout, b, &d.vjp_param);
    for s in 0..width {
        // The cost's parameter gradient at sample s, scaled by that sample's cotangent.
        let g: Vec<f64> = point(model, layout, b, s)
            .eval(&model.pool, &running.param)
            .iter()
            .map(|g| b.wq[s] * g)
            .collect();
        layout.scatter(&g, layout.piece(b.t[s]), &mut separate_param);
    }
    assert_close(
        &what("augmented VJP (param) = field VJP + w_q ∂L/∂θ"),
        &want_param,
        &separate_param,
        1e-12,
    );
    let mut w = b.w.clone();
    w.extend_from_slice(&b.wq);
    for saved in [&saved[..], &[]] {
        let mut out = vec![f64::NAN; dim * width];
        let mut grad = vec![0.0; layout.total];
        program.vjp_quad_saved(p, &b.t, &b.y, saved, &w, &mut out, &mut grad, ws);
        let how = if saved.is_empty() { "" } else { ", saved" };
        assert_close(
            &what(&format!("augmented VJP (state{how})")),
            &out,
            &want_state,
            1e-12,
        );
        assert_close(
            &what(&format!("augmented VJP (param{how})")),
            &grad,
            &want_param,
            1e-12,
        );
    }
}

fn clone_block(b: &Block) -> Block {
    Block {
        width: b.width,
        t: b.t.clone(),
        y: b.y.clone(),
        v: b.v.clone(),
        w: b.w.clone(),
        wq: b.wq.clone(),
        inputs: b.inputs.clone(),
        labels: b.labels.clone(),
        observed: b.observed.clone(),
        params: b.params.clone(),
        u: b.u.clone(),
    }
}

#[test]
fn compiled_kernels_equal_the_interpreter_on_every_model() {
    for path in node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let model = load_model(&name);
        for (width, seed) in [(1, 1), (5, 2), (32, 3), (64, 4)] {
            check_against_interpreter(&name, &model, width, seed);
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// JVP and VJP against central differences of the compiled right-hand side, and against each
/// other; the Jacobian against stacked JVPs; the block's parameter VJP against the sum of
/// per-sample ones.
#[test]
fn derivatives_agree_with_finite_differences_and_each_other() {
    for path in node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let model = load_model(&name);
        let program = Program::compile(&model);
        let layout = program.layout();
        let dim = program.dim();
        let width = 5;
        let mut rng = Lcg(17);
        let b = block(&model, &program, width, &mut rng);
        let mut ws = workspace(&program, &b);
        let p = &b.params;
        let rhs = |y: &[f64], params: &Params, ws: &mut Workspace| {
            let mut f = vec![0.0; dim * width];
            program.rhs(params, &b.t, y, &mut f, ws);
            f
        };
        let mut jv = vec![0.0; dim * width];
        program.jvp_state(p, &b.t, &b.y, &b.v, &mut jv, &mut ws);
        // Central difference along v, per sample with its own step.
        let scale = b.y.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let h = 1e-6 * (1.0 + scale);
        let shifted = |sign: f64| -> Vec<f64> {
            b.y.iter()
                .zip(&b.v)
                .map(|(y, v)| y + sign * h * v)
                .collect()
        };
        let fp = rhs(&shifted(1.0), p, &mut ws);
        let fm = rhs(&shifted(-1.0), p, &mut ws);
        let f0 = rhs(&b.y, p, &mut ws);
        let fscale = f0.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for k in 0..dim * width {
            let fd = (fp[k] - fm[k]) / (2.0 * h);
            assert!(
                (fd - jv[k]).abs() <= 1e-7 * (1.0 + jv[k].abs() + 1e-3 * fscale),
                "{name}: jvp_state[{k}] {} vs fd {fd}",
                jv[k]
            );
        }
        let mut ju = vec![0.0; dim * width];
        program.jvp_param(p, &b.t, &b.y, &b.u, &mut ju, &mut ws);
        let pscale = p.values().iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let hp = 1e-6 * (1.0 + pscale);
        let nudged = |sign: f64| {
            Params::from_values(
                p.values()
                    .iter()
                    .zip(&b.u)
                    .map(|(x, u)| x + sign * hp * u)
                    .collect(),
            )
        };
        let fp = rhs(&b.y, &nudged(1.0), &mut ws);
        let fm = rhs(&b.y, &nudged(-1.0), &mut ws);
        for k in 0..dim * width {
            let fd = (fp[k] - fm[k]) / (2.0 * hp);
            assert!(
                (fd - ju[k]).abs() <= 1e-7 * (1.0 + ju[k].abs() + 1e-3 * fscale),
                "{name}: jvp_param[{k}] {} vs fd {fd}",
                ju[k]
            );
        }
        // Dot-product tests: ⟨w, J v⟩ = ⟨Jᵀ w, v⟩ over the block, for states and params.
        let mut jtw = vec![0.0; dim * width];
        let mut grad = vec![0.0; layout.total];
        program.vjp(p, &b.t, &b.y, &b.w, &mut jtw, &mut grad, &mut ws);
        let (l, r) = (dot(&b.w, &jv), dot(&jtw, &b.v));
        assert!(
            (l - r).abs() <= 1e-12 * (1.0 + l.abs().max(r.abs())),
            "{name}: states {l} vs {r}"
        );
        let (l, r) = (dot(&b.w, &ju), dot(&grad, &b.u));
        assert!(
            (l - r).abs() <= 1e-12 * (1.0 + l.abs().max(r.abs())),
            "{name}: params {l} vs {r}"
        );
        // The block's parameter gradient is the sum of per-sample gradients.
        let mut sum = vec![0.0; layout.total];
        for s in 0..width {
            let one = Block {
                width: 1,
                t: vec![b.t[s]],
                y: column(&b.y, width, s),
                w: column(&b.w, width, s),
                inputs: b.inputs[s * program.input_len()..(s + 1) * program.input_len()].to_vec(),
                labels: b.labels[s * program.label_len()..(s + 1) * program.label_len()].to_vec(),
                observed: b.observed[s * program.observed_len()..(s + 1) * program.observed_len()]
                    .to_vec(),
                ..clone_block(&b)
            };
            let mut ws1 = workspace(&program, &one);
            program.vjp_param_accumulate(p, &one.t, &one.y, &one.w, &mut sum, &mut ws1);
        }
        for (k, (a, s)) in grad.iter().zip(&sum).enumerate() {
            assert!(
                (a - s).abs() <= 1e-13 * (1.0 + a.abs()),
                "{name}: block grad[{k}] {a} vs per-sample sum {s}"
            );
        }
        // The dense Jacobian of each sample equals the stacked JVPs with unit directions,
        // bit for bit.
        let mut ws1 = program.workspace(1);
        for s in 0..width {
            let n_in = program.input_len();
            ws1.bind_inputs(&b.inputs[s * n_in..(s + 1) * n_in]);
            let n_l = program.label_len();
            ws1.bind_labels(&b.labels[s * n_l..(s + 1) * n_l]);
            let y = column(&b.y, width, s);
            let mut jac = vec![0.0; dim * dim];
            program.jacobian(p, b.t[s], &y, 0, &mut jac, &mut ws1);
            for j in 0..dim {
                let mut e = vec![0.0; dim];
                e[j] = 1.0;
                let mut col = vec![0.0; dim];
                program.jvp_state(p, &[b.t[s]], &y, &e, &mut col, &mut ws1);
                for i in 0..dim {
                    assert_eq!(
                        jac[i * dim + j].to_bits(),
                        col[i].to_bits(),
                        "{name}: J[{i}][{j}]"
                    );
                }
            }
            // The structural pattern holds every nonzero, and J V by `lanes` seeded lanes is
            // the dense product (the stiff solvers' compressed Jacobian).
            if let Some(pattern) = program.jacobian_pattern() {
                assert_eq!(pattern.len(), dim, "{name}");
                for i in 0..dim {
                    for j in 0..dim {
                        if jac[i * dim + j] != 0.0 {
                            assert!(
                                pattern[i].contains(&(j as u32)),
                                "{name}: J[{i}][{j}] = {} outside the pattern",
                                jac[i * dim + j]
                            );
                        }
                    }
                }
            }
            let lanes = 3;
            let seeds = rng.fill(dim * lanes, -1.0, 1.0);
            let mut jv = vec![0.0; dim * lanes];
            program.jacobian_seeded(p, b.t[s], &y, 0, &seeds, lanes, &mut jv, &mut ws1);
            for i in 0..dim {
                for l in 0..lanes {
                    let want: f64 = (0..dim)
                        .map(|j| jac[i * dim + j] * seeds[j * lanes + l])
                        .sum();
                    let scale: f64 = (0..dim)
                        .map(|j| (jac[i * dim + j] * seeds[j * lanes + l]).abs())
                        .sum();
                    assert!(
                        (jv[i * lanes + l] - want).abs() <= 1e-12 * (1.0 + scale),
                        "{name}: (J V)[{i}][{l}] {} vs {want}",
                        jv[i * lanes + l]
                    );
                }
            }
        }
    }
}

fn compile_text(text: &str) -> Model {
    let file = SourceFile::new("test.node".to_string(), text.to_string());
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "test");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    nodec::prepare(model)
}

#[test]
fn per_layer_params_take_the_piece_right_of_a_breakpoint() {
    let model = compile_text(
        "param k[2] per layer = 1\nstate x = 1\ndx/dt = k[0] * x + k[1]\n\
         schedule euler(t = [0, 1], steps = 4)\n",
    );
    let program = Program::compile(&model);
    let layout = program.layout();
    assert_eq!(program.breakpoints(), &[0.25, 0.5, 0.75]);
    assert!(program.is_autonomous());
    // Layer l has k = [l + 1, 10 (l + 1)].
    let values: Vec<f64> = (0..4)
        .flat_map(|l| [l as f64 + 1.0, 10.0 * (l as f64 + 1.0)])
        .collect();
    let params = Params::from_values(values);
    assert_eq!(layout.entries[0].copies, 4);
    // Samples at and around the boundaries, in one block: each gets its own layer.
    let t = [0.0, 0.25f64.next_down(), 0.25, 0.5, 0.75, 0.9, 1.0];
    let expected_layer = [0, 0, 1, 2, 3, 3, 3];
    let width = t.len();
    let mut ws = program.workspace(width);
    let y = vec![2.0; width];
    let mut dy = vec![0.0; width];
    program.rhs(&params, &t, &y, &mut dy, &mut ws);
    for s in 0..width {
        let l = expected_layer[s] as f64 + 1.0;
        assert_eq!(dy[s], l * 2.0 + 10.0 * l, "t = {}", t[s]);
    }
    // The parameter VJP accumulates into the layer in force.
    let w = vec![1.0; width];
    let mut grad = vec![0.0; layout.total];
    program.vjp_param_accumulate(&params, &t, &y, &w, &mut grad, &mut ws);
    let mut want = vec![0.0; layout.total];
    for &l in &expected_layer {
        want[2 * l] += 2.0;
        want[2 * l + 1] += 1.0;
    }
    assert_eq!(grad, want);
}

#[test]
fn knot_params_interpolate_and_their_vjp_scatters_to_the_neighbours() {
    let model = compile_text(
        "param a on knots(0, 0.5, 1) = 1\nparam c = 0.5\nstate x = 1\n\
         dx/dt = tanh(a * x) + c * x\nschedule dopri5(t = [0, 1])\n",
    );
    let program = Program::compile(&model);
    let layout = program.layout();
    assert!(!program.is_autonomous());
    let params = Params::from_values(vec![0.3, -0.7, 1.1, 0.5]);
    let t = [0.0, 0.2, 0.5, 0.8, 1.0];
    let width = t.len();
    let mut ws = program.workspace(width);
    let y: Vec<f64> = (0..width).map(|s| 0.5 + 0.1 * s as f64).collect();
    let mut dy = vec![0.0; width];
    program.rhs(&params, &t, &y, &mut dy, &mut ws);
    let a_at = |t: f64| {
        let k = [0.3, -0.7, 1.1];
        if t <= 0.5 {
            k[0] + (t / 0.5) * (k[1] - k[0])
        } else {
            k[1] + ((t - 0.5) / 0.5) * (k[2] - k[1])
        }
    };
    for s in 0..width {
        let want = (a_at(t[s]) * y[s]).tanh() + 0.5 * y[s];
        assert!(
            (dy[s] - want).abs() <= 1e-14,
            "t = {}: {} vs {want}",
            t[s],
            dy[s]
        );
    }
    // VJP against central differences in each stored value (knots and the constant).
    let w = vec![1.0; width];
    let mut grad = vec![0.0; layout.total];
    program.vjp_param_accumulate(&params, &t, &y, &w, &mut grad, &mut ws);
    for j in 0..layout.total {
        let h = 1e-6;
        let mut f = |sign: f64| {
            let mut v = params.values().to_vec();
            v[j] += sign * h;
            let mut out = vec![0.0; width];
            program.rhs(&Params::from_values(v), &t, &y, &mut out, &mut ws);
            out.iter().sum::<f64>()
        };
        let fd = (f(1.0) - f(-1.0)) / (2.0 * h);
        assert!(
            (fd - grad[j]).abs() <= 1e-7 * (1.0 + fd.abs()),
            "θ[{j}]: {} vs {fd}",
            grad[j]
        );
    }
}

#[test]
fn model_system_solves_like_the_closed_form() {
    let model = load_model("decay.node");
    let program = Program::compile(&model);
    let params = Params::initial(&model, program.layout());
    let system = ModelSystem::new(&program, &params, &[], &[]);
    assert_eq!(system.dim(), 1);
    assert!(system.is_autonomous());
    let mut options = nodec::solve::SolverOptions::new(nodec::solve::Method::Dopri5, 0.0, 4.0);
    options.rtol = 1e-10;
    options.atol = 1e-12;
    let solution = nodec::solve::solve_batch(&system, &options, &[2.0], 1).expect("solves");
    let x = solution.final_state(0)[0];
    assert!((x - 2.0 * (-2.0f64).exp()).abs() < 1e-8, "{x}");
    // A per-layer model under a fixed-step schedule, inputs bound per block.
    let model = load_model("resnet_euler.node");
    let program = Program::compile(&model);
    let mut rng = Lcg(5);
    let b = block(&model, &program, 40, &mut rng);
    let system = ModelSystem::new(&program, &b.params, &b.inputs, &b.labels);
    let options = {
        let mut o = nodec::solve::SolverOptions::new(nodec::solve::Method::Euler, 0.0, 1.0);
        o.steps = Some(10);
        o
    };
    let y0 = b.inputs.clone();
    let solution = nodec::solve::solve_batch(&system, &options, &y0, 40).expect("solves");
    // Sample 33 by hand: ten Euler steps, layer l on step l.
    let s = 33;
    let mut x = y0[2 * s..2 * s + 2].to_vec();
    let mut ws = program.workspace(1);
    for n in 0..10 {
        let t = n as f64 * 0.1;
        let mut f = vec![0.0; 2];
        program.rhs(&b.params, &[t], &x, &mut f, &mut ws);
        x[0] += 0.1 * f[0];
        x[1] += 0.1 * f[1];
    }
    let got = solution.final_state(s);
    assert!((got[0] - x[0]).abs() < 1e-14 && (got[1] - x[1]).abs() < 1e-14);
    let _ = (Var::Time, ParamTime::Constant);
}

#[test]
fn programs_and_workspaces_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Program>();
    send_sync::<Params>();
    send_sync::<ModelSystem<'static>>();
    send::<Workspace>();
}

mod properties {
    //! Random expression DAGs: compiled values equal interpreted ones bit for bit when no
    //! vectorized function (`tanh`, `exp`, `sigmoid`) is involved, since primal nodes are
    //! computed in the interpreter's order.

    use nodec::compile::{Params, Program};
    use nodec::diag::Span;
    use nodec::ir::{
        CmpOp, ExprId, Func, Model, Output, Param, ParamInit, ParamTime, Point, Pool, Shape, State,
        Var,
    };
    use proptest::prelude::*;

    type Step = (u8, u16, u16, u16);

    /// Functions computed exactly like the interpreter (the vectorized three are excluded).
    const FUNCS: [Func; 9] = [
        Func::Sin,
        Func::Cos,
        Func::Tan,
        Func::Log,
        Func::Sqrt,
        Func::Abs,
        Func::Relu,
        Func::Softplus,
        Func::Sign,
    ];

    fn build(p: &mut Pool, steps: &[Step]) -> Vec<ExprId> {
        let mut nodes: Vec<ExprId> = (0..3)
            .map(|elem| p.var(Var::State { state: 0, elem }))
            .collect();
        nodes.push(p.var(Var::Time));
        nodes.push(p.var(Var::Param { param: 0, elem: 0 }));
        nodes.push(p.var(Var::Param { param: 0, elem: 1 }));
        nodes.push(p.constant(0.5));
        for &(op, a, b, c) in steps {
            let pick = |i: u16| nodes[i as usize % nodes.len()];
            let (a, b, c) = (pick(a), pick(b), pick(c));
            let e = match op % 14 {
                0 => p.add(a, b),
                1 => p.sub(a, b),
                2 => p.mul(a, b),
                3 => p.div(a, b),
                4 => p.neg(a),
                5 => {
                    let two = p.constant(2.0);
                    p.pow(a, two)
                }
                6 => p.pow(a, b),
                7 => p.min(a, b),
                8 => p.max(a, b),
                9 => p.cmp(CmpOp::Lt, a, b),
                10 => p.sum(&[a, b, c]),
                11 => p.product(&[a, b, c]),
                12 => {
                    let k = p.constant(-1.5);
                    p.product(&[k, a, b])
                }
                _ => p.func(FUNCS[b.index() % FUNCS.len()], a),
            };
            nodes.push(e);
        }
        nodes
    }

    fn model(steps: &[Step]) -> Model {
        let mut m = Model::default();
        m.params.push(Param {
            name: "k".to_string(),
            shape: Shape::Vector(2),
            time: ParamTime::Constant,
            init: ParamInit::Values(vec![0.0, 0.0]),
            span: Span::default(),
        });
        let nodes = build(&mut m.pool, steps);
        let n = nodes.len();
        let one = m.pool.constant(1.0);
        m.states.push(State {
            name: "s".to_string(),
            shape: Shape::Vector(3),
            init: vec![one; 3],
            rhs: nodes[n - 3..].to_vec(),
            span: Span::default(),
            equation_span: Span::default(),
        });
        m.outputs.push(Output {
            name: "o".to_string(),
            shape: Shape::Vector(n),
            value: nodes,
            span: Span::default(),
        });
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn compiled_equals_interpreted(
            steps in prop::collection::vec((any::<u8>(), any::<u16>(), any::<u16>(), any::<u16>()), 1..14),
            samples in prop::collection::vec(prop::array::uniform4(-2.0..2.0f64), 5),
            k in prop::array::uniform2(-1.0..1.0f64),
            fuse in any::<bool>(),
        ) {
            let m = nodec::prepare(model(&steps));
            let program = Program::compile_with(&m, fuse);
            let params = Params::from_values(k.to_vec());
            let width = samples.len();
            let mut ws = program.workspace(width);
            let mut y = vec![0.0; 3 * width];
            let mut t = vec![0.0; width];
            for (s, v) in samples.iter().enumerate() {
                for i in 0..3 {
                    y[i * width + s] = v[i];
                }
                t[s] = v[3];
            }
            let roots = &m.outputs[0].value;
            let mut out = vec![0.0; roots.len() * width];
            program.outputs(&params, &t, &y, &mut out, &mut ws);
            for (s, v) in samples.iter().enumerate() {
                let at = Point {
                    t: v[3],
                    states: vec![v[..3].to_vec()],
                    params: vec![k.to_vec()],
                    ..Point::default()
                };
                let want = at.eval(&m.pool, roots);
                for (i, w) in want.iter().enumerate() {
                    let got = out[i * width + s];
                    prop_assert!(
                        got.to_bits() == w.to_bits() || (got.is_nan() && w.is_nan()),
                        "node {}: compiled {} vs interpreted {}", i, got, w
                    );
                }
            }
        }
    }
}

/// The Brusselator's pattern read from the scalar IR is its stencil: `u_j` and `v_j` each read
/// their two neighbours of the same species and the other species at the same point, nothing
/// more (the Laplacian's dense `N × N` matrix of zeros leaves no trace).
#[test]
fn brusselator_jacobian_pattern_is_its_stencil() {
    let model = load_model("brusselator.node");
    let program = Program::compile(&model);
    let pattern = program
        .jacobian_pattern()
        .expect("the scalar IR gives the pattern");
    let n = program.dim() / 2;
    assert_eq!(n, 40);
    for (i, row) in pattern.iter().enumerate() {
        let (species, j) = (i / n, i % n);
        let mut want: Vec<u32> = (j.saturating_sub(1)..(j + 2).min(n))
            .map(|k| (species * n + k) as u32)
            .collect();
        want.push(((1 - species) * n + j) as u32);
        want.sort_unstable();
        assert_eq!(row, &want, "row {i}");
    }
}

/// A small sample solved alone calls its field's native code directly once the code is ready
/// (`System::field_call`, taken by `solve/adaptive/one.rs`): the same bits at every save time
/// as the same sample in a block of two, whose evaluations go through `Program::rhs`, and as
/// the first solve, which the interpreter started. The field reads the time, so a wrong time
/// in the direct call shows.
#[test]
fn a_sample_alone_calls_the_fields_code_directly_with_the_blocks_bits() {
    let source = "model forced\n\
        param sigma = 10\nparam rho = 28\nparam beta = 8 / 3\n\
        state x = 1\nstate y = 1\nstate z = 1\n\
        dx/dt = sigma * (y - x) + 0.5 * t\n\
        dy/dt = x * (rho - z) - y\n\
        dz/dt = x * y - beta * z\n\
        schedule dopri5(t = [0, 2], rtol = 1e-8, atol = 1e-8, save = 0.01)\n";
    let file = SourceFile::new("forced.node".to_string(), source.to_string());
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "forced");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare_to_run(model);
    let program = Program::compile(&model);
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let (one, two) = (
        nodec::data::Dataset::samples(1, 0, Vec::new(), None),
        nodec::data::Dataset::samples(2, 0, Vec::new(), None),
    );
    let alone = nodec::simulate::Bound::new(&model, &program, &params, &one);
    let first = alone.simulate(None).expect("solves");
    program.await_native();

    let system = alone.system();
    let mut ws = system.workspace(0..1);
    let mut dy = [0.0; 3];
    system.rhs(&[0.0], &[1.0, 1.0, 1.0], &mut dy, &mut ws);
    assert!(
        system.field_call(&mut ws).is_some(),
        "the field's code is ready: a sample alone calls it directly"
    );

    let direct = alone.simulate(None).expect("solves");
    let pair = nodec::simulate::Bound::new(&model, &program, &params, &two);
    let blocked = pair.simulate(None).expect("solves");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(direct.solution.t.len(), 201);
    for k in 0..direct.solution.t.len() {
        let want = bits(blocked.solution.state(k, 0));
        assert_eq!(bits(blocked.solution.state(k, 1)), want);
        assert_eq!(bits(direct.solution.state(k, 0)), want, "save {k}");
        assert_eq!(bits(first.solution.state(k, 0)), want, "save {k}");
    }
}
