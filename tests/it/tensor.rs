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
        let pairs: [(&str, &[nodec::ir::tensor::TId], &[ExprId]); 10] = [
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
        ];
        for (what, tensor, scalar_roots) in pairs {
            assert_close(
                &flat(tensor),
                &scalar(scalar_roots),
                &format!("{name} {what}"),
            );
        }
        // The scalar side splits a penalty by parameter copies; at one point the groups add up.
        for (kind, value, state, param) in &td.costs {
            let groups: Vec<_> = sd.costs.iter().filter(|c| c.kind == *kind).collect();
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
