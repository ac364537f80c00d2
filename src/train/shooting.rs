//! Multiple shooting (`train ...(shooting = N, continuity = W)`).
//!
//! Each trajectory of the training series is split at observation times into `N` segments of
//! about equal numbers of observations: segment 0 runs from the schedule's `t0` to the
//! `⌊m/N⌋`-th observation, segment `k` from the `⌊km/N⌋`-th observation to the `⌊(k+1)m/N⌋`-th,
//! the last to the schedule's `t1` (`m`: the trajectory's observation times other than `t0`).
//! A segment is charged the observations after its start up to and including its end, so
//! every observation is charged once. Segment 0 starts from the model's initial state;
//! segment `k > 0` starts from a trainable state `s_k` (one per trajectory and segment),
//! initialised from the observation at its start when the series observes as many values as
//! the model has states (read in the same order), else from a solve at the initial parameters.
//!
//! The loss of a mini-batch of trajectories is the mean over its trajectories of
//! `Σ_k (segment k's costs) + W · Σ_k |x_k(end) − s_{k+1}|²`, plus the penalty once. Each
//! segment is one solve of one sample ([`sens::segment_gradient`]) on a copy of the model whose
//! schedule spans the segment; the gradient of a start is its segment's initial cotangent
//! plus the continuity term of the segment before it. The optimizer steps the parameters and
//! the starts as one vector (parameters first); [`super::Checkpoint::starts`] keeps the starts,
//! so a resumed run continues to the same bits. Training reports and writes only the model's
//! parameters.

use crate::compile::{Params, Program};
use crate::data::Dataset;
use crate::diag::Span;
use crate::ir::{self, CostKind};
use crate::sens::{self, GradientError, GradientOptions, Segment};
use crate::simulate::Bound;

use super::TrainError;

/// One segment of one trajectory.
struct Piece {
    t0: f64,
    t1: f64,
    /// The trajectory's observations the segment is charged with, as a one-sample series.
    data: Dataset,
    /// Offset of its trainable start in the starts vector (`None`: segment 0).
    start: Option<usize>,
}

/// The segments of every trajectory and the model copy their solves run on.
pub(super) struct Plan {
    weight: f64,
    dim: usize,
    /// `[trajectory][segment]`.
    pieces: Vec<Vec<Piece>>,
    /// The model with its schedule moved to each segment in turn.
    model: ir::Model,
}

/// A mini-batch's loss and gradient under multiple shooting.
pub(super) struct Evaluation {
    pub loss: f64,
    pub costs: Vec<(CostKind, f64)>,
    pub metrics: Vec<f64>,
    /// Parameters, then starts.
    pub grad: Vec<f64>,
    pub rhs_evals: u64,
}

fn located(span: Span, message: String) -> TrainError {
    TrainError::Located { span, message }
}

impl Plan {
    /// The plan for `data` and the starts' initial values; `None` when `shooting` is absent or
    /// 1 (single shooting is the ordinary loop).
    pub(super) fn new(
        bound: Bound<'_>,
        gradient: &GradientOptions,
    ) -> Result<Option<(Plan, Vec<f64>)>, TrainError> {
        let Bound {
            model,
            program,
            params,
            data,
        } = bound;
        let Some(shooting) = model.train.as_ref().and_then(|t| t.shooting.clone()) else {
            return Ok(None);
        };
        let span = shooting.span;
        let n = shooting.segments;
        let (Some(times), Some(observed), Some(schedule)) =
            (&data.times, &data.observed, &model.schedule)
        else {
            return Err(located(
                span,
                "`shooting` splits the trajectories of a `series`, and the training data is not one"
                    .into(),
            ));
        };
        if n == 1 {
            return Ok(None);
        }
        if program.cost_kinds().contains(&CostKind::Terminal) {
            return Err(located(
                span,
                "multiple shooting charges observed and running costs along the segments; a terminal cost is not supported with `shooting`".into(),
            ));
        }
        if gradient.method == ir::GradientMethod::Forward {
            return Err(located(
                span,
                "multiple shooting needs the gradient of the segment starts: use `gradient = backprop` or `gradient = adjoint`".into(),
            ));
        }
        let dim = program.dim();
        let d = data.obs_dim;
        let dir = schedule.direction();
        let trajectories: Vec<std::ops::Range<usize>> = match &data.trajectories {
            Some(t) => t.clone(),
            None => std::iter::once(0..times.len()).collect(),
        };
        let from_observations = d == dim;
        let mut pieces = Vec::new();
        let mut starts = Vec::new();
        let mut at_params: Vec<f64> = Vec::new();
        for (i, rows) in trajectories.iter().enumerate() {
            // Its observations after t0 within the span, in the order of integration.
            let mut own: Vec<usize> = rows
                .clone()
                .filter(|&r| schedule.contains(times[r]) && times[r] != schedule.t0)
                .collect();
            own.sort_by(|&a, &b| (dir * times[a]).total_cmp(&(dir * times[b])));
            let m = own.len();
            if n > m {
                let which = if trajectories.len() > 1 {
                    format!("trajectory {} has", i + 1)
                } else {
                    "the series has".into()
                };
                return Err(located(
                    span,
                    format!(
                        "`shooting = {n}` needs at least {n} observation intervals in every trajectory, but {which} {m}"
                    ),
                ));
            }
            let inputs = if data.input_dim > 0 && i < data.n {
                data.input(i).to_vec()
            } else {
                Vec::new()
            };
            // Boundaries: the `⌊km/N⌋`-th observation (1-based), k = 1..N−1.
            let cut: Vec<usize> = (1..n).map(|k| k * m / n).collect();
            let mut segs = Vec::new();
            let mut first = 0;
            for k in 0..n {
                let last = if k + 1 < n { cut[k] } else { m };
                let t0 = if k == 0 {
                    schedule.t0
                } else {
                    times[own[cut[k - 1] - 1]]
                };
                let t1 = if k + 1 < n {
                    times[own[cut[k] - 1]]
                } else {
                    schedule.t1
                };
                let mut rows: Vec<usize> = own[first..last].to_vec();
                if k == 0 {
                    // An observation at t0 stays with the first segment, as in single shooting.
                    rows.extend(rows_at(rows_of(data, i, times.len()), times, schedule.t0));
                }
                rows.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
                let t: Vec<f64> = rows.iter().map(|&r| times[r]).collect();
                let o: Vec<f64> = rows
                    .iter()
                    .flat_map(|&r| observed[r * d..(r + 1) * d].iter().copied())
                    .collect();
                let len = t.len();
                let one = Dataset::trajectories(
                    t,
                    d,
                    o,
                    std::iter::once(0..len).collect(),
                    data.input_dim,
                    inputs.clone(),
                );
                let start = (k > 0).then(|| {
                    let offset = starts.len();
                    if from_observations {
                        let r = own[cut[k - 1] - 1];
                        starts.extend_from_slice(&observed[r * d..(r + 1) * d]);
                    } else {
                        starts.extend(std::iter::repeat_n(0.0, dim));
                    }
                    offset
                });
                segs.push(Piece {
                    t0,
                    t1,
                    data: one,
                    start,
                });
                first = last;
            }
            if !from_observations {
                // The single-shooting solution at the initial parameters, at each segment start.
                let one = match &data.trajectories {
                    Some(_) => data.select(&[i]),
                    None => data.clone(),
                };
                let sim = Bound::new(model, program, params, &one)
                    .simulate(Some(vec![schedule.t1]))
                    .map_err(|e| TrainError::Gradient(GradientError::Solve(e)))?;
                at_params.clear();
                for seg in &segs {
                    let Some(offset) = seg.start else { continue };
                    if let Some(k) = sim.solution.t.iter().position(|&t| t == seg.t0) {
                        let y = sim.solution.state(k, 0);
                        starts[offset..offset + dim].copy_from_slice(&y[..dim]);
                    }
                }
            }
            pieces.push(segs);
        }
        Ok(Some((
            Plan {
                weight: shooting.continuity,
                dim,
                pieces,
                model: model.clone(),
            },
            starts,
        )))
    }

    /// The loss and gradient of the trajectories `indices` at `params` and `starts`.
    pub(super) fn evaluate(
        &mut self,
        program: &Program,
        params: &Params,
        starts: &[f64],
        indices: &[usize],
        options: &GradientOptions,
    ) -> Result<Evaluation, GradientError> {
        let p = params.values().len();
        let dim = self.dim;
        let kinds = program.cost_kinds();
        let mut grad = vec![0.0; p + starts.len()];
        let mut sums = vec![0.0; kinds.len()];
        let mut metrics = vec![0.0; program.metrics_len()];
        let (mut continuity, mut rhs_evals) = (0.0, 0u64);
        for &i in indices {
            let segs = &self.pieces[i];
            for (k, seg) in segs.iter().enumerate() {
                let schedule = self
                    .model
                    .schedule
                    .as_mut()
                    .expect("a plan is made only for a model with a schedule");
                schedule.t0 = seg.t0;
                schedule.t1 = seg.t1;
                let next = segs.get(k + 1).and_then(|s| s.start);
                let segment = Segment {
                    start: seg.start.map(|o| &starts[o..o + dim]),
                    continuity: next.map(|o| (self.weight, &starts[o..o + dim])),
                    no_penalty: true,
                };
                let bound = Bound::new(&self.model, program, params, &seg.data);
                let g = sens::segment_gradient(&bound, options, segment)?;
                rhs_evals += g.stats.rhs_evals;
                for (a, b) in grad[..p].iter_mut().zip(&g.grad) {
                    *a += b;
                }
                if let Some(o) = seg.start {
                    for (a, b) in grad[p + o..p + o + dim]
                        .iter_mut()
                        .zip(&g.initial_cotangent)
                    {
                        *a += b;
                    }
                }
                if let Some(o) = next {
                    let end = g.simulation.solution.final_state(0);
                    for j in 0..dim {
                        let r = end[j] - starts[o + j];
                        continuity += self.weight * r * r;
                        grad[p + o + j] -= 2.0 * self.weight * r;
                    }
                }
                for (s, (kind, v)) in sums.iter_mut().zip(&g.simulation.costs) {
                    if *kind != CostKind::Penalty {
                        *s += v;
                    }
                }
                if k + 1 == segs.len() {
                    for (s, v) in metrics.iter_mut().zip(&g.simulation.metrics) {
                        *s += v;
                    }
                }
            }
        }
        let scale = 1.0 / indices.len().max(1) as f64;
        for g in grad.iter_mut() {
            *g *= scale;
        }
        for m in metrics.iter_mut() {
            *m *= scale;
        }
        let mut ws = program.workspace(1);
        let penalty = program.penalty(params, Some(&mut grad[..p]), &mut ws);
        let mut loss = continuity * scale;
        let mut costs = Vec::with_capacity(kinds.len());
        for (kind, sum) in kinds.iter().zip(&sums) {
            let value = match kind {
                CostKind::Penalty => penalty,
                _ => sum * scale,
            };
            loss += value;
            costs.push((*kind, value));
        }
        Ok(Evaluation {
            loss,
            costs,
            metrics,
            grad,
            rhs_evals,
        })
    }
}

/// The rows of trajectory `i` (all rows for a single series).
fn rows_of(data: &Dataset, i: usize, len: usize) -> std::ops::Range<usize> {
    match &data.trajectories {
        Some(t) => t[i].clone(),
        None => 0..len,
    }
}

/// The rows among `rows` observed at `t`.
fn rows_at(rows: std::ops::Range<usize>, times: &[f64], t: f64) -> Vec<usize> {
    rows.filter(|&r| times[r] == t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceFile;
    use crate::sema::Overrides;

    /// Two trajectories with their own times and initial states, three segments each, a
    /// penalty and a continuity weight of 2; fixed steps, so that finite differences see the
    /// same steps as the gradient.
    const SOURCE: &str = "model small
param a = 0.7
param b = 0.3
input x0[2]
state x[2] = x0
observed xo[2]
dx/dt = [a * x[0] - b * x[0] * x[1], b * x[0] * x[1] - a * x[1]]
schedule rk4(t = [0, 2], steps = 40)
data obs = series(\"f.csv\", t = 1, values = 2..4, traj = 0, input = 4..6)
cost observed = sum((x - xo)^2)
cost penalty = 1e-2 * a^2
train adam(lr = 0.01, epochs = 1, shooting = 3, continuity = 2)
";

    #[test]
    fn the_gradient_of_params_and_segment_starts_matches_finite_differences() {
        let file = SourceFile::new("small.node", SOURCE);
        let (model, diags) = crate::check_source(&file, &Overrides::default(), "small");
        assert!(!diags.has_errors(), "{}", diags.render(&file));
        let model = crate::prepare(model);
        let program = Program::compile(&model);
        let mut params = crate::simulate::initial_params(&model, program.layout(), 0);
        let times = vec![0.3, 0.6, 1.0, 1.4, 2.0, 0.5, 1.0, 1.5, 1.8];
        let observed: Vec<f64> = (0..times.len() * 2)
            .map(|k| 1.0 + 0.3 * (k as f64 * 0.7).sin())
            .collect();
        let data = Dataset::trajectories(
            times,
            2,
            observed,
            vec![0..5, 5..9],
            2,
            vec![1.0, 0.5, 0.8, 1.2],
        );
        let options = GradientOptions::new(ir::GradientMethod::Backprop);
        let bound = Bound::new(&model, &program, &params, &data);
        let (mut plan, starts) = Plan::new(bound, &options).unwrap().expect("shooting = 3");
        // Two free starts per trajectory, read from the observations; moved off them.
        assert_eq!(starts.len(), 2 * 2 * 2);
        let starts: Vec<f64> = starts
            .iter()
            .enumerate()
            .map(|(k, s)| s + 0.05 * k as f64)
            .collect();
        let all = [0, 1];
        let e = plan
            .evaluate(&program, &params, &starts, &all, &options)
            .unwrap();
        let p = params.values().len();
        assert_eq!(e.grad.len(), p + starts.len());
        let x: Vec<f64> = params.values().iter().chain(&starts).copied().collect();
        let mut loss_at = |x: &[f64]| {
            params.values_mut().copy_from_slice(&x[..p]);
            plan.evaluate(&program, &params, &x[p..], &all, &options)
                .unwrap()
                .loss
        };
        for j in 0..x.len() {
            let h = 1e-6;
            let (mut up, mut down) = (x.clone(), x.clone());
            up[j] += h;
            down[j] -= h;
            let fd = (loss_at(&up) - loss_at(&down)) / (2.0 * h);
            assert!(
                (fd - e.grad[j]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "coordinate {j}: gradient {}, finite differences {fd}",
                e.grad[j]
            );
        }
    }
}
