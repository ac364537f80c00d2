//! `train`: the training loop. Mini-batches from a seeded shuffle, one gradient per mini-batch
//! from `sens`, one optimizer update (`optim`); L-BFGS takes full-batch iterations with its own
//! line search, and `msa` replaces the update by a per-layer maximisation of the augmented
//! Hamiltonian on the mini-batch's states and costates ([`msa`]). No IO: the CLI owns
//! progress, logs and files.
//!
//! The whole loop state is a [`TrainState`] (epoch, position inside the epoch, optimizer, the
//! shuffler's state at the start of the epoch and the epoch's running sums); with the
//! parameters it makes a [`Checkpoint`], so a checkpoint written after any mini-batch resumes to the same bits as an uninterrupted run:
//! the epoch's batches are re-drawn from the saved shuffler state and the finished ones skipped.

mod msa;
mod shooting;

use serde::{Deserialize, Serialize};

use crate::compile::{Params, Program};
use crate::data::{self, Dataset};
use crate::dist::{Local, Ranks};
use crate::ir::{self, CostKind};
use crate::optim::{Hyper, LineSearchError, OptimizerState};
use crate::rng::{Rng, RngState};
use crate::sens::{self, GradientError, GradientOptions};
use crate::simulate::{Bound, Simulation};
use crate::solve::SolveError;

/// Everything a checkpoint holds: the loop state and the parameter values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The loop state.
    pub state: TrainState,
    /// Parameter values (full layout).
    pub params: Vec<f64>,
    /// Multiple shooting: the trainable segment starts (see [`shooting`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub starts: Vec<f64>,
}

/// The loop state besides the parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The model the state belongs to (checked on resume).
    pub model: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Mini-batches of the current epoch already applied.
    pub batch: usize,
    /// The optimizer.
    pub optimizer: OptimizerState,
    /// The shuffler at the start of the current epoch.
    pub shuffler: RngState,
    /// Running sums of the current epoch.
    pub sums: EpochSums,
    /// Consecutive mini-batches (L-BFGS: trial points) whose solve failed.
    #[serde(default)]
    pub failures: usize,
    /// The precision the kernels ran in (`"f64"` or `"f32"`): a resume in the other would
    /// continue a different computation. Checkpoints from before it was recorded are `f64`.
    #[serde(default = "default_precision")]
    pub precision: String,
}

fn default_precision() -> String {
    crate::ir::Precision::F64.name().to_string()
}

/// Sums over the mini-batches of an epoch so far, weighted by their sizes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    /// Samples seen.
    pub samples: usize,
    /// Σ batch size × batch loss.
    pub loss: f64,
    /// Σ batch size × cost value, per cost kind in the program's order.
    pub costs: Vec<f64>,
    /// Σ batch size × metric.
    pub metrics: Vec<f64>,
    /// Σ ‖gradient‖ over mini-batches.
    pub grad_norm: f64,
    /// Mini-batches.
    pub batches: usize,
    /// Right-hand-side evaluations.
    pub rhs_evals: u64,
    /// Mini-batches skipped (L-BFGS: trial points rejected) because their solve failed.
    #[serde(default)]
    pub skipped: usize,
}

impl EpochSums {
    /// Adds a mini-batch of `samples` samples: its loss, costs and metrics weighted by its size.
    fn add(&mut self, samples: usize, loss: f64, costs: &[(CostKind, f64)], metrics: &[f64]) {
        let weight = samples as f64;
        if self.costs.is_empty() {
            self.costs = vec![0.0; costs.len()];
            self.metrics = vec![0.0; metrics.len()];
        }
        self.samples += samples;
        self.loss += weight * loss;
        for (s, (_, v)) in self.costs.iter_mut().zip(costs) {
            *s += weight * v;
        }
        for (s, v) in self.metrics.iter_mut().zip(metrics) {
            *s += weight * v;
        }
    }
}

/// One finished epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochSummary {
    /// Its number, from 1.
    pub epoch: usize,
    /// Mean loss over the epoch's mini-batches (at the parameters each batch was taken at).
    pub loss: f64,
    /// Mean of each cost kind.
    pub costs: Vec<(CostKind, f64)>,
    /// Mean of each metric.
    pub metrics: Vec<f64>,
    /// Mean gradient norm over the mini-batches.
    pub grad_norm: f64,
    /// Right-hand-side evaluations of the epoch.
    pub rhs_evals: u64,
    /// Optimizer steps of the epoch: its mini-batches (one L-BFGS iteration counts one).
    pub steps: usize,
    /// L-BFGS found no further decrease (a zero gradient, or no Wolfe step at the precision of
    /// the loss): the run is finished.
    pub converged: bool,
    /// Mini-batches skipped (L-BFGS: trial points rejected) because their solve failed.
    pub skipped: usize,
}

/// Why training stopped early.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainError {
    /// A gradient could not be computed.
    Gradient(GradientError),
    /// The loss or the gradient became non-finite.
    Diverged {
        /// Epoch (from 1).
        epoch: usize,
        /// What went non-finite: a cost kind, or the gradient.
        term: String,
    },
    /// The optimizer cannot be used here.
    Unsupported(String),
    /// A `train` argument does not fit the data (multiple shooting): at the argument.
    Located {
        /// The argument.
        span: crate::diag::Span,
        /// What is wrong.
        message: String,
    },
    /// L-BFGS found no acceptable step.
    LineSearch(String),
    /// `max_failures` consecutive solves failed.
    Failures {
        /// Epoch (from 1).
        epoch: usize,
        /// Mini-batch of the epoch (from 1; L-BFGS: 1).
        batch: usize,
        /// Consecutive failures.
        failures: usize,
        /// The last failure, its sample numbered in the training data.
        error: GradientError,
        /// The parameters it was tried at, summarized.
        params: String,
    },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Gradient(e) => write!(f, "{e}"),
            TrainError::Diverged { epoch, term } => write!(
                f,
                "training diverged in epoch {epoch}: {term} became infinite or NaN; try a smaller learning rate"
            ),
            TrainError::Unsupported(why) => write!(f, "{why}"),
            TrainError::Located { message, .. } => write!(f, "{message}"),
            TrainError::LineSearch(why) => write!(f, "L-BFGS stopped: {why}"),
            TrainError::Failures {
                epoch,
                batch,
                failures,
                error,
                params,
            } => write!(
                f,
                "training stopped in epoch {epoch}, mini-batch {batch}: {failures} solves in a row failed, the last with: {error}; at {params}; lower the learning rate, or raise `max_failures`"
            ),
        }
    }
}

/// The data block a model trains on: the first one not named `test`, else the first (`None`
/// only when there are no blocks). `nodec grad` differentiates the loss on the same block.
pub fn training_block(blocks: &[(String, Dataset)]) -> Option<(&str, &Dataset)> {
    blocks
        .iter()
        .find(|(name, _)| name != "test")
        .or(blocks.first())
        .map(|(n, d)| (n.as_str(), d))
}

/// A model, its data and its training state. It owns the parameters it updates and binds them
/// afresh for every gradient ([`Bound::with_params`]).
pub struct Trainer<'a> {
    model: &'a ir::Model,
    program: &'a Program,
    data: &'a Dataset,
    train: ir::Train,
    hyper: Hyper,
    gradient: GradientOptions,
    params: Params,
    /// `msa`'s layers and grid-saving model (`None` for the other optimizers).
    msa: Option<msa::Plan>,
    /// Multiple shooting's segments (`None`: single shooting).
    shooting: Option<shooting::Plan>,
    /// Multiple shooting's trainable segment starts (empty without it).
    starts: Vec<f64>,
    /// The loop state (what a checkpoint stores).
    pub state: TrainState,
    /// The processes that share each mini-batch's blocks ([`crate::dist`]); one by default.
    ranks: &'a dyn Ranks,
}

impl<'a> Trainer<'a> {
    /// A fresh run of a bound model from its parameters (the model must declare `train`); the
    /// trainer keeps its own copy of the parameters, which [`Trainer::params`] shows.
    pub fn new(start: Bound<'a>, gradient: GradientOptions) -> Result<Trainer<'a>, TrainError> {
        let Bound {
            model,
            program,
            data,
            ..
        } = start;
        let params = start.params.clone();
        let train = model.train.clone().ok_or_else(|| {
            TrainError::Unsupported("the model has no `train` declaration".into())
        })?;
        let hyper = Hyper::from(&train);
        let msa = match train.optimizer {
            ir::Optimizer::Msa => Some(msa::plan(model, program, &gradient)?),
            _ => None,
        };
        let (shooting, starts) = match shooting::Plan::new(start, &gradient)? {
            Some((plan, starts)) => (Some(plan), starts),
            None => (None, Vec::new()),
        };
        let optimizer = OptimizerState::new(
            train.optimizer,
            params.values().len() + starts.len(),
            &hyper,
        );
        // The shuffler has its own stream, apart from parameter initialisation.
        let shuffler = Rng::new(train.seed).fork(1).state();
        let state = TrainState {
            model: model.name.clone(),
            epoch: 0,
            batch: 0,
            optimizer,
            shuffler,
            sums: EpochSums::default(),
            failures: 0,
            precision: program.precision().name().to_string(),
        };
        Ok(Trainer {
            model,
            program,
            data,
            train,
            hyper,
            gradient,
            params,
            msa,
            shooting,
            starts,
            state,
            ranks: &Local,
        })
    }

    /// Shares every gradient's blocks among `ranks` (an MPI run; every rank runs the same
    /// loop). Rank 0 adds the blocks' gradients in block order, so the parameters have the
    /// bits of one process. Multiple shooting and `msa` compute their gradients whole on
    /// every rank.
    pub fn with_ranks(mut self, ranks: &'a dyn Ranks) -> Self {
        self.ranks = ranks;
        self
    }

    /// The state to write to a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            state: self.state.clone(),
            params: self.params.values().to_vec(),
            starts: self.starts.clone(),
        }
    }

    /// Continues from a checkpoint.
    pub fn resume(&mut self, checkpoint: Checkpoint) -> Result<(), TrainError> {
        let n = self.params.values().len();
        // A checkpoint written in the polish epochs holds no starts.
        if checkpoint.starts.is_empty() && checkpoint.state.epoch >= self.shooting_epochs() {
            self.end_shooting();
        }
        if checkpoint.starts.len() != self.starts.len() {
            return Err(TrainError::Unsupported(format!(
                "the checkpoint holds {} multiple-shooting segment start values, but the model's `shooting` needs {}",
                checkpoint.starts.len(),
                self.starts.len(),
            )));
        }
        if checkpoint.state.model != self.model.name || checkpoint.params.len() != n {
            return Err(TrainError::Unsupported(format!(
                "the checkpoint belongs to model `{}` with {} parameter values, not to `{}` with {n}",
                checkpoint.state.model,
                checkpoint.params.len(),
                self.model.name,
            )));
        }
        if checkpoint.state.precision != self.state.precision {
            return Err(TrainError::Unsupported(format!(
                "the checkpoint was trained with {} kernels, but this run computes in {}; resume with `--precision {}`",
                checkpoint.state.precision, self.state.precision, checkpoint.state.precision,
            )));
        }
        // Another optimizer's state would be stepped by the wrong update (or refused mid-run).
        let (saved, ours) = (
            checkpoint.state.optimizer.name(),
            self.state.optimizer.name(),
        );
        if saved != ours {
            return Err(TrainError::Unsupported(format!(
                "the checkpoint was written by `{saved}`, but the model trains with `{ours}`"
            )));
        }
        checkpoint
            .state
            .optimizer
            .check_len(n + self.starts.len())
            .map_err(TrainError::Unsupported)?;
        self.params.values_mut().copy_from_slice(&checkpoint.params);
        self.starts.copy_from_slice(&checkpoint.starts);
        self.state = checkpoint.state;
        Ok(())
    }

    /// Epochs the run has in total (L-BFGS: iterations).
    pub fn epochs(&self) -> usize {
        self.shooting_epochs() + self.train.shooting.as_ref().map_or(0, |s| s.polish)
    }

    /// Epochs (L-BFGS: iterations) before multiple shooting's single-shooting polish.
    fn shooting_epochs(&self) -> usize {
        match self.train.optimizer {
            ir::Optimizer::Lbfgs => self.train.iters.max(1),
            _ => self.train.epochs,
        }
    }

    /// Multiple shooting is over (or was never on): drops the segment starts and gives the
    /// optimizer a fresh state over the parameters alone for the polish epochs.
    fn end_shooting(&mut self) {
        if self.shooting.take().is_some() {
            self.starts.clear();
            self.state.optimizer = OptimizerState::new(
                self.train.optimizer,
                self.params.values().len(),
                &self.hyper,
            );
        }
    }

    /// The current parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Runs the rest of the current epoch; `stop()` is asked after every mini-batch, and a
    /// `true` returns `Ok(None)` with the state pointing at the next mini-batch.
    pub fn run_epoch(
        &mut self,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<EpochSummary>, TrainError> {
        if self.shooting.is_some() && self.state.epoch >= self.shooting_epochs() {
            self.end_shooting();
        }
        if self.train.optimizer == ir::Optimizer::Lbfgs {
            return self.lbfgs_iteration().map(Some);
        }
        if self.shooting.is_some() {
            return self.shooting_epoch(stop);
        }
        let epoch = self.state.epoch + 1;
        let mut shuffler = Rng::from_state(&self.state.shuffler);
        let batches = data::batches(self.data.n.max(1), self.train.batch, &mut shuffler);
        let lr = self.hyper.lr_at(self.state.epoch);
        while self.state.batch < batches.len() {
            let indices = &batches[self.state.batch];
            let subset = if (self.data.times.is_some() && self.data.trajectories.is_none())
                || self.data.n == 0
            {
                self.data.clone()
            } else {
                self.data.select(indices)
            };
            // `msa` needs the states and costates at every grid point.
            let (model, options) = match &self.msa {
                Some(plan) => (&plan.grid_model, &plan.gradient),
                None => (self.model, &self.gradient),
            };
            let bound = Bound::new(model, self.program, &self.params, &subset);
            let g = match sens::gradient_across(&bound, options, self.ranks) {
                Ok(g) => g,
                // A solve that fails is a rejected step: the mini-batch is skipped and the
                // parameters stay, until `max_failures` fail in a row.
                Err(GradientError::Solve(e)) if !matches!(e, SolveError::InvalidOptions(_)) => {
                    self.reject(epoch, indices, e)?;
                    self.state.batch += 1;
                    if self.state.batch < batches.len() && stop() {
                        return Ok(None);
                    }
                    continue;
                }
                Err(e) => return Err(TrainError::Gradient(e)),
            };
            self.state.failures = 0;
            check_gradient(epoch, &g)?;
            let sums = &mut self.state.sums;
            sums.add(
                indices.len(),
                g.simulation.loss,
                &g.simulation.costs,
                &g.simulation.metrics,
            );
            sums.grad_norm += g.grad.iter().map(|x| x * x).sum::<f64>().sqrt();
            sums.batches += 1;
            sums.rhs_evals += g.stats.rhs_evals;
            match (&self.state.optimizer, &self.msa) {
                (OptimizerState::Msa(settings), Some(plan)) => {
                    let stats =
                        msa::update(plan, self.program, settings, &mut self.params, &subset, &g);
                    self.state.sums.rhs_evals += stats.rhs_evals;
                }
                _ => self
                    .state
                    .optimizer
                    .step(self.params.values_mut(), &g.grad, lr)
                    .map_err(|e| TrainError::Unsupported(e.to_string()))?,
            }
            self.state.batch += 1;
            if self.state.batch < batches.len() && stop() {
                return Ok(None);
            }
        }
        let summary = self.finish_epoch(epoch);
        self.state.shuffler = shuffler.state();
        Ok(Some(summary))
    }

    /// [`Trainer::run_epoch`] under multiple shooting: each mini-batch of trajectories is
    /// evaluated segment by segment ([`shooting::Plan::evaluate`]) and the optimizer steps the
    /// parameters and the segment starts together.
    fn shooting_epoch(
        &mut self,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<EpochSummary>, TrainError> {
        let epoch = self.state.epoch + 1;
        let mut shuffler = Rng::from_state(&self.state.shuffler);
        let batches = data::batches(self.data.n.max(1), self.train.batch, &mut shuffler);
        let lr = self.hyper.lr_at(self.state.epoch);
        let p = self.params.values().len();
        while self.state.batch < batches.len() {
            let indices = &batches[self.state.batch];
            let plan = self
                .shooting
                .as_mut()
                .expect("shooting_epoch runs with a plan");
            let e = match plan.evaluate(
                self.program,
                &self.params,
                &self.starts,
                indices,
                &self.gradient,
            ) {
                Ok(e) => e,
                Err(GradientError::Solve(e)) if !matches!(e, SolveError::InvalidOptions(_)) => {
                    self.reject(epoch, indices, e)?;
                    self.state.batch += 1;
                    if self.state.batch < batches.len() && stop() {
                        return Ok(None);
                    }
                    continue;
                }
                Err(e) => return Err(TrainError::Gradient(e)),
            };
            self.state.failures = 0;
            check_evaluation(epoch, &e)?;
            let sums = &mut self.state.sums;
            sums.add(indices.len(), e.loss, &e.costs, &e.metrics);
            sums.grad_norm += e.grad.iter().map(|x| x * x).sum::<f64>().sqrt();
            sums.batches += 1;
            sums.rhs_evals += e.rhs_evals;
            let mut x: Vec<f64> = self
                .params
                .values()
                .iter()
                .chain(&self.starts)
                .copied()
                .collect();
            self.state
                .optimizer
                .step(&mut x, &e.grad, lr)
                .map_err(|e| TrainError::Unsupported(e.to_string()))?;
            self.params.values_mut().copy_from_slice(&x[..p]);
            self.starts.copy_from_slice(&x[p..]);
            self.state.batch += 1;
            if self.state.batch < batches.len() && stop() {
                return Ok(None);
            }
        }
        let summary = self.finish_epoch(epoch);
        self.state.shuffler = shuffler.state();
        Ok(Some(summary))
    }

    /// One full-batch L-BFGS iteration under multiple shooting, over the parameters and the
    /// segment starts.
    fn lbfgs_shooting_iteration(&mut self) -> Result<EpochSummary, TrainError> {
        let epoch = self.state.epoch + 1;
        let OptimizerState::Lbfgs(lbfgs) = &mut self.state.optimizer else {
            unreachable!("run_epoch dispatches L-BFGS only")
        };
        let plan = self.shooting.as_mut().expect("called with a plan");
        let (program, gradient) = (self.program, &self.gradient);
        let all: Vec<usize> = (0..self.data.n.max(1)).collect();
        let p = self.params.values().len();
        let mut params = self.params.clone();
        let mut evals = 0u64;
        let max_failures = self.train.max_failures;
        let (mut rejected, mut in_a_row) = (0usize, 0usize);
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), GradientError> {
            params.values_mut().copy_from_slice(&x[..p]);
            match plan.evaluate(program, &params, &x[p..], &all, gradient) {
                Ok(e) => {
                    in_a_row = 0;
                    evals += e.rhs_evals;
                    Ok((e.loss, e.grad))
                }
                Err(GradientError::Solve(e))
                    if !matches!(e, SolveError::InvalidOptions(_))
                        && in_a_row + 1 < max_failures =>
                {
                    in_a_row += 1;
                    rejected += 1;
                    Ok((f64::INFINITY, vec![f64::NAN; x.len()]))
                }
                Err(e) => Err(e),
            }
        };
        let mut x: Vec<f64> = self
            .params
            .values()
            .iter()
            .chain(&self.starts)
            .copied()
            .collect();
        let step = lbfgs.step(&mut x, &mut objective).map(|s| s.converged);
        let converged = lbfgs_converged(step, epoch, in_a_row, || summarize(program, &params))?;
        self.params.values_mut().copy_from_slice(&x[..p]);
        self.starts.copy_from_slice(&x[p..]);
        let grad_norm = lbfgs
            .grad()
            .map_or(0.0, |g| g.iter().map(|v| v * v).sum::<f64>().sqrt());
        // Costs and metrics at the accepted point.
        let e = plan
            .evaluate(program, &self.params, &self.starts, &all, gradient)
            .map_err(TrainError::Gradient)?;
        check_evaluation(epoch, &e)?;
        self.state.epoch = epoch;
        Ok(EpochSummary {
            epoch,
            loss: e.loss,
            costs: e.costs,
            metrics: e.metrics,
            grad_norm,
            rhs_evals: evals + e.rhs_evals,
            steps: 1,
            converged,
            skipped: rejected,
        })
    }

    /// Counts a failed solve of the mini-batch `indices`, and stops training once
    /// `max_failures` have failed in a row.
    fn reject(&mut self, epoch: usize, indices: &[usize], e: SolveError) -> Result<(), TrainError> {
        self.state.sums.skipped += 1;
        self.state.failures += 1;
        if self.state.failures < self.train.max_failures {
            return Ok(());
        }
        Err(TrainError::Failures {
            epoch,
            batch: self.state.batch + 1,
            failures: self.state.failures,
            error: GradientError::Solve(renumber(e, indices)),
            params: summarize(self.program, &self.params),
        })
    }

    fn finish_epoch(&mut self, epoch: usize) -> EpochSummary {
        let sums = std::mem::take(&mut self.state.sums);
        let n = sums.samples.max(1) as f64;
        let kinds = self.program.cost_kinds();
        let summary = EpochSummary {
            epoch,
            loss: sums.loss / n,
            costs: kinds
                .iter()
                .zip(&sums.costs)
                .map(|(k, v)| (*k, v / n))
                .collect(),
            metrics: sums.metrics.iter().map(|v| v / n).collect(),
            grad_norm: sums.grad_norm / sums.batches.max(1) as f64,
            rhs_evals: sums.rhs_evals,
            steps: sums.batches,
            converged: false,
            skipped: sums.skipped,
        };
        self.state.epoch = epoch;
        self.state.batch = 0;
        summary
    }

    /// One full-batch L-BFGS iteration with its Wolfe line search.
    fn lbfgs_iteration(&mut self) -> Result<EpochSummary, TrainError> {
        if self.shooting.is_some() {
            return self.lbfgs_shooting_iteration();
        }
        let epoch = self.state.epoch + 1;
        let OptimizerState::Lbfgs(lbfgs) = &mut self.state.optimizer else {
            unreachable!("run_epoch dispatches L-BFGS only")
        };
        let (model, program, data, gradient) =
            (self.model, self.program, self.data, &self.gradient);
        let ranks = self.ranks;
        let mut params = self.params.clone();
        let mut evals = 0u64;
        let max_failures = self.train.max_failures;
        let (mut rejected, mut in_a_row) = (0usize, 0usize);
        // A trial point whose solve fails is "too far": the line search shortens the step
        // (see `optim::lbfgs`), until `max_failures` fail in a row.
        let mut objective = |x: &[f64]| -> Result<(f64, Vec<f64>), GradientError> {
            params.values_mut().copy_from_slice(x);
            match sens::gradient_across(&Bound::new(model, program, &params, data), gradient, ranks)
            {
                Ok(g) => {
                    in_a_row = 0;
                    evals += g.stats.rhs_evals;
                    Ok((g.simulation.loss, g.grad))
                }
                Err(GradientError::Solve(e))
                    if !matches!(e, SolveError::InvalidOptions(_))
                        && in_a_row + 1 < max_failures =>
                {
                    in_a_row += 1;
                    rejected += 1;
                    Ok((f64::INFINITY, vec![f64::NAN; x.len()]))
                }
                Err(e) => Err(e),
            }
        };
        let mut x = self.params.values().to_vec();
        let step = lbfgs.step(&mut x, &mut objective).map(|s| s.converged);
        let converged = lbfgs_converged(step, epoch, in_a_row, || summarize(program, &params))?;
        self.params.values_mut().copy_from_slice(&x);
        // L-BFGS keeps the accepted point's gradient; costs and metrics need a forward solve.
        let grad_norm = lbfgs
            .grad()
            .map_or(0.0, |g| g.iter().map(|v| v * v).sum::<f64>().sqrt());
        let t1 = model.schedule.as_ref().map(|s| vec![s.t1]);
        let sim = Bound::new(model, program, &self.params, data)
            .simulate(t1)
            .map_err(|e| TrainError::Gradient(GradientError::Solve(e)))?;
        check_finite(epoch, &sim)?;
        self.state.epoch = epoch;
        Ok(EpochSummary {
            epoch,
            loss: sim.loss,
            costs: sim.costs,
            metrics: sim.metrics,
            grad_norm,
            rhs_evals: evals + sim.stats.rhs_evals,
            steps: 1,
            converged,
            skipped: rejected,
        })
    }
}

/// The solve error with its sample numbered in the training data rather than the mini-batch.
fn renumber(e: SolveError, indices: &[usize]) -> SolveError {
    let map = |s: usize| indices.get(s).copied().unwrap_or(s);
    match e {
        SolveError::StepSizeTooSmall { t, sample } => SolveError::StepSizeTooSmall {
            t,
            sample: map(sample),
        },
        SolveError::MaxStepsExceeded {
            t,
            sample,
            max_steps,
        } => SolveError::MaxStepsExceeded {
            t,
            sample: map(sample),
            max_steps,
        },
        SolveError::NewtonFailed { t, sample } => SolveError::NewtonFailed {
            t,
            sample: map(sample),
        },
        SolveError::NonFinite {
            t,
            sample,
            component,
        } => SolveError::NonFinite {
            t,
            sample: map(sample),
            component,
        },
        other => other,
    }
}

/// The parameters as a short text: scalars by value, arrays by their norm, the first eight.
/// Whether an L-BFGS iteration converged, or why training stops: a solve that failed for the
/// `max_failures`-th time in a row (`in_a_row` before it; `failed_at` describes the parameters),
/// another gradient error, or a line search that went wrong. Near the minimum, rounding leaves
/// no step that decreases the loss enough: that is convergence at the loss's precision.
fn lbfgs_converged(
    step: Result<bool, LineSearchError<GradientError>>,
    epoch: usize,
    in_a_row: usize,
    failed_at: impl FnOnce() -> String,
) -> Result<bool, TrainError> {
    match step {
        Ok(converged) => Ok(converged),
        Err(LineSearchError::Objective(GradientError::Solve(e)))
            if !matches!(e, SolveError::InvalidOptions(_)) =>
        {
            Err(TrainError::Failures {
                epoch,
                batch: 1,
                failures: in_a_row + 1,
                error: GradientError::Solve(e),
                params: failed_at(),
            })
        }
        Err(LineSearchError::Objective(e)) => Err(TrainError::Gradient(e)),
        Err(LineSearchError::NoWolfePoint { .. }) => Ok(true),
        Err(e) => Err(TrainError::LineSearch(format!("{e}"))),
    }
}

fn summarize(program: &Program, params: &Params) -> String {
    let entries = &program.layout().entries;
    let mut parts: Vec<String> = entries
        .iter()
        .take(8)
        .map(|e| {
            let values = &params.values()[e.offset..e.offset + e.len()];
            if values.len() == 1 {
                format!("{} = {}", e.name, values[0])
            } else {
                let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
                format!("‖{}‖ = {norm:.6e}", e.name)
            }
        })
        .collect();
    if entries.len() > 8 {
        parts.push(format!("{} more", entries.len() - 8));
    }
    parts.join(", ")
}

/// A non-finite loss names the cost term that went first.
fn check_finite(epoch: usize, sim: &Simulation) -> Result<(), TrainError> {
    if !sim.loss.is_finite() {
        let term = sim
            .costs
            .iter()
            .find(|(_, v)| !v.is_finite())
            .map_or("the loss".to_string(), |(k, _)| {
                format!("the {} cost", k.name())
            });
        return Err(TrainError::Diverged { epoch, term });
    }
    Ok(())
}

/// [`check_gradient`] under multiple shooting.
fn check_evaluation(epoch: usize, e: &shooting::Evaluation) -> Result<(), TrainError> {
    if !e.loss.is_finite() {
        let term = e
            .costs
            .iter()
            .find(|(_, v)| !v.is_finite())
            .map_or("the continuity penalty".to_string(), |(k, _)| {
                format!("the {} cost", k.name())
            });
        return Err(TrainError::Diverged { epoch, term });
    }
    if e.grad.iter().any(|v| !v.is_finite()) {
        return Err(TrainError::Diverged {
            epoch,
            term: "the gradient".into(),
        });
    }
    Ok(())
}

/// [`check_finite`] of the loss, and the gradient must be finite too.
fn check_gradient(epoch: usize, g: &sens::Gradient) -> Result<(), TrainError> {
    check_finite(epoch, &g.simulation)?;
    if g.grad.iter().any(|v| !v.is_finite()) {
        return Err(TrainError::Diverged {
            epoch,
            term: "the gradient".into(),
        });
    }
    Ok(())
}
