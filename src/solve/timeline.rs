//! The times of a solve: save times, the times steps must land on (stops, breakpoints, `t1`),
//! the fixed-step grid, and the rule that evaluates a stage next to a breakpoint on the side
//! of the step that asked for it.
//!
//! Built once per [`super::solve_batch`] call from the options and the system's breakpoints,
//! then shared read-only by all blocks.

use super::{OptionsError, SolverOptions, System};

/// A time that adaptive and stiff steps must hit exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Landing {
    pub t: f64,
    /// A breakpoint: `f` may jump here, so methods drop history (FSAL, multistep) and restart.
    pub restart: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Timeline {
    pub t0: f64,
    pub t1: f64,
    /// `+1` forward, `-1` backward.
    pub dir: f64,
    /// Output times, sorted in the direction of integration; the last is `t1`.
    pub save: Vec<f64>,
    /// Landing times in `(t0, t1]`, sorted in the direction of integration; the last is `t1`.
    pub landings: Vec<Landing>,
    /// Breakpoints strictly inside the span, ascending.
    breakpoints: Vec<f64>,
    /// Fixed-step methods: the number of equal steps (0 for the others).
    pub steps: usize,
}

impl Timeline {
    pub fn new<S: System>(system: &S, options: &SolverOptions) -> Result<Timeline, OptionsError> {
        let (t0, t1) = (options.t0, options.t1);
        if !t0.is_finite() || !t1.is_finite() {
            return Err(OptionsError::NonFiniteSpan);
        }
        let (rtol, atol) = (options.rtol, options.atol);
        if !(rtol.is_finite()
            && atol.is_finite()
            && rtol >= 0.0
            && atol >= 0.0
            && rtol + atol > 0.0)
        {
            return Err(OptionsError::BadTolerance);
        }
        if options
            .atol_components
            .iter()
            .any(|a| !(a.is_finite() && *a >= 0.0 && rtol + a > 0.0))
        {
            return Err(OptionsError::BadTolerance);
        }
        let steps = if options.method.is_fixed_step() {
            match options.steps {
                Some(n) if n >= 1 => n,
                _ => return Err(OptionsError::MissingSteps),
            }
        } else {
            0
        };
        let dir = if t1 >= t0 { 1.0 } else { -1.0 };
        let (lo, hi) = (t0.min(t1), t0.max(t1));
        let inside = |t: f64| t.is_finite() && t > lo && t < hi;

        let mut breakpoints: Vec<f64> = system
            .breakpoints()
            .into_iter()
            .filter(|&b| inside(b))
            .collect();
        breakpoints.sort_by(f64::total_cmp);
        breakpoints.dedup();

        let mut timeline = Timeline {
            t0,
            t1,
            dir,
            save: Vec::new(),
            landings: Vec::new(),
            breakpoints,
            steps,
        };

        // Save times: validated, the spec's default when empty, and always ending at t1.
        let mut save = options.save.clone();
        if save.is_empty() {
            save = if steps > 0 {
                (0..=steps).map(|n| timeline.grid(n)).collect()
            } else {
                vec![t0]
            };
        }
        for (k, &s) in save.iter().enumerate() {
            if !(s.is_finite() && s >= lo && s <= hi) {
                return Err(OptionsError::SaveOutOfRange { time: s });
            }
            if k > 0 && (s - save[k - 1]) * dir < 0.0 {
                return Err(OptionsError::SaveNotSorted { index: k });
            }
        }
        if save.last() != Some(&t1) {
            save.push(t1);
        }
        timeline.save = save;

        // Landings: stops and breakpoints inside the span, then t1.
        let mut landings: Vec<Landing> = options
            .stops
            .iter()
            .filter(|&&t| inside(t))
            .map(|&t| Landing { t, restart: false })
            .chain(
                timeline
                    .breakpoints
                    .iter()
                    .map(|&t| Landing { t, restart: true }),
            )
            .collect();
        landings.sort_by(|a, b| (a.t * dir).total_cmp(&(b.t * dir)));
        let mut merged: Vec<Landing> = Vec::with_capacity(landings.len() + 1);
        for l in landings {
            match merged.last_mut() {
                Some(last) if last.t == l.t => last.restart |= l.restart,
                _ => merged.push(l),
            }
        }
        if t0 != t1 {
            merged.push(Landing {
                t: t1,
                restart: false,
            });
        }
        timeline.landings = merged;
        Ok(timeline)
    }

    /// The fixed step size `(t1 - t0) / steps`.
    pub fn fixed_h(&self) -> f64 {
        (self.t1 - self.t0) / self.steps as f64
    }

    /// Grid point `n` of the fixed-step grid: `t0 + n h`, and exactly `t1` at the end.
    pub fn grid(&self, n: usize) -> f64 {
        if n == self.steps {
            self.t1
        } else {
            self.t0 + n as f64 * self.fixed_h()
        }
    }

    /// The time at which to evaluate `f` at `t` for a step that leaves `t` in the direction of
    /// integration: `t` itself, or `t.next_down()` when integrating backward from a breakpoint.
    pub fn start_time(&self, t: f64) -> f64 {
        if self.dir < 0.0
            && self
                .breakpoints
                .binary_search_by(|b| b.total_cmp(&t))
                .is_ok()
        {
            t.next_down()
        } else {
            t
        }
    }

    /// The time at which to evaluate a stage nominally at `tau` of a step whose midpoint is
    /// `mid` and whose size is `h`.
    ///
    /// Away from breakpoints this is `tau`. Within rounding distance of a breakpoint `b` the
    /// stage belongs to the step's side of `b`: `b` itself when the step lies right of it
    /// (pieces are `[b_k, b_{k+1})`), `b.next_down()` when it lies left. This keeps the end
    /// stages of a step that lands on a layer boundary in that step's layer, and absorbs the
    /// ulp-level differences between a grid point and the system's own breakpoint value.
    pub fn stage_time(&self, tau: f64, mid: f64, h: f64) -> f64 {
        if self.breakpoints.is_empty() {
            return tau;
        }
        // A stage at c = 0 or c = 1 is off by rounding only; 1e-9 of the step is far above
        // rounding and far below the distance of any interior stage (c in [0.1, 0.9]).
        let tol = 1e-9 * h.abs() + 4.0 * f64::EPSILON * tau.abs();
        let i = self.breakpoints.partition_point(|&b| b < tau);
        let near = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|j| self.breakpoints.get(j).copied())
            .find(|&b| (tau - b).abs() <= tol);
        match near {
            Some(b) if mid > b => b,
            Some(b) => b.next_down(),
            None => tau,
        }
    }
}
