//! The tensor IR of every model against the scalar IR it expands to: the roots and every
//! derivative root (`ir::tensor::derive`, tensor JVP/VJP rules) evaluated by the tensor
//! interpreter equal the scalar derivative IR (`ir::prepare`, scalar rules) evaluated by the
//! scalar interpreter; and the tensor IR's size does not depend on a layer's width.
//!
//! Tolerance: the two sides are different symbolic derivatives of the same function, summed in
//! different orders, so they agree to rounding: 1e-12 relative to the size of the terms.

use nodec::diag::SourceFile;
use nodec::ir::{ExprId, Model, Point};
use nodec::sema::Overrides;

use crate::support::{node_files, root, Lcg};

fn load(path: &std::path::Path) -> Model {
    let text = std::fs::read_to_string(path).expect("model file readable");
    let file = SourceFile::new(path.display().to_string(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "model");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    model
}

/// A point where every model is smooth (the derivative tests' point), with random directions
/// and cotangents.
fn point(model: &Model, rng: &mut Lcg) -> Point {
    let mut p = crate::derivatives::random_point(model, rng);
    p.state_tangents = p
        .states
        .iter()
        .map(|s| rng.fill(s.len(), -1.0, 1.0))
        .collect();
    p.cotangents = p
        .states
        .iter()
        .map(|s| rng.fill(s.len(), -1.0, 1.0))
        .collect();
    p.param_tangents = p
        .params
        .iter()
        .map(|q| rng.fill(q.len(), -1.0, 1.0))
        .collect();
    p
}

fn assert_close(tensor: &[f64], scalar: &[f64], what: &str) {
    assert_eq!(tensor.len(), scalar.len(), "{what}: lengths");
    let scale = scalar.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    for (i, (a, b)) in tensor.iter().zip(scalar).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12 * scale || (a.is_nan() && b.is_nan()),
            "{what}[{i}]: tensor {a} vs scalar {b}"
        );
    }
}

#[test]
fn tensor_derivatives_equal_the_scalar_ones_on_every_model() {
    let mut checked = 0;
    for path in node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let model = nodec::prepare(load(&path));
        let mut rng = Lcg(17);
        let p = point(&model, &mut rng);
        let t = &model.tensor_roots;
        let td = &t.derivatives;
        let sd = &model.derivatives;
        let flat = |roots: &[nodec::ir::tensor::TId]| -> Vec<f64> {
            p.eval_tensors(&model.tensors, roots).concat()
        };
        let scalar = |roots: &[ExprId]| p.eval(&model.pool, roots);
        let pairs: [(&str, &[nodec::ir::tensor::TId], &[ExprId]); 11] = [
            ("rhs", &t.rhs, &model.rhs()),
            ("jvp_state", &td.jvp_state, &sd.jvp_state),
            ("jvp_param", &td.jvp_param, &sd.jvp_param),
            ("vjp_state", &td.vjp_state, &sd.vjp_state),
            ("vjp_param", &td.vjp_param, &sd.vjp_param),
            ("rhs_time", &td.rhs_time, &sd.rhs_time),
            ("init_jvp_param", &td.init_jvp_param, &sd.init_jvp_param),
            ("init_vjp_param", &td.init_vjp_param, &sd.init_vjp_param),
            ("lm_k_param", &td.lm_k_param, &sd.lm_k_param),
            ("msa_mixed_param", &td.msa_mixed_param, &sd.msa_mixed_param),
            ("event_jvp", &td.event_jvp, &sd.event_jvp),
        ];
        for (what, tensor, scalar_roots) in pairs {
            assert_close(
                &flat(tensor),
                &scalar(scalar_roots),
                &format!("{name} {what}"),
            );
        }
        // Both sides split a penalty by parameter copies; at one point the groups add up.
        for c in &td.costs {
            let (kind, value, state, param) = (&c.kind, &c.value, &c.state, &c.param);
            let groups: Vec<_> = sd
                .costs
                .iter()
                .filter(|g| g.kind == *kind && g.copies == c.copies)
                .collect();
            assert!(!groups.is_empty(), "{name}: {kind:?} on both sides");
            let add = |rows: Vec<Vec<f64>>| -> Vec<f64> {
                rows.iter().fold(vec![0.0; rows[0].len()], |acc, r| {
                    acc.iter().zip(r).map(|(a, b)| a + b).collect()
                })
            };
            let values = add(groups.iter().map(|g| scalar(&[g.value])).collect());
            let states = add(groups.iter().map(|g| scalar(&g.state)).collect());
            let params = add(groups.iter().map(|g| scalar(&g.param)).collect());
            assert_close(&flat(&[*value]), &values, &format!("{name} {kind:?} cost"));
            assert_close(&flat(state), &states, &format!("{name} {kind:?} ∂/∂x"));
            assert_close(&flat(param), &params, &format!("{name} {kind:?} ∂/∂θ"));
        }
        checked += 1;
    }
    assert!(checked >= 14, "every model of models/ ({checked})");
}

/// The tensor IR of a model with every derivative `train` needs has the same number of nodes
/// whether its hidden layer is 256 or 1024 wide: the IR follows the text. (At width 64 the
/// hidden layer has the state's size, so a few nodes of equal shape coincide.)
#[test]
fn tensor_ir_size_does_not_grow_with_width() {
    let size = |file: &str| {
        let mut model = load(&root().join("benches/data/wide").join(file));
        nodec::ir::tensor::derive(&mut model);
        let roots = model.tensor_roots.all();
        let pool = &model.tensors;
        let mut keep = vec![false; pool.len()];
        for r in &roots {
            keep[r.index()] = true;
        }
        for i in (0..pool.len()).rev() {
            if keep[i] {
                pool.node(nodec::ir::tensor::TId(i as u32))
                    .for_each_operand(|c| keep[c.index()] = true);
            }
        }
        keep.iter().filter(|k| **k).count()
    };
    let (narrow, wide) = (size("wide_256.node"), size("wide_1024.node"));
    assert_eq!(narrow, wide);
    assert!(narrow < 400, "a few hundred tensor nodes, found {narrow}");
}

/// Every entry point of a program, run on one block: the values a solver or trainer reads.
fn entry_points(p: &nodec::compile::Program, width: usize, seed: u64) -> Vec<(String, Vec<f64>)> {
    use nodec::compile::Params;
    use nodec::ir::CostKind;
    let mut rng = Lcg(seed);
    let dim = p.dim();
    let total = p.layout().total;
    // Parameters near the models' own scale: random values can overflow `exp` of a flow.
    let params = Params::from_values(rng.fill(total, -0.5, 0.5));
    let u = rng.fill(total, -1.0, 1.0);
    let y = rng.fill(dim * width, -1.0, 1.0);
    let v = rng.fill(dim * width, -1.0, 1.0);
    let w = rng.fill(dim * width, -1.0, 1.0);
    let (t0, t1) = p.span();
    let t: Vec<f64> = (0..width)
        .map(|s| t0 + (t1 - t0) * (s as f64 + 0.5) / width as f64)
        .collect();
    let mut ws = p.workspace(width);
    ws.bind_inputs(&rng.fill(p.input_len() * width, -1.0, 1.0));
    // Labels are class indices in the classifiers.
    let labels: Vec<f64> = (0..p.label_len() * width).map(|i| (i % 2) as f64).collect();
    ws.bind_labels(&labels);
    ws.bind_observed(&rng.fill(p.observed_len() * width, -1.0, 1.0));
    let mut out = Vec::new();
    let block = |rows: usize| vec![0.0; rows * width];
    let grad = || vec![0.0; total];

    let mut o = block(dim);
    p.rhs(&params, &t, &y, &mut o, &mut ws);
    out.push(("rhs".to_string(), o));
    let mut o = block(dim);
    p.init(&params, &mut o, &mut ws);
    out.push(("init".to_string(), o));
    let mut o = block(dim);
    p.jvp_state(&params, &t, &y, &v, &mut o, &mut ws);
    out.push(("jvp_state".to_string(), o));
    let mut o = block(dim);
    p.jvp_param(&params, &t, &y, &u, &mut o, &mut ws);
    out.push(("jvp_param".to_string(), o));
    let mut o = block(dim);
    p.vjp_state(&params, &t, &y, &w, &mut o, &mut ws);
    out.push(("vjp_state".to_string(), o));
    let (mut o, mut g) = (block(dim), grad());
    p.vjp(&params, &t, &y, &w, &mut o, &mut g, &mut ws);
    out.push(("vjp".to_string(), o));
    out.push(("vjp grad".to_string(), g));
    // The VJP reading the activations an evaluation saved has the recomputing VJP's bits.
    let (mut dy, mut saved) = (block(dim), block(p.saved_len()));
    p.rhs_saving(&params, &t, &y, &mut dy, &mut saved, &mut ws);
    let (mut o, mut g) = (block(dim), grad());
    p.vjp_saved(&params, &t, &y, &saved, &w, &mut o, &mut g, &mut ws);
    let (recomputed, recomputed_grad) = (&out[out.len() - 2].1, &out[out.len() - 1].1);
    assert_eq!(&o, recomputed, "vjp_saved");
    assert_eq!(&g, recomputed_grad, "vjp_saved grad");
    let mut g = grad();
    p.vjp_param_accumulate(&params, &t, &y, &w, &mut g, &mut ws);
    out.push(("vjp_param".to_string(), g));
    let mut o = block(dim);
    p.rhs_time(&params, &t, &y, &mut o, &mut ws);
    out.push(("rhs_time".to_string(), o));
    let mut o = block(dim);
    p.init_jvp_param(&params, &u, &mut o, &mut ws);
    out.push(("init_jvp_param".to_string(), o));
    let mut g = grad();
    p.init_vjp_param_accumulate(&params, &w, &mut g, &mut ws);
    out.push(("init_vjp_param".to_string(), g));
    let mut o = block(p.metrics_len());
    p.metrics(&params, &t, &y, &mut o, &mut ws);
    out.push(("metrics".to_string(), o));
    let mut o = block(p.outputs_len());
    p.outputs(&params, &t, &y, &mut o, &mut ws);
    out.push(("outputs".to_string(), o));
    for kind in [CostKind::Terminal, CostKind::Running, CostKind::Observed] {
        let mut o = block(1);
        if p.cost(kind, &params, &t, &y, &mut o, &mut ws) {
            out.push((format!("cost {kind:?}"), o));
        }
        let (mut o, mut g) = (block(1 + dim), grad());
        if p.cost_grad(kind, &params, &t, &y, &mut o, &mut g, &mut ws) {
            out.push((format!("cost_grad {kind:?}"), o));
            out.push((format!("cost_grad {kind:?} θ"), g));
        }
    }
    let mut g = grad();
    let penalty = p.penalty(&params, Some(&mut g), &mut ws);
    out.push(("penalty".to_string(), vec![penalty]));
    out.push(("penalty grad".to_string(), g));
    let mut lm = vec![p.lm_k(&params, t[0], &mut ws)];
    let mut g = grad();
    p.lm_k_grad_accumulate(&params, t[0], &mut g, &mut ws);
    lm.extend(g);
    out.push(("lm_k".to_string(), lm));
    if p.has_msa_mixed() {
        let mut g = grad();
        p.msa_mixed_accumulate(&params, &t, &y, &v, &w, &mut g, &mut ws);
        out.push(("msa_mixed".to_string(), g));
    }
    if !p.events().is_empty() {
        let events = p.events();
        let assigned: usize = events
            .iter()
            .flat_map(|e| e.targets.iter().map(|t| t.1))
            .sum();
        let mut o = block(2 * (events.len() + assigned));
        p.event_jvp(&params, &t, &y, &v, &u, &mut o, &mut ws);
        out.push(("event_jvp".to_string(), o));
    }
    if dim <= 64 {
        let mut jac = vec![0.0; dim * dim];
        // Sample 0 of the block.
        let y0: Vec<f64> = y.iter().step_by(width).copied().collect();
        p.jacobian(&params, t[0], &y0, 0, &mut jac, &mut ws);
        out.push(("jacobian".to_string(), jac));
    }
    out
}

/// Programs compiled from the tensor IR give the scalar tape's values (which the compile tests
/// check against the interpreter) on every model and entry point, at block widths 1, 5 and 32:
/// the same functions summed in other orders (GEMMs, fused loops), to 1e-12 of the largest.
#[test]
fn tensor_programs_equal_the_scalar_programs_on_every_model() {
    let mut checked = 0;
    let mut files = node_files("models");
    // Wide enough that every product runs as a GEMM.
    files.push(root().join("benches/data/wide/wide_64.node"));
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let model = nodec::prepare(load(&path));
        let scalar = nodec::compile::Program::compile(&model);
        let tensor = nodec::compile::Program::compile_tensor(&model);
        if name.starts_with("wide") {
            assert!(
                tensor.saved_len() > 0,
                "the VJP reads the saved activations"
            );
        }
        for width in [1, 5, 32, 64] {
            let a = entry_points(&tensor, width, 5);
            let b = entry_points(&scalar, width, 5);
            for ((what, x), (_, y)) in a.iter().zip(&b) {
                assert_close(x, y, &format!("{name} width {width} {what}"));
            }
        }
        checked += 1;
    }
    assert!(checked >= 14, "every model of models/ ({checked})");
}

/// `prepare_tensor_only` builds the tensor derivative IR and leaves the scalar IR unexpanded;
/// `prepare_scalar` afterwards gives the model `prepare` gives, node for node.
#[test]
fn tensor_only_preparation_defers_the_scalar_ir_and_completes_to_prepare() {
    for path in node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let checked = load(&path);
        assert!(
            !checked.has_scalar_ir(),
            "{name}: sema leaves the expansion"
        );
        let mut lazy = checked.clone();
        nodec::ir::prepare_tensor_only(&mut lazy);
        assert!(!lazy.has_scalar_ir(), "{name}");
        assert!(lazy
            .states
            .iter()
            .all(|s| s.init.is_empty() && s.rhs.is_empty()));
        assert!(lazy
            .metrics
            .iter()
            .chain(&lazy.outputs)
            .all(|o| o.value.is_empty()));
        assert!(lazy.derivatives.roots().is_empty(), "{name}");
        let t = &lazy.tensor_roots;
        assert_eq!(t.derivatives.jvp_state.len(), lazy.states.len(), "{name}");
        assert_eq!(t.derivatives.vjp_param.len(), lazy.params.len(), "{name}");
        // The scalar pool holds only what `sema` expands at once: `k` and data labels.
        if t.lm_k.is_none() && t.data_labels.is_empty() {
            assert!(lazy.pool.is_empty(), "{name}");
        }

        nodec::ir::expand_scalar(&mut lazy);
        assert!(lazy.has_scalar_ir(), "{name}");
        let expanded = lazy.clone();
        nodec::ir::expand_scalar(&mut lazy);
        assert_eq!(
            nodec::ir::print(&lazy, false),
            nodec::ir::print(&expanded, false),
            "{name}: expanding twice changes nothing"
        );
        nodec::ir::prepare_scalar(&mut lazy);
        let eager = nodec::prepare(checked);
        assert_eq!(
            nodec::ir::print(&lazy, true),
            nodec::ir::print(&eager, true),
            "{name}"
        );
        assert_eq!(
            nodec::ir::print_tensor(&lazy, true),
            nodec::ir::print_tensor(&eager, true),
            "{name}"
        );
        assert_eq!(lazy.data, eager.data, "{name}");
        assert_eq!(lazy.schedule, eager.schedule, "{name}");
    }
}

/// A model too wide for the scalar IR runs on tensor kernels from the command line: `wide_4096`
/// (a 4096 × 64 layer, once refused by the per-array limit) runs, and `ir --stats` says which
/// kernels it gets and counts tensor nodes, not scalar ones.
#[test]
fn wide_models_run_on_tensor_kernels_from_the_command_line() {
    let out = crate::support::nodec(&["ir", "--stats", "benches/data/wide/wide_4096.node"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = String::from_utf8(out.stdout).unwrap();
    assert!(stats.contains("scalar IR not built"), "{stats}");
    let nodes: usize = stats
        .lines()
        .find(|l| l.starts_with("tensor nodes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .expect("a tensor nodes line");
    assert!(nodes < 100, "{stats}");
    let out = crate::support::nodec(&[
        "run",
        "benches/data/wide/wide_4096.node",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = report["loss"].as_f64().expect("a loss");
    assert!(loss.is_finite() && loss > 0.0, "{report}");
    let out = crate::support::nodec(&["ir", "--adjoint", "benches/data/wide/wide_4096.node"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tensor --derivatives"), "{err}");
}

/// Tensor programs against the tensor IR's reference interpreter (`ir::tensor::eval`), sample
/// by sample, on every model and `wide_64` at block widths 1, 5 and 32: the right-hand side,
/// the state JVP and the VJP with its parameter gradient summed over the block (scattered into
/// the layer or knots in force at each sample's time).
#[test]
fn tensor_programs_match_the_reference_interpreter() {
    use nodec::compile::{Params, Program};
    use nodec::ir::tensor::{eval, Leaf};
    let mut files = node_files("models");
    files.push(root().join("benches/data/wide/wide_64.node"));
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut model = load(&path);
        nodec::ir::prepare_tensor_only(&mut model);
        let p = Program::compile_tensor(&model);
        let layout = p.layout();
        let roots = &model.tensor_roots;
        let d = &roots.derivatives;
        for width in [1, 5, 32, 64] {
            let mut rng = Lcg(11 + width as u64);
            let params = Params::from_values(rng.fill(layout.total, -0.5, 0.5));
            let dim = p.dim();
            let y = rng.fill(dim * width, -1.0, 1.0);
            let v = rng.fill(dim * width, -1.0, 1.0);
            let w = rng.fill(dim * width, -1.0, 1.0);
            let inputs = rng.fill(p.input_len() * width, -1.0, 1.0);
            let labels: Vec<f64> = (0..p.label_len() * width).map(|i| (i % 2) as f64).collect();
            let observed = rng.fill(p.observed_len() * width, -1.0, 1.0);
            let (t0, t1) = p.span();
            let t: Vec<f64> = (0..width)
                .map(|s| t0 + (t1 - t0) * (s as f64 + 0.5) / width as f64)
                .collect();
            let mut ws = p.workspace(width);
            ws.bind_inputs(&inputs);
            ws.bind_labels(&labels);
            ws.bind_observed(&observed);
            let (mut f, mut jv, mut wj) = (
                vec![0.0; dim * width],
                vec![0.0; dim * width],
                vec![0.0; dim * width],
            );
            let mut grad = vec![0.0; layout.total];
            p.rhs(&params, &t, &y, &mut f, &mut ws);
            p.jvp_state(&params, &t, &y, &v, &mut jv, &mut ws);
            p.vjp(&params, &t, &y, &w, &mut wj, &mut grad, &mut ws);
            let mut expected_grad = vec![0.0; layout.total];
            for s in 0..width {
                // Sample `s` of a component-major block whose rows have `len` elements each.
                let column = |block: &[f64], from: usize, len: usize| -> Vec<f64> {
                    (from..from + len).map(|i| block[i * width + s]).collect()
                };
                let piece = layout.piece(t[s]);
                let mut theta = vec![0.0; layout.view_len];
                layout.resolve(params.values(), piece, &mut theta);
                let offsets = |shapes: Vec<usize>| -> Vec<usize> {
                    shapes
                        .iter()
                        .scan(0, |at, &n| {
                            let start = *at;
                            *at += n;
                            Some(start)
                        })
                        .collect()
                };
                let state_at = offsets(model.states.iter().map(|x| x.shape.len()).collect());
                let param_at = offsets(model.params.iter().map(|x| x.shape.len()).collect());
                let input_at = offsets(model.inputs.iter().map(|x| x.shape.len()).collect());
                let observed_at = offsets(model.observed.iter().map(|x| x.shape.len()).collect());
                let leaf = |l: Leaf| -> Vec<f64> {
                    let state = |i: u32, block: &[f64]| {
                        let i = i as usize;
                        column(block, state_at[i], model.states[i].shape.len())
                    };
                    match l {
                        Leaf::Time => vec![t[s]],
                        Leaf::State(i) => state(i, &y),
                        Leaf::StateTangent(i) => state(i, &v),
                        Leaf::Cotangent(i) => state(i, &w),
                        Leaf::Param(i) => {
                            let i = i as usize;
                            theta[param_at[i]..param_at[i] + model.params[i].shape.len()].to_vec()
                        }
                        // Inputs and observed values are bound from sample-major rows.
                        Leaf::Input(i) => {
                            let i = i as usize;
                            let from = s * p.input_len() + input_at[i];
                            inputs[from..from + model.inputs[i].shape.len()].to_vec()
                        }
                        Leaf::Label(i) => vec![labels[s * p.label_len() + i as usize]],
                        Leaf::Observed(i) => {
                            let i = i as usize;
                            let from = s * p.observed_len() + observed_at[i];
                            observed[from..from + model.observed[i].shape.len()].to_vec()
                        }
                        Leaf::ParamTangent(_) => unreachable!("no parameter tangent here"),
                    }
                };
                let what = format!("{name} width {width} sample {s}");
                let reference =
                    |r: &[nodec::ir::tensor::TId]| eval(&model.tensors, r, &leaf).concat();
                assert_close(
                    &column(&f, 0, dim),
                    &reference(&roots.rhs),
                    &format!("{what} rhs"),
                );
                assert_close(
                    &column(&jv, 0, dim),
                    &reference(&d.jvp_state),
                    &format!("{what} jvp_state"),
                );
                assert_close(
                    &column(&wj, 0, dim),
                    &reference(&d.vjp_state),
                    &format!("{what} vjp_state"),
                );
                layout.scatter(&reference(&d.vjp_param), piece, &mut expected_grad);
            }
            assert_close(
                &grad,
                &expected_grad,
                &format!("{name} width {width} vjp_param"),
            );
        }
    }
}

/// P4's field at state width `d`: `W2 tanh(W1 x + b1) + b2` with 64 hidden units.
fn p4(d: usize) -> Model {
    let text = format!(
        "const D = {d}\nconst H = 64\ninput u[D]\nparam W1[H, D] ~ normal(0, 0.2)\n\
         param b1[H] = 0\nparam W2[D, H] ~ normal(0, 0.1)\nparam b2[D] = 0\nstate x[D] = u\n\
         dx/dt = W2 * tanh(W1 * x + b1) + b2\nschedule rk4(t = [0, 1], steps = 20)\n\
         cost terminal = sumsq(x)\ndata train = normal(n = 8, dim = {d}, seed = 1)\n"
    );
    let file = SourceFile::new(format!("p4_d{d}.node"), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "model");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    model
}

/// Where every matrix product is a parameter matrix at least `GEMM_SIDE` wide each way, a
/// model runs on tensor kernels although its scalar IR would be small (P4 at D = 8 and 32): its
/// time is in GEMMs, and the tensor kernels' fused elementwise passes run the rest. A narrow
/// side (P4 at D = 2, `cnf_moons`), a constant matrix (`heat`'s Laplacian) or a state matrix
/// (`evolutionary_weights`) keeps the scalar tape. Tensor kernels whose register file is small
/// take 64-sample blocks from 256 samples, as the tape does; `wide_1024`'s keep 32.
#[test]
fn gemm_sized_models_run_on_tensor_kernels() {
    use nodec::compile::{Params, Program};
    use nodec::simulate::ModelSystem;
    use nodec::solve::System;
    let runs_tensor = |model: Model| {
        let small = nodec::ir::scalar_ir_estimate(&model) <= nodec::ir::SCALAR_IR_LIMIT;
        let gemms = nodec::ir::products_are_gemms(&model);
        let program = Program::compile(&nodec::prepare_to_run(model));
        assert_eq!(program.runs_tensor_kernels(), !small || gemms);
        let params = Params::from_values(vec![0.1; program.layout().total]);
        let width = ModelSystem::new(&program, &params, &[], &[]).block_width(1024);
        (program.runs_tensor_kernels(), width)
    };
    assert_eq!(nodec::ir::GEMM_SIDE, 8);
    assert_eq!(runs_tensor(p4(32)), (true, 64));
    assert_eq!(runs_tensor(p4(8)), (true, 64));
    assert_eq!(runs_tensor(p4(7)), (false, 64));
    assert_eq!(runs_tensor(p4(2)), (false, 64));
    for (name, tensor) in [
        ("cnf_moons", false),
        ("heat", false),
        ("evolutionary_weights", false),
        ("lorenz", false),
        ("digits_odenet", true),
    ] {
        let model = load(&root().join(format!("models/{name}.node")));
        assert_eq!(runs_tensor(model).0, tensor, "{name}");
    }
    let wide = load(&root().join("benches/data/wide/wide_1024.node"));
    assert_eq!(runs_tensor(wide), (true, 32));
    let out = crate::support::nodec(&["ir", "--stats", "benches/data/p4/node_d32.node"]);
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.starts_with("scalar IR not built: every matrix product is a parameter matrix at least 8 wide each way"),
        "{stats}"
    );
}
