//! Every model in `models/` passes `nodec check` with nothing on stderr, and its `nodec ir`
//! output is snapshotted (each snapshot read and judged right before it was accepted).

use crate::support::{node_files, nodec};

#[test]
fn every_model_checks_clean() {
    let files = node_files("models");
    assert!(files.len() >= 10, "models/ holds the shared examples");
    for path in files {
        let rel = format!("models/{}", path.file_name().unwrap().to_string_lossy());
        let out = nodec(&["check", &rel]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{rel} fails check:\n{stderr}");
        assert!(stderr.is_empty(), "{rel} prints diagnostics:\n{stderr}");
    }
}

/// Models whose full IR is too long to read (digits_odenet's is 1 MB, otflow_moons's 100 kB)
/// are snapshotted at small sizes: the same graph with fewer rows. `every_model_checks_clean`
/// checks them at full size.
const SMALL: &[(&str, &[&str])] = &[
    ("digits_odenet", &["--set", "d=2", "--set", "w=2"]),
    ("otflow_moons", &["--set", "m=2"]),
    ("brusselator", &["--set", "N=3"]),
];

#[test]
fn ir_of_every_model() {
    for path in node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rel = format!("models/{name}");
        let stem = name.trim_end_matches(".node");
        let mut args = vec!["ir"];
        if let Some((_, set)) = SMALL.iter().find(|(n, _)| *n == stem) {
            args.extend_from_slice(set);
        }
        args.push(&rel);
        let out = nodec(&args);
        assert!(
            out.status.success(),
            "{rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 output");
        insta::assert_snapshot!(format!("ir_{stem}"), text);
    }
}

/// `nodec ir --tensor --derivatives` of every model at its full size: the tensor IR and its
/// derivatives as readable expressions, whose length follows the text, not the widths.
#[test]
fn tensor_ir_of_every_model() {
    for path in node_files("models") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rel = format!("models/{name}");
        let stem = name.trim_end_matches(".node");
        let out = nodec(&["ir", "--tensor", "--derivatives", &rel]);
        assert!(
            out.status.success(),
            "{rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 output");
        insta::assert_snapshot!(format!("tensor_ir_{stem}"), text);
    }
}

#[test]
fn check_accepts_several_files_and_fails_if_any_fails() {
    let out = nodec(&["check", "models/decay.node", "models/lorenz.node"]);
    assert!(out.status.success());
    let out = nodec(&["check", "models/decay.node", "tests/bad/unknown_name.node"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn set_changes_shapes_before_checking() {
    // circles_anode pads the 2 features with zeros(d - 2); d = 2 gives an empty pad.
    let out = nodec(&["ir", "--set", "d=2", "models/circles_anode.node"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("state x[2]"), "{text}");
    let out = nodec(&["ir", "--set", "d=4", "models/circles_anode.node"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("state x[4]"), "{text}");
}

#[test]
fn a_malformed_set_is_a_command_line_error() {
    let out = nodec(&["check", "--set", "d", "models/decay.node"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=VALUE"));
}

/// CSE: the CNF's divergence differentiates the field, and d/dz tanh(u) = 1 − tanh²(u) reuses
/// the field's own activation nodes, so the whole primal DAG holds exactly one tanh per hidden
/// unit (w = 32), where a tree would repeat them in every derivative term.
#[test]
fn cnf_divergence_shares_the_hidden_activations_with_the_field() {
    let out = nodec(&["ir", "--stats", "models/cnf_moons.node"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |name: &str| -> Vec<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` row in:\n{text}"));
        line[name.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(row("tanh"), [32, 32], "{text}");
    let before = row("before (as trees)");
    let after = row("after (distinct DAG)");
    assert!(
        before[0] > 4 * after[0],
        "sharing should shrink the primal DAG:\n{text}"
    );
    assert!(
        before[1] > 50 * after[1],
        "sharing should shrink the derivative DAG:\n{text}"
    );
}

/// `nodec ir --adjoint`: decay's costate equation dp/dt = k·p, p(T) = −∂x/∂x = −1 and the
/// gradient integrand −p·∂f/∂k = p·x, checked by hand in the snapshot.
#[test]
fn adjoint_equations_of_decay() {
    let out = nodec(&["ir", "--adjoint", "models/decay.node"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("adjoint_decay", String::from_utf8(out.stdout).unwrap());
}

/// The heat model's grid, Laplacian and initial value are written once for any `N`: the tensor
/// pool that `sema` builds has the same number of nodes at N = 100 and N = 300.
#[test]
fn heat_tensor_ir_does_not_grow_with_the_grid() {
    let text = std::fs::read_to_string(crate::support::root().join("models/heat.node")).unwrap();
    let file = nodec::diag::SourceFile::new("models/heat.node", text);
    // Both sizes are past the folding of small constant arrays into literals (4096 elements),
    // which makes a small grid's Laplacian one dense literal.
    let sizes: Vec<usize> = [100.0, 300.0]
        .iter()
        .map(|&n| {
            let overrides = nodec::sema::Overrides {
                values: vec![("N".to_string(), n)],
                ..Default::default()
            };
            let (model, diags) = nodec::check_source(&file, &overrides, "heat");
            assert!(!diags.has_errors(), "{}", diags.render(&file));
            assert_eq!(model.states[0].shape, nodec::ir::Shape::Vector(n as usize));
            model.tensors.len()
        })
        .collect();
    assert_eq!(sizes[0], sizes[1]);
}
