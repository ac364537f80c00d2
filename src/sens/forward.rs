//! Forward sensitivities: one tangent solve direction per parameter coordinate.
//!
//! Forward mode costs one tangent per coordinate (`2 m` JVPs per stage for `m` coordinates),
//! against one reverse sweep for backprop, so it only pays for a few parameters; it is there
//! because it needs no stored trajectory and no reverse-time solve, works unchanged through
//! every method (adaptive and stiff included, see `solve::tangent`), and gives an independent
//! check of the reverse methods. Above a limit of coordinates (by default
//! [`DEFAULT_FORWARD_LIMIT`]) it refuses rather than silently taking hours.
//!
//! Directions are the unit vectors of the full parameter layout. A tangent starts from
//! `∂x0/∂θ · u` (zero for the running cost's quadrature), and the loss's derivative is read off
//! the objective's cotangents at the save times (terminal and observed costs, the quadrature at
//! `t1`) plus the costs' direct parameter gradient, then averaged like the loss, with the
//! penalty's gradient added once.

use std::ops::Range;

use rayon::prelude::*;

use super::{Gradient, GradientError, GradientOptions, ModelObjective};
use crate::compile::{Params, Program};
use crate::simulate::{Bound, WithQuadrature};
use crate::solve::{self, System};

/// Parameter coordinates forward sensitivities accept unless told otherwise.
pub const DEFAULT_FORWARD_LIMIT: usize = 64;

/// The gradient by forward sensitivities (see the module docs).
pub(super) fn gradient(
    bound: &Bound<'_>,
    options: &GradientOptions,
) -> Result<Gradient, GradientError> {
    let (program, params) = (bound.program, bound.params);
    let np = program.layout().total;
    let limit = options.forward_limit.unwrap_or(DEFAULT_FORWARD_LIMIT);
    if np > limit {
        return Err(GradientError::ForwardLimit { params: np, limit });
    }
    if options.costates {
        return Err(GradientError::Unavailable(
            "forward sensitivities do not compute costates; use `--method backprop`",
        ));
    }
    let setup = bound.setup(Some(vec![bound.schedule().t1]));
    let system = bound.system();
    let objective = ModelObjective::new(bound);
    let n = setup.n;

    let mut directions = vec![0.0; np * np];
    for i in 0..np {
        directions[i * np + i] = 1.0;
    }
    let s0 = initial_tangents(program, params, &system, &directions, n);
    let r = solve::forward_batch(
        &system,
        &objective,
        &setup.options,
        &setup.y0,
        &s0,
        &directions,
        n,
    )?;
    let scale = 1.0 / n as f64;
    let mut grad: Vec<f64> = r.derivative.iter().map(|g| g * scale).collect();
    let mut ws = program.workspace(1);
    program.penalty(params, Some(&mut grad), &mut ws);
    let stats = r.solution.stats;
    let simulation = bound.summarize(r.solution);
    Ok(Gradient {
        simulation,
        grad,
        initial_cotangent: Vec::new(),
        costates: None,
        stats,
    })
}

/// `∂y0/∂θ · u_d` for every direction and sample, `[direction][sample][component]`, the
/// quadrature component zero. Directions run in parallel; each is computed block by block.
fn initial_tangents(
    program: &Program,
    params: &Params,
    system: &WithQuadrature<'_>,
    directions: &[f64],
    n: usize,
) -> Vec<f64> {
    let np = program.layout().total;
    let dim = program.dim();
    let full = system.dim();
    if np == 0 {
        return Vec::new();
    }
    let per_direction: Vec<Vec<f64>> = directions
        .par_chunks_exact(np)
        .map(|u| {
            let mut s0 = vec![0.0; n * full];
            for Range { start, end } in system.blocks(n) {
                let w = end - start;
                let mut ws = system.workspace(start..end);
                let mut block = vec![0.0; dim * w];
                program.init_jvp_param(params, u, &mut block, ws.program_workspace());
                for s in 0..w {
                    for i in 0..dim {
                        s0[(start + s) * full + i] = block[i * w + s];
                    }
                }
            }
            s0
        })
        .collect();
    per_direction.concat()
}
