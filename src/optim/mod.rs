//! Optimizers for training: [`Adam`], [`Sgd`] and [`Lbfgs`], the inner loop of the method of
//! successive approximations ([`Msa`]), plus the learning-rate schedule [`lr_at`].
//!
//! Pure numerics: every optimizer works on a flat `[f64]` parameter vector and a gradient in the
//! same layout (`compile::ParamLayout`), reads no files and starts no threads. Loops are plain
//! and sequential, so an update is the same bits on every machine and thread count.
//!
//! # Checkpoints
//!
//! Every optimizer's whole state (hyperparameters, moments, step counts, L-BFGS history and
//! the current loss and gradient) derives serde's `Serialize`/`Deserialize`, and
//! [`OptimizerState`] wraps one of them, so a training checkpoint can store it and a resumed run
//! continues with the same bits as an uninterrupted one. Bias corrections and schedules are
//! computed from integer counts with [`powu`] (not `powi`, whose precision Rust leaves
//! unspecified), so nothing depends on how many steps were taken since the last resume.
//! A non-finite value cannot be written as JSON, so a state is checkpointable only while its
//! gradients have been finite; the training loop checks the gradient before calling `step`.

mod adam;
mod lbfgs;
mod msa;
mod sgd;

pub use adam::Adam;
pub use lbfgs::{Lbfgs, LbfgsStep, LineSearchError, Objective, C1, C2, CURVATURE_EPS, MAX_EVALS};
pub use msa::{Msa, MsaLayerReport};
pub use sgd::Sgd;

use serde::{Deserialize, Serialize};

use crate::ir;

/// Hyperparameters of every optimizer; each one reads the fields it uses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Base learning rate (before [`lr_at`]'s decay).
    pub lr: f64,
    /// SGD momentum μ (0: plain SGD).
    pub momentum: f64,
    /// SGD: Nesterov momentum instead of heavy-ball.
    pub nesterov: bool,
    /// Weight decay: decoupled (AdamW) for Adam, an L2 term added to the gradient for SGD.
    pub weight_decay: f64,
    /// Adam's first-moment decay β₁.
    pub beta1: f64,
    /// Adam's second-moment decay β₂.
    pub beta2: f64,
    /// Adam's ε, added to √v̂.
    pub eps: f64,
    /// L-BFGS: number of curvature pairs kept.
    pub history: usize,
    /// Factor applied to the learning rate every `decay_every` epochs.
    pub lr_decay: f64,
    /// Epochs between learning-rate decays; 0 never decays.
    pub decay_every: usize,
    /// MSA: weight ρ of the consistency penalties of the augmented Hamiltonian.
    pub rho: f64,
    /// MSA: weight of each layer's `½‖θ‖²` regulariser.
    pub reg: f64,
    /// MSA: L-BFGS iterations per layer and mini-batch.
    pub maxiter: usize,
}

impl Default for Hyper {
    /// Kingma & Ba's Adam defaults (β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸), learning rate 10⁻³, no
    /// momentum or weight decay, an L-BFGS history of 10 and no decay; MSA's ρ = 1, no
    /// regulariser and 5 iterations per layer (the `train msa(...)` defaults).
    fn default() -> Hyper {
        Hyper {
            lr: 1e-3,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            history: 10,
            lr_decay: 1.0,
            decay_every: 0,
            rho: 1.0,
            reg: 0.0,
            maxiter: 5,
        }
    }
}

impl From<&ir::Train> for Hyper {
    /// The model's `train` declaration; the language has no syntax for Adam's β₁, β₂ and ε, so
    /// they keep their defaults.
    fn from(train: &ir::Train) -> Hyper {
        Hyper {
            lr: train.lr,
            momentum: train.momentum,
            nesterov: train.nesterov,
            weight_decay: train.weight_decay,
            history: train.history,
            lr_decay: train.lr_decay,
            decay_every: train.decay_every,
            rho: train.rho,
            reg: train.reg,
            maxiter: train.maxiter,
            ..Hyper::default()
        }
    }
}

impl Hyper {
    /// The learning rate in force during `epoch` (counted from 0); see [`lr_at`].
    pub fn lr_at(&self, epoch: usize) -> f64 {
        lr_at(self.lr, self.lr_decay, self.decay_every, epoch)
    }
}

/// The step-decay schedule `base_lr · lr_decay^⌊epoch / decay_every⌋`, epochs counted from 0;
/// `decay_every = 0` never decays.
pub fn lr_at(base_lr: f64, lr_decay: f64, decay_every: usize, epoch: usize) -> f64 {
    if decay_every == 0 {
        return base_lr;
    }
    base_lr * powu(lr_decay, (epoch / decay_every) as u64)
}

/// `x^n` by binary exponentiation: a fixed sequence of exactly rounded multiplications, so the
/// same bits on every platform (unlike `f64::powi`, whose precision is unspecified).
pub fn powu(x: f64, n: u64) -> f64 {
    let mut result = 1.0;
    let mut base = x;
    let mut n = n;
    while n > 0 {
        if n & 1 == 1 {
            result *= base;
        }
        base *= base;
        n >>= 1;
    }
    result
}

/// The state of one optimizer, as a training checkpoint stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerState {
    /// Adam / AdamW.
    Adam(Adam),
    /// SGD with optional (Nesterov) momentum.
    Sgd(Sgd),
    /// L-BFGS with a strong Wolfe line search.
    Lbfgs(Lbfgs),
    /// The method of successive approximations (settings only; see [`Msa`]).
    Msa(Msa),
}

/// [`OptimizerState::step`] was called on an optimizer that evaluates its own objective:
/// L-BFGS ([`Lbfgs::step`]) or MSA (`train::msa`). Holds the optimizer's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedsObjective(pub &'static str);

impl std::fmt::Display for NeedsObjective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} evaluates the objective itself and cannot step from a gradient",
            self.0
        )
    }
}

impl std::error::Error for NeedsObjective {}

impl OptimizerState {
    /// A fresh optimizer of kind `kind` for `n` parameters.
    pub fn new(kind: ir::Optimizer, n: usize, hyper: &Hyper) -> OptimizerState {
        match kind {
            ir::Optimizer::Adam => OptimizerState::Adam(Adam::new(n, hyper)),
            ir::Optimizer::Sgd => OptimizerState::Sgd(Sgd::new(n, hyper)),
            ir::Optimizer::Lbfgs => OptimizerState::Lbfgs(Lbfgs::new(hyper.history)),
            ir::Optimizer::Msa => OptimizerState::Msa(Msa::new(hyper)),
        }
    }

    /// Whether this state (read from a checkpoint) fits `n` parameter values: every buffer the
    /// update reads has one value per parameter. A checkpoint edited by hand or written for
    /// another model is refused here rather than panicking in `step`.
    pub fn check_len(&self, n: usize) -> Result<(), String> {
        match self {
            OptimizerState::Adam(adam) => adam.check_len(n),
            OptimizerState::Sgd(sgd) => sgd.check_len(n),
            OptimizerState::Lbfgs(lbfgs) => lbfgs.check_len(n),
            OptimizerState::Msa(_) => Ok(()),
        }
    }

    /// The optimizer's name as a `train` declaration spells it.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerState::Adam(_) => "adam",
            OptimizerState::Sgd(_) => "sgd",
            OptimizerState::Lbfgs(_) => "lbfgs",
            OptimizerState::Msa(_) => "msa",
        }
    }

    /// One first-order update of `params` with the mini-batch gradient `grad` at learning rate
    /// `lr`; L-BFGS and MSA refuse (they evaluate their own objectives).
    pub fn step(
        &mut self,
        params: &mut [f64],
        grad: &[f64],
        lr: f64,
    ) -> Result<(), NeedsObjective> {
        match self {
            OptimizerState::Adam(adam) => adam.step(params, grad, lr),
            OptimizerState::Sgd(sgd) => sgd.step(params, grad, lr),
            OptimizerState::Lbfgs(_) => return Err(NeedsObjective("L-BFGS")),
            OptimizerState::Msa(_) => return Err(NeedsObjective("MSA")),
        }
        Ok(())
    }
}

/// Sequential dot product: a fixed summation order keeps the result reproducible.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y)
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_is_step_decay() {
        // 0.5 is a power of two, so every value is exact: 0.1 · 2⁻ᵏ.
        for epoch in 0..40 {
            let k = epoch / 3;
            let expected = 0.1 / (1u64 << k) as f64;
            assert_eq!(lr_at(0.1, 0.5, 3, epoch), expected, "epoch {epoch}");
        }
        // Epochs 0..9 use the base rate, 10..19 one decay, 20 two.
        assert_eq!(lr_at(2.0, 0.1, 10, 9), 2.0);
        assert!((lr_at(2.0, 0.1, 10, 10) - 0.2).abs() < 1e-15);
        assert!((lr_at(2.0, 0.1, 10, 25) - 0.02).abs() < 1e-16);
        // decay_every = 0 never decays, even with a decay factor set.
        assert_eq!(lr_at(0.3, 0.5, 0, 1_000_000), 0.3);
        let hyper = Hyper {
            lr: 1.0,
            lr_decay: 0.5,
            decay_every: 2,
            ..Hyper::default()
        };
        assert_eq!(hyper.lr_at(5), 0.25);
    }

    #[test]
    fn powu_matches_repeated_multiplication_on_exact_cases() {
        assert_eq!(powu(3.0, 0), 1.0);
        assert_eq!(powu(3.0, 13), 1_594_323.0);
        assert_eq!(powu(-2.0, 7), -128.0);
        assert_eq!(powu(0.5, 60), 1.0 / (1u64 << 60) as f64);
        // 0.9^t for Adam's bias correction: within rounding of the exact value.
        assert!((powu(0.9, 10) - 0.3486784401).abs() < 1e-15);
    }

    #[test]
    fn hyper_from_train_declaration() {
        let source = crate::diag::SourceFile::new(
            "t.node",
            "state x = 1\ndx/dt = -x\nschedule rk4(t = [0, 1], steps = 2)\n\
             train sgd(lr = 0.5, momentum = 0.8, nesterov = true, weight_decay = 0.01, \
             lr_decay = 0.5, decay_every = 4)\n",
        );
        let (model, diags) = crate::check_source(&source, &crate::sema::Overrides::default(), "t");
        assert!(diags.is_empty(), "{diags:?}");
        let train = model.train.as_ref().expect("train declaration");
        let hyper = Hyper::from(train);
        assert_eq!(hyper.lr, 0.5);
        assert_eq!(hyper.momentum, 0.8);
        assert!(hyper.nesterov);
        assert_eq!(hyper.weight_decay, 0.01);
        assert_eq!((hyper.lr_decay, hyper.decay_every), (0.5, 4));
        assert_eq!((hyper.beta1, hyper.beta2, hyper.eps), (0.9, 0.999, 1e-8));
    }

    /// A deterministic stream of f64 bit patterns covering all exponents.
    fn lcg_bits(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                f64::from_bits(state)
            })
            .filter(|x| x.is_finite())
            .collect()
    }

    #[test]
    fn f64_round_trips_through_serde_json_exactly() {
        let mut values = vec![
            0.1 + 0.2,
            0.1,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0, // subnormal
            f64::from_bits(1),
            f64::MAX,
            -f64::MAX,
            f64::EPSILON,
            1e-8,
            0.999,
            1.0 - 0.999,
            -0.0,
            std::f64::consts::PI,
            9007199254740993.0,
            f64::from_bits(0x000F_FFFF_FFFF_FFFF), // largest subnormal
        ];
        values.extend(lcg_bits(7, 20_000));
        // Random mantissas at the magnitudes parameters and moments take (2⁻⁶⁰ .. 2⁸).
        values.extend(lcg_bits(11, 20_000).iter().enumerate().map(|(i, x)| {
            let mantissa = x.to_bits() & ((1 << 52) - 1);
            let exponent = 1023 - 60 + (i as u64 % 69);
            f64::from_bits(mantissa | (exponent << 52))
        }));
        let json = serde_json::to_string(&values).unwrap();
        let back: Vec<f64> = serde_json::from_str(&json).unwrap();
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a:e} came back as {b:e}");
        }
    }

    /// A non-convex test loss with a distinct gradient per coordinate (the Rosenbrock chain).
    fn chain_rosenbrock(x: &[f64]) -> (f64, Vec<f64>) {
        let mut f = 0.0;
        let mut g = vec![0.0; x.len()];
        for i in 0..x.len() - 1 {
            let (a, b) = (x[i], x[i + 1]);
            f += (1.0 - a) * (1.0 - a) + 100.0 * (b - a * a) * (b - a * a);
            g[i] += -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[i + 1] += 200.0 * (b - a * a);
        }
        (f, g)
    }

    fn start() -> Vec<f64> {
        vec![-1.2, 1.0, 0.1 + 0.2, -0.7, 0.45]
    }

    /// First-order steps with a per-step learning rate from the schedule, so that the decay
    /// happens after the resume point.
    fn first_order_run(state: &mut OptimizerState, x: &mut [f64], steps: std::ops::Range<usize>) {
        for k in steps {
            let (_, g) = chain_rosenbrock(x);
            state.step(x, &g, lr_at(1e-3, 0.5, 3, k)).unwrap();
        }
    }

    fn round_trip(state: &OptimizerState) -> OptimizerState {
        let json = serde_json::to_string(state).unwrap();
        serde_json::from_str(&json).unwrap()
    }

    fn bits(x: &[f64]) -> Vec<u64> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn first_order_resume_is_bit_identical() {
        let hypers = [
            (ir::Optimizer::Adam, Hyper::default()),
            (
                ir::Optimizer::Adam,
                Hyper {
                    weight_decay: 0.01,
                    ..Hyper::default()
                },
            ),
            (
                ir::Optimizer::Sgd,
                Hyper {
                    momentum: 0.9,
                    weight_decay: 1e-3,
                    ..Hyper::default()
                },
            ),
            (
                ir::Optimizer::Sgd,
                Hyper {
                    momentum: 0.9,
                    nesterov: true,
                    ..Hyper::default()
                },
            ),
        ];
        for (kind, hyper) in hypers {
            let n = start().len();
            let mut straight = OptimizerState::new(kind, n, &hyper);
            let mut x_straight = start();
            first_order_run(&mut straight, &mut x_straight, 0..10);

            let mut first = OptimizerState::new(kind, n, &hyper);
            let mut x = start();
            first_order_run(&mut first, &mut x, 0..5);
            let x_json = serde_json::to_string(&x).unwrap();
            let mut resumed = round_trip(&first);
            assert_eq!(resumed, first);
            let mut x: Vec<f64> = serde_json::from_str(&x_json).unwrap();
            first_order_run(&mut resumed, &mut x, 5..10);

            assert_eq!(bits(&x), bits(&x_straight), "{kind:?} {hyper:?}");
            assert_eq!(resumed, straight, "{kind:?} {hyper:?}");
            // The run really moved: a resume that dropped the state would differ.
            assert_ne!(bits(&x), bits(&start()));
        }
    }

    #[test]
    fn resume_without_state_would_differ() {
        // Guards the test above: restarting Adam from fresh moments after 5 steps changes the
        // trajectory, so bit equality there is evidence that the state was carried over.
        let hyper = Hyper::default();
        let mut straight = OptimizerState::new(ir::Optimizer::Adam, 5, &hyper);
        let mut x_straight = start();
        first_order_run(&mut straight, &mut x_straight, 0..10);
        let mut first = OptimizerState::new(ir::Optimizer::Adam, 5, &hyper);
        let mut x = start();
        first_order_run(&mut first, &mut x, 0..5);
        let mut fresh = OptimizerState::new(ir::Optimizer::Adam, 5, &hyper);
        first_order_run(&mut fresh, &mut x, 5..10);
        assert_ne!(bits(&x), bits(&x_straight));
    }

    #[test]
    fn lbfgs_resume_is_bit_identical() {
        let mut objective =
            |x: &[f64]| -> Result<(f64, Vec<f64>), String> { Ok(chain_rosenbrock(x)) };
        let run = |state: &mut OptimizerState,
                   x: &mut Vec<f64>,
                   steps: usize,
                   objective: &mut Objective<'_, String>| {
            let OptimizerState::Lbfgs(lbfgs) = state else {
                unreachable!()
            };
            (0..steps)
                .map(|_| lbfgs.step(x, objective).unwrap().evals)
                .sum::<usize>()
        };
        let hyper = Hyper {
            history: 3,
            ..Hyper::default()
        };
        let mut straight = OptimizerState::new(ir::Optimizer::Lbfgs, 5, &hyper);
        let mut x_straight = start();
        let evals_straight = run(&mut straight, &mut x_straight, 10, &mut objective);

        let mut first = OptimizerState::new(ir::Optimizer::Lbfgs, 5, &hyper);
        let mut x = start();
        let mut evals = run(&mut first, &mut x, 5, &mut objective);
        let mut x: Vec<f64> = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
        let mut resumed = round_trip(&first);
        assert_eq!(resumed, first);
        evals += run(&mut resumed, &mut x, 5, &mut objective);

        assert_eq!(bits(&x), bits(&x_straight));
        assert_eq!(resumed, straight);
        // The loss and gradient travelled with the state: no re-evaluation on resume.
        assert_eq!(evals, evals_straight);
        // L-BFGS steps through its own objective, not a given gradient.
        assert_eq!(
            resumed.step(&mut x, &[0.0; 5], 1.0),
            Err(NeedsObjective("L-BFGS"))
        );
    }

    #[test]
    fn msa_state_round_trips_and_refuses_a_gradient_step() {
        let source = crate::diag::SourceFile::new(
            "t.node",
            "param a per layer = 1\nstate x = 1\ndx/dt = a * x\n\
             schedule euler(t = [0, 1], steps = 4)\ncost terminal = x * x\n\
             train msa(rho = 0.5, reg = 1e-3, maxiter = 7, epochs = 3)\n",
        );
        let (model, diags) = crate::check_source(&source, &crate::sema::Overrides::default(), "t");
        assert!(diags.is_empty(), "{diags:?}");
        let hyper = Hyper::from(model.train.as_ref().expect("train declaration"));
        let mut state = OptimizerState::new(ir::Optimizer::Msa, 4, &hyper);
        let OptimizerState::Msa(msa) = &state else {
            panic!("{state:?}")
        };
        assert_eq!(
            (msa.rho, msa.reg, msa.maxiter, msa.history),
            (0.5, 1e-3, 7, 10)
        );
        assert_eq!(round_trip(&state), state);
        let mut x = [1.0; 4];
        assert_eq!(
            state.step(&mut x, &[0.0; 4], 1.0),
            Err(NeedsObjective("MSA"))
        );
        assert_eq!(x, [1.0; 4]);
    }
}
