//! Solver tests against independent references: closed forms, the high-precision solutions in
//! `tests/data/reference/`, observed convergence orders, published work counts, and bit-identity
//! across thread counts. Test problems are plain closures over structure-of-arrays blocks.

use super::*;
use std::sync::Mutex;

/// A [`System`] made of closures: `f(t, y, dy)` over a block (the width is `t.len()`) and
/// `jac(t, y, jac)` for one sample.
struct Closure<F, J> {
    dim: usize,
    f: F,
    jac: J,
    breakpoints: Vec<f64>,
    autonomous: bool,
    lm: f64,
}

impl<F, J> System for Closure<F, J>
where
    F: Fn(&[f64], &[f64], &mut [f64]) + Sync,
    J: Fn(f64, &[f64], &mut [f64]) + Sync,
{
    type Workspace = ();
    fn workspace(&self, _samples: std::ops::Range<usize>) {}
    fn dim(&self) -> usize {
        self.dim
    }
    fn rhs(&self, t: &[f64], y: &[f64], dy: &mut [f64], _: &mut ()) {
        (self.f)(t, y, dy)
    }
    fn jacobian(&self, t: f64, y: &[f64], jac: &mut [f64], _: &mut ()) {
        (self.jac)(t, y, jac)
    }
    fn breakpoints(&self) -> Vec<f64> {
        self.breakpoints.clone()
    }
    fn lm_coefficient(&self, _t: f64) -> f64 {
        self.lm
    }
    fn is_autonomous(&self) -> bool {
        self.autonomous
    }
}

fn system<F, J>(dim: usize, autonomous: bool, f: F, jac: J) -> Closure<F, J>
where
    F: Fn(&[f64], &[f64], &mut [f64]) + Sync,
    J: Fn(f64, &[f64], &mut [f64]) + Sync,
{
    Closure {
        dim,
        f,
        jac,
        breakpoints: Vec::new(),
        autonomous,
        lm: 0.0,
    }
}

/// x' = −0.5 x.
fn decay() -> impl System {
    system(
        1,
        true,
        |_t, y, dy| dy.iter_mut().zip(y).for_each(|(d, &x)| *d = -0.5 * x),
        |_t, _y, j| j[0] = -0.5,
    )
}

/// y' = −y + sin t; with y(0) = 1, y = 1.5 e^(−t) + (sin t − cos t)/2.
fn forced() -> impl System {
    system(
        1,
        false,
        |t, y, dy| {
            for s in 0..t.len() {
                dy[s] = -y[s] + t[s].sin();
            }
        },
        |_t, _y, j| j[0] = -1.0,
    )
}

fn forced_exact(t: f64) -> f64 {
    1.5 * (-t).exp() + 0.5 * (t.sin() - t.cos())
}

/// Harmonic oscillator q' = p, p' = −q (position 0, momentum 1).
fn oscillator() -> impl System {
    system(
        2,
        true,
        |t, y, dy| {
            let w = t.len();
            for s in 0..w {
                dy[s] = y[w + s];
                dy[w + s] = -y[s];
            }
        },
        |_t, _y, j| j.copy_from_slice(&[0.0, 1.0, -1.0, 0.0]),
    )
}

/// Lorenz with σ = 10, ρ = 28, β = 8/3.
fn lorenz() -> impl System {
    system(
        3,
        true,
        |t, y, dy| {
            let w = t.len();
            for s in 0..w {
                let (x, yy, z) = (y[s], y[w + s], y[2 * w + s]);
                dy[s] = 10.0 * (yy - x);
                dy[w + s] = x * (28.0 - z) - yy;
                dy[2 * w + s] = x * yy - (8.0 / 3.0) * z;
            }
        },
        |_t, y, j| {
            j.copy_from_slice(&[
                -10.0,
                10.0,
                0.0,
                28.0 - y[2],
                -1.0,
                -y[0],
                y[1],
                y[0],
                -8.0 / 3.0,
            ])
        },
    )
}

/// Van der Pol with μ = 1.
fn vdp() -> impl System {
    system(
        2,
        true,
        |t, y, dy| {
            let w = t.len();
            for s in 0..w {
                let (x, v) = (y[s], y[w + s]);
                dy[s] = v;
                dy[w + s] = (1.0 - x * x) * v - x;
            }
        },
        |_t, y, j| j.copy_from_slice(&[0.0, 1.0, -2.0 * y[0] * y[1] - 1.0, 1.0 - y[0] * y[0]]),
    )
}

/// Robertson's kinetics, k1 = 0.04, k2 = 3e7, k3 = 1e4.
fn robertson() -> impl System {
    system(
        3,
        true,
        |t, y, dy| {
            let w = t.len();
            for s in 0..w {
                let (a, b, c) = (y[s], y[w + s], y[2 * w + s]);
                dy[s] = -0.04 * a + 1e4 * b * c;
                dy[w + s] = 0.04 * a - 1e4 * b * c - 3e7 * b * b;
                dy[2 * w + s] = 3e7 * b * b;
            }
        },
        |_t, y, j| {
            let (b, c) = (y[1], y[2]);
            j.copy_from_slice(&[
                -0.04,
                1e4 * c,
                1e4 * b,
                0.04,
                -1e4 * c - 6e7 * b,
                -1e4 * b,
                0.0,
                6e7 * b,
                0.0,
            ]);
        },
    )
}

/// y' = y², which blows up at t = 1/y0.
fn blowup() -> impl System {
    system(
        1,
        true,
        |_t, y, dy| dy.iter_mut().zip(y).for_each(|(d, &x)| *d = x * x),
        |_t, y, j| j[0] = 2.0 * y[0],
    )
}

/// Reads a field of a reference solution in `tests/data/reference/`.
fn reference(file: &str, path: &[&str]) -> Vec<f64> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reference/");
    let text = std::fs::read_to_string(format!("{dir}{file}"))
        .expect("tests/data/reference is part of the repository");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("reference files are JSON");
    for key in path {
        v = v[key].clone();
    }
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn opts(method: Method, t0: f64, t1: f64, rtol: f64, atol: f64) -> SolverOptions {
    SolverOptions {
        rtol,
        atol,
        ..SolverOptions::new(method, t0, t1)
    }
}

fn fixed(method: Method, t0: f64, t1: f64, steps: usize) -> SolverOptions {
    SolverOptions {
        steps: Some(steps),
        ..SolverOptions::new(method, t0, t1)
    }
}

fn assert_rel(got: &[f64], want: &[f64], tol: f64, what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs(),
            "{what}: component {i}: got {g}, want {w} (rel {:e})",
            (g - w).abs() / w.abs()
        );
    }
}

// ---------------------------------------------------------------- closed forms and references

#[test]
fn decay_dopri5_matches_closed_form_at_save_times() {
    let mut o = opts(Method::Dopri5, 0.0, 4.0, 1e-10, 1e-12);
    o.save = (0..=8).map(|k| 0.5 * k as f64).collect();
    let sol = solve_batch(&decay(), &o, &[2.0], 1).unwrap();
    let xs = reference("decay.json", &["x"]);
    assert_eq!(sol.t, reference("decay.json", &["t"]));
    for (k, &t) in sol.t.iter().enumerate() {
        let exact = 2.0 * (-0.5 * t).exp();
        // Interpolated save times carry the dense output's error, well below 1e-9 at rtol 1e-10.
        assert!(
            (sol.state(k, 0)[0] - exact).abs() <= 1e-9 * exact,
            "t = {t}"
        );
        assert!((sol.state(k, 0)[0] - xs[k]).abs() <= 1e-9 * xs[k]);
    }
    assert_eq!(sol.final_state(0)[0], sol.state(8, 0)[0]);
}

#[test]
fn lorenz_dopri5_matches_reference_with_hairers_work() {
    let sol = solve_batch(
        &lorenz(),
        &opts(Method::Dopri5, 0.0, 10.0, 1e-8, 1e-8),
        &[1.0, 1.0, 1.0],
        1,
    )
    .unwrap();
    // Chaos amplifies the 1e-8 local tolerance to ~1e-6 at t = 10 (reference README).
    assert_rel(
        sol.final_state(0),
        &reference("lorenz.json", &["y_end"]),
        1e-5,
        "lorenz dopri5",
    );
    let s = sol.stats;
    // Hairer's DOPRI5 takes 834 steps / 5006 evaluations on this problem.
    assert!((751..=917).contains(&s.steps), "{s:?}");
    assert_eq!(s.rhs_evals, 2 + 6 * (s.steps + s.rejected), "{s:?}");
}

#[test]
fn lorenz_tsit5_matches_reference() {
    let sol = solve_batch(
        &lorenz(),
        &opts(Method::Tsit5, 0.0, 10.0, 1e-8, 1e-8),
        &[1.0, 1.0, 1.0],
        1,
    )
    .unwrap();
    assert_rel(
        sol.final_state(0),
        &reference("lorenz.json", &["y_end"]),
        1e-5,
        "lorenz tsit5",
    );
}

#[test]
fn vdp_dopri5_matches_reference() {
    let sol = solve_batch(
        &vdp(),
        &opts(Method::Dopri5, 0.0, 20.0, 1e-8, 1e-8),
        &[2.0, 0.0],
        1,
    )
    .unwrap();
    assert_rel(
        sol.final_state(0),
        &reference("vdp.json", &["y_end"]),
        1e-5,
        "vdp dopri5",
    );
}

fn check_robertson(method: Method) -> Stats {
    let sol = solve_batch(
        &robertson(),
        &opts(method.clone(), 0.0, 1e5, 1e-6, 1e-10),
        &[1.0, 0.0, 0.0],
        1,
    )
    .unwrap();
    let y = sol.final_state(0);
    assert_rel(
        y,
        &reference("robertson.json", &["y_end"]),
        1e-5,
        method.name(),
    );
    // Every step conserves y1 + y2 + y3 up to rounding (the rhs sums to zero exactly).
    assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    sol.stats
}

#[test]
fn robertson_rodas4_matches_reference() {
    let s = check_robertson(Method::Rodas4);
    assert!(s.steps < 600, "{s:?}");
}

#[test]
fn robertson_bdf_matches_reference_in_few_steps() {
    let s = check_robertson(Method::Bdf);
    assert!(s.steps < 600, "{s:?}");
    assert!(
        s.lu_decompositions < s.steps,
        "LU reused across steps: {s:?}"
    );
}

#[test]
fn robertson_to_1e11_with_both_stiff_methods() {
    let want = reference("robertson.json", &["t_1e11_published", "y"]);
    for method in [Method::Rodas4, Method::Bdf] {
        let sol = solve_batch(
            &robertson(),
            &opts(method.clone(), 0.0, 1e11, 1e-6, 1e-14),
            &[1.0, 0.0, 0.0],
            1,
        )
        .unwrap();
        let y = sol.final_state(0);
        // y1 ≈ 2e-8 is resolved to about atol / y1 relative; y2 ≈ 8e-14 is below atol.
        assert_rel(&[y[0], y[2]], &[want[0], want[2]], 1e-3, method.name());
        assert!((y.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}

// ---------------------------------------------------------------- convergence orders

/// Error at t = 3 of y' = −y + sin t with `n` steps.
fn forced_error(method: Method, n: usize) -> f64 {
    // On [0, 3] all the orders are already in their asymptotic regime at these step counts.
    let sol = solve_batch(&forced(), &fixed(method, 0.0, 3.0, n), &[1.0], 1).unwrap();
    (sol.final_state(0)[0] - forced_exact(3.0)).abs()
}

fn observed_order(method: Method, n: usize) -> f64 {
    (forced_error(method.clone(), n) / forced_error(method, 2 * n)).log2()
}

#[test]
fn fixed_step_methods_have_their_orders() {
    for (method, order, n) in [
        (Method::Euler, 1.0, 200),
        (Method::Midpoint, 2.0, 100),
        (Method::Heun, 2.0, 100),
        (Method::Ab2, 2.0, 100),
        (Method::Rk4, 4.0, 20),
        (Method::ImplicitEuler, 1.0, 200),
    ] {
        let p = observed_order(method.clone(), n);
        // Asymptotic regime: the next error term shifts the ratio by O(h), a few percent here.
        assert!(
            (p - order).abs() < 0.1,
            "{}: observed order {p}",
            method.name()
        );
    }
}

#[test]
fn lm_with_zero_coefficient_is_euler_bit_for_bit() {
    let a = solve_batch(
        &lorenz(),
        &fixed(Method::Lm, 0.0, 1.0, 50),
        &[1.0, 2.0, 3.0],
        1,
    )
    .unwrap();
    let b = solve_batch(
        &lorenz(),
        &fixed(Method::Euler, 0.0, 1.0, 50),
        &[1.0, 2.0, 3.0],
        1,
    )
    .unwrap();
    assert_eq!(
        a.y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

fn leapfrog() -> Method {
    Method::Leapfrog {
        position: 0..1,
        momentum: 1..2,
    }
}

#[test]
fn leapfrog_is_second_order() {
    let err = |n: usize| {
        let sol = solve_batch(
            &oscillator(),
            &fixed(leapfrog(), 0.0, 3.0, n),
            &[1.0, 0.0],
            1,
        )
        .unwrap();
        let y = sol.final_state(0);
        ((y[0] - 3f64.cos()).powi(2) + (y[1] + 3f64.sin()).powi(2)).sqrt()
    };
    let p = (err(100) / err(200)).log2();
    assert!((p - 2.0).abs() < 0.05, "observed order {p}");
}

#[test]
fn leapfrog_is_reversible_and_keeps_energy_bounded() {
    let y0 = [0.3, -1.2];
    let there = solve_batch(
        &oscillator(),
        &fixed(leapfrog(), 0.0, 1000.0, 10_000),
        &y0,
        1,
    )
    .unwrap();
    let back = solve_batch(
        &oscillator(),
        &fixed(leapfrog(), 1000.0, 0.0, 10_000),
        there.final_state(0),
        1,
    )
    .unwrap();
    for (got, want) in back.final_state(0).iter().zip(y0) {
        // Symmetric method: only rounding separates the round trip from the start.
        assert!((got - want).abs() < 1e-13, "{:?}", back.final_state(0));
    }
    let energy = |k: usize| {
        let y = there.state(k, 0);
        0.5 * (y[0] * y[0] + y[1] * y[1])
    };
    let drift: Vec<f64> = (0..=10_000)
        .map(|k| (energy(k) - energy(0)).abs())
        .collect();
    let early = drift[..1000].iter().cloned().fold(0.0, f64::max);
    let late = drift[9000..].iter().cloned().fold(0.0, f64::max);
    // h = 0.1: the energy error oscillates at O(h²) and does not grow.
    assert!(
        early < 5e-3 && late <= 1.01 * early + 1e-12,
        "early {early}, late {late}"
    );
}

#[test]
fn embedded_pairs_error_follows_tolerance() {
    // y' = y cos t, y = exp(sin t).
    let sys = system(
        1,
        false,
        |t, y, dy| (0..t.len()).for_each(|s| dy[s] = y[s] * t[s].cos()),
        |t, _y, j| j[0] = t.cos(),
    );
    for method in [Method::Bosh3, Method::Dopri5, Method::Tsit5] {
        // The largest error along the trajectory: a single time can be lucky (cancellation).
        let err = |tol: f64| {
            let mut o = opts(method.clone(), 0.0, 10.0, tol, tol);
            o.save = (0..=100).map(|k| 0.1 * k as f64).collect();
            let sol = solve_batch(&sys, &o, &[1.0], 1).unwrap();
            sol.t
                .iter()
                .enumerate()
                .map(|(k, &t)| (sol.state(k, 0)[0] - t.sin().exp()).abs())
                .fold(0.0, f64::max)
        };
        let (coarse, fine) = (err(1e-5), err(1e-8));
        let slope = (coarse / fine).log10() / 3.0;
        // Global error ∝ tol^(p/(p+1)) or so; "roughly proportional" over three decades.
        assert!(
            (0.6..1.3).contains(&slope),
            "{}: errors {coarse:e} → {fine:e}, slope {slope}",
            method.name()
        );
        assert!(
            coarse < 1e-3 && fine < 1e-6,
            "{}: {coarse:e} {fine:e}",
            method.name()
        );
    }
}

// ---------------------------------------------------------------- determinism

fn bits(sol: &Solution) -> Vec<u64> {
    sol.y.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn results_are_bit_identical_across_thread_counts() {
    let n = 100;
    let y0: Vec<f64> = (0..3 * n)
        .map(|k| 1.0 + 0.37 * ((k as f64) * 0.618).sin())
        .collect();
    for o in [
        opts(Method::Dopri5, 0.0, 2.0, 1e-8, 1e-8),
        fixed(Method::Rk4, 0.0, 2.0, 200),
    ] {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| solve_batch(&lorenz(), &o, &y0, n).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(bits(&one), bits(&two), "{}", o.method.name());
        assert_eq!(one.stats, two.stats);
    }
}

#[test]
fn adaptive_samples_do_not_depend_on_their_block() {
    // Lockstep iterations must not couple samples: a sample alone gets the same bits.
    let n = 40;
    let y0: Vec<f64> = (0..2 * n).map(|k| 0.5 + 0.1 * k as f64).collect();
    let o = opts(Method::Tsit5, 0.0, 5.0, 1e-7, 1e-9);
    let batch = solve_batch(&vdp(), &o, &y0, n).unwrap();
    for s in [0, 17, 39] {
        let alone = solve_batch(&vdp(), &o, &y0[2 * s..2 * s + 2], 1).unwrap();
        let a: Vec<u64> = alone.final_state(0).iter().map(|v| v.to_bits()).collect();
        let b: Vec<u64> = batch.final_state(s).iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "sample {s}");
    }
}

/// A chain of `dim` coupled, forced components, with a forcing that jumps at t = 0.7 (a
/// breakpoint: the adaptive drivers land there and restart).
fn chain(dim: usize) -> impl System {
    let mut sys = system(
        dim,
        false,
        move |t, y, dy| {
            let w = t.len();
            for s in 0..w {
                let push = if t[s] < 0.7 { t[s].sin() } else { 2.0 - t[s] };
                for i in 0..dim {
                    let next = y[((i + 1) % dim) * w + s];
                    dy[i * w + s] = -(1.0 + i as f64) * y[i * w + s] + next * next.cos() + push;
                }
            }
        },
        |_t, _y, _j| unreachable!("explicit methods only"),
    );
    sys.breakpoints = vec![0.7];
    sys
}

/// The single-sample driver (`adaptive/one.rs`) makes the block driver's arithmetic with
/// scalars for lanes: a sample solved alone gets the bits, work counts and errors it gets in a
/// block, for every pair, with save times between steps (dense output), stops, a breakpoint's
/// restart, rejected steps, backward time, per-component `atol` and each way of failing. The
/// block is the sample twice, so its counts are exactly twice the sample's.
#[test]
fn one_sample_driver_gives_the_block_drivers_bits() {
    fn same<S: System>(sys: &S, o: &SolverOptions, y0: &[f64], what: &str) {
        let twice = [y0, y0].concat();
        let (alone, pair) = (solve_batch(sys, o, y0, 1), solve_batch(sys, o, &twice, 2));
        match (alone, pair) {
            (Ok(a), Ok(b)) => {
                for k in 0..a.t.len() {
                    for s in 0..2 {
                        let (ya, yb) = (a.state(k, 0), b.state(k, s));
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(ya), bits(yb), "{what}: save {k}, lane {s}");
                    }
                }
                let mut doubled = a.stats;
                doubled += a.stats;
                assert_eq!(doubled, b.stats, "{what}: work counts");
                assert!(a.stats.steps > 0, "{what}");
            }
            (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{what}"),
            (a, b) => panic!("{what}: alone {a:?}, in a block {b:?}"),
        }
    }
    let methods = [Method::Bosh3, Method::Dopri5, Method::Tsit5];
    for method in methods {
        let name = method.name();
        let mut o = opts(method.clone(), 0.0, 10.0, 1e-8, 1e-8);
        o.save = vec![0.0, 0.1, 2.5, 2.5 + 1e-9, 7.0, 10.0];
        o.stops = vec![3.0, 4.5];
        same(&lorenz(), &o, &[1.0, 1.0, 1.0], &format!("lorenz {name}"));
        // Van der Pol at μ = 1 rejects steps at a loose tolerance.
        let mut o = opts(method.clone(), 0.0, 20.0, 1e-3, 1e-6);
        o.save = vec![5.0, 20.0];
        same(&vdp(), &o, &[2.0, 0.0], &format!("vdp {name}"));
        // Every monomorphized dimension and the first one past them; forced, with a breakpoint.
        for dim in 1..=9 {
            let mut o = opts(method.clone(), 0.0, 2.0, 1e-7, 1e-9);
            o.atol_components = (0..dim).map(|i| 1e-9 * (1 + i) as f64).collect();
            o.save = vec![0.0, 0.35, 0.7, 1.3, 2.0];
            let y0: Vec<f64> = (0..dim).map(|i| 0.3 * i as f64 - 0.5).collect();
            same(&chain(dim), &o, &y0, &format!("chain {dim} {name}"));
            // Backward in time.
            let mut back = opts(method.clone(), 2.0, 0.0, 1e-7, 1e-9);
            back.save = vec![2.0, 1.0, 0.0];
            same(
                &chain(dim),
                &back,
                &y0,
                &format!("chain {dim} backward {name}"),
            );
        }
        // Failures: a blow-up, too few steps, a non-finite start.
        same(
            &blowup(),
            &opts(method.clone(), 0.0, 2.0, 1e-6, 1e-9),
            &[1.0],
            &format!("blowup {name}"),
        );
        let mut few = opts(method.clone(), 0.0, 10.0, 1e-8, 1e-8);
        few.max_steps = 50;
        same(
            &lorenz(),
            &few,
            &[1.0, 1.0, 1.0],
            &format!("max_steps {name}"),
        );
        let o = opts(method.clone(), 0.0, 1.0, 1e-6, 1e-9);
        same(&decay(), &o, &[f64::NAN], &format!("NaN start {name}"));
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn blow_up_reports_time_and_sample() {
    // Samples 0 and 2 decay (y0 < 0), samples 1 and 3 blow up at t = 1 and t = 0.5.
    let y0 = [-1.0, 1.0, -2.0, 2.0];
    for method in [Method::Dopri5, Method::Rodas4, Method::Bdf] {
        match solve_batch(
            &blowup(),
            &opts(method.clone(), 0.0, 2.0, 1e-6, 1e-9),
            &y0,
            4,
        ) {
            Err(SolveError::StepSizeTooSmall { t, sample })
            | Err(SolveError::NonFinite { t, sample, .. }) => {
                assert_eq!(sample, 1, "{}", method.name());
                assert!((t - 1.0).abs() < 1e-2, "{}: t = {t}", method.name());
            }
            other => panic!("{}: {other:?}", method.name()),
        }
    }
    match solve_batch(&blowup(), &fixed(Method::Euler, 0.0, 2.0, 10), &[1e100], 1) {
        Err(SolveError::NonFinite {
            sample: 0,
            component: 0,
            t,
        }) => assert!(t > 0.0 && t <= 2.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_steps_is_reported() {
    let mut o = opts(Method::Dopri5, 0.0, 10.0, 1e-8, 1e-8);
    o.max_steps = 100;
    match solve_batch(&lorenz(), &o, &[1.0, 1.0, 1.0], 1) {
        Err(SolveError::MaxStepsExceeded {
            sample: 0,
            max_steps: 100,
            t,
        }) => assert!(t > 0.0 && t < 10.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_options_are_errors() {
    let e = |o: &SolverOptions, y0: &[f64]| solve_batch(&decay(), o, y0, 1).unwrap_err();
    assert_eq!(
        e(&SolverOptions::new(Method::Rk4, 0.0, 1.0), &[1.0]),
        SolveError::InvalidOptions(OptionsError::MissingSteps)
    );
    let mut o = SolverOptions::new(Method::Dopri5, 0.0, 1.0);
    o.save = vec![0.5, 0.2];
    assert_eq!(
        e(&o, &[1.0]),
        SolveError::InvalidOptions(OptionsError::SaveNotSorted { index: 1 })
    );
    o.save = vec![2.0];
    assert_eq!(
        e(&o, &[1.0]),
        SolveError::InvalidOptions(OptionsError::SaveOutOfRange { time: 2.0 })
    );
    o.save.clear();
    assert_eq!(
        e(&o, &[1.0, 2.0]),
        SolveError::InvalidOptions(OptionsError::InitialLength {
            expected: 1,
            found: 2
        })
    );
    o.atol = f64::NAN;
    assert_eq!(
        e(&o, &[1.0]),
        SolveError::InvalidOptions(OptionsError::BadTolerance)
    );
}

// ---------------------------------------------------------------- times: saves, stops, breakpoints

/// x' = −a_k x with a different rate on each quarter of [0, 1]; the system picks the piece by
/// comparing t with its breakpoints, as the `System` contract asks.
fn layered() -> impl System {
    const RATES: [f64; 4] = [0.5, 2.0, -1.0, 3.0];
    let piece = |t: f64| [0.25, 0.5, 0.75].partition_point(|&b| b <= t).min(3);
    Closure {
        dim: 1,
        f: move |t: &[f64], y: &[f64], dy: &mut [f64]| {
            for s in 0..t.len() {
                dy[s] = -RATES[piece(t[s])] * y[s];
            }
        },
        jac: move |t: f64, _y: &[f64], j: &mut [f64]| j[0] = -RATES[piece(t)],
        breakpoints: vec![0.25, 0.5, 0.75],
        autonomous: true,
        lm: 0.0,
    }
}

#[test]
fn breakpoints_are_stepped_onto_and_evaluated_on_the_right_piece() {
    // Exact: x(1) = exp(−0.25 Σ a_k).
    let exact = (-0.25 * (0.5 + 2.0 - 1.0 + 3.0f64)).exp();
    for method in [
        Method::Bosh3,
        Method::Dopri5,
        Method::Tsit5,
        Method::Rodas4,
        Method::Bdf,
    ] {
        let sol = solve_batch(
            &layered(),
            &opts(method.clone(), 0.0, 1.0, 1e-10, 1e-12),
            &[1.0],
            1,
        )
        .unwrap();
        // Without the breakpoints the error would be O(tol^(1/q)) of a jump, far above 1e-7.
        assert!(
            (sol.final_state(0)[0] - exact).abs() < 1e-7 * exact,
            "{}: {}",
            method.name(),
            sol.final_state(0)[0]
        );
        // Backward from t = 1 must return to the start through the same pieces.
        let back = solve_batch(
            &layered(),
            &opts(method.clone(), 1.0, 0.0, 1e-10, 1e-12),
            &[exact],
            1,
        )
        .unwrap();
        assert!(
            (back.final_state(0)[0] - 1.0).abs() < 1e-7,
            "{} backward: {}",
            method.name(),
            back.final_state(0)[0]
        );
    }
    // A fixed-step rk4 grid aligned with the layers sees one piece per step.
    let sol = solve_batch(&layered(), &fixed(Method::Rk4, 0.0, 1.0, 4), &[1.0], 1).unwrap();
    let per_step: f64 = [0.5, 2.0, -1.0, 3.0f64]
        .iter()
        .map(|&a| {
            let z = -0.25 * a;
            1.0 + z + z * z / 2.0 + z * z * z / 6.0 + z * z * z * z / 24.0
        })
        .product();
    assert!((sol.final_state(0)[0] - per_step).abs() < 1e-15);
}

#[test]
fn stops_are_hit_exactly() {
    let seen = Mutex::new(Vec::new());
    let sys = system(
        1,
        true,
        |t: &[f64], y: &[f64], dy: &mut [f64]| {
            seen.lock().unwrap().extend_from_slice(t);
            dy.iter_mut().zip(y).for_each(|(d, &x)| *d = -x);
        },
        |_t, _y, j| j[0] = -1.0,
    );
    for method in [Method::Dopri5, Method::Rodas4, Method::Bdf] {
        seen.lock().unwrap().clear();
        let mut o = opts(method.clone(), 0.0, 3.0, 1e-6, 1e-9);
        o.stops = vec![0.1234567, 2.5182818];
        o.save = o.stops.clone();
        let sol = solve_batch(&sys, &o, &[1.0], 1).unwrap();
        let times = seen.lock().unwrap().clone();
        for &stop in &o.stops {
            assert!(
                times.contains(&stop),
                "{} never evaluated f at {stop}",
                method.name()
            );
        }
        assert_eq!(sol.t, vec![0.1234567, 2.5182818, 3.0]);
        assert!((sol.state(0, 0)[0] - (-0.1234567f64).exp()).abs() < 1e-5);
    }
}

#[test]
fn dense_output_of_stiff_methods_is_accurate() {
    for method in [Method::Rodas4, Method::Bdf, Method::Bosh3, Method::Tsit5] {
        let mut o = opts(method.clone(), 0.0, 4.0, 1e-8, 1e-10);
        o.save = (0..=40).map(|k| 0.1 * k as f64).collect();
        let sol = solve_batch(&forced(), &o, &[1.0], 1).unwrap();
        for (k, &t) in sol.t.iter().enumerate() {
            // Interpolants are one order below the method; 1e-6 leaves room above the tolerance.
            assert!(
                (sol.state(k, 0)[0] - forced_exact(t)).abs() < 1e-6,
                "{} at t = {t}",
                method.name()
            );
        }
    }
}

#[test]
fn default_save_times_follow_the_spec() {
    let sol = solve_batch(&decay(), &fixed(Method::Euler, 0.0, 1.0, 4), &[1.0], 1).unwrap();
    assert_eq!(sol.t, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(sol.state(0, 0), &[1.0]);
    let sol = solve_batch(
        &decay(),
        &SolverOptions::new(Method::Dopri5, 0.0, 1.0),
        &[1.0, 2.0],
        2,
    )
    .unwrap();
    assert_eq!(sol.t, vec![0.0, 1.0]);
    assert_eq!(sol.state(0, 1), &[2.0]);
    // Fixed-step saves between grid points are linear interpolations.
    let mut o = fixed(Method::Euler, 0.0, 1.0, 2);
    o.save = vec![0.25];
    let sol = solve_batch(&decay(), &o, &[1.0], 1).unwrap();
    assert_eq!(sol.t, vec![0.25, 1.0]);
    assert!((sol.state(0, 0)[0] - 0.875).abs() < 1e-15);
}

#[test]
fn implicit_euler_is_stable_on_a_stiff_problem() {
    // y' = −1e4 (y − cos t): explicit Euler with h = 0.01 would explode.
    let sys = system(
        1,
        false,
        |t, y, dy| (0..t.len()).for_each(|s| dy[s] = -1e4 * (y[s] - t[s].cos())),
        |_t, _y, j| j[0] = -1e4,
    );
    let sol = solve_batch(
        &sys,
        &fixed(Method::ImplicitEuler, 0.0, 1.0, 100),
        &[0.0],
        1,
    )
    .unwrap();
    assert!((sol.final_state(0)[0] - 1f64.cos()).abs() < 1e-3);
}

#[test]
fn implicit_euler_reports_newton_failure() {
    // z = 1 + 2 z² has no real root: the implicit step from y = 1 with h = 2 cannot exist.
    match solve_batch(
        &blowup(),
        &fixed(Method::ImplicitEuler, 0.0, 2.0, 1),
        &[-1.0, 1.0],
        2,
    ) {
        Err(SolveError::NewtonFailed { t, sample: 1 }) => assert_eq!(t, 2.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stiff_methods_report_max_steps() {
    for method in [Method::Rodas4, Method::Bdf] {
        let mut o = opts(method.clone(), 0.0, 1e5, 1e-6, 1e-10);
        o.max_steps = 20;
        match solve_batch(&robertson(), &o, &[1.0, 0.0, 0.0], 1) {
            Err(SolveError::MaxStepsExceeded {
                sample: 0,
                max_steps: 20,
                ..
            }) => {}
            other => panic!("{}: {other:?}", method.name()),
        }
    }
}

#[test]
fn quartic_interpolants_reproduce_a_quartic() {
    // y' = 4t³, y = t⁴: the 4th-order dense outputs of dopri5 and tsit5 are exact on it.
    let sys = system(
        1,
        false,
        |t, _y, dy| (0..t.len()).for_each(|s| dy[s] = 4.0 * t[s].powi(3)),
        |_t, _y, j| j[0] = 0.0,
    );
    for method in [Method::Dopri5, Method::Tsit5] {
        let mut o = opts(method.clone(), 0.0, 2.0, 1e-3, 1e-3);
        o.save = (0..=20).map(|k| 0.1 * k as f64).collect();
        let sol = solve_batch(&sys, &o, &[0.0], 1).unwrap();
        assert!(
            sol.stats.steps < 20,
            "{}: few steps, so most saves are interpolated",
            method.name()
        );
        for (k, &t) in sol.t.iter().enumerate() {
            // Exact up to rounding of coefficients stored to 16 digits.
            assert!(
                (sol.state(k, 0)[0] - t.powi(4)).abs() < 1e-12,
                "{} at {t}",
                method.name()
            );
        }
    }
}

#[test]
fn leapfrog_integrates_quadrature_components_to_second_order() {
    // q' = p, p' = −q and a running cost r' = q², r(T) = T/2 + sin(2T)/4 from (1, 0, 0).
    let sys = system(
        3,
        true,
        |t, y, dy| {
            let w = t.len();
            for s in 0..w {
                dy[s] = y[w + s];
                dy[w + s] = -y[s];
                dy[2 * w + s] = y[s] * y[s];
            }
        },
        |_t, y, j| j.copy_from_slice(&[0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 2.0 * y[0], 0.0, 0.0]),
    );
    let err = |n: usize| {
        let sol = solve_batch(&sys, &fixed(leapfrog(), 0.0, 3.0, n), &[1.0, 0.0, 0.0], 1).unwrap();
        (sol.final_state(0)[2] - (1.5 + 6f64.sin() / 4.0)).abs()
    };
    let p = (err(100) / err(200)).log2();
    assert!((p - 2.0).abs() < 0.05, "observed order {p}");
}

#[test]
fn lm_uses_each_layers_coefficient() {
    // x' = −x with k = 0.1, 0.2, 0.3, 0.4 on the four layers of [0, 1], 4 steps of h = 0.25.
    struct Lm;
    impl System for Lm {
        type Workspace = ();
        fn workspace(&self, _: std::ops::Range<usize>) {}
        fn dim(&self) -> usize {
            1
        }
        fn rhs(&self, _t: &[f64], y: &[f64], dy: &mut [f64], _: &mut ()) {
            dy.iter_mut().zip(y).for_each(|(d, &x)| *d = -x);
        }
        fn jacobian(&self, _t: f64, _y: &[f64], j: &mut [f64], _: &mut ()) {
            j[0] = -1.0;
        }
        fn breakpoints(&self) -> Vec<f64> {
            vec![0.25, 0.5, 0.75]
        }
        fn lm_coefficient(&self, t: f64) -> f64 {
            [0.1, 0.2, 0.3, 0.4][self.breakpoints().partition_point(|&b| b <= t)]
        }
    }
    let sol = solve_batch(&Lm, &fixed(Method::Lm, 0.0, 1.0, 4), &[1.0], 1).unwrap();
    let h = 0.25;
    let (mut prev, mut x) = (1.0, 1.0 - h);
    for k in [0.2, 0.3, 0.4] {
        (prev, x) = (x, (1.0 - k) * x + k * prev - h * x);
    }
    assert!(
        (sol.final_state(0)[0] - x).abs() < 1e-15,
        "{} vs {x}",
        sol.final_state(0)[0]
    );
}
