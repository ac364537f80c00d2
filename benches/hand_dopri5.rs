//! The hand-written DOPRI5 of the peer benchmarks, for `benches/small_solves.sh`: P1 Lorenz
//! (rtol = atol = 1e-8 on [0, 10] from (1, 1, 1), final value only) and the ensemble of 1024
//! perturbed starts `x0 = 1 + 1e-3 k` on 2 threads, so that nodec's small solves are measured
//! beside the code a good engineer would write, built by the same compiler.
//!
//! Provenance: `dopri5` and `lorenz` are copied unchanged (but for formatting) from the peers'
//! `rust/src/hand.rs` and `rust/src/main.rs` (nodec's shared benchmark folder, outside the
//! repository); their P1 result there is 832 accepted and 2 rejected steps, 5006 evaluations.
//!
//! Usage: `hand_dopri5 once` (one P1 solve, for callgrind), `hand_dopri5 p1 [REPS]` (median
//! seconds of a single solve), `hand_dopri5 ensemble [REPS]` (median seconds of the 1024 starts
//! on 2 threads).

#![allow(
    clippy::needless_range_loop,
    clippy::many_single_char_names,
    clippy::excessive_precision,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the peer's code as written; a bench prints its figures"
)]

use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
struct Dp5Stats {
    nfev: usize,
    naccept: usize,
    nreject: usize,
}

// Dormand–Prince 5(4) coefficients (Hairer/Wanner DOPRI5).
const C2: f64 = 1.0 / 5.0;
const C3: f64 = 3.0 / 10.0;
const C4: f64 = 4.0 / 5.0;
const C5: f64 = 8.0 / 9.0;
const A21: f64 = 1.0 / 5.0;
const A31: f64 = 3.0 / 40.0;
const A32: f64 = 9.0 / 40.0;
const A41: f64 = 44.0 / 45.0;
const A42: f64 = -56.0 / 15.0;
const A43: f64 = 32.0 / 9.0;
const A51: f64 = 19372.0 / 6561.0;
const A52: f64 = -25360.0 / 2187.0;
const A53: f64 = 64448.0 / 6561.0;
const A54: f64 = -212.0 / 729.0;
const A61: f64 = 9017.0 / 3168.0;
const A62: f64 = -355.0 / 33.0;
const A63: f64 = 46732.0 / 5247.0;
const A64: f64 = 49.0 / 176.0;
const A65: f64 = -5103.0 / 18656.0;
const A71: f64 = 35.0 / 384.0;
const A73: f64 = 500.0 / 1113.0;
const A74: f64 = 125.0 / 192.0;
const A75: f64 = -2187.0 / 6784.0;
const A76: f64 = 11.0 / 84.0;
const E1: f64 = 71.0 / 57600.0;
const E3: f64 = -71.0 / 16695.0;
const E4: f64 = 71.0 / 1920.0;
const E5: f64 = -17253.0 / 339200.0;
const E6: f64 = 22.0 / 525.0;
const E7: f64 = -1.0 / 40.0;

/// Dormand–Prince 5(4), FSAL, Hairer's initial step guess and PI step-size control
/// (beta = 0.04, safety 0.9, factor bounds [0.2, 10]), RMS error norm with
/// sk = atol + rtol * max(|y_old|, |y_new|). Integrates exactly to t1.
#[inline(never)]
fn dopri5<const N: usize, F: FnMut(f64, &[f64; N], &mut [f64; N])>(
    mut f: F,
    t0: f64,
    t1: f64,
    y0: [f64; N],
    rtol: f64,
    atol: f64,
) -> ([f64; N], Dp5Stats) {
    let (safe, beta, fac1, fac2): (f64, f64, f64, f64) = (0.9, 0.04, 0.2, 10.0);
    let expo1 = 0.2 - beta * 0.75;
    let (facc1, facc2) = (1.0 / fac1, 1.0 / fac2);
    let mut st = Dp5Stats::default();
    let mut y = y0;
    let mut t = t0;
    let (mut k1, mut k2, mut k3, mut k4, mut k5, mut k6, mut k7) = (
        [0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N],
    );
    let (mut u, mut ynew) = ([0.0; N], [0.0; N]);
    f(t, &y, &mut k1);
    st.nfev += 1;
    // --- initial step size (Hairer's hinit, order 5) ---
    let mut h = {
        let (mut dnf, mut dny) = (0.0, 0.0);
        for i in 0..N {
            let sk = atol + rtol * y[i].abs();
            dnf += (k1[i] / sk).powi(2);
            dny += (y[i] / sk).powi(2);
        }
        let mut h = if dnf <= 1e-10 || dny <= 1e-10 {
            1e-6
        } else {
            (dny / dnf).sqrt() * 0.01
        };
        h = h.min(t1 - t0);
        for i in 0..N {
            u[i] = y[i] + h * k1[i];
        }
        f(t + h, &u, &mut k2);
        st.nfev += 1;
        let mut der2 = 0.0;
        for i in 0..N {
            let sk = atol + rtol * y[i].abs();
            der2 += ((k2[i] - k1[i]) / sk).powi(2);
        }
        der2 = der2.sqrt() / h;
        let der12 = der2.max(dnf.sqrt());
        let h1 = if der12 <= 1e-15 {
            (1e-6f64).max(h.abs() * 1e-3)
        } else {
            (0.01 / der12).powf(1.0 / 5.0)
        };
        (100.0 * h).min(h1).min(t1 - t0)
    };
    let mut facold: f64 = 1e-4;
    let mut last_rejected = false;
    loop {
        if t >= t1 {
            break;
        }
        let mut last = false;
        if t + 1.01 * h >= t1 {
            h = t1 - t;
            last = true;
        }
        for i in 0..N {
            u[i] = y[i] + h * A21 * k1[i];
        }
        f(t + C2 * h, &u, &mut k2);
        for i in 0..N {
            u[i] = y[i] + h * (A31 * k1[i] + A32 * k2[i]);
        }
        f(t + C3 * h, &u, &mut k3);
        for i in 0..N {
            u[i] = y[i] + h * (A41 * k1[i] + A42 * k2[i] + A43 * k3[i]);
        }
        f(t + C4 * h, &u, &mut k4);
        for i in 0..N {
            u[i] = y[i] + h * (A51 * k1[i] + A52 * k2[i] + A53 * k3[i] + A54 * k4[i]);
        }
        f(t + C5 * h, &u, &mut k5);
        for i in 0..N {
            u[i] = y[i] + h * (A61 * k1[i] + A62 * k2[i] + A63 * k3[i] + A64 * k4[i] + A65 * k5[i]);
        }
        f(t + h, &u, &mut k6);
        for i in 0..N {
            ynew[i] =
                y[i] + h * (A71 * k1[i] + A73 * k3[i] + A74 * k4[i] + A75 * k5[i] + A76 * k6[i]);
        }
        f(t + h, &ynew, &mut k7);
        st.nfev += 6;
        let mut err = 0.0;
        for i in 0..N {
            let e =
                h * (E1 * k1[i] + E3 * k3[i] + E4 * k4[i] + E5 * k5[i] + E6 * k6[i] + E7 * k7[i]);
            let sk = atol + rtol * y[i].abs().max(ynew[i].abs());
            err += (e / sk).powi(2);
        }
        err = (err / N as f64).sqrt();
        let fac11 = err.powf(expo1);
        if err <= 1.0 {
            // PI controller (Lund stabilisation)
            let fac = facc2.max(facc1.min(fac11 / facold.powf(beta) / safe));
            facold = err.max(1e-4);
            st.naccept += 1;
            y = ynew;
            k1 = k7; // FSAL
            t = if last { t1 } else { t + h };
            let mut hnew = h / fac;
            if last_rejected {
                hnew = hnew.min(h);
            }
            last_rejected = false;
            h = hnew;
            if last {
                break;
            }
        } else {
            let hnew = h / facc1.min(fac11 / safe);
            st.nreject += 1;
            last_rejected = true;
            h = hnew;
        }
    }
    (y, st)
}

#[inline(always)]
fn lorenz(_t: f64, u: &[f64; 3], du: &mut [f64; 3]) {
    let (s, r, b) = (10.0, 28.0, 8.0 / 3.0);
    du[0] = s * (u[1] - u[0]);
    du[1] = u[0] * (r - u[2]) - u[1];
    du[2] = u[0] * u[1] - b * u[2];
}

#[inline(never)]
fn p1() -> ([f64; 3], Dp5Stats) {
    dopri5(lorenz, 0.0, 10.0, [1.0, 1.0, 1.0], 1e-8, 1e-8)
}

/// The 1024 perturbed starts on 2 threads (each thread its contiguous half, in order).
fn ensemble() -> f64 {
    const MEMBERS: usize = 1024;
    let half = |range: std::ops::Range<usize>| {
        range
            .map(|k| {
                let x0 = 1.0 + 1e-3 * k as f64;
                dopri5(lorenz, 0.0, 10.0, [x0, 1.0, 1.0], 1e-8, 1e-8).0[2]
            })
            .sum::<f64>()
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| half(0..MEMBERS / 2));
        let b = half(MEMBERS / 2..MEMBERS);
        a.join().expect("thread") + b
    })
}

fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(21);
    match args.get(1).map(String::as_str) {
        Some("once") => {
            let (y, st) = std::hint::black_box(p1());
            println!("y {y:?} {st:?}");
        }
        Some("p1") => {
            let s = median_seconds(reps, || {
                std::hint::black_box(p1());
            });
            let (y, st) = p1();
            println!("p1 median_s {s:e} y {y:?} {st:?}");
        }
        Some("ensemble") => {
            let s = median_seconds(reps, || {
                std::hint::black_box(ensemble());
            });
            println!("ensemble median_s {s:e} sum_z {}", ensemble());
        }
        _ => {
            eprintln!("usage: hand_dopri5 once | p1 [REPS] | ensemble [REPS]");
            std::process::exit(2);
        }
    }
}
