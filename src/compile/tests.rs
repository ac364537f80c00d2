//! Unit tests of the compiled kernels.

use super::{Params, Program, K};
use crate::diag::SourceFile;
use crate::sema::Overrides;

fn program(text: &str) -> (crate::ir::Model, Program) {
    let file = SourceFile::new("t.node", text);
    let (m, diags) = crate::check_source(&file, &Overrides::default(), "t");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let m = crate::prepare(m);
    let p = Program::compile(&m);
    (m, p)
}

/// Seeded values in [−1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// The matrix products of a neural field (`W1 x`, `W2 h`, `W2ᵀ w`, `W1ᵀ g`, and the weight
/// gradients) run as GEMMs, also for a state of width 2, and give the lane loops' values to a
/// few ulps: on a full block, on a block whose width is not the specialized 32, and on a block
/// whose samples straddle two layers of a per-layer weight (two lane ranges, one too short for
/// a GEMM).
#[test]
fn matrix_products_run_as_gemms_and_match_the_lane_loops() {
    for (d, h, per_layer) in [(12, 24, false), (12, 24, true), (2, 24, false)] {
        let layer = if per_layer { " per layer" } else { "" };
        let text = format!(
            "param W1[{h}, {d}]{layer}\nparam b1[{h}]\nparam W2[{d}, {h}]\nparam b2[{d}]\n\
             state x[{d}] = 0\ndx/dt = W2 * tanh(W1 * x + b1) + b2\n\
             schedule euler(t = [0, 1], steps = 4)\ncost terminal = sumsq(x)\n"
        );
        let (_, p) = program(&text);
        let (lin, _) = p.kernels[K::Rhs as usize].tape().matmuls();
        assert_eq!(lin, 2, "W1 x and W2 h");
        let (lin, reduce) = p.kernels[K::Vjp as usize].tape().matmuls();
        assert!(lin >= 3, "W1 x, W2ᵀ w and W1ᵀ g: {lin}");
        assert_eq!(reduce, 2, "the gradients of W1 and W2");
        let params = Params::from_values(values(p.layout().total, 1));
        for width in [32, 13] {
            let y = values(d * width, 2);
            let w = values(d * width, 3);
            let t: Vec<f64> = (0..width)
                .map(|s| if per_layer && s >= 3 { 0.3 } else { 0.1 })
                .collect();
            let run = |matmul: bool| {
                let mut ws = p.workspace(width);
                ws.matmul = matmul;
                let mut dy = vec![0.0; d * width];
                p.rhs(&params, &t, &y, &mut dy, &mut ws);
                let mut xbar = vec![0.0; d * width];
                let mut grad = vec![0.0; p.layout().total];
                p.vjp(&params, &t, &y, &w, &mut xbar, &mut grad, &mut ws);
                (dy, xbar, grad)
            };
            let (gemm, lanes) = (run(true), run(false));
            assert!(max_rel(&gemm.0, &lanes.0) < 1e-14, "rhs, width {width}");
            assert!(
                max_rel(&gemm.1, &lanes.1) < 1e-14,
                "vjp state, width {width}"
            );
            assert!(
                max_rel(&gemm.2, &lanes.2) < 1e-14,
                "vjp params, width {width}"
            );
            // Every weight in force has a gradient (per layer: layers 0 and 1 of 4).
            let zeros = gemm.2.iter().filter(|g| **g == 0.0).count();
            let unused = if per_layer { 2 * h * d } else { 0 };
            assert_eq!(zeros, unused, "weights without a gradient");
        }
    }
}

/// A sample's values do not depend on the block it shares: a lane range too short for a GEMM
/// is padded, not sent to the lane loops, so each sample has the bits it has in a full block
/// (the adaptive solvers and their width-1 replays rely on it).
#[test]
fn a_sample_has_the_same_bits_in_any_block() {
    let (d, h) = (10, 16);
    let text = format!(
        "param W1[{h}, {d}]\nparam b1[{h}]\nparam W2[{d}, {h}]\nstate x[{d}] = 0\n\
         dx/dt = W2 * tanh(W1 * x + b1)\nschedule rk4(t = [0, 1], steps = 4)\n\
         cost terminal = sumsq(x)\n"
    );
    let (_, p) = program(&text);
    assert_eq!(p.kernels[K::Rhs as usize].tape().matmuls().0, 2);
    let params = Params::from_values(values(p.layout().total, 4));
    let full = 32;
    let y = values(d * full, 5);
    let w = values(d * full, 6);
    let eval = |width: usize, first: usize| {
        let pick = |v: &[f64]| -> Vec<f64> {
            (0..d)
                .flat_map(|i| v[i * full + first..i * full + first + width].to_vec())
                .collect()
        };
        let mut ws = p.workspace(width);
        let mut dy = vec![0.0; d * width];
        p.rhs(&params, &vec![0.0; width], &pick(&y), &mut dy, &mut ws);
        let mut xbar = vec![0.0; d * width];
        p.vjp_state(
            &params,
            &vec![0.0; width],
            &pick(&y),
            &pick(&w),
            &mut xbar,
            &mut ws,
        );
        (dy, xbar)
    };
    let (dy, xbar) = eval(full, 0);
    for width in [1, 2, 5, 7, 8, 13] {
        let first = 3;
        let (dy_w, xbar_w) = eval(width, first);
        for i in 0..d {
            for s in 0..width {
                let (a, b) = (dy_w[i * width + s], dy[i * full + first + s]);
                assert_eq!(a.to_bits(), b.to_bits(), "rhs {i}, width {width}");
                let (a, b) = (xbar_w[i * width + s], xbar[i * full + first + s]);
                assert_eq!(a.to_bits(), b.to_bits(), "vjp {i}, width {width}");
            }
        }
    }
}

/// The VJP that reads the right-hand side's saved activations gives the recomputing VJP's
/// values to the bit, state and parameter parts, for a neural field (where it is used) and on
/// a block straddling two layers of a per-layer weight.
#[test]
fn the_vjp_from_saved_activations_has_the_recomputed_bits() {
    for (d, layer) in [(2, ""), (12, ""), (3, " per layer")] {
        let h = 16;
        let text = format!(
            "param W1[{h}, {d}]{layer}\nparam b1[{h}]\nparam W2[{d}, {h}]\nstate x[{d}] = 0\n\
             dx/dt = W2 * tanh(W1 * x + b1)\nschedule rk4(t = [0, 1], steps = 4)\n\
             cost terminal = sumsq(x)\n"
        );
        let (_, p) = program(&text);
        assert_eq!(p.saved_len(), h, "the tanh activations, D = {d}");
        let width = 13;
        let params = Params::from_values(values(p.layout().total, 7));
        let y = values(d * width, 8);
        let w = values(d * width, 9);
        let t: Vec<f64> = (0..width).map(|s| if s < 5 { 0.1 } else { 0.6 }).collect();
        let mut ws = p.workspace(width);
        let mut dy = vec![0.0; d * width];
        let mut saved = vec![0.0; p.saved_len() * width];
        p.rhs_saving(&params, &t, &y, &mut dy, &mut saved, &mut ws);
        let n = p.layout().total;
        let (mut out_a, mut grad_a) = (vec![0.0; d * width], vec![0.0; n]);
        let (mut out_b, mut grad_b) = (vec![0.0; d * width], vec![0.0; n]);
        p.vjp(&params, &t, &y, &w, &mut out_a, &mut grad_a, &mut ws);
        p.vjp_saved(
            &params,
            &t,
            &y,
            &saved,
            &w,
            &mut out_b,
            &mut grad_b,
            &mut ws,
        );
        same_bits((&out_a, &grad_a), (&out_b, &grad_b), &format!("D = {d}"));
    }
}

/// A tensor kernel's lane outputs that nothing else reads are written by their elementwise
/// program or GEMM straight into the output rows instead of being copied there from
/// registers (`Rhs`'s `W2 h + b2`, the VJP's `W1ᵀ g`), with the copying kernels' bits; the
/// activations `rhs_saving` keeps still come from the registers.
#[test]
fn tensor_kernels_write_lane_outputs_in_place() {
    let (d, h) = (16, 32);
    let text = format!(
        "param W1[{h}, {d}]\nparam b1[{h}]\nparam W2[{d}, {h}]\nparam b2[{d}]\n\
         state x[{d}] = 0\ndx/dt = W2 * tanh(W1 * x + b1) + b2\n\
         schedule rk4(t = [0, 1], steps = 4)\ncost terminal = sumsq(x)\n"
    );
    let file = SourceFile::new("t.node", &text);
    let (m, diags) = crate::check_source(&file, &Overrides::default(), "t");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let mut p = Program::compile(&crate::prepare_to_run(m));
    assert!(p.runs_tensor_kernels());
    let run = |p: &Program| {
        let width = 64;
        let params = Params::from_values(values(p.layout().total, 3));
        let y = values(d * width, 4);
        let w = values(d * width, 5);
        let t = vec![0.25; width];
        let mut ws = p.workspace(width);
        let mut dy = vec![0.0; d * width];
        let mut saved = vec![0.0; p.saved_len() * width];
        p.rhs_saving(&params, &t, &y, &mut dy, &mut saved, &mut ws);
        let (mut out, mut grad) = (vec![0.0; d * width], vec![0.0; p.layout().total]);
        p.vjp_saved(&params, &t, &y, &saved, &w, &mut out, &mut grad, &mut ws);
        [dy, saved, out, grad]
    };
    let in_place = run(&p);
    for k in [K::Rhs, K::VjpSaved] {
        let super::Kernel::Tensor(kernel) = &mut p.kernels[k as usize] else {
            panic!("a tensor kernel");
        };
        assert!(kernel.in_place.iter().any(Option::is_some), "{k:?}");
        kernel.in_place.clear();
    }
    let copied = run(&p);
    for (a, b) in in_place.iter().zip(&copied) {
        assert!(a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

/// A continuous normalizing flow's field and divergence save only what is dear to recompute:
/// its `tanh` activations and sums of several terms, not the squares and products the
/// divergence and its pull-back build from them (`SAVE_MIN_COST`); the VJP reading them has
/// the recomputing VJP's bits.
#[test]
fn a_vjp_recomputes_cheap_registers_instead_of_reading_them_saved() {
    let text = "const w = 8\ninput u[2]\nparam W1[w, 3]\nparam b1[w]\nparam W2[2, w]\n\
                fn field(z, t) = W2 * tanh(W1 * [z[0], z[1], t] + b1)\nstate z[2] = u\n\
                state logdet = 0\ndz/dt = field(z, t)\ndlogdet/dt = div(field(z, t), z)\n\
                schedule rk4(t = [0, 1], steps = 4)\ncost terminal = sumsq(z) - logdet\n\
                cost running = 0.05 * sumsq(der(z))\ndata train = moons(n = 16, seed = 1)\n";
    let (_, p) = program(text);
    let rhs = match &p.kernels[K::RhsQuad as usize] {
        super::Kernel::Tape(k) => k,
        super::Kernel::Tensor(_) => panic!("a small field runs on the scalar tape"),
    };
    let costs = rhs.register_costs();
    let tanh_rows = costs.iter().filter(|&&c| c == 10).count();
    assert_eq!(tanh_rows, 8, "one tanh per hidden unit");
    assert!(p.quad_saved_len() >= tanh_rows, "{}", p.quad_saved_len());
    for reg in &p.quad_saved_rows {
        assert!(
            costs[*reg as usize] >= 3,
            "register {reg} costs {}",
            costs[*reg as usize]
        );
    }
    let cheap_read = rhs
        .registers
        .iter()
        .filter(|(_, r)| costs[*r as usize] < 3)
        .count();
    assert!(cheap_read > 0, "the field has cheap registers to recompute");
    let width = 13;
    let dim = 3;
    let params = Params::from_values(values(p.layout().total, 7));
    let y = values(dim * width, 8);
    let w = values((dim + 1) * width, 9);
    let t = vec![0.3; width];
    let mut ws = p.workspace(width);
    let mut dy = vec![0.0; (dim + 1) * width];
    let mut saved = vec![0.0; p.quad_saved_len() * width];
    p.rhs_quad_saving(&params, &t, &y, &mut dy, &mut saved, &mut ws);
    let n = p.layout().total;
    let (mut out_a, mut grad_a) = (vec![0.0; dim * width], vec![0.0; n]);
    let (mut out_b, mut grad_b) = (vec![0.0; dim * width], vec![0.0; n]);
    for (read, out, grad) in [
        (&[][..], &mut out_a, &mut grad_a),
        (&saved, &mut out_b, &mut grad_b),
    ] {
        p.vjp_quad_saved(&params, &t, &y, read, &w, out, grad, &mut ws);
    }
    same_bits((&out_a, &grad_a), (&out_b, &grad_b), "a flow");
}

/// Two VJPs' state and parameter parts are the same bits.
fn same_bits(a: (&[f64], &[f64]), b: (&[f64], &[f64]), what: &str) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a.0), bits(b.0), "state part, {what}");
    assert_eq!(bits(a.1), bits(b.1), "parameter part, {what}");
}

/// Workspaces share a kernel's uniform file when it depends on the parameters alone (one
/// `Kᵀ` for all threads, not one each), and compute it again when the parameters change; a
/// weight that varies per layer, or a VJP reading a parameter tangent, keeps its own.
#[test]
fn workspaces_share_the_uniform_file_of_the_parameters_in_force() {
    use super::Uniforms;
    for layer in ["", " per layer"] {
        let (d, h, width) = (3, 16, 8);
        let text = format!(
            "param W1[{h}, {d}]{layer}\nparam b1[{h}]\nparam W2[{d}, {h}]\nstate x[{d}] = 0\n\
             dx/dt = W2 * tanh(W1 * x + b1)\nschedule rk4(t = [0, 1], steps = 4)\n\
             cost terminal = sumsq(x)\n"
        );
        for p in [program(&text).1, Program::compile_tensor(&program(&text).0)] {
            let n = p.layout().total;
            let mut params = Params::from_values(values(n, 7));
            let (y, w) = (values(d * width, 8), values(d * width, 9));
            let t = vec![0.3; width];
            let vjp = |p: &Program, params: &Params, ws: &mut super::Workspace<f64>| {
                let (mut out, mut grad) = (vec![0.0; d * width], vec![0.0; n]);
                p.vjp(params, &t, &y, &w, &mut out, &mut grad, ws);
                (out, grad)
            };
            let (mut a, mut b) = (p.workspace(width), p.workspace(width));
            let first = vjp(&p, &params, &mut a);
            assert_eq!(vjp(&p, &params, &mut b), first);
            let k = K::Vjp as usize;
            let shared = |ws: &super::Workspace<f64>| match &ws.caches[k].u {
                Uniforms::Shared(u) => Some(u.clone()),
                Uniforms::Own(_) => None,
            };
            match (shared(&a), shared(&b), layer) {
                (Some(ua), Some(ub), "") => assert!(std::sync::Arc::ptr_eq(&ua, &ub)),
                (None, None, " per layer") => {}
                other => panic!(
                    "{layer}: shared {:?}",
                    (other.0.is_some(), other.1.is_some())
                ),
            }
            // New values: a new file, with the values a program never run before computes.
            params.values_mut().iter_mut().for_each(|v| *v *= 1.5);
            let again = vjp(&p, &params, &mut a);
            assert_ne!(again, first);
            assert_eq!(again, vjp(&p.clone(), &params, &mut p.workspace(width)));
            if layer.is_empty() {
                assert!(!std::sync::Arc::ptr_eq(
                    &shared(&a).unwrap(),
                    &shared(&b).unwrap()
                ));
            }
        }
    }
}

/// A kernel's shared uniform file of the parameters' last generation is freed before the next
/// one is made (a wide model's `Kᵀ` is the largest buffer its gradient allocates: two at once
/// raised `train`'s peak by 4 MB), and a file of the generation in force is not made again.
#[test]
fn a_stale_shared_uniform_file_is_freed_before_its_successor_is_made() {
    let shared = super::SharedUniforms::default();
    let first = shared.get::<f64>(3, 1, || vec![1.0; 4]);
    let stale = std::sync::Arc::downgrade(&first);
    drop(first);
    let second = shared.get::<f64>(3, 2, || {
        assert!(
            stale.upgrade().is_none(),
            "generation 1's file is still held"
        );
        vec![2.0; 4]
    });
    assert_eq!(*second, vec![2.0; 4]);
    let again = shared.get::<f64>(3, 2, || unreachable!("generation 2's file is made twice"));
    assert!(std::sync::Arc::ptr_eq(&second, &again));
}

/// Native code is generated once a kernel has run `NATIVE_AFTER` lane evaluations, so a
/// command pays only for the kernels it calls often: a solve compiles the field, not its
/// derivatives, and a short solve compiles nothing. The runs before the code is ready are
/// interpreted while it is generated on another thread, with the same bits.
#[test]
fn native_code_is_compiled_once_a_kernel_has_run_enough() {
    use super::tape::native::NATIVE_AFTER;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/lorenz.node"));
    let file = SourceFile::new("lorenz.node".to_string(), text.unwrap());
    let (m, diags) = crate::check_source(&file, &Overrides::default(), "t");
    assert!(!diags.has_errors());
    let p = Program::compile(&crate::prepare(m));
    let compiled = |k: K| match &p.kernels[k as usize] {
        super::Kernel::Tape(t) => t.native.is_compiled(),
        super::Kernel::Tensor(_) => false,
    };
    let awaited = |k: K| match &p.kernels[k as usize] {
        super::Kernel::Tape(t) => t.native.await_compiled(),
        super::Kernel::Tensor(_) => false,
    };
    assert!(!compiled(K::Rhs) && !compiled(K::VjpState));
    let params = Params::from_values(vec![10.0, 28.0, 8.0 / 3.0]);
    let mut ws = p.workspace(1);
    let mut dy = [0.0; 3];
    for _ in 0..NATIVE_AFTER - 1 {
        p.rhs(&params, &[0.0], &[1.0, 2.0, 3.0], &mut dy, &mut ws);
    }
    assert_eq!(dy, [10.0, 1.0 * (28.0 - 3.0) - 2.0, 2.0 - 8.0 / 3.0 * 3.0]);
    assert!(
        !awaited(K::Rhs),
        "{} runs of one sample do not start the compilation",
        NATIVE_AFTER - 1
    );
    let mut again = [0.0; 3];
    p.rhs(&params, &[0.0], &[1.0, 2.0, 3.0], &mut again, &mut ws);
    assert!(
        awaited(K::Rhs),
        "run {NATIVE_AFTER} started the compilation"
    );
    assert!(!compiled(K::VjpState), "the VJP never ran");
    p.rhs(&params, &[0.0], &[1.0, 2.0, 3.0], &mut again, &mut ws);
    assert_eq!(again, dy, "native code gives the interpreter's bits");
    // A block of 32 samples reaches the threshold in NATIVE_AFTER / 32 runs.
    let mut ws = p.workspace(32);
    let (t, y) = ([0.0; 32], [1.0; 96]);
    let mut out = [0.0; 96];
    for _ in 0..NATIVE_AFTER / 32 - 1 {
        p.jvp_state(&params, &t, &y, &y, &mut out, &mut ws);
    }
    assert!(!awaited(K::JvpState));
    p.jvp_state(&params, &t, &y, &y, &mut out, &mut ws);
    assert!(
        awaited(K::JvpState),
        "a block reaches the threshold in fewer runs"
    );
}

/// Every kernel that runs as native code gives the interpreter's bits, on every model in
/// `models/`, at widths that exercise the unrolled loop, the pair loop and the single-sample
/// tail, on a lane range that starts at an odd sample, and with the registers the VJP reads
/// from a saved evaluation stored. The Lorenz kernels must be native: the test fails if the
/// code generator declines them.
#[test]
fn native_kernels_give_the_interpreters_bits() {
    use super::{tape, Blocks, BANKS};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "node"))
        .collect();
    files.sort();
    let (mut checked, mut one_sample) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let file = SourceFile::new(format!("models/{name}"), text);
        let (m, diags) = crate::check_source(&file, &Overrides::default(), "t");
        assert!(!diags.has_errors(), "{name}: {}", diags.render(&file));
        let p = Program::compile(&crate::prepare(m));
        if name == "lorenz.node" {
            for k in [K::Rhs, K::JvpState, K::VjpState, K::Outputs] {
                assert!(p.is_native(k), "lorenz kernel {k:?}");
            }
            assert!(!p.clone().interpreted().is_native(K::Rhs));
        }
        let params = Params::from_values(values(p.layout().total, 1));
        let direction = values(p.layout().total, 2);
        for (k, kernel) in p.kernels.iter().enumerate() {
            let Some(native) = kernel.native_now() else {
                continue;
            };
            checked += 1;
            for width in [1, 2, 3, 8, 9, 32, 37, 64] {
                let dim = p.dim().max(1);
                let block = |seed| values(dim * width + 64 * width, seed);
                let (y, v, w) = (block(3), block(4), block(5));
                let saved = values(p.saved_len() * width, 6);
                let (t0, t1) = p.span();
                let t: Vec<f64> = (0..width)
                    .map(|s| t0 + (t1 - t0) * (s as f64 + 0.5) / width as f64)
                    .collect();
                // Kernel `k`'s uniforms in `ws` for the parameters and direction at `t[0]`.
                let fit_uniforms = |ws: &mut super::Workspace| {
                    ws.fit(k, kernel, p.layout.view_len);
                    ws.theta.resize(p.layout.view_len, 0.0);
                    ws.tangent.resize(p.layout.view_len, 0.0);
                    p.layout
                        .resolve(params.values(), p.layout.piece(t[0]), &mut ws.theta);
                    p.layout
                        .resolve(&direction, p.layout.piece(t[0]), &mut ws.tangent);
                    let cache = &mut ws.caches[k];
                    kernel.prepare(&ws.theta, &ws.tangent, cache.own_for(kernel));
                };
                let run = |native_on: bool, lo: usize| {
                    let mut ws = p.workspace(width);
                    ws.native = native_on;
                    ws.bind_inputs(&values(p.input_len() * width, 7));
                    ws.labels = values(ws.labels.len(), 8);
                    ws.observed = values(ws.observed.len(), 9);
                    let mut out = vec![0.0; native.out_rows() * width];
                    let mut banks: [&[f64]; BANKS] = [&[]; BANKS];
                    banks[tape::STATE as usize] = &y;
                    banks[tape::STATE_TANGENT as usize] = &v;
                    banks[tape::COTANGENT as usize] = &w;
                    banks[tape::TIME as usize] = &t;
                    banks[tape::SAVED as usize] = &saved;
                    let blocks = Blocks {
                        y: &y,
                        v: &v,
                        w: &w,
                        saved: &saved,
                    };
                    if lo == 0 {
                        p.run(
                            k,
                            &params,
                            &t,
                            blocks,
                            Some(&direction),
                            &mut out,
                            None,
                            &mut ws,
                        );
                    } else {
                        // A lane range that does not start at a pair boundary.
                        fit_uniforms(&mut ws);
                        let cache = &ws.caches[k];
                        banks[tape::INPUT as usize] = &ws.inputs;
                        banks[tape::LABEL as usize] = &ws.labels;
                        banks[tape::OBSERVED as usize] = &ws.observed;
                        let lanes = tape::Lanes {
                            banks,
                            width,
                            lo,
                            hi: width,
                            matmul: true,
                            native: native_on,
                        };
                        let mut reduced = [];
                        kernel.run(
                            &cache.u,
                            params.values(),
                            &mut ws.regs,
                            lanes,
                            &mut out,
                            &mut reduced,
                            &mut [],
                        );
                    }
                    let spilled: Vec<f64> = if k == K::Rhs as usize {
                        let w = width;
                        p.saved_rows
                            .iter()
                            .flat_map(|&r| ws.regs[r as usize * w..(r as usize + 1) * w].to_vec())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (out, spilled)
                };
                for lo in [0, 1] {
                    if lo >= width {
                        continue;
                    }
                    let (a, b) = (run(true, lo), run(false, lo));
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&a.0),
                        bits(&b.0),
                        "{name} kernel {k} width {width} lo {lo}"
                    );
                    assert_eq!(bits(&a.1), bits(&b.1), "{name} kernel {k} saved registers");
                }
                if width == 1 {
                    // The one-sample code a small solve calls directly (`StateCall`), for the
                    // kernels that read nothing but the state and the time.
                    let mut ws = p.workspace(1);
                    fit_uniforms(&mut ws);
                    let cache = &ws.caches[k];
                    let rows = native.out_rows().max(dim);
                    if let Some(mut call) = native.state_call(&cache.u, &mut ws.regs, rows) {
                        let mut out = vec![0.0; rows];
                        assert!(call.call(t[0], &y[..rows], &mut out), "{name} kernel {k}");
                        let (want, want_saved) = run(false, 0);
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&out[..native.out_rows()]),
                            bits(&want),
                            "{name} kernel {k}: the one-sample code"
                        );
                        if k == K::Rhs as usize {
                            let saved: Vec<f64> =
                                p.saved_rows.iter().map(|&r| ws.regs[r as usize]).collect();
                            assert_eq!(bits(&saved), bits(&want_saved), "{name} saved registers");
                        }
                        one_sample += 1;
                    }
                }
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} native kernels over the models"
    );
    assert!(
        one_sample >= 10,
        "only {one_sample} kernels checked in their one-sample code"
    );
}

/// `cnf_moons`'s VJP: the integrand of every weight of `W1`'s state columns and of `W2` has a
/// term from the field and one from its divergence, 2·32 + 2·32 = 128 two-term sums that only
/// their reductions read. Each is summed over the lanes as it is formed (the bits are checked
/// in `exec`'s tests, the gradient against the interpreter on every model in
/// `tests/it/compile.rs`).
#[test]
fn two_term_gradient_integrands_are_reduced_as_formed() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/cnf_moons.node"
    ))
    .unwrap();
    let (_, p) = program(&text);
    for k in [K::VjpQuad, K::VjpQuadSaved] {
        assert_eq!(p.kernels[k as usize].tape().sums_reduced_as_formed(), 128);
    }
}
