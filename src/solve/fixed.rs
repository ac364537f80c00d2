//! Fixed-step explicit schedules on one block: `euler`, `midpoint`, `heun`, `rk4` (one-step
//! Runge–Kutta from [`tableau`]), `ab2`, `lm` (two-step) and `leapfrog` (partitioned).
//!
//! All samples of the block share the grid `t_n = t0 + n h`, `h = (t1 − t0) / steps`, so every
//! update is a flat loop over the `dim × width` block. Save times that fall between grid
//! points are interpolated linearly (the states of a layered network are defined at layers;
//! a straight line between them is the honest reading); save times within `1e-9 h` of a grid
//! point get that point's state exactly. Called by [`super::solve_block`].

use super::tableau::{self, ExplicitRk};
use super::timeline::Timeline;
use super::{Method, SolveError, SolverOptions, Stats, System};

/// Where a save time sits on the grid: its state is `y[upper]` when `theta == 1`,
/// `y[upper − 1]` when `theta == 0`, and `y[upper−1] + theta (y[upper] − y[upper−1])` otherwise.
/// Backprop uses it to send a save time's cotangent to the two grid states it was made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SavePoint {
    pub upper: usize,
    pub theta: f64,
}

/// Writes save times that fall in a step `[t_a, t_b]`, interpolating linearly. Shared with the
/// per-sample implicit Euler (`width = 1`).
pub(crate) struct LinearSaver {
    next: usize,
    /// The grid position of every save time emitted so far.
    pub points: Vec<SavePoint>,
}

impl LinearSaver {
    pub fn new() -> Self {
        LinearSaver {
            next: 0,
            points: Vec::new(),
        }
    }

    /// Whether [`LinearSaver::emit`] up to `t_b` has a save time to emit: the start of a step
    /// that emits none need not be kept (a copy of the block per step, 1 % of P4's training).
    pub fn emits_by(&self, tl: &Timeline, t_b: f64) -> bool {
        let tol = 1e-9 * tl.fixed_h().abs();
        tl.save
            .get(self.next)
            .is_some_and(|&ts| (ts - t_b) * tl.dir <= tol)
    }

    /// Emits every save time up to `t_b` (snapped to `t_a` or `t_b` within `1e-9 h`).
    /// `ya`, `yb` are blocks of `width` samples at grid points `upper − 1` and `upper`;
    /// `out` is `[save][sample][component]`.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        tl: &Timeline,
        upper: usize,
        t_a: f64,
        ya: &[f64],
        t_b: f64,
        yb: &[f64],
        width: usize,
        out: &mut [f64],
    ) {
        let dim = ya.len() / width.max(1);
        let tol = 1e-9 * tl.fixed_h().abs();
        while let Some(&ts) = tl.save.get(self.next) {
            if (ts - t_b) * tl.dir > tol {
                break;
            }
            let base = self.next * width * dim;
            let theta = if (ts - t_b).abs() <= tol {
                1.0
            } else if (ts - t_a).abs() <= tol {
                0.0
            } else {
                (ts - t_a) / (t_b - t_a)
            };
            for i in 0..dim {
                for s in 0..width {
                    let (a, b) = (ya[i * width + s], yb[i * width + s]);
                    out[base + s * dim + i] = if theta == 1.0 {
                        b
                    } else if theta == 0.0 {
                        a
                    } else {
                        a + theta * (b - a)
                    };
                }
            }
            self.points.push(SavePoint { upper, theta });
            self.next += 1;
        }
    }
}

/// Right-hand-side slots of one step (RK4 has four stages; leapfrog's fourth is the
/// quadrature's end point).
pub(crate) const SLOTS: usize = 4;

/// The state of a fixed-step integration of one block: the current `y`, the history a
/// two-step method carries (`prev`), and buffers allocated once. When `recording`, every
/// right-hand-side evaluation also keeps its time and input state, which is what the reverse
/// sweep of backprop needs.
pub(crate) struct Stepper<W> {
    pub width: usize,
    pub ws: W,
    t: Vec<f64>,
    pub y: Vec<f64>,
    /// `y_{n−1}` (lm) or `f_{n−1}` (ab2).
    pub prev: Vec<f64>,
    stage: Vec<f64>,
    k: Vec<Vec<f64>>,
    acc: Vec<f64>,
    /// Leapfrog: the time at which `k[0]` already holds `f` of the current point.
    fsal_time: Option<f64>,
    pub recording: bool,
    /// Times and input states of the evaluations of the last step, per slot.
    pub rec_t: [f64; SLOTS],
    pub rec_y: Vec<Vec<f64>>,
    /// What [`System::rhs_saving`] kept of each recorded evaluation; empty buffers (as created)
    /// record nothing of it, and the VJP recomputes those values. Backprop sizes them.
    pub rec_saved: Vec<Vec<f64>>,
}

impl<W> Stepper<W> {
    pub fn new<S: System<Workspace = W>>(
        sys: &S,
        samples: std::ops::Range<usize>,
        y0: &[f64],
    ) -> Self {
        let width = samples.len();
        let len = sys.dim() * width;
        Stepper {
            width,
            ws: sys.workspace(samples),
            t: vec![0.0; width],
            y: y0.to_vec(),
            prev: vec![0.0; len],
            stage: vec![0.0; len],
            k: vec![vec![0.0; len]; SLOTS],
            acc: vec![0.0; len],
            fsal_time: None,
            recording: false,
            rec_t: [0.0; SLOTS],
            rec_y: vec![vec![0.0; len]; SLOTS],
            rec_saved: vec![Vec::new(); SLOTS],
        }
    }

    /// Restarts from a stored point (a checkpoint): `y` and the carried history `prev`.
    pub fn restore(&mut self, y: &[f64], prev: &[f64]) {
        self.y.copy_from_slice(y);
        self.prev.copy_from_slice(prev);
        self.fsal_time = None;
    }

    /// Evaluates `f` at the shared time `t` into `k[slot]` (`y` given by `src`).
    fn eval<S: System<Workspace = W>>(
        &mut self,
        sys: &S,
        t: f64,
        src: Src,
        slot: usize,
        stats: &mut Stats,
    ) {
        self.t.fill(t);
        if self.recording {
            self.rec_t[slot] = t;
            if let Src::Y = src {
                self.rec_y[slot].copy_from_slice(&self.y);
            }
            let (y, saved) = (&self.rec_y[slot], &mut self.rec_saved[slot]);
            if saved.is_empty() {
                sys.rhs(&self.t, y, &mut self.k[slot], &mut self.ws);
            } else {
                sys.rhs_saving(&self.t, y, &mut self.k[slot], saved, &mut self.ws);
            }
        } else {
            let y = match src {
                Src::Y => &self.y,
                Src::Stage => &self.stage,
            };
            sys.rhs(&self.t, y, &mut self.k[slot], &mut self.ws);
        }
        stats.rhs_evals += self.width as u64;
    }

    /// Advances `y` (and `prev`) by step `n` of the grid.
    pub fn step<S: System<Workspace = W>>(
        &mut self,
        sys: &S,
        method: &Method,
        tl: &Timeline,
        n: usize,
        stats: &mut Stats,
    ) {
        let width = self.width;
        let len = self.y.len();
        let dim = len / width.max(1);
        let h = tl.fixed_h();
        let at = step_times(tl, n);
        let b = self;
        match method {
            Method::Euler => rk_step(sys, b, &tableau::EULER, h, &at, stats),
            Method::Midpoint => rk_step(sys, b, &tableau::MIDPOINT, h, &at, stats),
            Method::Heun => rk_step(sys, b, &tableau::HEUN, h, &at, stats),
            Method::Rk4 => rk_step(sys, b, &tableau::RK4, h, &at, stats),
            Method::Ab2 if n == 0 => {
                // Adams–Bashforth 2 needs f_{n−1}: start with one Heun step, keep f_0.
                rk_step(sys, b, &tableau::HEUN, h, &at, stats);
                b.prev.copy_from_slice(&b.k[0]);
            }
            Method::Ab2 => {
                // y_{n+1} = y_n + h (3/2 f_n − 1/2 f_{n−1})  (Hairer–Nørsett–Wanner I, §III.1)
                b.eval(sys, at(0.0), Src::Y, 0, stats);
                for j in 0..len {
                    b.y[j] += h * (1.5 * b.k[0][j] - 0.5 * b.prev[j]);
                }
                b.prev.copy_from_slice(&b.k[0]);
            }
            Method::Lm => {
                // x_{n+1} = (1 − k_n) x_n + k_n x_{n−1} + h f(t_n, x_n), the first step Euler
                // (Lu, Zhong, Li, Dong, "Beyond finite layer neural networks", ICML 2018).
                b.eval(sys, at(0.0), Src::Y, 0, stats);
                if n == 0 {
                    b.prev.copy_from_slice(&b.y);
                    for j in 0..len {
                        b.y[j] += h * b.k[0][j];
                    }
                } else {
                    let kn = sys.lm_coefficient(at(0.0));
                    for j in 0..len {
                        let x = b.y[j];
                        b.y[j] = (1.0 - kn) * x + kn * b.prev[j] + h * b.k[0][j];
                        b.prev[j] = x;
                    }
                }
            }
            Method::Leapfrog { position, momentum } => {
                let (q, p) = (
                    position.start * width..position.end * width,
                    momentum.start * width..momentum.end * width,
                );
                let t_start = at(0.0);
                let t_end = at(1.0);
                // Kick: p_{n+1/2} = p_n + h/2 G(q_n). G does not depend on p, so the last
                // kick's evaluation serves unless a breakpoint put it on another piece (or a
                // recording needs this step's own evaluation).
                if b.recording || b.fsal_time != Some(t_start) {
                    b.eval(sys, t_start, Src::Y, 0, stats);
                }
                for j in p.clone() {
                    b.y[j] += 0.5 * h * b.k[0][j];
                }
                // Drift: q_{n+1} = q_n + h F(p_{n+1/2}).
                b.eval(sys, at(0.5), Src::Y, 1, stats);
                for j in q.clone() {
                    b.y[j] += h * b.k[1][j];
                }
                // Kick: p_{n+1} = p_{n+1/2} + h/2 G(q_{n+1}).
                b.eval(sys, t_end, Src::Y, 2, stats);
                for j in p.clone() {
                    b.y[j] += 0.5 * h * b.k[2][j];
                }
                if leapfrog_has_others(position, momentum, dim) {
                    // Components outside q and p (quadratures) need f at (q_{n+1}, p_{n+1}):
                    // trapezoidal rule, symmetric like the rest of the step.
                    b.eval(sys, t_end, Src::Y, 3, stats);
                    for i in (0..dim).filter(|i| !position.contains(i) && !momentum.contains(i)) {
                        for j in i * width..(i + 1) * width {
                            b.y[j] += 0.5 * h * (b.k[0][j] + b.k[3][j]);
                        }
                    }
                    b.k.swap(0, 3);
                } else {
                    b.k.swap(0, 2);
                }
                b.fsal_time = Some(t_end);
            }
            // Implicit and adaptive methods are dispatched elsewhere.
            _ => {}
        }
        stats.steps += width as u64;
    }
}

/// Whether a leapfrog state has components outside `q` and `p` (quadratures).
pub(crate) fn leapfrog_has_others(
    position: &std::ops::Range<usize>,
    momentum: &std::ops::Range<usize>,
    dim: usize,
) -> bool {
    (0..dim).any(|i| !position.contains(&i) && !momentum.contains(&i))
}

/// The stage times of step `n` as a function of the stage's `c`: the end stage uses the grid
/// point itself, so that it is bitwise the next step's start (`t + h` may differ from it in the
/// last bit), and stages next to a breakpoint stay on the step's side of it.
pub(crate) fn step_times(tl: &Timeline, n: usize) -> impl Fn(f64) -> f64 + '_ {
    let h = tl.fixed_h();
    let t = tl.grid(n);
    let t_next = tl.grid(n + 1);
    let mid = t + 0.5 * h;
    move |c: f64| {
        let tau = if c == 1.0 { t_next } else { t + c * h };
        tl.stage_time(tau, mid, h)
    }
}

#[derive(Clone, Copy)]
enum Src {
    Y,
    /// The stage: in `stage`, or when recording already in the record of its slot, where
    /// `rk_step` forms it (no copy).
    Stage,
}

/// Integrates one block (`y0` component-major) over the fixed grid, writing the save times to
/// `out` and per-sample failures (block-local sample numbers) to `failures`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve<S: System>(
    sys: &S,
    options: &SolverOptions,
    tl: &Timeline,
    y0: &[f64],
    samples: std::ops::Range<usize>,
    out: &mut [f64],
    stats: &mut Stats,
    failures: &mut [Option<SolveError>],
) {
    let width = samples.len();
    let mut b = Stepper::new(sys, samples, y0);
    let mut y_old = y0.to_vec();
    let mut saver = LinearSaver::new();
    saver.emit(tl, 0, tl.t0, y0, tl.t0, y0, width, out);

    for n in 0..tl.steps {
        let t_next = tl.grid(n + 1);
        let emits = saver.emits_by(tl, t_next);
        if emits {
            y_old.copy_from_slice(&b.y);
        }
        b.step(sys, &options.method, tl, n, stats);
        if record_non_finite(&b.y, width, t_next, failures) {
            return;
        }
        if emits {
            saver.emit(tl, n + 1, tl.grid(n), &y_old, t_next, &b.y, width, out);
        }
    }
}

/// Records the first non-finite value of every sample not failed yet (lanes are independent);
/// true when every sample of the block has failed.
pub(crate) fn record_non_finite(
    y: &[f64],
    width: usize,
    t: f64,
    failures: &mut [Option<SolveError>],
) -> bool {
    let dim = y.len() / width.max(1);
    let mut all_failed = true;
    for (s, failure) in failures.iter_mut().enumerate() {
        if failure.is_none() {
            if let Some(i) = (0..dim).find(|&i| !y[i * width + s].is_finite()) {
                *failure = Some(SolveError::NonFinite {
                    t,
                    sample: s,
                    component: i,
                });
            } else {
                all_failed = false;
            }
        }
    }
    all_failed
}

/// One step of an explicit Runge–Kutta method on the block.
fn rk_step<S: System>(
    sys: &S,
    b: &mut Stepper<S::Workspace>,
    rk: &ExplicitRk,
    h: f64,
    at: &dyn Fn(f64) -> f64,
    stats: &mut Stats,
) {
    let len = b.y.len();
    for (i, row) in rk.a.iter().enumerate() {
        if i == 0 {
            b.eval(sys, at(rk.c[0]), Src::Y, 0, stats);
            continue;
        }
        // y + Σ_j h a_ij k_j, formed where the evaluation reads it (in its record when
        // recording: no copy of it there), from y and the terms in order, as a copy of y and
        // one pass per term would: the same bits, in one pass for a single term.
        let stage = if b.recording {
            &mut b.rec_y[i][..len]
        } else {
            &mut b.stage[..len]
        };
        let y = &b.y[..len];
        let mut terms = row
            .iter()
            .enumerate()
            .filter(|&(_, &aij)| aij != 0.0)
            .map(|(j, &aij)| (h * aij, &b.k[j][..len]));
        match (terms.next(), terms.next()) {
            (Some((ha, k)), None) => {
                for ((s, &y), &k) in stage.iter_mut().zip(y).zip(k) {
                    *s = y + ha * k;
                }
            }
            (first, second) => {
                stage.copy_from_slice(y);
                for (ha, k) in first.into_iter().chain(second).chain(terms) {
                    for (s, &k) in stage.iter_mut().zip(k) {
                        *s += ha * k;
                    }
                }
            }
        }
        b.eval(sys, at(rk.c[i]), Src::Stage, i, stats);
    }
    // y += h Σ b_j k_j, the sum started from its first term so that Euler is y + h k exactly;
    // four terms (RK4) in one pass, each element summed in the same order.
    let y = &mut b.y[..len];
    if let (&[b0, b1, b2, b3], [k0, k1, k2, k3, ..]) = (rk.b, &b.k[..]) {
        if [b0, b1, b2, b3].iter().all(|&bj| bj != 0.0) {
            let ks = k0.iter().zip(k1).zip(k2).zip(k3);
            for (y, (((&k0, &k1), &k2), &k3)) in y.iter_mut().zip(ks) {
                *y += h * (((b0 * k0 + b1 * k1) + b2 * k2) + b3 * k3);
            }
            return;
        }
    }
    let acc = &mut b.acc[..len];
    let terms = rk.b.iter().zip(&b.k).filter(|&(&bj, _)| bj != 0.0);
    for (j, (&bj, k)) in terms.enumerate() {
        for (a, &k) in acc.iter_mut().zip(k) {
            let term = bj * k;
            *a = if j == 0 { term } else { *a + term };
        }
    }
    for (y, &a) in y.iter_mut().zip(acc.iter()) {
        *y += h * a;
    }
}
