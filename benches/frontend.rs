//! Front-end speed: parse + check (+ prepare) of every model in `models/`.
//!
//! The target is "well under 50 ms for all of `models/` in release". There is no hand-written
//! baseline for a front end; parsing alone is measured in the same run as the reference point.
//!
//! Also `check` of a 65536-element state whose equation is `-grad(Phi(z, t), z)` (issue 18:
//! 6 s and 530 MB with one such state, 38 s and 2 GB with two, when every element was a
//! scalar node; then 4 s and 518 MB while `div` took one directional derivative per element):
//! one and two such states, `Phi` reading two elements as OT-Flow's potential does.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{criterion_group, criterion_main, Criterion};
use nodec::diag::SourceFile;
use nodec::sema::Overrides;

fn models() -> Vec<SourceFile> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("models/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "node"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            SourceFile::new(
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("readable"),
            )
        })
        .collect()
}

fn frontend(c: &mut Criterion) {
    let files = models();
    let overrides = Overrides::default();
    c.bench_function("parse all models", |b| {
        b.iter(|| {
            for f in &files {
                std::hint::black_box(nodec::syntax::parse(f));
            }
        })
    });
    c.bench_function("parse + check all models", |b| {
        b.iter(|| {
            for f in &files {
                std::hint::black_box(nodec::check_source(f, &overrides, "m"));
            }
        })
    });
    c.bench_function("parse + check + prepare all models", |b| {
        b.iter(|| {
            for f in &files {
                let (model, _) = nodec::check_source(f, &overrides, "m");
                std::hint::black_box(nodec::prepare(model));
            }
        })
    });
}

/// A potential flow over a 65536-element state, once or twice.
fn wide_grad_model(states: usize) -> SourceFile {
    let mut text = String::from(
        "const n = 65536\nparam W[16, 3] ~ normal(0, 0.5)\nparam a[16] ~ normal(0, 0.5)\nfn Phi(z, t) = dot(a, tanh(W * [z[0], z[1], t]))\n",
    );
    for i in 0..states {
        // The divergence, as a continuous normalizing flow needs it: Phi reads only two
        // elements of the state, so `div` needs two directional derivatives, not 65536.
        text.push_str(&format!(
            "state z{i}[n] = 0.001\nstate l{i} = 0\nlet v{i} = -grad(Phi(z{i}, t), z{i})\ndz{i}/dt = v{i}\ndl{i}/dt = div(v{i}, z{i})\n"
        ));
    }
    text.push_str("schedule rk4(t = [0, 1], steps = 4)\n");
    SourceFile::new("wide_grad.node", text)
}

fn wide_grad_check(c: &mut Criterion) {
    let overrides = Overrides::default();
    for states in [1, 2] {
        let file = wide_grad_model(states);
        let (_, diags) = nodec::check_source(&file, &overrides, "m");
        assert!(!diags.has_errors(), "{}", diags.render(&file));
        c.bench_function(
            &format!("check grad(Phi) over {states} × 65536 states"),
            |b| b.iter(|| std::hint::black_box(nodec::check_source(&file, &overrides, "m"))),
        );
    }
}

criterion_group!(benches, frontend, wide_grad_check);
criterion_main!(benches);
