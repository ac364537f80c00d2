//! Every ```node block of `README.md` and `docs/**/*.md` is checked, so the guide and the
//! tutorials cannot drift from the language.
//!
//! The convention (also stated in `docs/language.md`, "How the examples are checked"):
//! - ```` ```node ```` is a whole model: it must check with no error and no warning.
//! - A line `// error: TEXT` in a block makes it an error example: checking it must fail, and
//!   the rendered diagnostics must contain every such `TEXT`. `// warning: TEXT` likewise expects
//!   a warning (and no error).
//! - ```` ```node fragment ```` is a piece of a model (one declaration or a few): it must parse
//!   with no syntax error, and it is checked no further, because its names live in a model
//!   around it. Fragments are counted apart, so they stay few.
//! - ```` ```node file=models/NAME.node ```` shows a model of the library: the block must be
//!   byte for byte that file (tests/it/models.rs checks, runs and snapshots the files of
//!   `models/`; a tutorial's file elsewhere is run here with `nodec run`).
//!
//! Any other word after `node` fails the test: no block is skipped silently.

use nodec::diag::{Severity, SourceFile};
use nodec::sema::Overrides;

use crate::support::{nodec, root};

/// The fewest blocks the documents must hold; raise it as examples are added.
const MIN_BLOCKS: usize = 80;

/// One ```node block: where it is, its fence's words after `node`, and its text.
struct Block {
    place: String,
    attributes: Vec<String>,
    text: String,
}

/// The Markdown files checked: the README and everything under `docs/`, sorted.
fn documents() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("docs folder readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

/// The ```node blocks of one Markdown text. A fence may be indented (inside a list item); the
/// block's lines lose that indentation.
fn node_blocks(name: &str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut words = info.split_whitespace();
        let is_node = words.next() == Some("node");
        let attributes: Vec<String> = words.map(str::to_string).collect();
        let mut body = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                break;
            }
            body.push_str(inner.get(indent..).unwrap_or(inner.trim_start()));
            body.push('\n');
        }
        if is_node {
            blocks.push(Block {
                place: format!("{name}:{}", number + 1),
                attributes,
                text: body,
            });
        }
    }
    blocks
}

/// The texts after `// error:` (or `// warning:`) lines of a block.
fn expectations(text: &str, kind: &str) -> Vec<String> {
    let marker = format!("// {kind}:");
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(marker.as_str()))
        .map(|m| m.trim().to_string())
        .collect()
}

/// Checks one block by its convention; returns what was wrong, if anything.
fn check_block(block: &Block) -> Result<&'static str, String> {
    let file = SourceFile::new(block.place.clone(), block.text.clone());
    match block.attributes.as_slice() {
        [] => {}
        [only] if only == "fragment" => {
            let (_ast, diags) = nodec::syntax::parse(&file);
            return if diags.has_errors() {
                Err(diags.render(&file))
            } else {
                Ok("fragment")
            };
        }
        [only] if only.starts_with("file=") => {
            let path = &only["file=".len()..];
            let original = std::fs::read_to_string(root().join(path))
                .map_err(|e| format!("cannot read {path}: {e}"))?;
            if original != block.text {
                return Err(format!(
                    "the block differs from {path}: copy the file again"
                ));
            }
            // A tutorial's own model is in no other test: solve it once here, briefly.
            if !path.starts_with("models/") {
                let out = nodec(&["run", path, "--no-timings"]);
                if !out.status.success() {
                    return Err(format!(
                        "`nodec run {path}` failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        other => return Err(format!("unknown fence words {other:?} after `node`")),
    }
    let (_model, diags) = nodec::check_source(&file, &Overrides::default(), "docs");
    let rendered = diags.render(&file);
    let errors = expectations(&block.text, "error");
    let warnings = expectations(&block.text, "warning");
    let has_warnings = diags.iter().any(|d| d.severity == Severity::Warning);
    if !errors.is_empty() {
        if !diags.has_errors() {
            return Err(format!(
                "an error example that checks clean; expected {errors:?}"
            ));
        }
        if let Some(missing) = errors.iter().find(|e| !rendered.contains(e.as_str())) {
            return Err(format!("expected the error `{missing}`, got:\n{rendered}"));
        }
        return Ok("error");
    }
    if diags.has_errors() {
        return Err(rendered);
    }
    if !warnings.is_empty() {
        if let Some(missing) = warnings.iter().find(|w| !rendered.contains(w.as_str())) {
            return Err(format!(
                "expected the warning `{missing}`, got:\n{rendered}"
            ));
        }
        return Ok("warning");
    }
    if has_warnings {
        return Err(format!(
            "a whole model with warnings (mark them with `// warning:`):\n{rendered}"
        ));
    }
    Ok("model")
}

#[test]
#[expect(
    clippy::print_stderr,
    reason = "the count of blocks checked is what this test reports"
)]
fn every_node_block_in_the_docs_checks() {
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for path in documents() {
        let name = path
            .strip_prefix(root())
            .expect("inside the repository")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("document readable");
        for block in node_blocks(&name, &text) {
            match check_block(&block) {
                Ok(kind) => *counts.entry(kind).or_default() += 1,
                Err(why) => failures.push(format!("{}: {why}", block.place)),
            }
        }
    }
    let total: usize = counts.values().sum();
    // The count is part of what this test shows; `--nocapture` prints it.
    eprintln!("docs: {total} ```node blocks checked: {counts:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        total >= MIN_BLOCKS,
        "only {total} blocks checked, fewer than {MIN_BLOCKS}: {counts:?}"
    );
    // Fragments are checked only for syntax: keep them a small part of the examples.
    let fragments = counts.get("fragment").copied().unwrap_or(0);
    assert!(
        fragments * 5 <= total,
        "{fragments} of {total} blocks are fragments"
    );
}

#[test]
fn the_block_reader_follows_the_convention() {
    // A hand-made document with one block of each kind, and blocks that must fail.
    let doc = "text\n```node\nstate x = 1\ndx/dt = -x\nschedule rk4(t = [0, 1], steps = 2)\n```\n\
               ```python\nnot checked\n```\n\
               - item\n  ```node fragment\n  param k = 1\n  ```\n\
               ```node\n// error: did you mean `tanh`?\nstate x = 1\ndx/dt = tahn(x)\nschedule rk4(t = [0, 1], steps = 2)\n```\n";
    let blocks = node_blocks("doc.md", doc);
    assert_eq!(blocks.len(), 3);
    assert_eq!(
        blocks[1].text, "param k = 1\n",
        "the list item's indentation is removed"
    );
    let kinds: Vec<_> = blocks
        .iter()
        .map(|b| check_block(b).expect("checks"))
        .collect();
    assert_eq!(kinds, ["model", "fragment", "error"]);
    let bad = |text: &str, attributes: &[&str]| Block {
        place: "doc.md:1".into(),
        attributes: attributes.iter().map(|a| a.to_string()).collect(),
        text: text.into(),
    };
    // An error example whose message differs, one that checks clean, a model with an error, a
    // model with an unmarked warning, an unknown fence word, a broken fragment, a stale copy.
    let model = "state x = 1\ndx/dt = -x\nschedule rk4(t = [0, 1], steps = 2)\n";
    let typo = "state x = 1\ndx/dt = tahn(x)\nschedule rk4(t = [0, 1], steps = 2)\n";
    assert!(check_block(&bad(&format!("// error: did you mean `tan`?\n{typo}"), &[])).is_err());
    assert!(check_block(&bad(&format!("// error: anything\n{model}"), &[])).is_err());
    assert!(check_block(&bad(
        "state x = 1\ndx/dt = -y\nschedule rk4(t = [0, 1], steps = 2)\n",
        &[]
    ))
    .is_err());
    assert!(check_block(&bad(&format!("param k = 1\n{model}"), &[])).is_err());
    assert!(check_block(&bad(model, &["ignore"])).is_err());
    assert!(check_block(&bad("param k = (1\n", &["fragment"])).is_err());
    assert!(check_block(&bad(model, &["file=models/decay.node"])).is_err());
    // A marked warning passes.
    assert_eq!(
        check_block(&bad(
            &format!("// warning: param `k` is never used\nparam k = 1\n{model}"),
            &[]
        )),
        Ok("warning")
    );
}
