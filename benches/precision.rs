//! One block's kernels in `f32` against `f64` (issue 19): the right-hand side and the VJP
//! (state and parameter gradient) of a block of 32 samples, for P4 at D = 2 and D = 32 (the
//! scalar tape: `f64` runs it as native code where the kernel has it, `f32` interprets) and
//! `wide_1024` (tensor kernels: GEMMs `sgemm` against `dgemm`).
//!
//! Run: `cargo bench --bench precision -- --warm-up-time 1 --measurement-time 3`. While the
//! machine is loaded, count instructions instead: with `NODEC_COUNT=CASE,PREC,KERNEL,N` the
//! binary runs `N` calls of one kernel and exits, so that under
//! `valgrind --tool=callgrind` the difference between two `N` is the instructions per call
//! (`benches/precision.sh` does that for every case).
//!
//! Measured (callgrind, instructions per call of one 32-sample block, 2 Dec 2026, AVX2 copies;
//! `f64` rhs runs native code at D = 2 and D = 32, `f32` interprets):
//!
//! | case | kernel | f64 | f32 | f64 / f32 |
//! |---|---|---:|---:|---:|
//! | P4 D = 2 | rhs | 70 933 | 47 104 | 1.51 |
//! | P4 D = 2 | vjp | 203 100 | 171 535 | 1.18 |
//! | P4 D = 32 | rhs | 141 299 | 83 725 | 1.69 |
//! | P4 D = 32 | vjp | 418 516 | 284 636 | 1.47 |
//! | wide_1024 | rhs | 3 436 531 | 2 095 141 | 1.64 |
//! | wide_1024 | vjp | 8 136 927 | 4 884 951 | 1.67 |
//!
//! The D = 2 VJP gains least: its parameter-gradient reductions keep four partial sums
//! (`tape::exec::sum4_2`), one `f64` vector but half an `f32` one.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{black_box, criterion_group, Criterion};
use nodec::compile::{Params, Program};
use nodec::diag::SourceFile;
use nodec::real::Real;
use nodec::sema::Overrides;

mod p4;

const BLOCK: usize = 32;

/// A compiled case: the program, its parameters and one block of states and cotangents.
struct Case {
    name: &'static str,
    program: Program,
    params: Params,
    y: Vec<f64>,
    w: Vec<f64>,
}

fn wide_1024() -> (Program, Params) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/data/wide/wide_1024.node"
    );
    let text = std::fs::read_to_string(path).expect("bench model");
    let file = SourceFile::new(path.to_string(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "bench");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare_to_run(model);
    let program = Program::compile(&model);
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    (program, params)
}

fn case(name: &str) -> Case {
    let (name, program, params) = match name {
        "p4_d2" => {
            let p = p4::load(2);
            ("p4_d2", p.program, p.params)
        }
        "p4_d32" => {
            let p = p4::load(32);
            ("p4_d32", p.program, p.params)
        }
        "wide_1024" => {
            let (program, params) = wide_1024();
            ("wide_1024", program, params)
        }
        other => panic!("unknown case {other}"),
    };
    let n = program.dim() * BLOCK;
    let wave = |seed: f64| -> Vec<f64> {
        (0..n)
            .map(|i| (0.618_033_988_749_894_9 * i as f64 + seed).sin())
            .collect()
    };
    Case {
        name,
        y: wave(0.5),
        w: wave(1.5),
        program,
        params,
    }
}

/// Runs `kernel` (`rhs` or `vjp`) `n` times on the case's block in precision `R`.
fn run<R: Real>(c: &Case, kernel: &str, n: usize) {
    let p = &c.program;
    let mut ws = p.workspace_in::<R>(BLOCK);
    let t = vec![0.25; BLOCK];
    let y: Vec<R> = c.y.iter().map(|&x| R::cast(x)).collect();
    let w: Vec<R> = c.w.iter().map(|&x| R::cast(x)).collect();
    let mut out = vec![R::zero(); y.len()];
    let mut grad = vec![R::zero(); c.params.values().len()];
    for _ in 0..n {
        match kernel {
            "rhs" => p.rhs(&c.params, &t, black_box(&y), &mut out, &mut ws),
            "vjp" => p.vjp(
                &c.params,
                &t,
                black_box(&y),
                &w,
                &mut out,
                &mut grad,
                &mut ws,
            ),
            other => panic!("unknown kernel {other}"),
        }
        black_box(&out);
    }
}

fn bench_precision(c: &mut Criterion) {
    for name in ["p4_d2", "p4_d32", "wide_1024"] {
        let case = case(name);
        let mut g = c.benchmark_group(format!("precision {}, one block of {BLOCK}", case.name));
        for kernel in ["rhs", "vjp"] {
            g.bench_function(format!("{kernel} f64"), |b| {
                b.iter(|| run::<f64>(&case, kernel, 1))
            });
            g.bench_function(format!("{kernel} f32"), |b| {
                b.iter(|| run::<f32>(&case, kernel, 1))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_precision);

fn main() {
    if let Ok(spec) = std::env::var("NODEC_COUNT") {
        let parts: Vec<&str> = spec.split(',').collect();
        let [name, precision, kernel, n] = parts[..] else {
            panic!("NODEC_COUNT=CASE,PREC,KERNEL,N");
        };
        let c = case(name);
        let n = n.parse().expect("a count");
        match precision {
            "f64" => run::<f64>(&c, kernel, n),
            "f32" => run::<f32>(&c, kernel, n),
            other => panic!("unknown precision {other}"),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
