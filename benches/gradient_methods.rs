//! The gradient of the neural-ODE benchmark P4 (`benches/data/p4/`, D = 2, width 64, batch
//! 1024, RK4 × 20 on [0, 1], loss = mean |x(1)|²): backprop (the discrete adjoint) against the
//! continuous adjoint, in time (criterion) and in peak memory.
//!
//! Memory: the crate forbids `unsafe`, so a counting global allocator is not possible here.
//! Instead the bench runs itself once per method in a child process and reads the child's peak
//! resident set (`VmHWM` in `/proc/self/status`, Linux only), next to a child that only solves
//! forward; the difference is what each gradient method adds. It also prints the size of the
//! buffers each method keeps per block, computed from the storage layout.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::io::Write;

use criterion::{criterion_group, Criterion};
use nodec::ir::GradientMethod;
use nodec::sens::{self, GradientOptions};

const CHILD: &str = "NODEC_BENCH_GRADIENT_CHILD";

mod p4;

use p4::{load as load_dim, Problem};

fn load() -> Problem {
    load_dim(2)
}

fn gradient(p: &Problem, method: GradientMethod) -> sens::Gradient {
    sens::gradient(&p.bound(), &GradientOptions::new(method)).expect("gradient")
}

fn bench(c: &mut Criterion) {
    let p = load();
    let mut group = c.benchmark_group("p4_d2_gradient");
    group.sample_size(20);
    group.bench_function("forward", |b| {
        b.iter(|| p.bound().simulate(None).expect("solves").loss)
    });
    group.bench_function("backprop", |b| {
        b.iter(|| gradient(&p, GradientMethod::Backprop).grad[0])
    });
    group.bench_function("adjoint", |b| {
        b.iter(|| gradient(&p, GradientMethod::Adjoint).grad[0])
    });
    group.finish();
}

criterion_group!(benches, bench);

/// The peak resident set of this process in KiB (Linux), if it can be read.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs one method (in a child process) and reports its peak resident set.
fn child(which: &str) {
    let p = load();
    match which {
        "forward" => {
            p.bound().simulate(None).expect("solves");
        }
        "backprop" => {
            gradient(&p, GradientMethod::Backprop);
        }
        _ => {
            gradient(&p, GradientMethod::Adjoint);
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", peak_rss_kib().unwrap_or(0));
}

fn memory_report() {
    let exe = std::env::current_exe().expect("own path");
    let peak = |which: &str| -> Option<u64> {
        let out = std::process::Command::new(&exe)
            .env(CHILD, which)
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    let mut err = std::io::stderr();
    let (forward, backprop, adjoint) = (peak("forward"), peak("backprop"), peak("adjoint"));
    let _ = writeln!(
        err,
        "peak RSS (KiB): forward {forward:?}, backprop {backprop:?}, adjoint {adjoint:?}"
    );
    // Buffers per block of 32 samples, D = 2, 20 steps (f64 = 8 bytes). Both records fit the
    // 8 MiB under which one segment holds every step, so both keep 1 checkpoint of
    // (y, history). Backprop records 20 steps of 4 stage inputs, their 4 × 64 saved `tanh`
    // activations, and start, history and end; the adjoint 20 steps of start, history and end
    // (its stages come from the grid states), plus 4 pull-backs and Hermite slopes.
    let state = 2 * 32 * 8;
    let activations = 64 * 32 * 8;
    let backprop_bytes = 2 * state + 20 * ((4 + 3) * state + 4 * activations);
    let adjoint_bytes = 2 * state + 20 * 3 * state + (4 + 6) * state;
    let _ = writeln!(
        err,
        "stored per block (bytes): backprop {backprop_bytes}, adjoint {adjoint_bytes}"
    );
}

fn main() {
    if let Ok(which) = std::env::var(CHILD) {
        child(&which);
        return;
    }
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
