//! Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 1)
//! with decoupled weight decay (AdamW; Loshchilov & Hutter, "Decoupled Weight Decay
//! Regularization", ICLR 2019).

use serde::{Deserialize, Serialize};

use super::{powu, Hyper};

/// Adam's state: hyperparameters, the step count and both moment estimates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// First-moment decay β₁.
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// ε added to √v̂.
    pub eps: f64,
    /// Decoupled weight decay λ (0: plain Adam).
    pub weight_decay: f64,
    /// Steps taken so far (Algorithm 1's t).
    t: u64,
    /// Biased first-moment estimate m.
    m: Vec<f64>,
    /// Biased second raw-moment estimate v.
    v: Vec<f64>,
}

impl Adam {
    /// A fresh Adam for `n` parameters (moments zero, t = 0) with `hyper`'s β₁, β₂, ε and weight
    /// decay.
    pub fn new(n: usize, hyper: &Hyper) -> Adam {
        Adam {
            beta1: hyper.beta1,
            beta2: hyper.beta2,
            eps: hyper.eps,
            weight_decay: hyper.weight_decay,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// Whether this state (read from a checkpoint) fits `n` parameters: both moments must hold
    /// one value per parameter, or [`Adam::step`] would panic.
    pub fn check_len(&self, n: usize) -> Result<(), String> {
        for (name, moment) in [("first moment m", &self.m), ("second moment v", &self.v)] {
            if moment.len() != n {
                return Err(format!(
                    "Adam's {name} holds {} values, but the model has {n} parameter values",
                    moment.len()
                ));
            }
        }
        Ok(())
    }

    /// One update of `params` with gradient `grad` and learning rate (step size α) `lr`:
    ///
    /// ```text
    /// t ← t + 1
    /// m ← β₁ m + (1 − β₁) g          m̂ = m / (1 − β₁ᵗ)
    /// v ← β₂ v + (1 − β₂) g²         v̂ = v / (1 − β₂ᵗ)
    /// θ ← θ − lr · (m̂ / (√v̂ + ε) + λ θ)
    /// ```
    ///
    /// The weight-decay term uses the parameters before this step and is scaled by the
    /// learning rate, as PyTorch's `AdamW` does (the paper scales λ by the schedule
    /// multiplier ηₜ instead; with `lr_at` the two differ only by the constant base rate).
    /// Being decoupled, it never enters m or v, so it is not rescaled by √v̂.
    ///
    /// # Panics
    ///
    /// If `params` or `grad` do not have the length the optimizer was made for: that is a bug
    /// in the caller, not a condition of the data.
    pub fn step(&mut self, params: &mut [f64], grad: &[f64], lr: f64) {
        assert_eq!(params.len(), self.m.len(), "Adam: parameter count changed");
        assert_eq!(grad.len(), self.m.len(), "Adam: gradient length");
        self.t += 1;
        // Recomputed from t rather than carried as running products, so a checkpoint needs
        // only the integer count.
        let correction1 = 1.0 - powu(self.beta1, self.t);
        let correction2 = 1.0 - powu(self.beta2, self.t);
        for i in 0..params.len() {
            let g = grad[i];
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * g;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * (g * g);
            let m_hat = self.m[i] / correction1;
            let v_hat = self.v[i] / correction2;
            let theta = params[i];
            params[i] =
                theta - lr * (m_hat / (v_hat.sqrt() + self.eps) + self.weight_decay * theta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adam(n: usize) -> Adam {
        Adam::new(n, &Hyper::default())
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn first_step_moves_by_lr_times_sign_scaled() {
        // Bias correction makes m̂ = g and v̂ = g² after one step, so each coordinate moves by
        // lr·g/(|g| + ε): almost exactly lr against the gradient's sign, whatever its size.
        let grad = [3.0, -0.25, 1e-3, -7e5, 0.1 + 0.2];
        let start = [1.0, 2.0, -3.0, 0.5, 0.0];
        let mut params = start;
        let lr = 0.01;
        let mut opt = adam(grad.len());
        opt.step(&mut params, &grad, lr);
        for i in 0..grad.len() {
            let g: f64 = grad[i];
            let expected = start[i] - lr * g / (g.abs() + 1e-8);
            assert!(
                close(params[i], expected, 1e-15),
                "coordinate {i}: {} vs {expected}",
                params[i]
            );
            // Not the raw gradient step: the move is lr in size regardless of |g|.
            assert!(close((params[i] - start[i]).abs(), lr, 1e-5 / g.abs()));
        }
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn two_steps_by_hand() {
        // g₁ = 1, g₂ = 2 with β₁ = 0.9, β₂ = 0.999:
        // m₂ = 0.9·0.1 + 0.1·2 = 0.29,           m̂₂ = 0.29 / (1 − 0.81) = 29/19
        // v₂ = 0.999·0.001 + 0.001·4 = 0.004999, v̂₂ = 0.004999 / (1 − 0.998001) = 4999/1999
        let lr = 0.1;
        let mut params = [5.0];
        let mut opt = adam(1);
        opt.step(&mut params, &[1.0], lr);
        let after_one = 5.0 - lr * 1.0 / (1.0 + 1e-8);
        assert!(close(params[0], after_one, 1e-15));
        opt.step(&mut params, &[2.0], lr);
        let m_hat: f64 = 29.0 / 19.0;
        let v_hat: f64 = 4999.0 / 1999.0;
        let expected = after_one - lr * m_hat / (v_hat.sqrt() + 1e-8);
        assert!(
            close(params[0], expected, 1e-14),
            "{} vs {expected}",
            params[0]
        );
    }

    #[test]
    fn decoupled_weight_decay() {
        let hyper = Hyper {
            weight_decay: 0.5,
            ..Hyper::default()
        };
        // A zero gradient leaves m = v = 0, so only the decay acts: θ(1 − lr·λ).
        let mut opt = Adam::new(2, &hyper);
        let mut params = [2.0, -4.0];
        opt.step(&mut params, &[0.0, 0.0], 0.1);
        assert_eq!(params, [2.0 - 0.1 * 0.5 * 2.0, -4.0 + 0.1 * 0.5 * 4.0]);
        // With a gradient, decay and Adam's move add: θ − lr·(g/(|g| + ε) + λθ). The decay is
        // not divided by √v̂ (which coupled L2 regularisation would be).
        let mut opt = Adam::new(1, &hyper);
        let mut params = [3.0];
        opt.step(&mut params, &[100.0], 0.1);
        let expected = 3.0 - 0.1 * (100.0 / (100.0 + 1e-8) + 0.5 * 3.0);
        assert!(close(params[0], expected, 1e-15), "{}", params[0]);
    }

    #[test]
    fn converges_on_a_convex_quadratic() {
        // f = ½ Σ aᵢ (xᵢ − cᵢ)², minimum at c; a decaying step lets Adam settle instead of
        // hovering at a distance of order lr.
        let a = [1.0, 10.0, 100.0];
        let c = [1.0, -2.0, 0.5];
        let mut x = [0.0; 3];
        let mut opt = adam(3);
        for k in 0..3000 {
            let g: Vec<f64> = (0..3).map(|i| a[i] * (x[i] - c[i])).collect();
            let lr = super::super::lr_at(0.1, 0.5, 200, k);
            opt.step(&mut x, &g, lr);
        }
        for i in 0..3 {
            assert!((x[i] - c[i]).abs() < 1e-6, "x = {x:?}");
        }
    }
}
