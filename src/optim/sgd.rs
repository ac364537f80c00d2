//! Stochastic gradient descent with heavy-ball or Nesterov momentum, in PyTorch's convention
//! (`torch.optim.SGD` with dampening 0).

use serde::{Deserialize, Serialize};

use super::Hyper;

/// SGD's state: hyperparameters and the momentum buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    /// Momentum μ (0: plain SGD, no buffer is used).
    pub momentum: f64,
    /// Nesterov momentum instead of heavy-ball.
    pub nesterov: bool,
    /// L2 weight decay λ, added to the gradient as λθ.
    pub weight_decay: f64,
    /// Momentum buffer v (zero before the first step).
    velocity: Vec<f64>,
}

impl Sgd {
    /// A fresh SGD for `n` parameters with `hyper`'s momentum, Nesterov flag and weight decay.
    pub fn new(n: usize, hyper: &Hyper) -> Sgd {
        Sgd {
            momentum: hyper.momentum,
            nesterov: hyper.nesterov,
            weight_decay: hyper.weight_decay,
            velocity: vec![0.0; n],
        }
    }

    /// Whether this state (read from a checkpoint) fits `n` parameters: the momentum buffer
    /// must hold one value per parameter, or [`Sgd::step`] would panic.
    pub fn check_len(&self, n: usize) -> Result<(), String> {
        if self.velocity.len() != n {
            return Err(format!(
                "SGD's momentum buffer holds {} values, but the model has {n} parameter values",
                self.velocity.len()
            ));
        }
        Ok(())
    }

    /// One update of `params` with gradient `grad` and learning rate `lr`:
    ///
    /// ```text
    /// g ← g + λ θ                      (L2 weight decay, coupled)
    /// v ← μ v + g
    /// θ ← θ − lr v                     heavy-ball
    /// θ ← θ − lr (g + μ v)             Nesterov
    /// ```
    ///
    /// v starts at zero, so the first step sets v = g exactly as PyTorch's buffer
    /// initialisation does.
    ///
    /// # Panics
    ///
    /// If `params` or `grad` do not have the length the optimizer was made for.
    pub fn step(&mut self, params: &mut [f64], grad: &[f64], lr: f64) {
        assert_eq!(
            params.len(),
            self.velocity.len(),
            "SGD: parameter count changed"
        );
        assert_eq!(grad.len(), self.velocity.len(), "SGD: gradient length");
        for i in 0..params.len() {
            let mut g = grad[i];
            if self.weight_decay != 0.0 {
                g += self.weight_decay * params[i];
            }
            let direction = if self.momentum == 0.0 {
                g
            } else {
                let v = self.momentum * self.velocity[i] + g;
                self.velocity[i] = v;
                if self.nesterov {
                    g + self.momentum * v
                } else {
                    v
                }
            };
            params[i] -= lr * direction;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgd(momentum: f64, nesterov: bool, weight_decay: f64) -> Sgd {
        Sgd::new(
            1,
            &Hyper {
                momentum,
                nesterov,
                weight_decay,
                ..Hyper::default()
            },
        )
    }

    #[test]
    fn heavy_ball_follows_the_linear_recurrence_closed_form() {
        // On f = ½ a x², v ← μv + a x, x ← x − lr v gives the two-term recurrence
        // x_{k+1} = (1 + μ − lr·a) x_k − μ x_{k−1},  x₀ = 1, x₁ = 1 − lr·a,
        // whose solution is A r₁ᵏ + B r₂ᵏ with r₁,₂ the roots of r² − (1 + μ − lr·a) r + μ.
        let (a, lr, mu) = (1.0, 0.1, 0.25);
        let trace: f64 = 1.0 + mu - lr * a; // 1.15
        let disc = (trace * trace - 4.0 * mu).sqrt(); // real, distinct roots
        let (r1, r2) = ((trace + disc) / 2.0, (trace - disc) / 2.0);
        let (x0, x1) = (1.0, 1.0 - lr * a);
        let coef_b = (x1 - r1 * x0) / (r2 - r1);
        let coef_a = x0 - coef_b;
        let mut opt = sgd(mu, false, 0.0);
        let mut x = [x0];
        for k in 1..=40 {
            let g = [a * x[0]];
            opt.step(&mut x, &g, lr);
            let expected = coef_a * r1.powi(k) + coef_b * r2.powi(k);
            assert!(
                (x[0] - expected).abs() <= 1e-13 * expected.abs(),
                "step {k}: {} vs {expected}",
                x[0]
            );
        }
    }

    #[test]
    fn nesterov_looks_ahead_by_mu_v() {
        // f = ½ x², x₀ = 1, lr = 0.1, μ = 0.5.
        // Heavy-ball: v₁ = 1, x₁ = 0.9;  v₂ = 0.5 + 0.9 = 1.4,  x₂ = 0.9 − 0.14 = 0.76.
        // Nesterov:   v₁ = 1, x₁ = 1 − 0.1·(1 + 0.5) = 0.85;
        //             v₂ = 0.5 + 0.85 = 1.35, x₂ = 0.85 − 0.1·(0.85 + 0.675) = 0.6975.
        let run = |nesterov| {
            let mut opt = sgd(0.5, nesterov, 0.0);
            let mut x = [1.0];
            let mut xs = Vec::new();
            for _ in 0..2 {
                let g = [x[0]];
                opt.step(&mut x, &g, 0.1);
                xs.push(x[0]);
            }
            xs
        };
        let heavy = run(false);
        let nesterov = run(true);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-15;
        assert!(near(heavy[0], 0.9) && near(heavy[1], 0.76), "{heavy:?}");
        assert!(
            near(nesterov[0], 0.85) && near(nesterov[1], 0.6975),
            "{nesterov:?}"
        );
    }

    #[test]
    fn plain_sgd_and_l2_weight_decay() {
        // No momentum: θ − lr·g. Weight decay adds λθ to g (coupled, PyTorch's convention):
        // θ = 2, g = 1, λ = 0.5: g' = 2, θ' = 2 − 0.25·2 = 1.5.
        let mut opt = sgd(0.0, false, 0.0);
        let mut x = [2.0];
        opt.step(&mut x, &[1.0], 0.25);
        assert_eq!(x, [1.75]);
        let mut opt = sgd(0.0, false, 0.5);
        let mut x = [2.0];
        opt.step(&mut x, &[1.0], 0.25);
        assert_eq!(x, [1.5]);
        // With momentum the decayed gradient enters the buffer: second step on g = 0,
        // θ₁ = 1.5: g' = 0.75, v = 0.9·2 + 0.75 = 2.55, θ₂ = 1.5 − 0.25·2.55 = 0.8625.
        let mut opt = sgd(0.9, false, 0.5);
        let mut x = [2.0];
        opt.step(&mut x, &[1.0], 0.25);
        opt.step(&mut x, &[0.0], 0.25);
        assert!((x[0] - 0.8625).abs() < 1e-15, "{x:?}");
    }
}
