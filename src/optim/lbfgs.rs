//! L-BFGS with a strong Wolfe line search, after Nocedal & Wright, *Numerical Optimization*
//! (2nd ed., 2006): the two-loop recursion (Algorithm 7.4) with H₀ = γI, γ = sᵀy / yᵀy
//! (eq. 7.20), and the line search of Algorithm 3.5 with `zoom` (Algorithm 3.6), whose trial
//! steps come from cubic interpolation (eq. 3.59), falling back to quadratic interpolation and
//! bisection, and safeguarded to stay inside the bracket.
//!
//! Training objectives are ODE solves: a large trial step can make a solution blow up. A trial
//! point whose loss or gradient is not finite is therefore treated as "too far" and the search
//! shrinks towards the last good step, like a backtracking search. An objective that fails
//! (`Err`) stops the iteration and the error is returned; a caller that wants a failed solve
//! treated as too far instead returns `Ok((f64::INFINITY, ...))` for it.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{dot, norm};

/// Sufficient-decrease constant c₁ (N&W §3.1).
pub const C1: f64 = 1e-4;
/// Curvature constant c₂ for quasi-Newton methods (N&W §3.1).
pub const C2: f64 = 0.9;
/// Objective evaluations allowed in one line search.
pub const MAX_EVALS: usize = 25;
/// A pair (s, y) is stored only if sᵀy > `CURVATURE_EPS`·‖s‖‖y‖. The strong Wolfe conditions
/// guarantee sᵀy > 0 in exact arithmetic; this guards the inverse-Hessian estimate against
/// pairs whose curvature is lost in rounding (a nearly orthogonal s and y).
pub const CURVATURE_EPS: f64 = 1e-10;

/// The objective of [`Lbfgs::step`]: the loss and its gradient at the given parameters, or
/// the caller's error (a failed solve), which the step returns unchanged.
pub type Objective<'a, E> = dyn FnMut(&[f64]) -> Result<(f64, Vec<f64>), E> + 'a;

/// The point L-BFGS stands at: parameters with their loss and gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: Vec<f64>,
    f: f64,
    g: Vec<f64>,
}

/// L-BFGS state: settings, the curvature pairs and the current point.
///
/// One call of [`Lbfgs::step`] is one outer iteration. The optimizer remembers the loss and
/// gradient at the point it returned, so the objective must be the same function from one call
/// to the next (the full batch). If the parameters passed in differ from that point (a fresh
/// optimizer, or the caller moved them), the objective is evaluated there and the history is
/// dropped, since it describes curvature somewhere else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lbfgs {
    /// Number of curvature pairs kept (m).
    pub history: usize,
    /// Sufficient-decrease constant c₁.
    pub c1: f64,
    /// Curvature constant c₂.
    pub c2: f64,
    /// Objective evaluations allowed in one line search.
    pub max_evals: usize,
    /// sₖ = xₖ₊₁ − xₖ, oldest first.
    s: VecDeque<Vec<f64>>,
    /// yₖ = ∇fₖ₊₁ − ∇fₖ, oldest first.
    y: VecDeque<Vec<f64>>,
    point: Option<Point>,
    iterations: u64,
}

/// What one outer iteration did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LbfgsStep {
    /// Loss at the new parameters.
    pub loss: f64,
    /// Loss before the step.
    pub previous_loss: f64,
    /// Euclidean norm of the gradient at the new parameters.
    pub grad_norm: f64,
    /// Accepted step length α along the search direction (0 if `converged`).
    pub step_length: f64,
    /// Objective evaluations in this call, including the evaluation at the starting point when
    /// the optimizer did not already know it.
    pub evals: usize,
    /// The history was dropped and the step taken along steepest descent, because the
    /// quasi-Newton direction was not a descent direction or its line search failed.
    pub restarted: bool,
    /// The gradient is exactly zero: the parameters are stationary and were not moved.
    pub converged: bool,
}

/// Why an L-BFGS iteration made no step. The parameters are left where they were.
#[derive(Clone, Debug, PartialEq)]
pub enum LineSearchError<E> {
    /// The objective returned an error.
    Objective(E),
    /// The loss or gradient at the starting parameters is not finite, so there is nothing to
    /// descend from.
    NonFiniteStart,
    /// Even steepest descent is not a descent direction (the directional derivative is not
    /// negative), which can only happen if the gradient is degenerate.
    NotDescent {
        /// Objective evaluations spent in this call.
        evals: usize,
    },
    /// No step satisfying the strong Wolfe conditions was found within the evaluation budget,
    /// or the bracket shrank below rounding, along both the quasi-Newton and the steepest
    /// descent direction. Close to a minimum whose loss is far from zero this is how rounding
    /// shows up (the loss can no longer resolve a decrease of order ‖g‖²), so a training loop
    /// treats it as the end of the iteration rather than as a fault of the model.
    NoWolfePoint {
        /// Objective evaluations spent in this call.
        evals: usize,
    },
}

impl<E: fmt::Display> fmt::Display for LineSearchError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineSearchError::Objective(e) => write!(f, "{e}"),
            LineSearchError::NonFiniteStart => {
                f.write_str("the loss or its gradient is not finite at the current parameters")
            }
            LineSearchError::NotDescent { .. } => {
                f.write_str("L-BFGS: the negative gradient is not a descent direction")
            }
            LineSearchError::NoWolfePoint { evals } => write!(
                f,
                "L-BFGS line search found no step satisfying the strong Wolfe conditions \
                 in {evals} evaluations"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LineSearchError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LineSearchError::Objective(e) => Some(e),
            _ => None,
        }
    }
}

/// φ(α) = f(x + αp) and φ'(α) = ∇f(x + αp)ᵀp at one trial step. A non-finite loss or
/// gradient is recorded as φ = +∞, φ' = NaN: "too far".
#[derive(Clone, Copy, Debug)]
struct Sample {
    alpha: f64,
    phi: f64,
    dphi: f64,
}

impl Sample {
    fn finite(&self) -> bool {
        self.phi.is_finite() && self.dphi.is_finite()
    }
}

/// How a single line search ended, before the retry policy of [`Lbfgs::step`].
enum Search<E> {
    Objective(E),
    Failed,
}

impl Lbfgs {
    /// A fresh L-BFGS keeping `history` curvature pairs, with c₁ = 10⁻⁴, c₂ = 0.9 and
    /// [`MAX_EVALS`] evaluations per line search.
    pub fn new(history: usize) -> Lbfgs {
        Lbfgs {
            history,
            c1: C1,
            c2: C2,
            max_evals: MAX_EVALS,
            s: VecDeque::new(),
            y: VecDeque::new(),
            point: None,
            iterations: 0,
        }
    }

    /// Outer iterations completed (accepted steps).
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The loss at the current point, once known.
    pub fn loss(&self) -> Option<f64> {
        self.point.as_ref().map(|p| p.f)
    }

    /// The gradient at the current point, once known.
    pub fn grad(&self) -> Option<&[f64]> {
        self.point.as_ref().map(|p| p.g.as_slice())
    }

    /// Curvature pairs currently stored.
    pub fn pairs(&self) -> usize {
        self.s.len()
    }

    /// Whether this state (read from a checkpoint) fits `n` parameters: as many `s` as `y`
    /// pairs, each pair and the current point's parameters and gradient of length `n`.
    pub fn check_len(&self, n: usize) -> Result<(), String> {
        let model = format!("the model has {n} parameter values");
        if self.s.len() != self.y.len() {
            return Err(format!(
                "L-BFGS's history holds {} steps s but {} gradient differences y",
                self.s.len(),
                self.y.len()
            ));
        }
        if let Some(v) = self.s.iter().chain(&self.y).find(|v| v.len() != n) {
            return Err(format!(
                "an L-BFGS curvature pair holds {} values, but {model}",
                v.len()
            ));
        }
        if let Some(p) = &self.point {
            if p.x.len() != n || p.g.len() != n {
                return Err(format!(
                    "L-BFGS's current point holds {} parameters and {} gradient values, but {model}",
                    p.x.len(),
                    p.g.len()
                ));
            }
        }
        Ok(())
    }

    /// Forgets the history and the current point, as if new (settings are kept).
    pub fn reset(&mut self) {
        self.s.clear();
        self.y.clear();
        self.point = None;
    }

    /// One outer iteration from `x`: a search direction from the two-loop recursion, a strong
    /// Wolfe line search along it, and the curvature update. On success `x` holds the new
    /// parameters; on error it is unchanged.
    ///
    /// `f` returns the loss and its gradient (same length as `x`). The first trial step is 1,
    /// except when there is no curvature information yet (first iteration, or after a reset),
    /// where the direction is the raw negative gradient and the trial is min(1, 1/‖g‖).
    /// If the quasi-Newton direction is not a descent direction or its line search fails, the
    /// history is dropped and the iteration is retried once along steepest descent.
    ///
    /// # Panics
    ///
    /// If `f` returns a gradient whose length differs from `x`'s (a bug in the caller).
    pub fn step<E>(
        &mut self,
        x: &mut [f64],
        f: &mut Objective<'_, E>,
    ) -> Result<LbfgsStep, LineSearchError<E>> {
        let mut evals = 0;
        let known = self.point.as_ref().is_some_and(|p| {
            p.x.len() == x.len() && p.x.iter().zip(&*x).all(|(a, b)| a.to_bits() == b.to_bits())
        });
        if !known {
            self.s.clear();
            self.y.clear();
            self.point = None;
            let (fx, gx) = f(x).map_err(LineSearchError::Objective)?;
            evals += 1;
            assert_eq!(gx.len(), x.len(), "L-BFGS: gradient length");
            if !fx.is_finite() || gx.iter().any(|g| !g.is_finite()) {
                return Err(LineSearchError::NonFiniteStart);
            }
            self.point = Some(Point {
                x: x.to_vec(),
                f: fx,
                g: gx,
            });
        }
        let Some(point) = self.point.take() else {
            unreachable!("the point was just set")
        };
        let result = self.iterate(&point, x, f, &mut evals);
        // On error the optimizer still stands at the old point.
        if self.point.is_none() {
            self.point = Some(point);
        }
        result
    }

    fn iterate<E>(
        &mut self,
        point: &Point,
        x: &mut [f64],
        f: &mut Objective<'_, E>,
        evals: &mut usize,
    ) -> Result<LbfgsStep, LineSearchError<E>> {
        let grad_norm = norm(&point.g);
        if grad_norm == 0.0 {
            return Ok(LbfgsStep {
                loss: point.f,
                previous_loss: point.f,
                grad_norm,
                step_length: 0.0,
                evals: *evals,
                restarted: false,
                converged: true,
            });
        }
        let mut restarted = false;
        loop {
            let steepest = self.s.is_empty();
            let p = if steepest {
                point.g.iter().map(|g| -g).collect()
            } else {
                self.direction(&point.g)
            };
            let slope = dot(&point.g, &p);
            // NaN comes from a degenerate history.
            if slope.is_nan() || slope >= 0.0 {
                if steepest {
                    return Err(LineSearchError::NotDescent { evals: *evals });
                }
                self.s.clear();
                self.y.clear();
                restarted = true;
                continue;
            }
            let alpha0 = if steepest {
                (1.0 / grad_norm).min(1.0)
            } else {
                1.0
            };
            match self.line_search(point, &p, slope, alpha0, f, evals) {
                Ok(new) => {
                    self.update_history(point, &new.x, &new.g);
                    x.copy_from_slice(&new.x);
                    let report = LbfgsStep {
                        loss: new.f,
                        previous_loss: point.f,
                        grad_norm: norm(&new.g),
                        step_length: new.alpha,
                        evals: *evals,
                        restarted,
                        converged: false,
                    };
                    self.point = Some(Point {
                        x: new.x,
                        f: new.f,
                        g: new.g,
                    });
                    self.iterations += 1;
                    return Ok(report);
                }
                Err(Search::Objective(e)) => return Err(LineSearchError::Objective(e)),
                Err(Search::Failed) if !steepest => {
                    self.s.clear();
                    self.y.clear();
                    restarted = true;
                }
                Err(Search::Failed) => return Err(LineSearchError::NoWolfePoint { evals: *evals }),
            }
        }
    }

    /// The two-loop recursion (N&W Algorithm 7.4): p = −H g.
    fn direction(&self, g: &[f64]) -> Vec<f64> {
        let k = self.s.len();
        let mut q = g.to_vec();
        let mut alphas = vec![0.0; k];
        for i in (0..k).rev() {
            let (s, y) = (&self.s[i], &self.y[i]);
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            alphas[i] = a;
            for (qj, yj) in q.iter_mut().zip(y) {
                *qj -= a * yj;
            }
        }
        let (s, y) = (&self.s[k - 1], &self.y[k - 1]);
        let gamma = dot(s, y) / dot(y, y);
        let mut r: Vec<f64> = q.iter().map(|qj| gamma * qj).collect();
        for ((s, y), alpha) in self.s.iter().zip(&self.y).zip(&alphas) {
            let rho = 1.0 / dot(y, s);
            let beta = rho * dot(y, &r);
            for (rj, sj) in r.iter_mut().zip(s) {
                *rj += sj * (alpha - beta);
            }
        }
        r.iter().map(|rj| -rj).collect()
    }

    fn update_history(&mut self, old: &Point, x_new: &[f64], g_new: &[f64]) {
        if self.history == 0 {
            return;
        }
        // s from the stored points rather than α·p, so that it is the step actually taken.
        let s: Vec<f64> = x_new.iter().zip(&old.x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&old.g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let threshold = CURVATURE_EPS * norm(&s) * norm(&y);
        if sy.is_nan() || sy <= threshold {
            return;
        }
        if self.s.len() == self.history {
            self.s.pop_front();
            self.y.pop_front();
        }
        self.s.push_back(s);
        self.y.push_back(y);
    }

    /// N&W Algorithm 3.5.
    fn line_search<E>(
        &self,
        start: &Point,
        p: &[f64],
        slope: f64,
        alpha0: f64,
        f: &mut Objective<'_, E>,
        evals: &mut usize,
    ) -> Result<Accepted, Search<E>> {
        let (phi0, c1, c2, max_evals) = (start.f, self.c1, self.c2, self.max_evals);
        let mut used = 0;
        let mut probe = |alpha: f64| -> Result<(Sample, Vec<f64>), Search<E>> {
            if used >= max_evals {
                return Err(Search::Failed);
            }
            used += 1;
            *evals += 1;
            let (phi, g) = f(&along(&start.x, p, alpha)).map_err(Search::Objective)?;
            assert_eq!(g.len(), p.len(), "L-BFGS: gradient length");
            let mut sample = Sample {
                alpha,
                phi,
                dphi: dot(&g, p),
            };
            if !sample.finite() || g.iter().any(|v| !v.is_finite()) {
                sample.phi = f64::INFINITY;
                sample.dphi = f64::NAN;
            }
            Ok((sample, g))
        };
        let armijo = |s: &Sample| s.finite() && s.phi <= phi0 + c1 * s.alpha * slope;
        let curvature = |s: &Sample| s.dphi.abs() <= -c2 * slope;
        let accept = |s: &Sample, g: Vec<f64>| Accepted {
            alpha: s.alpha,
            x: along(&start.x, p, s.alpha),
            f: s.phi,
            g,
        };

        let mut prev = Sample {
            alpha: 0.0,
            phi: phi0,
            dphi: slope,
        };
        let mut alpha = alpha0;
        let mut first = true;
        let (mut lo, mut hi) = loop {
            let (cur, g) = probe(alpha)?;
            if !armijo(&cur) || (!first && cur.phi >= prev.phi) {
                break (prev, cur);
            }
            if curvature(&cur) {
                return Ok(accept(&cur, g));
            }
            if cur.dphi >= 0.0 {
                break (cur, prev);
            }
            alpha = extrapolate(&prev, &cur);
            prev = cur;
            first = false;
        };

        // zoom (N&W Algorithm 3.6): lo satisfies sufficient decrease with the least φ seen,
        // and φ'(lo)·(hi − lo) < 0, so a Wolfe point lies between them.
        loop {
            let width = (hi.alpha - lo.alpha).abs();
            if width <= f64::EPSILON * lo.alpha.abs().max(hi.alpha.abs()) {
                return Err(Search::Failed);
            }
            let (cur, g) = probe(interpolate(&lo, &hi))?;
            if !armijo(&cur) || cur.phi >= lo.phi {
                hi = cur;
            } else {
                if curvature(&cur) {
                    return Ok(accept(&cur, g));
                }
                if cur.dphi * (hi.alpha - lo.alpha) >= 0.0 {
                    hi = lo;
                }
                lo = cur;
            }
        }
    }
}

/// The point of a successful line search.
struct Accepted {
    alpha: f64,
    x: Vec<f64>,
    f: f64,
    g: Vec<f64>,
}

/// x + αp, computed the same way for the trial and the accepted point so they are the same bits.
fn along(x: &[f64], p: &[f64], alpha: f64) -> Vec<f64> {
    x.iter().zip(p).map(|(xj, pj)| xj + alpha * pj).collect()
}

/// The minimiser of the cubic matching φ and φ' at a and b (N&W eq. 3.59), if it has one.
fn cubic_min(a: &Sample, b: &Sample) -> Option<f64> {
    let d1 = a.dphi + b.dphi - 3.0 * (a.phi - b.phi) / (a.alpha - b.alpha);
    let radicand = d1 * d1 - a.dphi * b.dphi;
    if radicand.is_nan() || radicand < 0.0 {
        return None;
    }
    let d2 = (b.alpha - a.alpha).signum() * radicand.sqrt();
    let alpha = b.alpha - (b.alpha - a.alpha) * ((b.dphi + d2 - d1) / (b.dphi - a.dphi + 2.0 * d2));
    alpha.is_finite().then_some(alpha)
}

/// The minimiser of the quadratic matching φ(a), φ'(a) and φ(b), if it is convex.
fn quadratic_min(a: &Sample, b: &Sample) -> Option<f64> {
    let w = b.alpha - a.alpha;
    let curvature = b.phi - a.phi - a.dphi * w;
    if curvature.is_nan() || curvature <= 0.0 {
        return None;
    }
    let alpha = a.alpha - a.dphi * w * w / (2.0 * curvature);
    alpha.is_finite().then_some(alpha)
}

/// A trial step inside the bracket [lo, hi] (either order). Cubic interpolation when both
/// ends are finite, else quadratic, else bisection; a non-finite hi (a blown-up solve) only
/// bisects, since its values say nothing about the shape of φ. The result is kept at least a
/// tenth of the bracket away from both ends, so every evaluation shrinks the bracket by a
/// fixed fraction even when the model of φ is poor.
fn interpolate(lo: &Sample, hi: &Sample) -> f64 {
    let mid = lo.alpha + 0.5 * (hi.alpha - lo.alpha);
    if !hi.finite() {
        return mid;
    }
    let guess = cubic_min(lo, hi)
        .or_else(|| quadratic_min(lo, hi))
        .unwrap_or(mid);
    let (left, right) = (lo.alpha.min(hi.alpha), lo.alpha.max(hi.alpha));
    let margin = 0.1 * (right - left);
    guess.clamp(left + margin, right - margin)
}

/// The next, larger trial step while φ is still decreasing at `cur` (N&W Algorithm 3.5's
/// "choose αᵢ₊₁ ∈ (αᵢ, α_max)"): the cubic's minimiser, kept between 2 and 11 times the last
/// increment beyond `cur`, so the search grows geometrically when the cubic has no minimum
/// ahead and never crawls.
fn extrapolate(prev: &Sample, cur: &Sample) -> f64 {
    let step = cur.alpha - prev.alpha;
    let (low, high) = (cur.alpha + step, cur.alpha + 10.0 * step);
    match cubic_min(prev, cur) {
        Some(alpha) if alpha > cur.alpha => alpha.clamp(low, high),
        _ => high,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64]) -> (f64, Vec<f64>) {
        let (a, b) = (x[0], x[1]);
        let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
        let g = vec![
            -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
            200.0 * (b - a * a),
        ];
        (f, g)
    }

    /// Re-evaluates both strong Wolfe inequalities for the step old → new, written with
    /// s = new − old (αp up to rounding, and both conditions are invariant to scaling p).
    fn assert_strong_wolfe(f: &mut Objective<'_, String>, old: &[f64], new: &[f64]) {
        let (f0, g0) = f(old).unwrap();
        let (f1, g1) = f(new).unwrap();
        let s: Vec<f64> = new.iter().zip(old).map(|(a, b)| a - b).collect();
        let slope0 = dot(&g0, &s);
        let slope1 = dot(&g1, &s);
        let slack = 1e-12 * (f0.abs() + slope0.abs());
        assert!(slope0 < 0.0, "not a descent step");
        assert!(
            f1 <= f0 + C1 * slope0 + slack,
            "sufficient decrease fails: {f1} > {f0} + c1·{slope0}"
        );
        assert!(
            slope1.abs() <= C2 * slope0.abs() * (1.0 + 1e-9),
            "curvature fails: |{slope1}| > c2·|{slope0}|"
        );
    }

    #[test]
    fn rosenbrock_converges_with_strong_wolfe_steps() {
        let mut opt = Lbfgs::new(10);
        let mut x: Vec<f64> = vec![-1.2, 1.0];
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> { Ok(rosenbrock(x)) };
        let mut iterations = 0;
        while (x[0] - 1.0).hypot(x[1] - 1.0) >= 1e-8 {
            assert!(iterations < 100, "not converged in 100 iterations: {x:?}");
            let old = x.clone();
            let report = opt.step(&mut x, &mut objective).unwrap();
            iterations += 1;
            assert!(report.evals >= 1 && report.evals <= MAX_EVALS + 1);
            if report.converged {
                break;
            }
            assert!(report.loss < report.previous_loss);
            assert_strong_wolfe(&mut objective, &old, &x);
        }
        assert!(
            (x[0] - 1.0).abs() < 1e-8 && (x[1] - 1.0).abs() < 1e-8,
            "{x:?}"
        );
        assert_eq!(opt.iterations(), iterations);
    }

    /// The 1-D Laplacian plus a diagonal: symmetric positive definite, condition number ~ 10³.
    fn spd_apply(x: &[f64]) -> Vec<f64> {
        let n = x.len();
        (0..n)
            .map(|i| {
                let left = if i > 0 { x[i - 1] } else { 0.0 };
                let right = if i + 1 < n { x[i + 1] } else { 0.0 };
                (2.0 + 0.01 * (i + 1) as f64) * x[i] - left - right
            })
            .collect()
    }

    #[test]
    fn strictly_convex_quadratic_converges() {
        // f = ½ (x − x*)ᵀA(x − x*), so the minimiser is x* by construction. The minimum value
        // is 0 so that the loss resolves decreases down to the solution; with a nonzero
        // minimum f* rounding hides them once ‖x − x*‖² ≲ ε|f*|/λ_min.
        let n = 40;
        let x_star: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            let d: Vec<f64> = x.iter().zip(&x_star).map(|(a, b)| a - b).collect();
            let ad = spd_apply(&d);
            Ok((0.5 * dot(&d, &ad), ad))
        };
        let mut opt = Lbfgs::new(8);
        let mut x = vec![0.0; n];
        for _ in 0..500 {
            let old = x.clone();
            let report = opt.step(&mut x, &mut objective).unwrap();
            if report.converged || report.grad_norm < 1e-11 {
                break;
            }
            assert_strong_wolfe(&mut objective, &old, &x);
        }
        let err = x
            .iter()
            .zip(&x_star)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-8, "max error {err}");
    }

    #[test]
    fn first_trial_step_is_scaled_steepest_descent() {
        // f = ½‖x‖² from x₀ with ‖x₀‖ = 5: the first trial is α = 1/5 along −g, which lands at
        // 0.8 x₀ and satisfies both conditions (φ'(α) = −(1 − α)‖x₀‖², |φ'| = 0.8|φ'(0)|).
        let mut trials = Vec::new();
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            trials.push(x.to_vec());
            Ok((0.5 * dot(x, x), x.to_vec()))
        };
        let mut opt = Lbfgs::new(5);
        let mut x = vec![3.0, 4.0];
        let report = opt.step(&mut x, &mut objective).unwrap();
        assert_eq!(report.evals, 2);
        assert!((report.step_length - 0.2).abs() < 1e-16);
        assert!(
            (x[0] - 2.4).abs() < 1e-15 && (x[1] - 3.2).abs() < 1e-15,
            "{x:?}"
        );
        // Second iteration: γ = sᵀy/yᵀy = 1 on this function, so H₀ is exact and the unit
        // step lands on the minimum.
        let report = opt.step(&mut x, &mut objective).unwrap();
        assert_eq!(report.evals, 1);
        assert_eq!(report.step_length, 1.0);
        assert!(x[0].abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
    }

    #[test]
    fn nan_beyond_a_radius_backtracks_and_converges() {
        // Rosenbrock, but NaN outside the disc of radius 1.6 (the start and the minimum are
        // inside); trial steps that leave it must be shrunk, not accepted or propagated.
        let mut nan_trials = 0;
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            if x[0].hypot(x[1]) > 1.6 {
                nan_trials += 1;
                return Ok((f64::NAN, vec![f64::NAN; 2]));
            }
            Ok(rosenbrock(x))
        };
        let mut opt = Lbfgs::new(10);
        let mut x: Vec<f64> = vec![-1.2, 1.0];
        for _ in 0..200 {
            let report = opt.step(&mut x, &mut objective).unwrap();
            assert!(report.loss.is_finite());
            if report.converged || (x[0] - 1.0).hypot(x[1] - 1.0) < 1e-8 {
                break;
            }
        }
        assert!((x[0] - 1.0).hypot(x[1] - 1.0) < 1e-8, "{x:?}");
        assert!(nan_trials > 0, "the test never left the disc");
    }

    #[test]
    fn infinite_loss_from_a_too_large_step_backtracks() {
        // f = 2x² for x ≤ 0.3, +∞ beyond (a solve that blows up). From x₀ = −0.2, g = −0.8, so
        // the first trial is α = 1, landing at 0.6: infinite. Bisection gives α = 0.5, x = 0.2,
        // φ = φ(0): no sufficient decrease, so it becomes the bracket's upper end, and cubic
        // interpolation of the (exactly quadratic) φ on [0, 0.5] gives α = 0.25, x = 0.
        let mut trials = Vec::new();
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            trials.push(x[0]);
            if x[0] > 0.3 {
                return Ok((f64::INFINITY, vec![f64::NAN]));
            }
            Ok((2.0 * x[0] * x[0], vec![4.0 * x[0]]))
        };
        let mut opt = Lbfgs::new(3);
        let mut x = vec![-0.2];
        let report = opt.step(&mut x, &mut objective).unwrap();
        assert_eq!(report.evals, 4);
        assert!((report.step_length - 0.25).abs() < 1e-15);
        assert!(x[0].abs() < 1e-15, "{x:?}");
        assert_eq!(trials.len(), 4);
        assert!((trials[1] - 0.6).abs() < 1e-15 && (trials[2] - 0.2).abs() < 1e-15);
    }

    #[test]
    fn objective_error_propagates_and_leaves_x_unchanged() {
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            if x[0].hypot(x[1]) > 1.3 {
                return Err(format!("solver failed at {x:?}"));
            }
            Ok(rosenbrock(x))
        };
        let mut opt = Lbfgs::new(10);
        let mut x = vec![-1.2, 0.5];
        let mut failed = false;
        for _ in 0..100 {
            let before = x.clone();
            let loss = opt.loss();
            match opt.step(&mut x, &mut objective) {
                Ok(report) if report.converged => break,
                Ok(_) => {}
                Err(LineSearchError::Objective(message)) => {
                    assert!(message.starts_with("solver failed"));
                    assert_eq!(x, before, "parameters moved on error");
                    assert_eq!(opt.loss(), loss, "state moved on error");
                    failed = true;
                    break;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(failed, "no trial left the disc");
        // The error at the very first evaluation propagates too.
        let mut opt = Lbfgs::new(10);
        let mut far = vec![2.0, 2.0];
        let err = opt.step(&mut far, &mut objective).unwrap_err();
        assert!(matches!(err, LineSearchError::Objective(_)));
        assert_eq!(opt.loss(), None);
    }

    #[test]
    fn unbounded_objective_is_a_line_search_error() {
        // f = −x₀: φ' = −1 everywhere, so the curvature condition never holds and the search
        // can only extrapolate until its budget is spent.
        let mut calls = 0;
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), String> {
            calls += 1;
            Ok((-x[0], vec![-1.0]))
        };
        let mut opt = Lbfgs::new(5);
        let mut x = vec![0.0];
        let err = opt.step(&mut x, &mut objective).unwrap_err();
        assert_eq!(
            err,
            LineSearchError::NoWolfePoint {
                evals: 1 + MAX_EVALS
            }
        );
        assert_eq!(calls, 1 + MAX_EVALS);
        assert_eq!(x, [0.0]);
        assert!(err.to_string().contains("strong Wolfe"));
    }

    #[test]
    fn wrong_gradient_is_a_line_search_error() {
        // The reported gradient points uphill: every trial along "descent" increases f, the
        // bracket [0, α] shrinks to rounding and the search gives up without moving.
        let mut objective =
            |x: &[f64]| -> Result<(f64, Vec<f64>), String> { Ok((0.5 * x[0] * x[0], vec![-x[0]])) };
        let mut opt = Lbfgs::new(5);
        let mut x = vec![1.0];
        let err = opt.step(&mut x, &mut objective).unwrap_err();
        assert!(matches!(err, LineSearchError::NoWolfePoint { evals } if evals <= 1 + MAX_EVALS));
        assert_eq!(x, [1.0]);
    }

    #[test]
    fn non_finite_start_is_an_error() {
        let mut objective =
            |_: &[f64]| -> Result<(f64, Vec<f64>), String> { Ok((1.0, vec![f64::NAN])) };
        let mut opt = Lbfgs::new(5);
        let err = opt.step(&mut [0.0], &mut objective).unwrap_err();
        assert_eq!(err, LineSearchError::NonFiniteStart);
    }

    #[test]
    fn ascent_direction_resets_history_and_retries_steepest_descent() {
        // A corrupted pair with sᵀy < 0 makes H indefinite: for f = ½‖x‖² at x = (1, 0),
        // s = y = ... with s = (1, 0), y = (−1, 0): γ = −1 and p = −Hg = +g, an ascent
        // direction. The iteration must drop the pair and take the steepest-descent step.
        let mut objective =
            |x: &[f64]| -> Result<(f64, Vec<f64>), String> { Ok((0.5 * dot(x, x), x.to_vec())) };
        let mut opt = Lbfgs::new(5);
        let mut x = vec![1.0, 0.0];
        opt.point = Some(Point {
            x: x.clone(),
            f: 0.5,
            g: x.clone(),
        });
        opt.s.push_back(vec![1.0, 0.0]);
        opt.y.push_back(vec![-1.0, 0.0]);
        assert!(dot(&opt.direction(&[1.0, 0.0]), &[1.0, 0.0]) > 0.0);
        let report = opt.step(&mut x, &mut objective).unwrap();
        assert!(report.restarted);
        assert!(report.loss < 0.5);
        // Steepest descent from |g| = 1: α = 1 lands on the minimum.
        assert_eq!(x, [0.0, 0.0]);
    }

    #[test]
    fn zero_gradient_is_converged_without_moving() {
        let mut objective =
            |x: &[f64]| -> Result<(f64, Vec<f64>), String> { Ok((0.5 * dot(x, x), x.to_vec())) };
        let mut opt = Lbfgs::new(5);
        let mut x = vec![0.0, 0.0];
        let report = opt.step(&mut x, &mut objective).unwrap();
        assert!(report.converged);
        assert_eq!((report.evals, report.step_length), (1, 0.0));
    }

    #[test]
    fn two_loop_recursion_matches_the_bfgs_update() {
        // With one pair, Alg. 7.4 computes H₁g for H₁ = (I − ρsyᵀ) γI (I − ρysᵀ) + ρssᵀ
        // (N&W eq. 7.19 with H₀ = γI). Here s = (1, 0), y = (2, 1): ρ = 1/2, γ = 2/5.
        let mut opt = Lbfgs::new(5);
        opt.s.push_back(vec![1.0, 0.0]);
        opt.y.push_back(vec![2.0, 1.0]);
        let g = [0.3, -0.7];
        // By hand: (I − ρysᵀ)g = g − ρ(sᵀg)y = (0.3, −0.7) − 0.15(2, 1) = (0, −0.85);
        // γ·that = (0, −0.34); (I − ρsyᵀ)(0, −0.34) = (0, −0.34) − ρ(−0.34)(1, 0) = (0.17, −0.34);
        // + ρ(sᵀg)s = (0.15, 0): H₁g = (0.32, −0.34).
        let p = opt.direction(&g);
        assert!(
            (p[0] + 0.32).abs() < 1e-15 && (p[1] - 0.34).abs() < 1e-15,
            "{p:?}"
        );
    }
}
