//! Training throughput: samples per second for one epoch of every model in `models/` that
//! declares `train`, and the cost of one optimizer step on the neural-ODE benchmark P4
//! (D = 2, width 64, batch 1024, RK4 × 20) next to its bare gradient, so the optimizer and
//! data pipeline's share (mini-batch selection, the update, the epoch's sums) shows as the
//! ratio of the two.

#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nodec::cli::run::load;
use nodec::cli::Output;
use nodec::ir::GradientMethod;
use nodec::sema::Overrides;
use nodec::sens::{self, GradientOptions};
use nodec::train::Trainer;

mod p4;

/// Every `models/*.node` with a `train` declaration, sorted.
fn trainable_models() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("models/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "node"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("train "))
        })
        .map(|p| p.to_str().expect("utf-8 path").to_string())
        .collect();
    files.sort();
    files
}

fn epochs(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_epoch");
    group.sample_size(10);
    for path in trainable_models() {
        let mut out = Output::default();
        let Some(loaded) = load(&path, &Overrides::default(), 0, None, &mut out) else {
            panic!("{path}: {}", out.stderr);
        };
        let (_, data) = loaded.training_block();
        let train = loaded.model.train.as_ref().expect("declares train");
        let method = train
            .gradient
            .unwrap_or_else(|| sens::default_method(&loaded.model));
        group.throughput(Throughput::Elements(data.n as u64));
        group.bench_function(loaded.model.name.clone(), |b| {
            b.iter(|| {
                // A fresh run each time, so every iteration times the same first epoch.
                let mut trainer =
                    Trainer::new(loaded.bind(data), GradientOptions::new(method)).expect("trainer");
                trainer.run_epoch(&|| false).expect("epoch").map(|s| s.loss)
            })
        });
    }
    group.finish();
}

fn optimizer_step(c: &mut Criterion) {
    let p = p4::load_with_train(
        2,
        "train adam(lr = 0.001, epochs = 1, batch = 1024, seed = 1)",
    );
    let mut group = c.benchmark_group("p4_d2_train_step");
    group.sample_size(20);
    group.bench_function("gradient", |b| {
        b.iter(|| {
            sens::gradient(&p.bound(), &GradientOptions::new(GradientMethod::Backprop))
                .expect("gradient")
                .grad[0]
        })
    });
    let mut trainer =
        Trainer::new(p.bound(), GradientOptions::new(GradientMethod::Backprop)).expect("trainer");
    group.bench_function("adam step (one epoch of one batch)", |b| {
        b.iter(|| {
            // The state rewinds to epoch 0 so that the shuffle and step size stay the same;
            // the parameters keep moving, by steps of 1e-3, which do not change the cost.
            trainer.state.epoch = 0;
            trainer.run_epoch(&|| false).expect("step").map(|s| s.loss)
        })
    });
    group.finish();
}

criterion_group!(benches, optimizer_step, epochs);
criterion_main!(benches);
