//! Gradients through the solve: every method against finite differences of the loss, and the
//! identities that tie them to theory (costates, LM with k = 0, per-layer locality, bits).

use nodec::cli::run::{load, Loaded};
use nodec::cli::Output;
use nodec::compile::Params;
use nodec::data::Dataset;
use nodec::ir::GradientMethod;
use nodec::sema::Overrides;
use nodec::sens::{self, GradientOptions};
use nodec::simulate;

use crate::support::{root, Lcg};

/// Loads `models/NAME` with overrides and keeps the first `n` samples of its first data block.
pub fn load_small(name: &str, sets: &[(&str, f64)], n: usize) -> (Loaded, Dataset) {
    let mut overrides = Overrides::default();
    for (k, v) in sets {
        overrides.values.push((k.to_string(), *v));
    }
    let path = root().join("models").join(name);
    let mut out = Output::default();
    let loaded = load(path.to_str().unwrap(), &overrides, 0, None, &mut out)
        .unwrap_or_else(|| panic!("{name} loads: {}", out.stderr));
    let full = loaded.data[0].1.clone();
    let keep: Vec<usize> = (0..full.n.min(n)).collect();
    let data = if full.times.is_some() {
        full
    } else {
        full.select(&keep)
    };
    (loaded, data)
}

pub(crate) fn loss(l: &Loaded, params: &Params, data: &Dataset) -> f64 {
    simulate::simulate(&l.model, &l.program, params, data, None)
        .expect("solves")
        .loss
}

/// Central difference of the loss along coordinate `i`, fourth order (five points), so that
/// truncation error sits far below the tolerances checked.
pub(crate) fn finite_difference(l: &Loaded, data: &Dataset, i: usize, step: f64) -> f64 {
    let at = |d: f64| {
        let mut p = l.params.clone();
        p.values_mut()[i] += d;
        loss(l, &p, data)
    };
    (at(-2.0 * step) - 8.0 * at(-step) + 8.0 * at(step) - at(2.0 * step)) / (12.0 * step)
}

pub(crate) fn gradient(l: &Loaded, data: &Dataset, method: GradientMethod) -> sens::Gradient {
    sens::gradient(
        &l.model,
        &l.program,
        &l.params,
        data,
        &GradientOptions::new(method),
    )
    .expect("gradient")
}

/// Random coordinates (and always the first and last) of a gradient compared with finite
/// differences: `|g − fd| ≤ tol · max(|fd|, scale)` where `scale` is the gradient's largest
/// entry, so that tiny entries are judged against the gradient's size.
pub(crate) fn check_against_fd(
    name: &str,
    l: &Loaded,
    data: &Dataset,
    g: &[f64],
    tol: f64,
    picks: usize,
) {
    let total = g.len();
    let scale = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut rng = Lcg(total as u64 + 17);
    let mut coords = vec![0, total - 1];
    coords.extend((0..picks).map(|_| (rng.uniform(0.0, total as f64) as usize).min(total - 1)));
    for i in coords {
        let fd = finite_difference(l, data, i, 1e-4);
        let err = (g[i] - fd).abs();
        assert!(
            err <= tol * fd.abs().max(scale),
            "{name}: coordinate {i}: gradient {} vs finite difference {fd} (err {err:e}, scale {scale:e})",
            g[i]
        );
    }
}

#[test]
fn backprop_matches_finite_differences_of_the_discrete_map() {
    // Fixed-step models; each with a partial block (n not a multiple of 32).
    for (name, n) in [
        ("resnet_euler.node", 37),
        ("lm_resnet.node", 37),
        ("evolutionary_weights.node", 20),
        ("circles_anode.node", 20),
        ("cnf_moons.node", 20),
        ("crowd_motion.node", 20),
    ] {
        let (l, data) = load_small(name, &[], n);
        let g = gradient(&l, &data, GradientMethod::Backprop);
        check_against_fd(name, &l, &data, &g.grad, 1e-8, 12);
    }
}
