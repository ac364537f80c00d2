//! `tests/bad/*.node`: malformed models, one concern per file. Each must exit 1 with at least
//! one located error, and its full stderr is snapshotted (each snapshot read and judged right).
//! A line `// args: ...` near the top passes extra command-line arguments (e.g. `--set`), and
//! `// command: run` runs that command instead of `check`, for mistakes that only a data
//! file's contents reveal (`check` reads no data files); those files live in `tests/bad/data/`.

use crate::support::{node_files, nodec};

/// The words after `// PREFIX` on one of the first three lines.
fn header_words(path: &std::path::Path, prefix: &str) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .take(3)
        .find_map(|l| l.strip_prefix(prefix))
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn every_bad_model_fails_with_located_diagnostics() {
    let files = node_files("tests/bad");
    assert!(
        files.len() >= 25,
        "at least 25 malformed models, found {}",
        files.len()
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rel = format!("tests/bad/{name}");
        let mut args = header_words(&path, "// command:");
        if args.is_empty() {
            args.push("check".into());
        }
        args.extend(header_words(&path, "// args:"));
        args.push(rel.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nodec(&args);
        let stderr = String::from_utf8(out.stderr).expect("diagnostics are UTF-8");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{rel} should fail {}:\n{stderr}",
            args[0]
        );
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("{rel}:"))
                && (first.contains(" error: ") || first.contains(" warning: ")),
            "{rel}: first line must be `FILE:LINE:COL: error: ...` (or `FILE: error:`), got {first:?}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{rel}:")) && l.contains(" error: ")),
            "{rel}: no error line:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{rel} panics:\n{stderr}");
        insta::assert_snapshot!(format!("bad_{}", name.trim_end_matches(".node")), stderr);
    }
}
