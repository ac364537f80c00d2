//! Recording an adaptive explicit solve so that the gradient methods can replay it exactly.
//!
//! An accepted step of an explicit pair is a pure function of its start state once its step
//! size and stage times are fixed, so recording `(t, h, stage times)` per accepted step and
//! the state at a few steps (checkpoints) is enough to recompute any step later, bit for bit:
//! the replay evaluates the same stages with the same formulas at width 1, and the right-hand
//! side does not depend on the block width ([`super::System`]'s contract). Rejected attempts
//! leave no trace because they do not change the state.
//!
//! Checkpoints are thinned as the solve goes, because the number of steps is not known in
//! advance: states are kept every `seg` steps, and whenever more than `2 seg` are kept `seg`
//! doubles and every other one is dropped. So `seg` ends between `√(N/2)` and `2√N` and both
//! the checkpoints and one segment's replay are `O(√N)` states per sample.

use super::adaptive::{Accepted, Recorder};
use super::tableau::{EmbeddedRk, ExplicitRk};
use super::{Stats, System};

/// Most stages of a supported pair (DOPRI5 and Tsit5 have 7).
pub(crate) const MAX_STAGES: usize = 7;

/// One accepted step: what it takes to recompute it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepTimes {
    pub t: f64,
    pub h: f64,
    pub t_new: f64,
    /// Evaluation time of each stage (`times[0]` is that of `k_0`).
    pub times: [f64; MAX_STAGES],
}

/// States at the start of every `seg`-th step of one sample, thinned as described above.
pub(crate) struct Checkpoints {
    pub seg: usize,
    fixed: bool,
    /// `(step index, state at its start)`, in step order.
    pub points: Vec<(usize, Vec<f64>)>,
}

impl Checkpoints {
    /// `segment`: a fixed number of steps per segment, or `None` for `≈ √N`.
    pub fn new(segment: Option<usize>) -> Self {
        Checkpoints {
            seg: segment.unwrap_or(1).max(1),
            fixed: segment.is_some(),
            points: Vec::new(),
        }
    }

    /// Offers the state at the start of step `n` (steps are offered in order).
    pub fn offer(&mut self, n: usize, y: impl FnOnce() -> Vec<f64>) {
        if !n.is_multiple_of(self.seg) {
            return;
        }
        self.points.push((n, y()));
        if !self.fixed && self.points.len() > 2 * self.seg {
            self.seg *= 2;
            let seg = self.seg;
            self.points.retain(|(m, _)| m % seg == 0);
        }
    }

    /// The segments as step ranges, for a schedule of `n_steps` steps.
    pub fn segments(&self, n_steps: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.points.len());
        for (j, (lo, _)) in self.points.iter().enumerate() {
            let hi = self.points.get(j + 1).map_or(n_steps, |p| p.0);
            if *lo < hi {
                out.push((*lo, hi));
            }
        }
        out
    }
}

/// The accepted steps and checkpoints of one sample.
pub(crate) struct Log {
    pub steps: Vec<StepTimes>,
    pub checkpoints: Checkpoints,
}

impl Log {
    /// The index of the node (0: the start, `n + 1`: the end of step `n`) at time `t`, if a
    /// step starts or ends exactly there.
    pub fn node_at(&self, t0: f64, t: f64, dir: f64) -> Option<usize> {
        if t == t0 {
            return Some(0);
        }
        let i = self.steps.partition_point(|s| (s.t_new - t) * dir < 0.0);
        (self.steps.get(i)?.t_new == t).then_some(i + 1)
    }

    /// The time of node `n`.
    pub fn node_time(&self, t0: f64, n: usize) -> f64 {
        if n == 0 {
            t0
        } else {
            self.steps[n - 1].t_new
        }
    }
}

/// Records every sample of a block.
pub(crate) struct BlockLog {
    pub lanes: Vec<Log>,
    dim: usize,
}

impl BlockLog {
    pub fn new(width: usize, dim: usize, segment: Option<usize>) -> Self {
        BlockLog {
            lanes: (0..width)
                .map(|_| Log {
                    steps: Vec::new(),
                    checkpoints: Checkpoints::new(segment),
                })
                .collect(),
            dim,
        }
    }
}

impl Recorder for BlockLog {
    fn accepted(&mut self, a: &Accepted) {
        let dim = self.dim;
        let log = &mut self.lanes[a.lane];
        let n = log.steps.len();
        log.checkpoints
            .offer(n, || (0..dim).map(|i| a.y[i * a.width + a.lane]).collect());
        let mut times = [0.0; MAX_STAGES];
        times[..a.times.len()].copy_from_slice(a.times);
        log.steps.push(StepTimes {
            t: a.t,
            h: a.h,
            t_new: a.t_new,
            times,
        });
    }
}

/// The propagating part of a pair as a plain explicit method: its stages but the last, and
/// the last row of `a` (the solution weights; the last stage is `f(y_new)`, reused as the next
/// step's first stage, FSAL).
pub(crate) fn propagating(tab: &'static EmbeddedRk) -> ExplicitRk {
    let ns = tab.c.len();
    ExplicitRk {
        c: &tab.c[..ns - 1],
        a: &tab.a[..ns - 1],
        b: tab.a[ns - 1],
    }
}

/// Recomputes accepted steps of one sample (width 1) exactly as [`super::adaptive`] took them.
pub(crate) struct Replay<W> {
    tab: &'static EmbeddedRk,
    pub ws: W,
    /// Stage derivatives of the last replayed step.
    pub k: Vec<Vec<f64>>,
    /// Stage inputs of the last replayed step (`stage[0]` is the start state).
    pub stage: Vec<Vec<f64>>,
    /// The time at which `k[0]` holds `f` of the current state, if it does.
    k0_time: Option<f64>,
}

impl<W> Replay<W> {
    pub fn new<S: System<Workspace = W>>(sys: &S, tab: &'static EmbeddedRk, sample: usize) -> Self {
        let dim = sys.dim();
        let ns = tab.c.len();
        Replay {
            tab,
            ws: sys.workspace(sample..sample + 1),
            k: vec![vec![0.0; dim]; ns],
            stage: vec![vec![0.0; dim]; ns],
            k0_time: None,
        }
    }

    /// Forgets the FSAL stage (after restoring a checkpoint).
    pub fn restart(&mut self) {
        self.k0_time = None;
    }

    /// Replays `step` from `y`, leaving the end state in `y`.
    pub fn step<S: System<Workspace = W>>(
        &mut self,
        sys: &S,
        step: &StepTimes,
        y: &mut [f64],
        stats: &mut Stats,
    ) {
        let ns = self.tab.c.len();
        let dim = y.len();
        if self.k0_time != Some(step.times[0]) {
            sys.rhs(&step.times[..1], y, &mut self.k[0], &mut self.ws);
            stats.rhs_evals += 1;
        } else if ns > 1 {
            let (first, rest) = self.k.split_at_mut(1);
            first[0].copy_from_slice(&rest[ns - 2]);
        }
        self.stage[0].copy_from_slice(y);
        for i in 1..ns {
            let row = self.tab.a[i];
            let st = &mut self.stage[i];
            for m in 0..dim {
                // The same sum, in the same order, as the lockstep solve.
                let mut acc = 0.0;
                for (j, &aij) in row.iter().enumerate() {
                    acc += aij * self.k[j][m];
                }
                st[m] = y[m] + step.h * acc;
            }
            sys.rhs(&step.times[i..i + 1], st, &mut self.k[i], &mut self.ws);
            stats.rhs_evals += 1;
        }
        y.copy_from_slice(&self.stage[ns - 1]);
        self.k0_time = Some(step.times[ns - 1]);
    }
}
