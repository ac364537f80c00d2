//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nodec::diag::SourceFile;
use nodec::sema::Overrides;

/// The repository root, so that paths in outputs are relative and stable.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `nodec` binary from the repository root.
pub fn nodec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodec"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the nodec binary runs")
}

/// The `.node` files of a folder, sorted by name.
pub fn node_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("folder exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "node"))
        .collect();
    files.sort();
    files
}

/// Parses, checks and prepares a model from `models/`, failing the test on any error.
pub fn load_model(name: &str) -> nodec::ir::Model {
    let path = root().join("models").join(name);
    let text = std::fs::read_to_string(&path).expect("model file readable");
    let file = SourceFile::new(format!("models/{name}"), text);
    let (model, diags) = nodec::check_source(&file, &Overrides::default(), "model");
    assert!(!diags.has_errors(), "{}", diags.render(&file));
    nodec::prepare(model)
}

/// A small deterministic generator for test points, so failures reproduce.
pub struct Lcg(pub u64);

impl Lcg {
    /// A uniform draw in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// `n` uniform draws in `[lo, hi)`.
    pub fn fill(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// A copy of `models/NAME` with `edits` applied to its text (each must match), written to
/// `dest` with its data paths made absolute, so that the copy can live in `target/`.
pub fn edited_model(name: &str, dest: &str, edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(root().join("models").join(name)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name} has no `{from}`");
        text = text.replace(from, to);
    }
    let data = root().join("models/data");
    let text = text.replace("\"data/", &format!("\"{}/", data.to_str().unwrap()));
    std::fs::write(dest, text).unwrap();
    dest.to_string()
}
