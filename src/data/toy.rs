//! The seeded generators: the 2-D toy sets of the literature, `normal` and `uniform`.
//!
//! Each function draws from one [`Rng::new`]`(seed)` in a fixed, documented order, and computes
//! cosines, sines and logarithms with the `libm` crate, so a seed gives the same bits on every
//! machine. `docs/data.md` writes out each definition, its source and its order of draws; the
//! comments here name the source line each step follows.

use std::f64::consts::PI;

use super::Dataset;
use crate::rng::Rng;

/// numpy's `linspace(start, stop, num, endpoint)`, element `i`: `i * step + start` with
/// `step = (stop - start) / (num - 1)` (or `/ num` without the endpoint), and the endpoint set
/// exactly. A single point is `start`.
fn linspace(start: f64, stop: f64, num: usize, endpoint: bool, i: usize) -> f64 {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    if div == 0 {
        return start;
    }
    if endpoint && i == num - 1 {
        return stop;
    }
    let step = (stop - start) / div as f64;
    i as f64 * step + start
}

/// Two classes of 2-D points in generation order, then sklearn's `shuffle=True`: the rows are
/// permuted by [`Rng::permutation`] before any noise is drawn.
fn shuffled(points: Vec<[f64; 2]>, labels: Vec<f64>, rng: &mut Rng) -> (Vec<[f64; 2]>, Vec<f64>) {
    let order = rng.permutation(points.len());
    (
        order.iter().map(|&i| points[i]).collect(),
        order.iter().map(|&i| labels[i]).collect(),
    )
}

/// Adds independent `N(0, noise²)` to every coordinate, row by row (x then y), as sklearn's
/// `X += generator.normal(scale=noise, size=X.shape)`. Draws nothing when `noise` is 0.
fn add_noise(points: &mut [[f64; 2]], noise: f64, rng: &mut Rng) {
    if noise == 0.0 {
        return;
    }
    for p in points.iter_mut() {
        for c in p.iter_mut() {
            *c += rng.normal(0.0, noise);
        }
    }
}

fn dataset(points: Vec<[f64; 2]>, labels: Option<Vec<f64>>) -> Dataset {
    Dataset::samples(
        points.len(),
        2,
        points.into_iter().flatten().collect(),
        labels,
    )
}

/// scikit-learn's `make_circles(n, shuffle=True, noise, factor)`: `n / 2` (rounded down)
/// points on the unit circle labelled 0, the other `n - n / 2` on the circle of radius
/// `factor` labelled 1, each circle at the angles `linspace(0, 2π, m, endpoint=False)`;
/// then shuffled, then `N(0, noise²)` added to each coordinate.
pub fn circles(n: usize, noise: f64, seed: u64, factor: f64) -> Dataset {
    let mut rng = Rng::new(seed);
    let n_out = n / 2;
    let n_in = n - n_out;
    let mut points = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n_out {
        let a = linspace(0.0, 2.0 * PI, n_out, false, i);
        points.push([libm::cos(a), libm::sin(a)]);
        labels.push(0.0);
    }
    for i in 0..n_in {
        let a = linspace(0.0, 2.0 * PI, n_in, false, i);
        points.push([libm::cos(a) * factor, libm::sin(a) * factor]);
        labels.push(1.0);
    }
    let (mut points, labels) = shuffled(points, labels, &mut rng);
    add_noise(&mut points, noise, &mut rng);
    dataset(points, Some(labels))
}

/// scikit-learn's `make_moons(n, shuffle=True, noise)`: `n / 2` points `(cos a, sin a)`
/// labelled 0 and `n - n / 2` points `(1 - cos a, 1 - sin a - 0.5)` labelled 1, each half at
/// `a = linspace(0, π, m)` (endpoints included); then shuffled, then noise.
pub fn moons(n: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let n_out = n / 2;
    let n_in = n - n_out;
    let mut points = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n_out {
        let a = linspace(0.0, PI, n_out, true, i);
        points.push([libm::cos(a), libm::sin(a)]);
        labels.push(0.0);
    }
    for i in 0..n_in {
        let a = linspace(0.0, PI, n_in, true, i);
        points.push([1.0 - libm::cos(a), 1.0 - libm::sin(a) - 0.5]);
        labels.push(1.0);
    }
    let (mut points, labels) = shuffled(points, labels, &mut rng);
    add_noise(&mut points, noise, &mut rng);
    dataset(points, Some(labels))
}

/// FFJORD's `2spirals` (`lib/toy_data.py`) with the noise level as a parameter and the arms as
/// classes. With `m = n - n / 2`: draw `m` angles `θ = sqrt(u) · 540 · 2π / 360` (up to 540°),
/// then `m` jitters `jx = 0.5 u`, then `m` jitters `jy = 0.5 u`; arm 0 is
/// `d = (-cos θ · θ + jx, sin θ · θ + jy) / 3` (all `m` points, label 0), arm 1 is `-d` for the
/// first `n / 2` of them (label 1), in that order (FFJORD does not shuffle); then
/// `N(0, noise²)` is added to each coordinate row by row (FFJORD fixes `noise = 0.1`).
pub fn spirals(n: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let m = n - n / 2;
    // n = np.sqrt(rng.rand(batch_size // 2, 1)) * 540 * (2 * np.pi) / 360
    let theta: Vec<f64> = (0..m)
        .map(|_| rng.unit().sqrt() * 540.0 * (2.0 * PI) / 360.0)
        .collect();
    // d1x = -np.cos(n) * n + rng.rand(batch_size // 2, 1) * 0.5, then d1y likewise.
    let jx: Vec<f64> = (0..m).map(|_| rng.unit() * 0.5).collect();
    let jy: Vec<f64> = (0..m).map(|_| rng.unit() * 0.5).collect();
    let arm: Vec<[f64; 2]> = (0..m)
        .map(|i| {
            let t = theta[i];
            [-libm::cos(t) * t + jx[i], libm::sin(t) * t + jy[i]]
        })
        .collect();
    // x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    let mut points: Vec<[f64; 2]> = arm.iter().map(|d| [d[0] / 3.0, d[1] / 3.0]).collect();
    points.extend(arm[..n / 2].iter().map(|d| [-d[0] / 3.0, -d[1] / 3.0]));
    let mut labels = vec![0.0; m];
    labels.resize(n, 1.0);
    // x += rng.randn(*x.shape) * 0.1
    add_noise(&mut points, noise, &mut rng);
    dataset(points, Some(labels))
}

/// FFJORD's `8gaussians` with the component standard deviation as a parameter: for each point,
/// draw `z0`, `z1` standard normal, then a center index `below(8)`, and give
/// `(noise · z + 4 · c) / 1.414` with the centers `(1, 0), (-1, 0), (0, 1), (0, -1),
/// (s, s), (s, -s), (-s, s), (-s, -s)`, `s = 1/√2`, in that order. FFJORD's set is
/// `noise = 0.5`. No labels.
pub fn gaussians(n: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let s = 1.0 / 2f64.sqrt();
    let centers = [
        (1.0, 0.0),
        (-1.0, 0.0),
        (0.0, 1.0),
        (0.0, -1.0),
        (s, s),
        (s, -s),
        (-s, s),
        (-s, -s),
    ];
    let scale = 4.0;
    let mut points = Vec::with_capacity(n);
    for _ in 0..n {
        // point = rng.randn(2) * 0.5; idx = rng.randint(8); point += center; dataset /= 1.414
        let z0 = rng.normal(0.0, 1.0);
        let z1 = rng.normal(0.0, 1.0);
        let (cx, cy) = centers[rng.below(8)];
        points.push([
            (z0 * noise + scale * cx) / 1.414,
            (z1 * noise + scale * cy) / 1.414,
        ]);
    }
    dataset(points, None)
}

/// FFJORD's `checkerboard`, plus optional noise: draw `n` values `x1 = 4u - 2`, then `n`
/// values `u`, then `n` bits `b = below(2)`; `x2 = u - 2b + (floor(x1) mod 2)` (the modulo
/// is non-negative, as numpy's); the point is `(2 x1, 2 x2)`, so it lies in `[-4, 4)²` on the
/// squares of a 4 × 4 board whose colour matches. FFJORD adds no noise; `noise > 0` adds
/// `N(0, noise²)` to each coordinate afterwards. No labels.
pub fn checkerboard(n: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    // x1 = rng.rand(batch_size) * 4 - 2
    let x1: Vec<f64> = (0..n).map(|_| rng.unit() * 4.0 - 2.0).collect();
    // x2_ = rng.rand(batch_size) - rng.randint(0, 2, batch_size) * 2
    let u: Vec<f64> = (0..n).map(|_| rng.unit()).collect();
    let b: Vec<f64> = (0..n).map(|_| rng.below(2) as f64).collect();
    let mut points: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            // x2 = x2_ + (np.floor(x1) % 2); return concatenate(...) * 2
            let x2 = (u[i] - b[i] * 2.0) + x1[i].floor().rem_euclid(2.0);
            [x1[i] * 2.0, x2 * 2.0]
        })
        .collect();
    add_noise(&mut points, noise, &mut rng);
    dataset(points, None)
}

/// The augmented-neural-ODE set (Dupont et al. 2019, `ConcentricSphere` in 2-D) as the spec
/// defines it, uniform in area: `n - n / 2` points of class 1 in the disc `r ≤ 0.5`
/// (`r = 0.5 sqrt(u)`), then `n / 2` points of class 0 in the ring `1 ≤ r ≤ 1.5`
/// (`r = sqrt(1 + 1.25 u)`), each point drawing `u` for its radius then `v` for its angle
/// `2πv`; then shuffled, then noise, as `circles`.
pub fn annulus(n: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let n_ring = n / 2;
    let n_disc = n - n_ring;
    let mut points = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let point = |r: f64, rng: &mut Rng| {
        let angle = 2.0 * PI * rng.unit();
        [r * libm::cos(angle), r * libm::sin(angle)]
    };
    for _ in 0..n_disc {
        let r = 0.5 * rng.unit().sqrt();
        points.push(point(r, &mut rng));
        labels.push(1.0);
    }
    for _ in 0..n_ring {
        // Uniform in area between radii 1 and 1.5: r² uniform in [1, 2.25].
        let r = (1.0 + 1.25 * rng.unit()).sqrt();
        points.push(point(r, &mut rng));
        labels.push(0.0);
    }
    let (mut points, labels) = shuffled(points, labels, &mut rng);
    add_noise(&mut points, noise, &mut rng);
    dataset(points, Some(labels))
}

/// `n` samples of `dim` independent normals, `x[i][j] = mean[j] + std · z`, drawn row by row.
/// `mean` must have `dim` entries. No labels.
pub fn normal(n: usize, dim: usize, seed: u64, mean: &[f64], std: f64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut inputs = Vec::with_capacity(n * dim);
    for _ in 0..n {
        for m in mean.iter().take(dim) {
            inputs.push(rng.normal(*m, std));
        }
    }
    Dataset::samples(n, dim, inputs, None)
}

/// `n` samples of `dim` independent uniforms on `[lo, hi)`, drawn row by row. Labels, if any,
/// are computed by the caller ([`super::generate`] evaluates the model's `label = EXPR`).
pub fn uniform(n: usize, dim: usize, lo: f64, hi: f64, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let inputs = (0..n * dim).map(|_| rng.uniform(lo, hi)).collect();
    Dataset::samples(n, dim, inputs, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy() {
        // np.linspace(0, 1, 5) = [0, .25, .5, .75, 1]; endpoint=False gives [0, .2, .4, .6, .8].
        let with: Vec<f64> = (0..5).map(|i| linspace(0.0, 1.0, 5, true, i)).collect();
        assert_eq!(with, [0.0, 0.25, 0.5, 0.75, 1.0]);
        let without: Vec<f64> = (0..5).map(|i| linspace(0.0, 1.0, 5, false, i)).collect();
        assert_eq!(without, [0.0, 0.2, 0.4, 0.6000000000000001, 0.8]);
        assert_eq!(linspace(0.0, PI, 1, true, 0), 0.0);
        assert_eq!(linspace(0.0, PI, 2, true, 1), PI);
    }

    #[test]
    fn checkerboard_modulo_is_non_negative() {
        assert_eq!((-1.0f64).rem_euclid(2.0), 1.0);
        assert_eq!((-2.0f64).rem_euclid(2.0), 0.0);
    }
}
