//! Front-end speed: parse + check (+ prepare) of every model in `models/`.
//!
//! The target is "well under 50 ms for all of `models/` in release". There is no hand-written
//! baseline for a front end; parsing alone is measured in the same run as the reference point.

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

criterion_group!(benches, frontend);
criterion_main!(benches);
