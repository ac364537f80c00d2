//! `msa`: the extended method of successive approximations (E-MSA) of Li, Chen, Tai & E,
//! "Maximum Principle Based Algorithms for Deep Learning", JMLR 18, 2018 (arXiv:1710.09513),
//! for `euler` schedules with `per layer` parameters.
//!
//! # The discrete problem
//!
//! Forward Euler with `per layer` parameters is the discrete control system
//!
//! ```text
//! x_{n+1} = x_n + h f(x_n, θ_ℓ(n), τ_n),    n = 0 … N−1,   h = (t1 − t0) / N,
//! loss    = (1/B) Σ_s Φ(x_N^s) + penalty(θ)
//! ```
//!
//! with `ℓ(n)` the layer in force at the step's evaluation time `τ_n` (the grid time `t_n`,
//! snapped to a layer boundary as the solver snaps it). The Hamiltonian of step `n` is
//! `H_n(x, p, θ) = p · (x + h f(x, θ, τ_n))`, so that `x_{n+1} = ∇_p H_n` and the costates of
//! the discrete maximum principle are
//!
//! ```text
//! p_n = ∇ₓH_n(x_n, p_{n+1}, θ) = p_{n+1} + h ∂ₓf(x_n, θ)ᵀ p_{n+1},     p_N = −∇Φ(x_N),
//! ```
//!
//! which is exactly `p = −∂(sample's loss)/∂x` at the grid points as backprop computes it
//! (`sens::gradient` with `costates`).
//!
//! # One E-MSA iteration (one mini-batch of B samples)
//!
//! States and costates are computed at the current parameters θᵏ and frozen; then every
//! layer ℓ independently maximises the augmented Hamiltonian, i.e. minimises
//!
//! ```text
//! J_ℓ(θ) = −H̃_ℓ(θ) = Σ_{n: ℓ(n) = ℓ} Σ_s [ −(h/B) p_{n+1}·f(x_n, θ) + ρ/2 ‖r_x‖² + ρ/2 ‖r_p / B‖² ]
//!                    + reg/2 ‖θ‖² + penalty(θᵏ with layer ℓ replaced by θ)
//! r_x = x_{n+1} − (x_n + h f(x_n, θ)),     r_p = p_n − (p_{n+1} + h ∂ₓf(x_n, θ)ᵀ p_{n+1})
//! ```
//!
//! (every `x`, `p`, `r` of sample `s`; `p_{n+1}·x_n` is dropped: it does not depend on θ),
//! starting from θᵏ, with `maxiter` L-BFGS iterations ([`crate::optim::Msa::minimise`]).
//! Its gradient is
//!
//! ```text
//! ∇J_ℓ = −(1/B) Σ_n Σ_s [ ∂θfᵀ(h p_{n+1}) + ∂θfᵀ(ρ h B r_x) + ∂θ( (h p_{n+1})ᵀ ∂ₓf (ρ r_p / B) ) ]
//!        + reg θ + ∇penalty
//! ```
//!
//! where the last term is the parameter gradient of `wᵀ (∂f/∂x) v` with `w = h p_{n+1}` and
//! `v = ρ r_p / B` held fixed: an exact mixed second derivative, built symbolically by
//! `ir::prepare` (only for `msa` models) and compiled as [`Program::msa_mixed_accumulate`].
//! One evaluation is four kernel calls per block and step: `rhs` (for `r_x`), `vjp` with
//! `w = h p_{n+1}` (its state part gives `r_p`, its parameter part the first term),
//! `vjp_param_accumulate` with `ρ h B r_x`, and the mixed kernel.
//!
//! # Decisions
//!
//! - **Sample scaling: the mini-batch is one control system**, as in the paper's
//!   discrete-time setting with S samples: its state is the B samples' states side by side and its loss their mean, so
//!   its costates are `p/B` (`p` being each sample's own costate, as `sens` reports it) and
//!   the norms of H̃ are over the whole batch. Hence the Hamiltonian term is a mean over the
//!   batch, the step residual a sum, and the costate residual a sum over `r_p / B`. At θᵏ,
//!   where the residuals vanish, `∇J_ℓ = ∂loss/∂θ_ℓ + reg θ_ℓ`: the gradient a first-order
//!   method would see. A consequence is that the step-consistency weight grows with the batch
//!   relative to the Hamiltonian term (larger batches take more conservative steps). Averaging
//!   the ρ terms over the batch instead was measured on `models/msa_sin.node` with ρ = 1 and
//!   does not converge (with batch 20 the loss oscillates between 1 and 15), while this
//!   scaling fits it.
//! - **The `p·f` term carries `h`**: `p·(x + h f)` is the Hamiltonian of the Euler map, whose
//!   gradient in θ is the loss gradient; without `h` the Hamiltonian and consistency terms
//!   would be weighed differently for every step size.
//! - **The ρ terms vanish exactly at θᵏ**, not just to rounding: `r_x` is formed as
//!   `x_{n+1} − (x_n + h f)`, the solver's own Euler update, and `r_p` as
//!   `p_n − (p_{n+1} + vjp(h p_{n+1}))`, the negation of backprop's reverse Euler step (round
//!   to nearest is symmetric under negation), with the same kernels, times and block partition
//!   as the solve, whose bits do not depend on the block anyway.
//! - **Controls are `per layer` parameters only**, as in the paper, where every trainable
//!   parameter is a control of one step. A constant or `on knots` parameter (an output head,
//!   say) would couple all layers and has no Hamiltonian of its own, so a model with one is
//!   refused with a message that says how to rewrite it (rather than updating it by some
//!   other rule that `msa` does not name). For the same reason `per layer` parameters must
//!   not appear in the initial state or the terminal cost, and running and observed costs
//!   (which would add `L` to the Hamiltonian and jumps to the costates) are refused.
//! - **Schedules.** Only `euler`: its step `x + h f` is the map whose Hamiltonian is above.
//!   Other fixed-step methods have stage-dependent Hamiltonians, adaptive and stiff ones have
//!   no fixed layers; they are refused with the reason. The costates must be the discrete
//!   ones, so `gradient = adjoint` or `forward` is refused too.
//! - **Penalty costs** are kept (they are part of the loss): each layer sees the penalty with
//!   the other layers at θᵏ.
//! - **Parallel and deterministic.** Layers are independent given the frozen states, so they
//!   run as rayon tasks; each task sums its steps and blocks in a fixed order on one thread
//!   and the results are written back in layer order, so the parameters are the same bits
//!   for any number of threads.
//! - **A failed line search keeps the best point**: L-BFGS leaves the layer at its last
//!   accepted (lowest) point and the layer stops for this mini-batch.

use std::convert::Infallible;
use std::ops::Range;

use rayon::prelude::*;

use super::TrainError;
use crate::compile::{Params, Program, Workspace};
use crate::data::Dataset;
use crate::ir::tensor::{Leaf, TId, TNode, TensorPool};
use crate::ir::{self, CostKind, GradientMethod, Method, MethodFamily, ParamTime};
use crate::optim::Msa;
use crate::sens::{self, GradientOptions};
use crate::simulate::ModelSystem;
use crate::solve::System;

/// What `msa` needs to know about a model, checked once when training starts.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The model with its schedule saving every grid point (where the costates are needed).
    pub grid_model: ir::Model,
    /// Gradient options: backprop with costates.
    pub gradient: GradientOptions,
    /// Euler step size.
    h: f64,
    /// The evaluation time of every step.
    times: Vec<f64>,
    /// The steps of each layer.
    steps: Vec<Vec<usize>>,
    /// The full-layout indices of each layer's copies of the `per layer` parameters.
    coords: Vec<Vec<usize>>,
}

/// Work done by one E-MSA update.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct UpdateStats {
    /// Objective evaluations summed over the layers.
    pub evals: usize,
    /// Right-hand-side evaluations (one per sample, step and objective evaluation).
    pub rhs_evals: u64,
}

fn refuse(why: impl Into<String>) -> TrainError {
    TrainError::Unsupported(why.into())
}

const INSTEAD: &str = "or train with `adam`, `sgd` or `lbfgs`";

/// Checks that `msa` applies to the model and precomputes its layers; the error says why not
/// and what to use instead.
pub(crate) fn plan(
    model: &ir::Model,
    program: &Program,
    gradient: &GradientOptions,
) -> Result<Plan, TrainError> {
    let schedule = model.schedule.as_ref().ok_or_else(|| {
        refuse(format!(
            "`msa` trains the layers of a schedule, and the model has none; add `schedule euler(t = [0, 1], steps = N)`, {INSTEAD}"
        ))
    })?;
    let method = schedule.method;
    match method.family() {
        MethodFamily::Adaptive | MethodFamily::Stiff => {
            return Err(refuse(format!(
                "`msa` maximises the Hamiltonian of each fixed step, but `{}` chooses its steps adaptively; use `schedule euler(t = [..], steps = N)` with `per layer` parameters, {INSTEAD}",
                method.name()
            )))
        }
        MethodFamily::Fixed if method != Method::Euler => {
            return Err(refuse(format!(
                "`msa` is implemented for `euler` schedules, whose step x + h f(x, θ) gives the discrete Hamiltonian p·(x + h f); `{}` is not supported: use `euler`, {INSTEAD}",
                method.name()
            )))
        }
        MethodFamily::Fixed => {}
    }
    if gradient.method != GradientMethod::Backprop {
        let name = match gradient.method {
            GradientMethod::Adjoint => "adjoint",
            _ => "forward",
        };
        return Err(refuse(format!(
            "`msa` needs the costates of the discrete Euler steps, which only `gradient = backprop` computes; remove `gradient = {name}` from the `train` declaration"
        )));
    }
    for kind in [CostKind::Running, CostKind::Observed] {
        if model.costs.iter().any(|c| c.kind == kind) {
            return Err(refuse(format!(
                "`msa` supports terminal and penalty costs; a {} cost would enter the Hamiltonian of every step, which is not implemented; {}",
                kind.name(),
                "use a terminal cost, or train with `adam`, `sgd` or `lbfgs`"
            )));
        }
    }
    if let Some(p) = model
        .params
        .iter()
        .find(|p| p.time != ParamTime::PerLayer && !p.shape.is_empty())
    {
        let how = match p.time {
            ParamTime::Knots(_) => "varies on knots",
            _ => "is constant in time",
        };
        return Err(refuse(format!(
            "`msa` trains `per layer` parameters only (the controls of Pontryagin's maximum principle), but `{}` {how}: declare it `per layer`, make it a `const`, {INSTEAD}",
            p.name
        )));
    }
    if !model.params.iter().any(|p| !p.shape.is_empty()) {
        return Err(refuse(format!(
            "`msa` trains `per layer` parameters and the model has none; declare the field's weights `per layer`, {INSTEAD}"
        )));
    }
    // Parameters outside the field would be controls without a Hamiltonian.
    let roots = &model.tensor_roots;
    let outside: [(&str, Vec<TId>); 2] = [
        ("the initial state", roots.init.clone()),
        (
            "the terminal cost",
            model
                .costs
                .iter()
                .zip(&roots.costs)
                .filter(|(c, _)| c.kind == CostKind::Terminal)
                .map(|(_, &id)| id)
                .collect(),
        ),
    ];
    for (what, roots) in outside {
        if let Some(param) = first_param(&model.tensors, &roots) {
            return Err(refuse(format!(
                "`msa` treats `per layer` parameters as controls of the steps, but {what} reads `{}`; keep parameters in the field, {INSTEAD}",
                model.params[param].name
            )));
        }
    }

    let steps = schedule.steps.unwrap_or(1).max(1);
    let (t0, t1) = (schedule.t0, schedule.t1);
    // The arithmetic of the solver's fixed grid (`Timeline::fixed_h`, `Timeline::grid`).
    let h = (t1 - t0) / steps as f64;
    let breaks = program.breakpoints();
    let times: Vec<f64> = (0..steps)
        .map(|n| euler_time(t0 + n as f64 * h, h, breaks))
        .collect();
    let layout = program.layout();
    let mut layer_steps = vec![Vec::new(); layout.layers];
    for (n, &t) in times.iter().enumerate() {
        layer_steps[layout.layer_at(t).min(layout.layers - 1)].push(n);
    }
    let coords = (0..layout.layers)
        .map(|l| {
            layout
                .entries
                .iter()
                .filter(|e| e.time == ParamTime::PerLayer)
                .flat_map(|e| e.offset + l * e.len()..e.offset + (l + 1) * e.len())
                .collect()
        })
        .collect();
    let mut grid_model = model.clone();
    if let Some(s) = grid_model.schedule.as_mut() {
        s.save = ir::Save::Default;
    }
    Ok(Plan {
        grid_model,
        gradient: GradientOptions {
            costates: true,
            ..gradient.clone()
        },
        h,
        times,
        steps: layer_steps,
        coords,
    })
}

/// The time at which an Euler step from grid time `t` evaluates `f`: `t`, or a layer boundary
/// within rounding of it (the solver's `Timeline::stage_time` at `c = 0`), so that the step
/// reads the layer that starts there: the boundary itself forward, the time just below it when
/// the step runs backward (`h < 0`; the pieces are `[b_k, b_{k+1})`).
fn euler_time(t: f64, h: f64, breaks: &[f64]) -> f64 {
    let tol = 1e-9 * h.abs() + 4.0 * f64::EPSILON * t.abs();
    match breaks.iter().copied().find(|&b| (t - b).abs() <= tol) {
        Some(b) if h < 0.0 => b.next_down(),
        Some(b) => b,
        None => t,
    }
}

/// The frozen data of one block of samples at one step, component-major.
struct Frozen {
    start: usize,
    width: usize,
    x0: Vec<f64>,
    x1: Vec<f64>,
    p0: Vec<f64>,
    p1: Vec<f64>,
    /// `h p_{n+1}`: the cotangent of every kernel call.
    hp1: Vec<f64>,
}

/// Scratch buffers of one block.
struct Scratch {
    ws: Workspace,
    times: Vec<f64>,
    f: Vec<f64>,
    a: Vec<f64>,
    rx: Vec<f64>,
    rp: Vec<f64>,
}

/// The layer objective `J_ℓ` and its gradient on the frozen data (module docs).
pub(crate) struct LayerObjective<'a> {
    program: &'a Program,
    msa: &'a Msa,
    h: f64,
    coords: &'a [usize],
    /// `(evaluation time, blocks)` of each step of the layer.
    steps: Vec<(f64, Vec<Frozen>)>,
    samples: usize,
    params: Params,
    scratch: Vec<Scratch>,
    penalty: Option<Workspace>,
    full_grad: Vec<f64>,
    penalty_grad: Vec<f64>,
}

/// The three sums of `J_ℓ` before scaling: `Σ h p_{n+1}·f`, `Σ ‖r_x‖²`, `Σ ‖r_p‖²`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Terms {
    pub hamiltonian: f64,
    pub step_residual: f64,
    pub costate_residual: f64,
}

impl<'a> LayerObjective<'a> {
    /// The objective of layer `layer` on the frozen states and costates of `g` (computed with
    /// `plan.grid_model` on `data` at `params`).
    pub fn new(
        plan: &'a Plan,
        program: &'a Program,
        msa: &'a Msa,
        params: &Params,
        data: &Dataset,
        g: &sens::Gradient,
        layer: usize,
    ) -> LayerObjective<'a> {
        let solution = &g.simulation.solution;
        let costates = g
            .costates
            .as_ref()
            .expect("the plan's gradient options ask for costates");
        let n = solution.n_samples;
        let dim = program.dim();
        let full = solution.dim;
        let h = plan.h;
        let block = |k: usize, start: usize, end: usize, src: &[f64], stride: usize| {
            let w = end - start;
            let mut out = vec![0.0; dim * w];
            for s in 0..w {
                let row = &src[(k * n + start + s) * stride..][..dim];
                for i in 0..dim {
                    out[i * w + s] = row[i];
                }
            }
            out
        };
        let labels: &[f64] = data.labels.as_deref().unwrap_or(&[]);
        let system = ModelSystem::new(program, params, &data.inputs, labels);
        let steps = plan.steps[layer]
            .iter()
            .map(|&step| {
                let blocks = system
                    .blocks(n)
                    .map(|Range { start, end }| {
                        let p1 = block(step + 1, start, end, &costates.p, dim);
                        Frozen {
                            start,
                            width: end - start,
                            x0: block(step, start, end, &solution.y, full),
                            x1: block(step + 1, start, end, &solution.y, full),
                            p0: block(step, start, end, &costates.p, dim),
                            hp1: p1.iter().map(|p| h * p).collect(),
                            p1,
                        }
                    })
                    .collect();
                (plan.times[step], blocks)
            })
            .collect::<Vec<(f64, Vec<Frozen>)>>();
        let scratch = steps
            .first()
            .map(|(_, blocks)| {
                blocks
                    .iter()
                    .map(|b| {
                        let len = dim * b.width;
                        Scratch {
                            ws: system.workspace(b.start..b.start + b.width),
                            times: vec![0.0; b.width],
                            f: vec![0.0; len],
                            a: vec![0.0; len],
                            rx: vec![0.0; len],
                            rp: vec![0.0; len],
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let total = program.layout().total;
        let has_penalty = program.cost_kinds().contains(&CostKind::Penalty);
        LayerObjective {
            program,
            msa,
            h,
            coords: &plan.coords[layer],
            steps,
            samples: n,
            params: params.clone(),
            scratch,
            penalty: has_penalty.then(|| program.workspace(1)),
            full_grad: vec![0.0; total],
            penalty_grad: vec![0.0; total],
        }
    }

    /// The layer's current parameters (its copies of every `per layer` parameter).
    pub fn theta(&self) -> Vec<f64> {
        self.coords
            .iter()
            .map(|&i| self.params.values()[i])
            .collect()
    }

    /// Whether the layer has steps (a layer of no step has nothing to maximise).
    pub fn has_steps(&self) -> bool {
        !self.steps.is_empty()
    }

    /// The unscaled sums of `J_ℓ` at `theta`, accumulating `−B` times the gradient of the
    /// sample terms into `self.full_grad`.
    pub fn terms(&mut self, theta: &[f64]) -> Terms {
        let values = self.params.values_mut();
        for (&i, &v) in self.coords.iter().zip(theta) {
            values[i] = v;
        }
        self.full_grad.fill(0.0);
        let (h, rho) = (self.h, self.msa.rho);
        let batch = self.samples.max(1) as f64;
        let mut terms = Terms::default();
        for (t, blocks) in &self.steps {
            for (b, s) in blocks.iter().zip(&mut self.scratch) {
                s.times.fill(*t);
                let p = self.program;
                p.rhs(&self.params, &s.times, &b.x0, &mut s.f, &mut s.ws);
                p.vjp(
                    &self.params,
                    &s.times,
                    &b.x0,
                    &b.hp1,
                    &mut s.a,
                    &mut self.full_grad,
                    &mut s.ws,
                );
                for i in 0..s.f.len() {
                    s.rx[i] = b.x1[i] - (b.x0[i] + h * s.f[i]);
                    s.rp[i] = b.p0[i] - (b.p1[i] + s.a[i]);
                    terms.hamiltonian += b.hp1[i] * s.f[i];
                    terms.step_residual += s.rx[i] * s.rx[i];
                    terms.costate_residual += s.rp[i] * s.rp[i];
                }
                // The cotangents of the ρ terms' gradients (module docs), B-scaled so that the
                // common factor −1/B of `evaluate` applies; in place, as the residuals are not
                // needed again in this evaluation.
                s.rx.iter_mut().for_each(|r| *r *= rho * h * batch);
                s.rp.iter_mut().for_each(|r| *r *= rho / batch);
                p.vjp_param_accumulate(
                    &self.params,
                    &s.times,
                    &b.x0,
                    &s.rx,
                    &mut self.full_grad,
                    &mut s.ws,
                );
                p.msa_mixed_accumulate(
                    &self.params,
                    &s.times,
                    &b.x0,
                    &s.rp,
                    &b.hp1,
                    &mut self.full_grad,
                    &mut s.ws,
                );
            }
        }
        terms
    }

    /// `J_ℓ(theta)` and its gradient with respect to the layer's coordinates.
    pub fn evaluate(&mut self, theta: &[f64]) -> (f64, Vec<f64>) {
        let terms = self.terms(theta);
        let (rho, reg) = (self.msa.rho, self.msa.reg);
        let batch = self.samples.max(1) as f64;
        let mut value = -terms.hamiltonian / batch
            + 0.5 * rho * (terms.step_residual + terms.costate_residual / (batch * batch));
        value += 0.5 * reg * theta.iter().map(|v| v * v).sum::<f64>();
        if let Some(ws) = self.penalty.as_mut() {
            self.penalty_grad.fill(0.0);
            value += self
                .program
                .penalty(&self.params, Some(&mut self.penalty_grad), ws);
        }
        let grad = self
            .coords
            .iter()
            .zip(theta)
            .map(|(&i, &v)| -self.full_grad[i] / batch + reg * v + self.penalty_grad[i])
            .collect();
        (value, grad)
    }

    /// Objective evaluations cost one right-hand side per sample and step.
    fn rhs_per_eval(&self) -> u64 {
        (self.samples * self.steps.len()) as u64
    }
}

/// One E-MSA update of `params` from the mini-batch gradient `g` (computed with
/// `plan.grid_model` and `plan.gradient` on `data`): every layer's `J_ℓ` minimised in
/// parallel, the results written back in layer order.
pub(crate) fn update(
    plan: &Plan,
    program: &Program,
    msa: &Msa,
    params: &mut Params,
    data: &Dataset,
    g: &sens::Gradient,
) -> UpdateStats {
    let frozen: &Params = params;
    let results: Vec<(Vec<f64>, usize, u64)> = (0..plan.steps.len())
        .into_par_iter()
        .map(|layer| {
            let mut objective = LayerObjective::new(plan, program, msa, frozen, data, g, layer);
            let mut theta = objective.theta();
            if !objective.has_steps() || theta.is_empty() {
                return (theta, 0, 0);
            }
            let per_eval = objective.rhs_per_eval();
            let mut f =
                |x: &[f64]| -> Result<(f64, Vec<f64>), Infallible> { Ok(objective.evaluate(x)) };
            let report = match msa.minimise(&mut theta, &mut f) {
                Ok(report) => report,
                Err(never) => match never {},
            };
            (theta, report.evals, report.evals as u64 * per_eval)
        })
        .collect();
    let mut stats = UpdateStats::default();
    let values = params.values_mut();
    for ((theta, evals, rhs), coords) in results.into_iter().zip(&plan.coords) {
        for (&i, v) in coords.iter().zip(theta) {
            values[i] = v;
        }
        stats.evals += evals;
        stats.rhs_evals += rhs;
    }
    stats
}

/// The parameter whose leaf comes first (in node order) among the nodes `roots` reach.
fn first_param(pool: &TensorPool, roots: &[TId]) -> Option<usize> {
    let mut reached = std::collections::BTreeSet::new();
    let mut stack = roots.to_vec();
    while let Some(id) = stack.pop() {
        if reached.insert(id) {
            pool.node(id).for_each_operand(|c| stack.push(c));
        }
    }
    reached.into_iter().find_map(|id| match pool.node(id) {
        TNode::Leaf(Leaf::Param(p)) => Some(*p as usize),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceFile;
    use crate::ir::Shape;
    use crate::sema::Overrides;
    use crate::simulate::Bound;

    /// A small `msa_sin`: 40 samples in two blocks (32 + 8), 6 Euler layers of width 3, an
    /// input-dependent bias so that inputs are bound per block, and a penalty on every layer.
    const SOURCE: &str = "model small
const d = 3
input u[1]
label y
param W[d, d] per layer ~ normal(0, 0.6)
param b[d] per layer ~ normal(0, 0.4)
state x[d] = u[0] * ones(d)
dx/dt = tanh(W * x + b + 0.1 * u[0])
schedule euler(t = [0, 1.5], steps = 6)
cost terminal = (sum(x) - y)^2
cost penalty = 1e-2 * sumsq(W)
data train = uniform(n = 40, dim = 1, lo = -3, hi = 3, seed = 1, label = sin(u[0]))
train msa(rho = 0.7, reg = 1e-2, maxiter = 4, epochs = 2, batch = 40)
";

    struct Setup {
        model: ir::Model,
        program: Program,
        params: Params,
        data: Dataset,
    }

    fn setup(source: &str) -> Setup {
        let file = SourceFile::new("small.node", source);
        let (model, diags) = crate::check_source(&file, &Overrides::default(), "small");
        assert!(!diags.has_errors(), "{}", diags.render(&file));
        let model = crate::prepare(model);
        let program = Program::compile(&model);
        let params = crate::simulate::initial_params(&model, program.layout(), 0);
        let shapes: Vec<Shape> = model.inputs.iter().map(|i| i.shape).collect();
        let data = match model.data.first() {
            Some(block) => crate::data::generate(&block.source, &model.pool, &shapes).unwrap(),
            None => Dataset::samples(1, 0, Vec::new(), None),
        };
        Setup {
            model,
            program,
            params,
            data,
        }
    }

    fn msa_of(model: &ir::Model) -> Msa {
        Msa::new(&crate::optim::Hyper::from(model.train.as_ref().unwrap()))
    }

    fn gradient(s: &Setup, plan: &Plan) -> sens::Gradient {
        let bound = Bound::new(&plan.grid_model, &s.program, &s.params, &s.data);
        sens::gradient(&bound, &plan.gradient).unwrap()
    }

    fn plan_of(s: &Setup) -> Plan {
        plan(
            &s.model,
            &s.program,
            &GradientOptions::new(GradientMethod::Backprop),
        )
        .unwrap()
    }

    #[test]
    fn consistency_terms_vanish_exactly_and_the_gradient_is_the_loss_gradient() {
        consistency_terms_vanish_exactly(SOURCE);
    }

    /// Backward in time, layer `n` is still step `n` (each step after the first starts on a
    /// layer boundary and reads the layer below it), so the same identities hold.
    #[test]
    fn a_backward_schedule_keeps_one_layer_per_step_in_integration_order() {
        consistency_terms_vanish_exactly(&SOURCE.replace("t = [0, 1.5]", "t = [1.5, 0]"));
    }

    fn consistency_terms_vanish_exactly(source: &str) {
        let s = setup(source);
        let plan = plan_of(&s);
        let msa = msa_of(&s.model);
        let g = gradient(&s, &plan);
        assert_eq!(plan.steps, (0..6).map(|n| vec![n]).collect::<Vec<_>>());
        for layer in 0..6 {
            let mut objective =
                LayerObjective::new(&plan, &s.program, &msa, &s.params, &s.data, &g, layer);
            let theta = objective.theta();
            let terms = objective.terms(&theta);
            assert_eq!(terms.step_residual, 0.0, "layer {layer}");
            assert_eq!(terms.costate_residual, 0.0, "layer {layer}");
            assert!(terms.hamiltonian != 0.0);
            // At θᵏ, ∇J = ∂loss/∂θ_ℓ + reg θ_ℓ (the penalty is in both).
            let (_, grad) = objective.evaluate(&theta);
            for ((&i, gj), th) in plan.coords[layer].iter().zip(&grad).zip(&theta) {
                let want = g.grad[i] + msa.reg * th;
                assert!(
                    (gj - want).abs() <= 1e-12 * want.abs().max(1e-3),
                    "layer {layer} coordinate {i}: {gj} vs {want}"
                );
            }
        }
    }

    /// θ moved away from θᵏ so that both residuals are non-zero.
    fn moved(theta: &[f64]) -> Vec<f64> {
        theta
            .iter()
            .enumerate()
            .map(|(j, v)| v + 0.3 * ((j * 7 % 5) as f64 - 2.0) / 2.0)
            .collect()
    }

    #[test]
    fn layer_gradient_matches_central_differences_away_from_the_current_point() {
        let s = setup(SOURCE);
        let plan = plan_of(&s);
        let msa = msa_of(&s.model);
        let g = gradient(&s, &plan);
        for layer in [0, 3, 5] {
            let mut objective =
                LayerObjective::new(&plan, &s.program, &msa, &s.params, &s.data, &g, layer);
            let theta = moved(&objective.theta());
            let terms = objective.terms(&theta);
            assert!(terms.step_residual > 1e-6 && terms.costate_residual > 1e-8);
            let (_, grad) = objective.evaluate(&theta);
            // J is O(1) and smooth: central differences with ε = 1e-5 are accurate to ~1e-9.
            let eps = 1e-5;
            for j in 0..theta.len() {
                let mut plus = theta.clone();
                plus[j] += eps;
                let mut minus = theta.clone();
                minus[j] -= eps;
                let fd = (objective.evaluate(&plus).0 - objective.evaluate(&minus).0) / (2.0 * eps);
                assert!(
                    (grad[j] - fd).abs() <= 1e-7 * fd.abs().max(1.0),
                    "layer {layer} coordinate {j}: {} vs {fd}",
                    grad[j]
                );
            }
        }
    }

    #[test]
    fn mixed_kernel_matches_central_differences_of_the_state_jvp() {
        // ∂/∂θ_j [wᵀ (∂f/∂x) v] against differences of wᵀ (∂f/∂x) v from the first-order
        // `jvp_state` kernel, on a block of 5 samples at a time in layer 2.
        let s = setup(SOURCE);
        assert!(s.program.has_msa_mixed());
        let dim = s.program.dim();
        let width = 5;
        let wave = |k: usize, a: f64| -> Vec<f64> {
            (0..dim * width)
                .map(|i| a * ((i * k + 3) as f64 * 0.37).sin())
                .collect()
        };
        let (y, v, w) = (wave(1, 1.2), wave(2, 0.8), wave(3, 1.1));
        let labels = vec![0.0; width];
        let inputs: Vec<f64> = (0..width).map(|i| i as f64 * 0.5 - 1.0).collect();
        let mut ws = ModelSystem::new(&s.program, &s.params, &inputs, &labels).workspace(0..width);
        let t = vec![0.6; width];
        let layer = s.program.layout().layer_at(0.6);
        assert_eq!(layer, 2);
        let total = s.program.layout().total;
        let mut mixed = vec![0.0; total];
        s.program
            .msa_mixed_accumulate(&s.params, &t, &y, &v, &w, &mut mixed, &mut ws);
        let form = |params: &Params, ws: &mut Workspace| -> f64 {
            let mut jv = vec![0.0; dim * width];
            s.program.jvp_state(params, &t, &y, &v, &mut jv, ws);
            jv.iter().zip(&w).map(|(a, b)| a * b).sum()
        };
        let eps = 1e-6;
        let mut checked = 0;
        for (i, &m) in mixed.iter().enumerate() {
            let mut plus = s.params.clone();
            plus.values_mut()[i] += eps;
            let mut minus = s.params.clone();
            minus.values_mut()[i] -= eps;
            let fd = (form(&plus, &mut ws) - form(&minus, &mut ws)) / (2.0 * eps);
            assert!(
                (m - fd).abs() <= 1e-7 * fd.abs().max(1.0),
                "coordinate {i}: {m} vs {fd}"
            );
            if fd != 0.0 {
                checked += 1;
            }
        }
        // Exactly layer 2's copies of W and b (9 + 3) depend on θ at this time.
        assert_eq!(checked, 12);
    }

    #[test]
    fn the_mixed_kernel_is_built_only_for_msa_models() {
        let other = SOURCE.replace(
            "train msa(rho = 0.7, reg = 1e-2, maxiter = 4, epochs = 2, batch = 40)",
            "train adam(lr = 0.01, epochs = 2)",
        );
        let s = setup(&other);
        assert!(s.model.derivatives.msa_mixed_param.is_empty());
        assert!(!s.program.has_msa_mixed());
        let m = setup(SOURCE);
        assert_eq!(
            m.model.derivatives.msa_mixed_param.len(),
            m.model.param_len()
        );
    }

    #[test]
    fn an_update_lowers_every_layer_objective_and_the_loss() {
        let s = setup(SOURCE);
        let plan = plan_of(&s);
        let msa = msa_of(&s.model);
        let g = gradient(&s, &plan);
        let mut params = s.params.clone();
        let stats = update(&plan, &s.program, &msa, &mut params, &s.data, &g);
        assert!(stats.evals >= 6 && stats.rhs_evals == stats.evals as u64 * 40);
        for layer in 0..6 {
            let mut objective =
                LayerObjective::new(&plan, &s.program, &msa, &s.params, &s.data, &g, layer);
            let before = objective.theta();
            let after: Vec<f64> = plan.coords[layer]
                .iter()
                .map(|&i| params.values()[i])
                .collect();
            assert!(objective.evaluate(&after).0 < objective.evaluate(&before).0);
        }
        let t1 = Some(vec![1.5]);
        let loss = |p: &Params| {
            Bound::new(&s.model, &s.program, p, &s.data)
                .simulate(t1.clone())
                .unwrap()
                .loss
        };
        assert!(loss(&params) < loss(&s.params));
    }

    fn refusal(source: &str) -> String {
        let s = setup(source);
        let gradient = s
            .model
            .train
            .as_ref()
            .and_then(|t| t.gradient)
            .unwrap_or(GradientMethod::Backprop);
        match plan(&s.model, &s.program, &GradientOptions::new(gradient)) {
            Ok(_) => panic!("accepted:\n{source}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn models_msa_does_not_apply_to_are_refused_with_the_reason() {
        let cases = [
            (
                SOURCE.replace(
                    "euler(t = [0, 1.5], steps = 6)",
                    "dopri5(t = [0, 1.5], layers = 6)",
                ),
                "`dopri5` chooses its steps adaptively",
            ),
            (
                SOURCE.replace(
                    "euler(t = [0, 1.5], steps = 6)",
                    "bdf(t = [0, 1.5], layers = 6)",
                ),
                "`bdf` chooses its steps adaptively",
            ),
            (
                SOURCE.replace("euler(", "rk4("),
                "`rk4` is not supported: use `euler`",
            ),
            (
                SOURCE.replace("param b[d] per layer", "param b[d]"),
                "but `b` is constant in time: declare it `per layer`",
            ),
            (
                SOURCE.replace("param b[d] per layer", "param b[d] on knots(0, 1.5)"),
                "but `b` varies on knots",
            ),
            (
                SOURCE.replace("cost penalty", "cost running"),
                "a running cost would enter the Hamiltonian",
            ),
            (
                SOURCE.replace("batch = 40)", "batch = 40, gradient = adjoint)"),
                "remove `gradient = adjoint`",
            ),
            (
                SOURCE.replace("(sum(x) - y)^2", "(sum(x) - y)^2 + b[0]"),
                "the terminal cost reads `b`",
            ),
        ];
        for (source, message) in cases {
            let e = refusal(&source);
            assert!(e.contains(message), "{e}\nwanted: {message}");
            // Each message says what to do instead.
            assert!(e.contains("adam") || e.contains("remove"), "{e}");
        }
        let none = "state x = 1\ndx/dt = -x\nschedule euler(t = [0, 1], steps = 4)\n\
                    cost terminal = x * x\ntrain msa(epochs = 1)\n";
        assert!(refusal(none).contains("the model has none"));
    }
}
