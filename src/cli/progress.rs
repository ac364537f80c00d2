//! A live sign that a long `run` or `grad` is moving: nothing for the first second, then on a
//! terminal a spinner with the right-hand sides evaluated so far and the time taken, and
//! elsewhere (a log, a batch job) one line every ten seconds. `NODEC_PROGRESS_SECONDS` sets that
//! interval (and the first delay), e.g. to see the lines of a short run.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::simulate;

/// Shows progress until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts watching the work that follows; `what` names it (`solving`, `differentiating`).
    pub fn start(what: &'static str) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || watch(what, &stopped));
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Wake it from its wait, so that a short solve does not wait for the watcher.
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn watch(what: &str, stop: &AtomicBool) {
    let started = Instant::now();
    let before = simulate::evaluations();
    let terminal = std::io::stderr().is_terminal();
    let every = std::env::var("NODEC_PROGRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(if terminal { 0.2 } else { 10.0 });
    let mut next = if terminal { every.max(1.0) } else { every };
    let mut spinner: Option<indicatif::ProgressBar> = None;
    let message = || {
        let evaluations = simulate::evaluations().saturating_sub(before);
        format!(
            "{what}: {evaluations} right-hand sides evaluated in {:.1} s (Ctrl-C stops)",
            started.elapsed().as_secs_f64()
        )
    };
    loop {
        let wait = next - started.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::park_timeout(Duration::from_secs_f64(wait));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if started.elapsed().as_secs_f64() < next {
            continue;
        }
        next += every;
        if terminal {
            let bar = spinner.get_or_insert_with(indicatif::ProgressBar::new_spinner);
            bar.set_message(message());
            bar.tick();
        } else {
            let _ = writeln!(std::io::stderr(), "nodec: {}", message());
        }
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
}
