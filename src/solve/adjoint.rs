//! The continuous adjoint: the costate `λ = ∂loss/∂x` solved backward in time,
//! `dλ/dt = −(∂f/∂x)ᵀ λ` (the running cost enters through its quadrature component, whose
//! costate is the constant 1, so `−∂L/∂x` is part of the pull-back), with jumps
//! `λ += ∂(cost)/∂x` at the times that carry costs, together with the parameter quadrature
//! `dg/dt = −λᵀ ∂f/∂θ`, `g(t1) = 0`, so that `g(t0) = ∫ λᵀ ∂f/∂θ dt` is the gradient through
//! the field. `nodec ir --adjoint` prints the same equations in Pontryagin's sign (`p = −λ`).
//!
//! Unlike backprop this is the gradient of the *continuous* problem, approximated by a second
//! solve; it differs from the gradient of the computed loss by the discretization error of
//! both solves, and converges to it as the steps shrink (or the tolerances tighten). What it
//! buys: the backward solve is an ordinary ODE solve, so it works for every method, including
//! the stiff ones whose exact discrete gradient would need second derivatives of `f`.
//!
//! Decisions and their reasons:
//! - **The forward trajectory is recomputed from checkpoints, never integrated backward.**
//!   Running `dx/dt = f` backward alongside `λ` is unstable for dissipative systems (the
//!   backward flow of a contracting field expands errors exponentially). The forward pass keeps
//!   `O(√N)` checkpoints; each segment is recomputed forward from its checkpoint, keeping the
//!   dense output the backward solve reads `x(t)` from.
//! - **Dense output.** Adaptive explicit pairs replay their recorded steps exactly
//!   (`replay.rs`) and use the pair's own interpolant (4th order for DOPRI5 and Tsit5, cubic
//!   Hermite for BOSH3). Fixed-step grids and the stiff methods use cubic Hermite interpolation
//!   of the step end points with `f` at both ends (on the step's own side of a breakpoint):
//!   local error `O(h⁴)`, which matches RK4's global order on a fixed grid; for RODAS4 and BDF
//!   their own interpolants are not exposed, and the tolerance governs the error anyway.
//! - **The same method backward.** Fixed-step schedules use their grid and their method
//!   (RK tableaus, AB2 with a Heun start, implicit Euler, kick–drift–kick for leapfrog); LM's
//!   two-step scheme is consistent with `dx/dt = f/(1 + k)`, not with `dx/dt = f`, so its
//!   adjoint is that of `f/(1 + k)`: the same two-step scheme backward (which converges to the
//!   scaled costate equation on its own) plus `∂loss/∂k = −∫ λᵀ f / (1 + k)² dt`. Adaptive
//!   and stiff methods solve the augmented system `(λ, g)` with their own controller and
//!   tolerances, so `g` is error-controlled too; the stiff methods then factor the augmented
//!   Jacobian, `(dim + params)²`, which is fine for the small stiff models and expensive for
//!   large networks.
//! - **Blocks.** On a fixed grid all samples of a block step together and the parameter
//!   quadrature is the block's sum (the VJP kernel reduces over the lanes in order). Adaptive
//!   and stiff methods give every sample its own steps, so `g` is per sample (width 1) and the
//!   samples' gradients are added in sample order.
//! - **Cost jumps on a fixed grid** are applied at grid points with the weights of the linear
//!   interpolation that produced the saved state (as in backprop), so they stay consistent with
//!   the loss as computed.

use std::sync::atomic::{AtomicU64, Ordering};

use super::fixed::step_times;
use super::tableau::{self, Dense, EmbeddedRk, ExplicitRk};
use super::timeline::Timeline;
use super::{Method, Sensitivity, Stats, System};

use super::backprop::StepRecord;

/// Buffers and carried history of the backward sweep on a fixed grid (one block).
pub(super) struct FixedBackward {
    width: usize,
    times: Vec<f64>,
    stage: Vec<f64>,
    outs: Vec<Vec<f64>>,
    tmp: Vec<f64>,
    tmp2: Vec<f64>,
    y: Vec<f64>,
    f0: Vec<f64>,
    f1: Vec<f64>,
    /// `f` at the start of the step last handled, for the next (earlier) step's end slope.
    f_next: Vec<f64>,
    f_next_at: Option<(usize, f64)>,
    /// Multistep history: the previous backward step's pull-back and parameter integrand
    /// (ab2), or `λ` two nodes later and the last parameter increment (lm).
    prev: Vec<f64>,
    prev_q: Vec<f64>,
    started: bool,
}

impl FixedBackward {
    pub fn new(len: usize, width: usize, np: usize) -> Self {
        FixedBackward {
            width,
            times: vec![0.0; width],
            stage: vec![0.0; len],
            outs: vec![vec![0.0; len]; 4],
            tmp: vec![0.0; np],
            tmp2: vec![0.0; np],
            y: vec![0.0; len],
            f0: vec![0.0; len],
            f1: vec![0.0; len],
            f_next: vec![0.0; len],
            f_next_at: None,
            prev: vec![0.0; len],
            prev_q: vec![0.0; np],
            started: false,
        }
    }

    /// `f` at both ends of step `n` (each on the step's side of a breakpoint), for Hermite
    /// interpolation; the end slope reuses the later step's start slope when the times agree.
    fn slopes<S: Sensitivity>(
        &mut self,
        sys: &S,
        tl: &Timeline,
        n: usize,
        rec: &StepRecord,
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        let st = step_times(tl, n);
        let (ta, tb) = (st(0.0), st(1.0));
        if self.f_next_at == Some((n + 1, tb)) {
            self.f1.copy_from_slice(&self.f_next);
        } else {
            self.times.fill(tb);
            sys.rhs(&self.times, &rec.end, &mut self.f1, ws);
            stats.rhs_evals += self.width as u64;
        }
        self.times.fill(ta);
        sys.rhs(&self.times, &rec.start, &mut self.f0, ws);
        stats.rhs_evals += self.width as u64;
        self.f_next.copy_from_slice(&self.f0);
        self.f_next_at = Some((n, ta));
    }

    /// The forward state at `t_n + θ h` by cubic Hermite interpolation (exact at the ends).
    fn dense(&mut self, rec: &StepRecord, theta: f64, h: f64) {
        if theta == 0.0 {
            self.y.copy_from_slice(&rec.start);
        } else if theta == 1.0 {
            self.y.copy_from_slice(&rec.end);
        } else {
            let c = hermite(theta);
            for m in 0..self.y.len() {
                self.y[m] = c[0] * rec.start[m]
                    + c[1] * h * self.f0[m]
                    + c[2] * rec.end[m]
                    + c[3] * h * self.f1[m];
            }
        }
    }

    /// Reverses step `n` of the grid: on entry `lambda` is `λ(t_{n+1})`, on exit `λ(t_n)`;
    /// the parameter quadrature over the step is added to `grad`.
    #[allow(clippy::too_many_arguments)]
    pub fn step<S: Sensitivity>(
        &mut self,
        sys: &S,
        method: &Method,
        tl: &Timeline,
        n: usize,
        rec: &StepRecord,
        lambda: &mut [f64],
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        let h = tl.fixed_h();
        let st = step_times(tl, n);
        match method {
            Method::Euler => self.rk(sys, &tableau::EULER, tl, n, rec, lambda, grad, ws, stats),
            Method::Midpoint => {
                self.rk(sys, &tableau::MIDPOINT, tl, n, rec, lambda, grad, ws, stats)
            }
            Method::Heun => self.rk(sys, &tableau::HEUN, tl, n, rec, lambda, grad, ws, stats),
            Method::Rk4 => self.rk(sys, &tableau::RK4, tl, n, rec, lambda, grad, ws, stats),
            Method::Ab2 if !self.started => {
                // The first backward step is Heun's, like the forward start; its first stage
                // (at t_{n+1}) starts the history.
                self.rk(sys, &tableau::HEUN, tl, n, rec, lambda, grad, ws, stats);
                self.prev.copy_from_slice(&self.outs[0]);
                self.prev_q.copy_from_slice(&self.tmp2);
                self.started = true;
            }
            Method::Ab2 => {
                // λ_n = λ_{n+1} + h (3/2 G_{n+1} − 1/2 G_{n+2}), G = (∂f/∂x)ᵀλ.
                let out = &mut self.outs[0];
                pull(
                    sys,
                    &mut self.times,
                    st(1.0),
                    &rec.end,
                    lambda,
                    out,
                    &mut self.tmp,
                    ws,
                );
                stats.vjp_evals += self.width as u64;
                for (j, l) in lambda.iter_mut().enumerate() {
                    *l += h * (1.5 * out[j] - 0.5 * self.prev[j]);
                }
                for (p, g) in grad.iter_mut().enumerate() {
                    *g += h * (1.5 * self.tmp[p] - 0.5 * self.prev_q[p]);
                }
                self.prev.copy_from_slice(out);
                self.prev_q.copy_from_slice(&self.tmp);
            }
            Method::Lm => {
                let t = st(1.0);
                let k = sys.lm_coefficient(t);
                let out = &mut self.outs[0];
                pull(
                    sys,
                    &mut self.times,
                    t,
                    &rec.end,
                    lambda,
                    out,
                    &mut self.tmp,
                    ws,
                );
                stats.vjp_evals += self.width as u64;
                // ∂loss/∂k of the limit dx/dt = f/(1 + k): −∫ λᵀ f / (1 + k)² dt.
                self.times.fill(t);
                sys.rhs(&self.times, &rec.end, &mut self.f1, ws);
                stats.rhs_evals += self.width as u64;
                let lf: f64 = lambda.iter().zip(&self.f1).map(|(a, b)| a * b).sum();
                sys.lm_coefficient_vjp(t, -h * lf / ((1.0 + k) * (1.0 + k)), grad, ws);
                // z_n = (1 − k) z_{n+1} + k z_{n+2} + h G(z_{n+1}); the parameter quadrature
                // follows the same recursion in increments d_n = g_n − g_{n+1}.
                for (j, l) in lambda.iter_mut().enumerate() {
                    let z = *l;
                    *l = if self.started {
                        (1.0 - k) * z + k * self.prev[j] + h * out[j]
                    } else {
                        z + h * out[j]
                    };
                    self.prev[j] = z;
                }
                for (p, g) in grad.iter_mut().enumerate() {
                    let d = if self.started {
                        -k * self.prev_q[p] + h * self.tmp[p]
                    } else {
                        h * self.tmp[p]
                    };
                    *g += d;
                    self.prev_q[p] = d;
                }
                self.started = true;
            }
            Method::Leapfrog { position, momentum } => {
                let w = self.width;
                let q = position.start * w..position.end * w;
                let p = momentum.start * w..momentum.end * w;
                self.slopes(sys, tl, n, rec, ws, stats);
                // Kick λ_q with (∂G/∂q)ᵀλ_p at t_{n+1}; drift λ_p with (∂F/∂p)ᵀλ_q at the
                // midpoint; kick λ_q at t_n. The vjp of the whole field gives both pull-backs
                // (F does not depend on q, G not on p), plus the running cost's through λ_o.
                let out = &mut self.outs[0];
                pull(
                    sys,
                    &mut self.times,
                    st(1.0),
                    &rec.end,
                    lambda,
                    out,
                    &mut self.tmp2,
                    ws,
                );
                for j in q.clone() {
                    lambda[j] += 0.5 * h * out[j];
                }
                self.dense(rec, 0.5, h);
                let out = &mut self.outs[1];
                pull(
                    sys,
                    &mut self.times,
                    st(0.5),
                    &self.y,
                    lambda,
                    out,
                    &mut self.tmp,
                    ws,
                );
                for j in p {
                    lambda[j] += h * out[j];
                }
                let out = &mut self.outs[2];
                pull(
                    sys,
                    &mut self.times,
                    st(0.0),
                    &rec.start,
                    lambda,
                    out,
                    &mut self.tmp,
                    ws,
                );
                for j in q {
                    lambda[j] += 0.5 * h * out[j];
                }
                // The parameter quadrature by the trapezoidal rule with the full λ at the ends.
                let out = &mut self.outs[3];
                pull(
                    sys,
                    &mut self.times,
                    st(0.0),
                    &rec.start,
                    lambda,
                    out,
                    &mut self.tmp,
                    ws,
                );
                for (p, g) in grad.iter_mut().enumerate() {
                    *g += 0.5 * h * (self.tmp2[p] + self.tmp[p]);
                }
                stats.vjp_evals += 4 * self.width as u64;
            }
            _ => unreachable!("the fixed-grid adjoint handles explicit fixed-step methods"),
        }
    }

    /// One step of the explicit Runge–Kutta method `rk` backward from `t_{n+1}` to `t_n`:
    /// stages `Λ_i = λ + h Σ a_ij G_j` at `t_{n+1} − c_i h`, `G_i = (∂f/∂x)ᵀΛ_i` at the
    /// interpolated forward state, `λ += h Σ b_i G_i`, `grad += h Σ b_i Λ_iᵀ ∂f/∂θ`.
    /// Leaves stage 0's parameter integrand in `tmp2` (AB2's history).
    #[allow(clippy::too_many_arguments)]
    fn rk<S: Sensitivity>(
        &mut self,
        sys: &S,
        rk: &ExplicitRk,
        tl: &Timeline,
        n: usize,
        rec: &StepRecord,
        lambda: &mut [f64],
        grad: &mut [f64],
        ws: &mut S::Workspace,
        stats: &mut Stats,
    ) {
        let h = tl.fixed_h();
        let st = step_times(tl, n);
        if rk.c.iter().any(|&c| c != 0.0 && c != 1.0) {
            self.slopes(sys, tl, n, rec, ws, stats);
        }
        for (i, row) in rk.a.iter().enumerate() {
            self.stage.copy_from_slice(lambda);
            for (j, &aij) in row.iter().enumerate() {
                if aij != 0.0 {
                    let ha = h * aij;
                    for (s, o) in self.stage.iter_mut().zip(&self.outs[j]) {
                        *s += ha * o;
                    }
                }
            }
            let theta = 1.0 - rk.c[i];
            self.dense(rec, theta, h);
            let (t, y, stage) = (st(theta), &self.y, &self.stage);
            let out = &mut self.outs[i];
            pull(sys, &mut self.times, t, y, stage, out, &mut self.tmp, ws);
            stats.vjp_evals += self.width as u64;
            let hb = h * rk.b[i];
            if hb != 0.0 {
                for (g, d) in grad.iter_mut().zip(&self.tmp) {
                    *g += hb * d;
                }
            }
            if i == 0 {
                self.tmp2.copy_from_slice(&self.tmp);
            }
        }
        for (i, &b) in rk.b.iter().enumerate() {
            if b != 0.0 {
                let hb = h * b;
                for (l, o) in lambda.iter_mut().zip(&self.outs[i]) {
                    *l += hb * o;
                }
            }
        }
    }
}

/// `out = wᵀ ∂f/∂y` at the shared time `t` and `g = Σ_lanes wᵀ ∂f/∂θ` (overwritten).
#[allow(clippy::too_many_arguments)]
fn pull<S: Sensitivity>(
    sys: &S,
    times: &mut [f64],
    t: f64,
    y: &[f64],
    w: &[f64],
    out: &mut [f64],
    g: &mut [f64],
    ws: &mut S::Workspace,
) {
    times.fill(t);
    g.fill(0.0);
    sys.vjp(times, y, w, out, g, ws);
}

/// Cubic Hermite basis at `θ`: weights of `y0`, `h f0`, `y1`, `h f1`.
fn hermite(theta: f64) -> [f64; 4] {
    let t1 = 1.0 - theta;
    [
        (1.0 + 2.0 * theta) * t1 * t1,
        theta * t1 * t1,
        theta * theta * (3.0 - 2.0 * theta),
        theta * theta * (theta - 1.0),
    ]
}

/// The forward state of one sample as a function of time on a piece of the span.
pub(super) trait Trajectory: Sync {
    fn at(&self, t: f64, y: &mut [f64]);
}

/// One recomputed step of an adaptive pair with everything its dense output needs.
pub(super) struct DenseStep {
    pub t: f64,
    pub h: f64,
    pub t_new: f64,
    pub y: Vec<f64>,
    pub y_new: Vec<f64>,
    pub k: Vec<Vec<f64>>,
}

/// Consecutive steps of an adaptive pair, read through the pair's own dense output.
pub(super) struct PairDense {
    pub tab: &'static EmbeddedRk,
    pub steps: Vec<DenseStep>,
    pub dir: f64,
}

impl Trajectory for PairDense {
    fn at(&self, t: f64, y: &mut [f64]) {
        let i = self
            .steps
            .partition_point(|s| (s.t - t) * self.dir <= 0.0)
            .clamp(1, self.steps.len())
            - 1;
        let s = &self.steps[i];
        if t == s.t {
            y.copy_from_slice(&s.y);
        } else if t == s.t_new {
            y.copy_from_slice(&s.y_new);
        } else {
            let theta = (t - s.t) / s.h;
            for (m, v) in y.iter_mut().enumerate() {
                *v = super::adaptive::dense(self.tab, theta, s.h, &s.y, &s.y_new, &s.k, m);
            }
        }
        debug_assert!(matches!(
            self.tab.dense,
            Dense::Hermite | Dense::Dopri5 | Dense::Tsit5
        ));
    }
}

/// One interval of a [`HermiteTrack`]: its ends, the states there and `f` at both ends.
pub(super) struct HermitePiece {
    pub ta: f64,
    pub tb: f64,
    pub ya: Vec<f64>,
    pub fa: Vec<f64>,
    pub yb: Vec<f64>,
    pub fb: Vec<f64>,
}

/// Points `(t, y)` with `f` at both ends of each interval, read by cubic Hermite interpolation.
pub(super) struct HermiteTrack {
    /// The intervals, in the direction of integration.
    pub pieces: Vec<HermitePiece>,
    pub dir: f64,
}

impl Trajectory for HermiteTrack {
    fn at(&self, t: f64, y: &mut [f64]) {
        let i = self
            .pieces
            .partition_point(|p| (p.ta - t) * self.dir <= 0.0)
            .clamp(1, self.pieces.len())
            - 1;
        let HermitePiece {
            ta,
            tb,
            ya,
            fa,
            yb,
            fb,
        } = &self.pieces[i];
        if t == *ta {
            y.copy_from_slice(ya);
        } else if t == *tb {
            y.copy_from_slice(yb);
        } else {
            let h = tb - ta;
            let c = hermite((t - ta) / h);
            for m in 0..y.len() {
                y[m] = c[0] * ya[m] + c[1] * h * fa[m] + c[2] * yb[m] + c[3] * h * fb[m];
            }
        }
    }
}

/// The augmented costate system `(λ, g)` of one sample as a [`System`], so that the adaptive
/// and stiff solvers integrate it backward unchanged: `dλ/dt = −(∂f/∂x)ᵀλ`,
/// `dg/dt = −(∂f/∂θ)ᵀλ`, with `x(t)` read from a [`Trajectory`].
pub(super) struct AdjointField<'a, S: Sensitivity> {
    pub sys: &'a S,
    pub traj: &'a dyn Trajectory,
    pub sample: usize,
    pub vjps: AtomicU64,
}

impl<'a, S: Sensitivity> AdjointField<'a, S> {
    pub fn new(sys: &'a S, traj: &'a dyn Trajectory, sample: usize) -> Self {
        AdjointField {
            sys,
            traj,
            sample,
            vjps: AtomicU64::new(0),
        }
    }

    /// Vector–Jacobian products evaluated so far.
    pub fn vjp_count(&self) -> u64 {
        self.vjps.load(Ordering::Relaxed)
    }
}

/// Workspace of an [`AdjointField`].
pub(super) struct FieldWorkspace<W> {
    pub inner: W,
    y: Vec<f64>,
    out: Vec<f64>,
    g: Vec<f64>,
    w: Vec<f64>,
    jac: Vec<f64>,
}

impl<S: Sensitivity> System for AdjointField<'_, S> {
    type Workspace = FieldWorkspace<S::Workspace>;

    fn block_width(&self, n_samples: usize) -> usize {
        self.sys.block_width(n_samples)
    }

    fn unit_roundoff(&self) -> f64 {
        self.sys.unit_roundoff()
    }

    fn workspace(&self, _samples: std::ops::Range<usize>) -> Self::Workspace {
        let full = self.sys.dim();
        FieldWorkspace {
            inner: self.sys.workspace(self.sample..self.sample + 1),
            y: vec![0.0; full],
            out: vec![0.0; full],
            g: vec![0.0; self.sys.n_params()],
            w: vec![0.0; full],
            jac: vec![0.0; full * full],
        }
    }

    fn dim(&self) -> usize {
        self.sys.dim() + self.sys.n_params()
    }

    fn rhs(&self, t: &[f64], z: &[f64], dz: &mut [f64], ws: &mut Self::Workspace) {
        let full = self.sys.dim();
        self.traj.at(t[0], &mut ws.y);
        ws.g.fill(0.0);
        self.sys.vjp(
            &t[..1],
            &ws.y,
            &z[..full],
            &mut ws.out,
            &mut ws.g,
            &mut ws.inner,
        );
        self.vjps.fetch_add(1, Ordering::Relaxed);
        for (d, o) in dz[..full].iter_mut().zip(&ws.out) {
            *d = -o;
        }
        for (d, o) in dz[full..].iter_mut().zip(&ws.g) {
            *d = -o;
        }
    }

    fn jacobian(&self, t: f64, _z: &[f64], jac: &mut [f64], ws: &mut Self::Workspace) {
        // [[−Jᵀ, 0], [−(∂f/∂θ)ᵀ, 0]]: the costate block from the field's Jacobian, the
        // parameter rows from one vjp per state component.
        let full = self.sys.dim();
        let d = self.dim();
        self.traj.at(t, &mut ws.y);
        self.sys.jacobian(t, &ws.y, &mut ws.jac, &mut ws.inner);
        jac.fill(0.0);
        for i in 0..full {
            for j in 0..full {
                jac[i * d + j] = -ws.jac[j * full + i];
            }
        }
        for j in 0..full {
            ws.w.fill(0.0);
            ws.w[j] = 1.0;
            ws.g.fill(0.0);
            self.sys
                .vjp(&[t], &ws.y, &ws.w, &mut ws.out, &mut ws.g, &mut ws.inner);
            for (p, g) in ws.g.iter().enumerate() {
                jac[(full + p) * d + j] = -g;
            }
        }
        self.vjps.fetch_add(full as u64, Ordering::Relaxed);
    }

    fn breakpoints(&self) -> Vec<f64> {
        self.sys.breakpoints()
    }
}
