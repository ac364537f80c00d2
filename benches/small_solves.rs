//! One small adaptive solve in process: P1 Lorenz (`benches/data/p1/lorenz.node`, DOPRI5 at
//! rtol = atol = 1e-8 on [0, 10], final value only), as `benches/small_solves.sh` measures it
//! beside the hand-written DOPRI5 (`benches/hand_dopri5.rs`). The first solve starts the
//! field's native code generation (on a thread of its own); it is awaited, and the first solve
//! is left out of the timing.
//!
//! Usage: `small_solves once` (one solve after the warm-up, for callgrind's
//! `--toggle-collect='*small_solves::measured*'`), `small_solves [REPS]` (median seconds).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a bench prints its figures"
)]

use nodec::compile::Program;
use nodec::diag::SourceFile;
use nodec::sema::Overrides;
use std::time::Instant;

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/p1/lorenz.node");
    let text = std::fs::read_to_string(path).expect("bench model");
    let file = SourceFile::new(path.to_string(), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "bench");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    let model = nodec::prepare_to_run(model);
    let program = Program::compile(&model);
    let params = nodec::simulate::initial_params(&model, program.layout(), 0);
    let data = nodec::data::Dataset::samples(1, 0, Vec::new(), None);
    let bound = nodec::simulate::Bound::new(&model, &program, &params, &data);
    let solve = || bound.simulate(Some(vec![10.0])).expect("P1 solves");
    let first = solve();
    // The first solve started the field's code generation; measure the steady state.
    program.await_native();
    // Reference y(10) of the peers' P1 (50-digit Taylor series); DOPRI5 at 1e-8 is within 2e-5.
    let reference = [-4.902687541134646, -3.7438729218029194, 24.690858102790557];
    let y = first.solution.final_state(0);
    for (a, b) in y.iter().zip(reference) {
        assert!((a - b).abs() < 2e-5, "P1 final state {y:?}");
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("once") {
        std::hint::black_box(measured(&solve));
        return;
    }
    let reps: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(201);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(solve());
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let s = first.stats;
    println!(
        "p1 median_s {:e} steps {} rejected {} rhs_evals {} y {y:?}",
        times[reps / 2],
        s.steps,
        s.rejected,
        s.rhs_evals
    );
}

/// The solve `small_solves once` measures, by name: callgrind's
/// `--toggle-collect='*small_solves::measured*'` collects it and not the warm-up.
#[inline(never)]
fn measured<T>(solve: &impl Fn() -> T) -> T {
    solve()
}
