//! Forward sensitivities: the tangents `S = ∂y/∂θ · u` of a solve for a few parameter
//! directions `u`, carried alongside the states, and the directional derivatives of an
//! objective from them.
//!
//! The tangents are states of an augmented system `[y, S_1, …, S_m]` whose right-hand side is
//! `(f(y), ∂f/∂y S_d + ∂f/∂θ u_d)`. Running the unchanged solvers on it is what makes the
//! result the derivative of the discretization actually used, not of the ODE:
//! - for an explicit Runge–Kutta method, Adams–Bashforth 2 and leapfrog, the method applied to
//!   the augmented system *is* the tangent-linear of its step map, so fixed-step schedules get
//!   the exact derivative of the discrete schedule (the same numbers backprop gets, up to
//!   rounding). LM-ResNet's step also depends on the coefficient `k_n`, which may be a trained
//!   parameter: its term `(x_{n−1} − x_n) ∂k_n/∂θ·u` is added after each step;
//! - adaptive and stiff methods integrate the augmented system with the same tolerances, so
//!   their error control includes the tangents (the steps, and the state bits, differ from a
//!   plain solve's). The Jacobian handed to the stiff methods is block lower-triangular:
//!   `∂f/∂y` on the diagonal blocks, and below them the second-derivative blocks
//!   `∂(∂f/∂y S_d + ∂f/∂θ u_d)/∂y` by central differences of the JVP (the kernels have no
//!   second derivatives; the error is `O(ε²)`, about 1e-10 relative). The modified Newton
//!   iterations of BDF and implicit Euler would converge to the same fixed point with the
//!   diagonal blocks alone, but RODAS4 assumes an exact Jacobian: with the diagonal alone its
//!   error estimate breaks down (Van der Pol at `rtol = 1e-9` ran out of steps).
//!
//! Components are interleaved, `y_aug[i (1 + m) + d]` (`d = 0` the state, `d ≥ 1` direction
//! `d`), so that a component range of the state (leapfrog's position and momentum) is one
//! range of the augmented state, and the plain state's arithmetic is untouched: the states of a
//! fixed-step augmented solve have the bits of [`super::solve_batch`].
//!
//! Events cross into the tangents by the saltation rule. At an event `g(τ, y(τ⁻), θ) = 0`
//! with jump `y⁺ = h(τ, y⁻, θ)`: differentiating `g = 0` gives `dτ = −(g_y s⁻ + g_p u) / ġ`,
//! `ġ = g_y f⁻ + g_t`; `y⁺` moves by `h_y (s⁻ + f⁻ dτ) + h_p u + h_t dτ`, and the tangent at a
//! fixed time after the event loses `f⁺ dτ`, so
//! `s⁺ = h_y s⁻ + h_p u − (h_y f⁻ − f⁺ + h_t)(g_y s⁻ + g_p u) / ġ`. A `terminate` event is
//! `h = identity`, `f⁺ = 0`: the held state `y(τ)` moves with `τ`. A grazing event (`ġ ≈ 0`)
//! has no gradient and is refused. Event systems with a fixed-step method run through the
//! event solver (`events.rs`) rather than this module's fixed-step loop.
//!
//! Fixed-step solves split the directions into groups of [`GROUP`] (each group recomputes the
//! states, a small price next to `2 m` JVPs per stage, for parallelism over directions);
//! adaptive ones keep all directions in one augmented state, so that one set of steps serves
//! the whole gradient. Blocks and groups are a fixed partition and results are combined in
//! order, so every number is bit-identical for any thread count.

use rayon::prelude::*;
use std::ops::Range;

use super::fixed::{record_non_finite, step_times, LinearSaver, Stepper};
use super::timeline::Timeline;
use super::{
    blocks, renumber, solve_batch, to_soa, EventSpec, Method, Objective, OptionsError, Sensitivity,
    Solution, SolveError, SolverOptions, Stats, System,
};

/// Directions per fixed-step group.
const GROUP: usize = 8;

/// The cosine between the condition's normal `(g_y, g_t)` and the trajectory `(f, 1)` below
/// which an event counts as grazing: the event time would move by more than a million times
/// the perturbation of the state (`dτ ∝ 1/ġ`), a derivative no cost can use.
pub(super) const GRAZING: f64 = 1e-6;

/// What [`forward_batch`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The objective's terms summed over all samples (blocks added in order).
    pub loss: f64,
    /// `d loss / dθ · u_d` for each direction: through the given initial tangents, the solve
    /// and the objective (its direct parameter dependence included), summed over samples.
    pub derivative: Vec<f64>,
    /// The states at the save times (without tangents). For fixed-step methods the bits of
    /// [`super::solve_batch`]; its stats count the work of all augmented solves.
    pub solution: Solution,
}

/// Directional derivatives of `objective` through a solve of `system` from `y0` (sample-major,
/// `y0[s * dim + i]`), one per parameter direction: `directions` holds `m` rows of
/// [`Sensitivity::n_params`] entries, `s0` the initial tangents `∂y0/∂θ · u_d`,
/// `[direction][sample][component]`.
///
/// Every method is supported. The result is bit-identical for any number of threads.
pub fn forward_batch<S: Sensitivity, O: Objective<S>>(
    system: &S,
    objective: &O,
    options: &SolverOptions,
    y0: &[f64],
    s0: &[f64],
    directions: &[f64],
    n_samples: usize,
) -> Result<Forward, SolveError> {
    let dim = system.dim();
    let np = system.n_params();
    let m = directions.len().checked_div(np).unwrap_or(0);
    for (expected, found) in [(dim * n_samples, y0.len()), (m * dim * n_samples, s0.len())] {
        if expected != found {
            return Err(SolveError::InvalidOptions(OptionsError::InitialLength {
                expected,
                found,
            }));
        }
    }
    let size = if options.method.is_fixed_step() && options.method != Method::ImplicitEuler {
        GROUP
    } else {
        m.max(1)
    };
    // Per-component tolerances follow the interleaved layout: a tangent of component i gets
    // component i's tolerance.
    let expanded;
    let options = if options.atol_components.is_empty() {
        options
    } else {
        let mut o = options.clone();
        o.atol_components = options
            .atol_components
            .iter()
            .take(dim)
            .flat_map(|&a| std::iter::repeat_n(a, 1 + size.min(m.max(1))))
            .collect();
        expanded = o;
        &expanded
    };
    let groups: Vec<Range<usize>> = if m == 0 {
        std::iter::once(0..0).collect()
    } else {
        (0..m).step_by(size).map(|a| a..(a + size).min(m)).collect()
    };
    let results: Vec<Result<GroupResult, SolveError>> = groups
        .par_iter()
        .map(|g| {
            let aug = Augmented {
                inner: system,
                directions: &directions[g.start * np..g.end * np],
                m: g.len(),
            };
            let s0_group = &s0[g.start * dim * n_samples..g.end * dim * n_samples];
            group(&aug, objective, options, y0, s0_group, n_samples)
        })
        .collect();

    let mut derivative = Vec::with_capacity(m);
    let mut stats = Stats::default();
    let mut first: Option<GroupResult> = None;
    for r in results {
        let r = r?;
        derivative.extend_from_slice(&r.derivative);
        stats += r.solution.stats;
        if first.is_none() {
            first = Some(r);
        }
    }
    let GroupResult {
        loss, mut solution, ..
    } = first.expect("at least one group");
    solution.stats = stats;
    Ok(Forward {
        loss,
        derivative,
        solution,
    })
}

/// One group's loss, derivatives and plain states.
struct GroupResult {
    loss: f64,
    derivative: Vec<f64>,
    solution: Solution,
}

/// Solves one group's augmented system and evaluates the objective and its derivatives.
fn group<S: Sensitivity, O: Objective<S>>(
    aug: &Augmented<'_, S>,
    objective: &O,
    options: &SolverOptions,
    y0: &[f64],
    s0: &[f64],
    n: usize,
) -> Result<GroupResult, SolveError> {
    let dim = aug.inner.dim();
    let r = aug.stride();
    let mut options = options.clone();
    if let Method::Leapfrog { position, momentum } = &options.method {
        check_leapfrog(position, momentum, dim)?;
        options.method = Method::Leapfrog {
            position: position.start * r..position.end * r,
            momentum: momentum.start * r..momentum.end * r,
        };
    }
    // Interleave the initial states and tangents, sample-major.
    let full = dim * r;
    let mut y0_aug = vec![0.0; n * full];
    for s in 0..n {
        for i in 0..dim {
            y0_aug[s * full + i * r] = y0[s * dim + i];
            for d in 0..aug.m {
                y0_aug[s * full + i * r + 1 + d] = s0[(d * n + s) * dim + i];
            }
        }
    }
    let fixed = options.method.is_fixed_step()
        && options.method != Method::ImplicitEuler
        && aug.inner.events().is_empty();
    let mut solution = if fixed {
        fixed_batch(aug, &options, &y0_aug, n)
    } else {
        solve_batch(aug, &options, &y0_aug, n)
    }
    .map_err(|e| unstride(e, r))?;
    solution.stats.jvp_evals += solution.stats.rhs_evals * aug.m as u64;

    // The objective block by block; blocks combined in order.
    let np = aug.inner.n_params();
    let sol = &solution;
    let mut loss = 0.0;
    let mut derivative = vec![0.0; aug.m];
    let mut grad = vec![0.0; np];
    blocks::in_order(
        n,
        aug.block_width(n),
        |samples| {
            let (first, w) = (samples.start, samples.len());
            let mut ws = aug.inner.workspace(samples);
            let mut grad = vec![0.0; np];
            let mut derivative = vec![0.0; aug.m];
            let mut loss = 0.0;
            let mut y = vec![0.0; dim * w];
            let mut cot = vec![0.0; dim * w];
            for (k, &t) in sol.t.iter().enumerate() {
                for s in 0..w {
                    let row = sol.state(k, first + s);
                    for i in 0..dim {
                        y[i * w + s] = row[i * r];
                    }
                }
                loss += objective.at_save(k, t, &y, first..first + w, &mut cot, &mut grad, &mut ws);
                if cot.iter().all(|&c| c == 0.0) {
                    continue;
                }
                for (d, out) in derivative.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for i in 0..dim {
                        for s in 0..w {
                            acc += cot[i * w + s] * sol.state(k, first + s)[i * r + 1 + d];
                        }
                    }
                    *out += acc;
                }
            }
            (loss, derivative, grad)
        },
        |_, (l, d, g)| {
            loss += l;
            add(&mut derivative, &d);
            add(&mut grad, &g);
            true
        },
    );
    // The objective's direct dependence on the parameters.
    for (d, out) in derivative.iter_mut().enumerate() {
        let u = &aug.directions[d * np..(d + 1) * np];
        *out += grad.iter().zip(u).map(|(g, x)| g * x).sum::<f64>();
    }

    // The plain states.
    let n_save = solution.t.len();
    let mut y = vec![0.0; n_save * n * dim];
    for (dst, src) in y.iter_mut().zip(solution.y.iter().step_by(r)) {
        *dst = *src;
    }
    Ok(GroupResult {
        loss,
        derivative,
        solution: Solution {
            t: solution.t,
            y,
            dim,
            n_samples: n,
            stats: solution.stats,
            events: solution.events,
        },
    })
}

fn check_leapfrog(
    position: &Range<usize>,
    momentum: &Range<usize>,
    dim: usize,
) -> Result<(), SolveError> {
    let disjoint = position.end <= momentum.start || momentum.end <= position.start;
    if position.is_empty()
        || momentum.is_empty()
        || !disjoint
        || position.end > dim
        || momentum.end > dim
    {
        return Err(SolveError::InvalidOptions(OptionsError::LeapfrogRanges));
    }
    Ok(())
}

/// Reports a failing tangent component as the state component it belongs to.
fn unstride(e: SolveError, r: usize) -> SolveError {
    match e {
        SolveError::NonFinite {
            t,
            sample,
            component,
        } => SolveError::NonFinite {
            t,
            sample,
            component: component / r,
        },
        other => other,
    }
}

/// [`super::solve_batch`] for the explicit fixed-step methods, with LM-ResNet's coefficient
/// term in the tangents.
fn fixed_batch<S: Sensitivity>(
    aug: &Augmented<'_, S>,
    options: &SolverOptions,
    y0: &[f64],
    n: usize,
) -> Result<Solution, SolveError> {
    let dim = aug.dim();
    let tl = Timeline::new(aug, options).map_err(SolveError::InvalidOptions)?;
    let n_save = tl.save.len();
    let mut y = vec![0.0; n_save * n * dim];
    let mut stats = Stats::default();
    let mut error = None;
    blocks::in_order(
        n,
        aug.block_width(n),
        |samples| {
            let soa = to_soa(
                &y0[samples.start * dim..samples.end * dim],
                dim,
                samples.len(),
            );
            fixed_block(aug, &options.method, &tl, &soa, samples)
        },
        |samples, (out, st, e)| {
            if e.is_some() {
                error = e;
                return false;
            }
            let (first, width) = (samples.start, samples.len());
            stats += st;
            for k in 0..n_save {
                let dst = (k * n + first) * dim;
                y[dst..dst + width * dim]
                    .copy_from_slice(&out[k * width * dim..(k + 1) * width * dim]);
            }
            true
        },
    );
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Solution {
        t: tl.save.clone(),
        y,
        dim,
        n_samples: n,
        stats,
        events: Vec::new(),
    })
}

/// One block of a fixed-step augmented solve (`y0` component-major): `fixed::solve`'s loop,
/// plus the LM coefficient's term after each two-step update.
fn fixed_block<S: Sensitivity>(
    aug: &Augmented<'_, S>,
    method: &Method,
    tl: &Timeline,
    y0: &[f64],
    samples: Range<usize>,
) -> (Vec<f64>, Stats, Option<SolveError>) {
    let width = samples.len();
    let first = samples.start;
    let len = y0.len();
    let mut out = vec![0.0; tl.save.len() * len];
    let mut stats = Stats::default();
    let mut failures: Vec<Option<SolveError>> = vec![None; width];
    if tl.t0 == tl.t1 {
        for k in 0..tl.save.len() {
            let rows = &mut out[k * len..(k + 1) * len];
            for s in 0..width {
                for i in 0..len / width {
                    rows[s * (len / width) + i] = y0[i * width + s];
                }
            }
        }
        return (out, stats, None);
    }
    let mut b = Stepper::new(aug, samples, y0);
    let mut y_old = y0.to_vec();
    let mut prev_old = vec![0.0; len];
    let mut saver = LinearSaver::new();
    saver.emit(tl, 0, tl.t0, y0, tl.t0, y0, width, &mut out);
    for n in 0..tl.steps {
        y_old.copy_from_slice(&b.y);
        let lm = *method == Method::Lm && n > 0;
        if lm {
            prev_old.copy_from_slice(&b.prev);
        }
        b.step(aug, method, tl, n, &mut stats);
        if lm {
            let t = step_times(tl, n)(0.0);
            aug.lm_term(t, &y_old, &prev_old, &mut b.y, &mut b.ws);
        }
        let t_next = tl.grid(n + 1);
        if record_non_finite(&b.y, width, t_next, &mut failures) {
            break;
        }
        saver.emit(tl, n + 1, tl.grid(n), &y_old, t_next, &b.y, width, &mut out);
    }
    let error = failures
        .into_iter()
        .flatten()
        .next()
        .map(|e| renumber(e, first));
    (out, stats, error)
}

/// The system `[y, S_1, …, S_m]` (interleaved, see the module docs) for the directions
/// `directions` (`m` rows of `n_params`).
pub(crate) struct Augmented<'a, S> {
    inner: &'a S,
    directions: &'a [f64],
    m: usize,
}

/// Workspace of [`Augmented`]: the inner system's and contiguous copies of the state, the
/// tangents and their derivatives.
pub(crate) struct AugmentedWorkspace<W> {
    inner: W,
    x: Vec<f64>,
    v: Vec<f64>,
    fx: Vec<f64>,
    fv: Vec<f64>,
    fv2: Vec<f64>,
    jac: Vec<f64>,
}

impl<S> Augmented<'_, S> {
    /// Components per state component: the state and its `m` tangents.
    fn stride(&self) -> usize {
        1 + self.m
    }
}

impl<S: Sensitivity> Augmented<'_, S> {
    /// `S_d += (x_{n−1} − x_n) ∂k_n/∂θ·u_d`: LM-ResNet's step differentiated in `k_n`, with
    /// `x_n = y_old`, `x_{n−1} = prev_old` (augmented blocks).
    fn lm_term(
        &self,
        t: f64,
        y_old: &[f64],
        prev_old: &[f64],
        y: &mut [f64],
        ws: &mut AugmentedWorkspace<S::Workspace>,
    ) {
        let np = self.inner.n_params();
        let r = self.stride();
        let width = y.len() / (self.inner.dim() * r).max(1);
        for d in 0..self.m {
            let u = &self.directions[d * np..(d + 1) * np];
            let dk = self.inner.lm_coefficient_jvp(t, u, &mut ws.inner);
            if dk == 0.0 {
                continue;
            }
            for i in 0..self.inner.dim() {
                let x = i * r * width;
                let sd = (i * r + 1 + d) * width;
                for s in 0..width {
                    y[sd + s] += (prev_old[x + s] - y_old[x + s]) * dk;
                }
            }
        }
    }
}

impl<S: Sensitivity> System for Augmented<'_, S> {
    type Workspace = AugmentedWorkspace<S::Workspace>;

    fn block_width(&self, n_samples: usize) -> usize {
        self.inner.block_width(n_samples)
    }

    fn unit_roundoff(&self) -> f64 {
        self.inner.unit_roundoff()
    }

    fn workspace(&self, samples: Range<usize>) -> Self::Workspace {
        let n = self.inner.dim() * samples.len();
        let dim = self.inner.dim();
        AugmentedWorkspace {
            inner: self.inner.workspace(samples),
            x: vec![0.0; n],
            v: vec![0.0; n * self.m],
            fx: vec![0.0; n],
            fv: vec![0.0; n * self.m],
            fv2: vec![0.0; n * self.m],
            jac: vec![0.0; dim * dim],
        }
    }

    fn dim(&self) -> usize {
        self.inner.dim() * self.stride()
    }

    fn rhs(&self, t: &[f64], y: &[f64], dy: &mut [f64], ws: &mut Self::Workspace) {
        let w = t.len();
        let dim = self.inner.dim();
        let (r, n) = (self.stride(), dim * w);
        for i in 0..dim {
            ws.x[i * w..(i + 1) * w].copy_from_slice(&y[i * r * w..(i * r + 1) * w]);
            for d in 0..self.m {
                let src = (i * r + 1 + d) * w;
                ws.v[d * n + i * w..d * n + (i + 1) * w].copy_from_slice(&y[src..src + w]);
            }
        }
        self.inner.rhs(t, &ws.x, &mut ws.fx, &mut ws.inner);
        if self.m > 0 {
            self.inner
                .jvp_many(t, &ws.x, &ws.v, self.directions, &mut ws.fv, &mut ws.inner);
        }
        for i in 0..dim {
            dy[i * r * w..(i * r + 1) * w].copy_from_slice(&ws.fx[i * w..(i + 1) * w]);
            for d in 0..self.m {
                let dst = (i * r + 1 + d) * w;
                dy[dst..dst + w].copy_from_slice(&ws.fv[d * n + i * w..d * n + (i + 1) * w]);
            }
        }
    }

    /// `∂f/∂y` on the diagonal blocks; below them, in the state's columns, the tangents'
    /// dependence on the state by central differences (see the module docs).
    fn jacobian(&self, t: f64, y: &[f64], jac: &mut [f64], ws: &mut Self::Workspace) {
        let dim = self.inner.dim();
        let r = self.stride();
        let full = dim * r;
        for i in 0..dim {
            ws.x[i] = y[i * r];
            for d in 0..self.m {
                ws.v[d * dim + i] = y[i * r + 1 + d];
            }
        }
        self.inner
            .jacobian(t, &ws.x[..dim], &mut ws.jac, &mut ws.inner);
        jac[..full * full].fill(0.0);
        for i in 0..dim {
            for j in 0..dim {
                let a = ws.jac[i * dim + j];
                for d in 0..r {
                    jac[(i * r + d) * full + j * r + d] = a;
                }
            }
        }
        if self.m == 0 {
            return;
        }
        let (x, v) = (&mut ws.x[..dim], &ws.v[..dim * self.m]);
        let (plus, minus) = (&mut ws.fv[..dim * self.m], &mut ws.fv2[..dim * self.m]);
        for j in 0..dim {
            let xj = x[j];
            let eps = f64::EPSILON.cbrt() * xj.abs().max(1.0);
            x[j] = xj + eps;
            let hi = x[j];
            self.inner
                .jvp_many(&[t], x, v, self.directions, plus, &mut ws.inner);
            x[j] = xj - eps;
            let lo = x[j];
            self.inner
                .jvp_many(&[t], x, v, self.directions, minus, &mut ws.inner);
            x[j] = xj;
            for d in 0..self.m {
                for i in 0..dim {
                    let k = d * dim + i;
                    jac[(i * r + 1 + d) * full + j * r] = (plus[k] - minus[k]) / (hi - lo);
                }
            }
        }
    }

    fn breakpoints(&self) -> Vec<f64> {
        self.inner.breakpoints()
    }

    fn lm_coefficient(&self, t: f64) -> f64 {
        self.inner.lm_coefficient(t)
    }

    fn is_autonomous(&self) -> bool {
        self.inner.is_autonomous()
    }

    fn events(&self) -> &[EventSpec] {
        self.inner.events()
    }

    fn event_conditions(&self, t: &[f64], y: &[f64], g: &mut [f64], ws: &mut Self::Workspace) {
        let (w, r) = (t.len(), self.stride());
        let n = self.inner.dim() * w;
        for i in 0..self.inner.dim() {
            ws.x[i * w..(i + 1) * w].copy_from_slice(&y[i * r * w..(i * r + 1) * w]);
        }
        self.inner.event_conditions(t, &ws.x[..n], g, &mut ws.inner);
    }

    fn event_jump(
        &self,
        e: usize,
        t: f64,
        y: &mut [f64],
        scratch: &mut [f64],
        ws: &mut Self::Workspace,
    ) -> Result<(), SolveError> {
        self.saltation(e, t, y, Some(scratch), ws)
    }

    fn event_stop(
        &self,
        e: usize,
        t: f64,
        y: &mut [f64],
        ws: &mut Self::Workspace,
    ) -> Result<(), SolveError> {
        self.saltation(e, t, y, None, ws)
    }
}

impl<S: Sensitivity> Augmented<'_, S> {
    /// Event `e` at `t` on one sample's augmented state `y` (width 1): the state jumps as the
    /// inner system's does (`scratch` its jump rows; `None` for `terminate`, which keeps the
    /// state and stops it), and every tangent takes the saltation rule of the module docs.
    fn saltation(
        &self,
        e: usize,
        t: f64,
        y: &mut [f64],
        scratch: Option<&mut [f64]>,
        ws: &mut AugmentedWorkspace<S::Workspace>,
    ) -> Result<(), SolveError> {
        let (dim, r, np) = (self.inner.dim(), self.stride(), self.inner.n_params());
        let inner_ws = &mut ws.inner;
        let x_minus: Vec<f64> = (0..dim).map(|i| y[i * r]).collect();
        let mut f_minus = vec![0.0; dim];
        self.inner.rhs(&[t], &x_minus, &mut f_minus, inner_ws);
        let mut x_plus = x_minus.clone();
        let mut f_plus = vec![0.0; dim];
        if let Some(scratch) = scratch {
            self.inner
                .event_jump(e, t, &mut x_plus, scratch, inner_ws)?;
            self.inner.rhs(&[t], &x_plus, &mut f_plus, inner_ws);
        }
        let no_direction = vec![0.0; np];
        let (mut h_f, mut h_t, mut unused) = (vec![0.0; dim], vec![0.0; dim], vec![0.0; dim]);
        let refused = SolveError::InvalidOptions(OptionsError::EventGradients);
        let (g_f, g_t) = self
            .inner
            .event_jvp(
                e,
                t,
                &x_minus,
                &f_minus,
                &no_direction,
                &mut h_f,
                &mut h_t,
                inner_ws,
            )
            .ok_or(refused.clone())?;
        let g_dot = g_f + g_t;
        // `ġ` is the dot product of the condition's normal `(g_y, g_t)` and the trajectory's
        // direction `(f⁻, 1)`; a cosine near 0 is a tangential (grazing) crossing.
        let mut unit = vec![0.0; dim];
        let mut scratch_t = vec![0.0; dim];
        let (mut normal, mut direction) = (g_t * g_t, 1.0);
        for j in 0..dim {
            unit[j] = 1.0;
            let (g_j, _) = self
                .inner
                .event_jvp(
                    e,
                    t,
                    &x_minus,
                    &unit,
                    &no_direction,
                    &mut unused,
                    &mut scratch_t,
                    inner_ws,
                )
                .ok_or(refused.clone())?;
            unit[j] = 0.0;
            normal += g_j * g_j;
            direction += f_minus[j] * f_minus[j];
        }
        let scale = (normal * direction).sqrt();
        if !g_dot.is_finite() || !scale.is_finite() || g_dot.abs() <= GRAZING * scale {
            return Err(SolveError::GrazingEvent {
                event: e,
                t,
                sample: 0,
            });
        }
        let mut s_minus = vec![0.0; dim];
        let mut h_s = vec![0.0; dim];
        for d in 0..self.m {
            for i in 0..dim {
                s_minus[i] = y[i * r + 1 + d];
            }
            let u = &self.directions[d * np..(d + 1) * np];
            let (g_s, _) = self
                .inner
                .event_jvp(e, t, &x_minus, &s_minus, u, &mut h_s, &mut unused, inner_ws)
                .ok_or(refused.clone())?;
            let dtau = -g_s / g_dot;
            for i in 0..dim {
                y[i * r + 1 + d] = h_s[i] + (h_f[i] - f_plus[i] + h_t[i]) * dtau;
            }
        }
        for i in 0..dim {
            y[i * r] = x_plus[i];
        }
        Ok(())
    }
}

fn add(dst: &mut [f64], src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
