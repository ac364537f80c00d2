//! Property tests: mutated example models and random bytes never make `check` panic or hang.

use nodec::diag::SourceFile;
use nodec::sema::Overrides;
use proptest::prelude::*;

use crate::support::{node_files, root};

fn examples() -> Vec<String> {
    node_files("models")
        .into_iter()
        .map(|p| std::fs::read_to_string(p).expect("model readable"))
        .collect()
}

fn check_text(text: &str) {
    let file = SourceFile::new("fuzz.node", text);
    let (_model, diags) = nodec::check_source(&file, &Overrides::default(), "fuzz");
    // Rendering must not panic either, whatever the spans.
    let _ = diags.render(&file);
}

/// Token-level edits: delete, duplicate or swap a token, or insert a stray one.
fn mutate(text: &str, edits: &[(u8, usize, usize)]) -> String {
    let mut tokens: Vec<String> = text
        .split_inclusive(|c: char| !c.is_alphanumeric() && c != '_' && c != '.')
        .map(str::to_string)
        .collect();
    const STRAY: [&str; 12] = [
        "(", ")", "[", "]", ",", "=", "-", "^", "'", "..", "der(", "grad(",
    ];
    for &(kind, a, b) in edits {
        if tokens.is_empty() {
            break;
        }
        let i = a % tokens.len();
        let j = b % tokens.len();
        match kind % 4 {
            0 => {
                tokens.remove(i);
            }
            1 => {
                let t = tokens[i].clone();
                tokens.insert(j, t);
            }
            2 => tokens.swap(i, j),
            _ => tokens.insert(i, STRAY[b % STRAY.len()].to_string()),
        }
    }
    tokens.concat()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_models_never_panic(which in 0usize..64, edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..6)) {
        let models = examples();
        let text = &models[which % models.len()];
        check_text(&mutate(text, &edits));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_text(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(vec![
        "state", "param", "x", "dx/dt", "=", "[", "]", "(", ")", ",", "1", "2.5", "+", "*", "-", "^",
        "'", "tanh", "grad", "der", "div", "jacobian", "t", "let", "fn", "f", "schedule", "rk4", "cost",
        "terminal", "..", "\n", ":", "const", "d", "zeros", "sum", "dot",
    ]), 0..60)) {
        check_text(&tokens.join(" "));
    }
}

#[test]
fn the_binary_rejects_invalid_utf8_with_a_location() {
    let dir = root().join("target").join("fuzz-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latin1.node");
    std::fs::write(&path, b"state x = 1\nparam caf\xe9 = 2\n").unwrap();
    let out = crate::support::nodec(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":2:10: error: the file is not valid UTF-8"),
        "{stderr}"
    );
}
