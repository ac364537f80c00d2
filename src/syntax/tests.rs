//! Tests of the parser through its boundary, [`parse`] and [`to_sexpr`].
//!
//! The limit tests run on the default test thread (2 MiB of stack): passing them is the proof
//! that no input overflows the stack.

use super::ast::{DeclKind, ExprKind, ParamInit, ParamTime};
use super::*;

fn run(text: &str) -> (ast::Model, Diagnostics) {
    parse(&SourceFile::new("t.node", text))
}

/// The messages of the diagnostics with their 1-based line and column.
fn errors(text: &str) -> Vec<(usize, usize, String)> {
    let file = SourceFile::new("t.node", text);
    let (_, diags) = parse(&file);
    diags
        .iter()
        .map(|d| {
            let (line, col) = d.span.map_or((0, 0), |s| file.line_col(s.start as usize));
            (line, col, d.message.clone())
        })
        .collect()
}

/// The single error of `text`, as `LINE:COL: MESSAGE`.
fn error(text: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{text:?} gave {errs:?}");
    let (line, col, message) = &errs[0];
    format!("{line}:{col}: {message}")
}

/// The expression of `let e = SRC` as an S-expression, or its first error message.
fn sexpr(src: &str) -> String {
    let (model, diags) = run(&format!("let e = {src}"));
    if let Some(d) = diags.iter().next() {
        return format!("error: {}", d.message);
    }
    assert_eq!(model.decls.len(), 1, "{src}");
    match &model.decls[0].kind {
        DeclKind::Let { value, .. } => to_sexpr(value),
        other => panic!("not a let: {other:?}"),
    }
}

fn models() -> Vec<(String, String)> {
    let mut paths: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/models"))
        .expect("models/ exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "node"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("model is UTF-8");
            (p.display().to_string(), text)
        })
        .collect()
}

#[test]
fn every_model_parses_cleanly() {
    let models = models();
    assert!(models.len() >= 10);
    for (path, text) in &models {
        let file = SourceFile::new(path.clone(), text.clone());
        let (model, diags) = parse(&file);
        assert!(diags.is_empty(), "{}", diags.render(&file));
        assert!(!model.decls.is_empty(), "{path}");
    }
}

#[test]
fn declaration_counts_and_forms() {
    let decay = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/decay.node"))
        .expect("decay.node");
    let (model, _) = run(&decay);
    let kinds: Vec<&str> = model
        .decls
        .iter()
        .map(|d| match d.kind {
            DeclKind::Model { .. } => "model",
            DeclKind::Param { .. } => "param",
            DeclKind::State { .. } => "state",
            DeclKind::Equation { .. } => "equation",
            DeclKind::Schedule { .. } => "schedule",
            DeclKind::Cost { .. } => "cost",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["model", "param", "state", "equation", "schedule", "cost"]
    );

    let lorenz =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/lorenz.node"))
            .expect("lorenz.node");
    assert_eq!(run(&lorenz).0.decls.len(), 12);
    let lm = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/lm_resnet.node"
    ))
    .expect("lm_resnet.node");
    let (model, _) = run(&lm);
    assert_eq!(model.decls.len(), 19);
    let per_layer = model
        .decls
        .iter()
        .filter(|d| {
            matches!(
                d.kind,
                DeclKind::Param {
                    time: ParamTime::PerLayer(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(per_layer, 4);
}

#[test]
fn every_declaration_form() {
    let src = r#"model m
const n = 3
param a
param b[n] per layer ~ normal(0, 0.5)
param c[2, n] on knots(0, 0.5, 1,) = 1
state x[n] = zeros(n)
dx/dt = -x
dlogdet / dt = 0
input u[2]
label y
observed yobs[3]
let p = x[0]
fn f(z, t,) = z * t
schedule rk4(t = [0, 1], steps = 10)
cost terminal = sumsq(x)
data train = csv("digits.csv", input = 0..64, label = 64, shuffle = 1, rows = 0..1400)
train adam(lr = 0.01, epochs = 3)
metric acc = (p > 0.5) == y
output r = sqrt(x[0]^2)
"#;
    let (model, diags) = run(src);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(model.decls.len(), 19);
    match &model.decls[3].kind {
        DeclKind::Param {
            name,
            dims: Some(dims),
            time: ParamTime::PerLayer(_),
            init: ParamInit::Dist(call),
        } => {
            assert_eq!(name.name, "b");
            assert_eq!(dims.dims.len(), 1);
            assert_eq!(call.name.name, "normal");
            assert_eq!(call.args.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    match &model.decls[4].kind {
        DeclKind::Param {
            time: ParamTime::Knots { times, .. },
            init: ParamInit::Value(_),
            dims: Some(dims),
            ..
        } => {
            assert_eq!(times.len(), 3);
            assert_eq!(dims.dims.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    match &model.decls[7].kind {
        DeclKind::Equation { state, .. } => assert_eq!(state.name, "logdet"),
        other => panic!("{other:?}"),
    }
    match &model.decls[12].kind {
        DeclKind::Fn { params, .. } => assert_eq!(params.len(), 2),
        other => panic!("{other:?}"),
    }
    match &model.decls[15].kind {
        DeclKind::Data { name, source } => {
            assert_eq!(name.name, "train");
            let args: Vec<String> = source.args.iter().map(|a| to_sexpr(&a.value)).collect();
            assert_eq!(
                args,
                ["\"digits.csv\"", "(.. 0 64)", "64", "1", "(.. 0 1400)"]
            );
            assert_eq!(
                source.args[1].name.as_ref().map(|n| n.name.as_str()),
                Some("input")
            );
            assert!(source.args[0].name.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn precedence_and_associativity() {
    let table = [
        ("-x^2", "(neg (^ x 2))"),
        ("2^-1", "(^ 2 (neg 1))"),
        ("a^b^c", "(^ a (^ b c))"),
        ("-2^-x^2", "(neg (^ 2 (neg (^ x 2))))"),
        ("a - b - c", "(- (- a b) c)"),
        ("a / b * c", "(* (/ a b) c)"),
        ("a .* b + c", "(+ (.* a b) c)"),
        ("a + b .* c", "(+ a (.* b c))"),
        ("-a * b", "(* (neg a) b)"),
        ("a * -b", "(* a (neg b))"),
        ("a - -b", "(- a (neg b))"),
        ("+x", "x"),
        ("A' * x", "(* (' A) x)"),
        ("x[0:2]'", "(' (index x (: 0 2)))"),
        ("A'[0]", "(index (' A) 0)"),
        ("-x'", "(neg (' x))"),
        ("2^x'", "(^ 2 (' x))"),
        ("a < b + c", "(< a (+ b c))"),
        ("a < b < c", "(< (< a b) c)"),
        ("a == b != c", "(!= (== a b) c)"),
        ("(p > 0.5) == y", "(== (> p 0.5) y)"),
        ("a <= b", "(<= a b)"),
        ("a >= b", "(>= a b)"),
        ("0..64", "(.. 0 64)"),
        ("a + 1..b * 2", "(.. (+ a 1) (* b 2))"),
        ("1e-3", "0.001"),
        ("3e7", "30000000"),
        ("2.5", "2.5"),
        ("(a + b) * c", "(* (+ a b) c)"),
        ("f(x, k = kappa)", "(call f x (= k kappa))"),
        ("f (x)", "(call f x)"),
        ("f()", "(call f)"),
        ("g(a == b)", "(call g (== a b))"),
        ("x[0]", "(index x 0)"),
        ("A[1, 2]", "(index A 1 2)"),
        ("x[:2]", "(index x (: _ 2))"),
        ("x[1:]", "(index x (: 1 _))"),
        ("A[:, 0]", "(index A (: _ _) 0)"),
        ("[1, 2]", "(list 1 2)"),
        ("[[1, 2], [3, 4]]", "(list (list 1 2) (list 3 4))"),
        ("[\n  a,\n  b,\n]", "(list a b)"),
        ("[]", "(list)"),
        ("\"a\\\"b\\\\c\"", "\"a\\\"b\\\\c\""),
        (
            "data + label * t - pi / d",
            "(- (+ data (* label t)) (/ pi d))",
        ),
        ("θ * σ", "(* θ σ)"),
        ("x // comment\n + 1", "(+ x 1)"),
        ("x /* c */ * 2", "(* x 2)"),
        (".5", "error: expected an expression, found `.`"),
        ("2.", "error: expected an operator, found `.`"),
        ("0..64..2", "error: unexpected `..` after a range"),
        ("1e999", "error: number is too large"),
    ];
    for (src, want) in table {
        assert_eq!(sexpr(src), want, "{src}");
    }
}

#[test]
fn spans_cover_exact_bytes() {
    let text = "param θ = 0.5\nstate σ = 1\ndσ/dt = -θ * σ\n";
    let (model, diags) = run(text);
    assert!(diags.is_empty());
    let file = SourceFile::new("u.node", text);
    match &model.decls[0].kind {
        DeclKind::Param { name, .. } => {
            assert_eq!(file.slice(name.span), "θ");
            assert_eq!(name.span.end - name.span.start, 2);
        }
        other => panic!("{other:?}"),
    }
    match &model.decls[2].kind {
        DeclKind::Equation { state, rhs } => {
            assert_eq!(file.slice(state.span), "σ");
            assert_eq!(file.slice(rhs.span), "-θ * σ");
            let ExprKind::Binary { lhs, rhs: r, .. } = &rhs.kind else {
                panic!("{rhs:?}")
            };
            assert_eq!(file.slice(lhs.span), "-θ");
            assert_eq!(file.slice(r.span), "σ");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(file.slice(model.decls[2].span), "dσ/dt = -θ * σ");

    let text = "let e = (a + b) * f(x)[0]' // c\n";
    let (model, _) = run(text);
    let file = SourceFile::new("s.node", text);
    let DeclKind::Let { value, .. } = &model.decls[0].kind else {
        panic!()
    };
    assert_eq!(file.slice(value.span), "(a + b) * f(x)[0]'");
    assert_eq!(
        file.slice(model.decls[0].span),
        "let e = (a + b) * f(x)[0]'"
    );
    let ExprKind::Binary { lhs, rhs, .. } = &value.kind else {
        panic!()
    };
    assert_eq!(file.slice(lhs.span), "(a + b)");
    let ExprKind::Transpose(inner) = &rhs.kind else {
        panic!()
    };
    assert_eq!(file.slice(inner.span), "f(x)[0]");
}

#[test]
fn messages_name_what_was_expected_and_found() {
    let cases = [
        ("state x[3] 1", "1:12: expected `=` after the state's shape, found `1`"),
        ("state x 1", "1:9: expected `[` or `=` after the state's name, found `1`"),
        ("dx/dt = a * (b + )", "1:18: expected an expression, found `)`"),
        ("state x = @", "1:11: unexpected `@`"),
        ("state x = 1 2", "1:13: expected an operator, found `2`"),
        ("dx/dt = f(a, b\nstate y = 1", "1:10: unclosed `(`"),
        ("state x = [1, 2", "1:11: unclosed `[`"),
        ("state x =\nstate y = 1", "1:10: expected an expression, found end of line"),
        ("model", "1:6: expected a name after `model`, found end of file"),
        ("parm x = 1", "1:1: unknown declaration `parm`; did you mean `param`?"),
        (
            "x + 1",
            "1:1: expected a declaration such as `state`, `param` or `dx/dt = ...`, found `x`",
        ),
        (
            "param w[3] 5",
            "1:12: expected `per layer`, `on knots(...)`, `=` or `~` after the parameter's shape, found `5`",
        ),
        ("schedule 3", "1:10: expected a method such as `rk4(...)` after `schedule`, found `3`"),
        ("data d = 3", "1:10: expected a data source such as `moons(...)`, found `3`"),
        ("dx/dy = 1", "1:4: expected `dt`, found `dy`"),
        ("dx/dt 1", "1:7: expected `=` after `dx/dt`, found `1`"),
        ("state x = \"abc", "1:11: unterminated string"),
        ("state x = 1 /* c", "1:13: unterminated comment: `/*` without `*/`"),
        ("let s = \"a\\qb\"", "1:11: unknown escape `\\q` in a string"),
        ("param k[2, 3, 4]", "1:15: a shape has one or two dimensions, found 3"),
        ("dx/dt = x\n  * (y +\n  )", "3:3: expected an expression, found `)`"),
        ("state x[3]", "1:11: expected `=` after the state's shape, found end of file"),
        ("state", "1:6: expected a name after `state`, found end of file"),
        ("fn f x = 1", "1:6: expected `(` after the function's name, found `x`"),
        ("train adam(lr = )", "1:17: expected an expression, found `)`"),
        ("let a = x[1 2]", "1:13: expected an operator, `,`, `:` or `]`, found `2`"),
        ("let a = f(x y)", "1:13: expected an operator, `,` or `)`, found `y`"),
        ("let a = f(x]", "1:12: expected an operator, `,` or `)`, found `]`"),
        ("cost = 1", "1:6: expected a name after `cost`, found `=`"),
        ("cost terminal 1", "1:15: expected `=` after the cost's kind, found `1`"),
        ("param k per", "1:12: expected `layer`, found end of file"),
        ("output r = f(x,,)", "1:16: expected an expression or `)`, found `,`"),
    ];
    for (src, want) in cases {
        assert_eq!(error(src), want, "{src}");
    }
}

#[test]
fn dots_that_belong_to_numbers_get_help() {
    let (_, diags) = run("let a = .5");
    let d = diags.iter().next().expect("an error");
    assert_eq!(
        d.help,
        ["write `0.5`: a number needs a digit before its dot"]
    );
    let (_, diags) = run("let a = 2. * x");
    let d = diags.iter().next().expect("an error");
    assert_eq!(
        d.help,
        ["write `2.0` or `2`: a number needs a digit after its dot"]
    );
}

#[test]
fn a_line_without_a_keyword_does_not_swallow_the_declaration_before_it() {
    let src = "state x = 1\ny = 2\nstate z = 3\nd1/dt = 0\n";
    let (model, diags) = run(src);
    assert_eq!(model.decls.len(), 2);
    let errs = errors(src);
    assert_eq!(
        errs,
        [
            (
                2,
                1,
                "expected a declaration such as `state`, `param` or `dx/dt = ...`, found `y`"
                    .to_string()
            ),
            (
                4,
                1,
                "expected a declaration such as `state`, `param` or `dx/dt = ...`, found `d1`"
                    .to_string()
            ),
        ]
    );
    let first = diags.iter().next().expect("an error");
    assert_eq!(first.help, ["to name a value, write `let y = ...`"]);
    // A continuation that breaks keeps its precise error instead.
    assert_eq!(
        error("dx/dt = a\n  * (b + )"),
        "2:10: expected an expression, found `)`"
    );
}

#[test]
fn several_declarations_on_one_line() {
    let (model, diags) = run("state x = 1 state y = 2 dy/dt = x");
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(model.decls.len(), 3);
}

#[test]
fn keywords_are_names_in_expressions_and_arguments() {
    let src = "cost terminal = bce(p,\n  label)\ndata test = csv(\"f.csv\",\n  label = 3,\n  input = 0..2)\nlabel y";
    let (model, diags) = run(src);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(model.decls.len(), 3);
}

#[test]
fn recovery_reports_each_broken_declaration_and_keeps_the_rest() {
    let src = "\
model m
param k = 0.5
state x = = 1
state y = 2
parm z = 3
dx/dt = -k * (x +
dy/dt = y
schedule rk4(t = [0, 1], steps = 10)
";
    let (model, diags) = run(src);
    let errs = errors(src);
    let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
    assert_eq!(lines, [3, 5, 6], "{errs:?}");
    assert_eq!(diags.error_count(), 3);
    let names: Vec<String> = model
        .decls
        .iter()
        .map(|d| match &d.kind {
            DeclKind::Model { name }
            | DeclKind::Param { name, .. }
            | DeclKind::State { name, .. } => name.name.clone(),
            DeclKind::Equation { state, .. } => format!("d{state}", state = state.name),
            DeclKind::Schedule { call } => call.name.name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["m", "k", "y", "dy", "rk4"]);
}

/// `text` parses without panicking and reports exactly `message` once.
fn assert_limit(text: &str, message: &str) {
    let (_, diags) = run(text);
    let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages, [message], "{}", &text[..text.len().min(80)]);
}

#[test]
fn limits_give_errors_not_stack_overflows() {
    const N: usize = 100_000;
    let deep = "expression nested too deeply (more than 64 levels)";
    assert_limit(
        &format!("dx/dt = {}x{}", "(".repeat(N), ")".repeat(N)),
        deep,
    );
    assert_limit(&format!("dx/dt = {}", "(".repeat(N)), deep);
    assert_limit(
        &format!("dx/dt = {}1{}", "[".repeat(N), "]".repeat(N)),
        deep,
    );
    assert_limit(&format!("dx/dt = {}x", "f(".repeat(N)), deep);
    assert_limit(&format!("dx/dt = x{}", "[0".repeat(N)), deep);
    assert_limit(&format!("dx/dt = {}x", "-".repeat(N)), deep);
    assert_limit(&format!("dx/dt = {}x", "+-".repeat(N)), deep);
    assert_limit(&format!("dx/dt = x{}", "^x".repeat(N)), deep);
    assert_limit(&format!("dx/dt = x{}", "^-x".repeat(N)), deep);
    assert_limit(&format!("dx/dt = x{}", "'".repeat(N)), deep);
    assert_limit(&format!("dx/dt = x{}", "[0]'".repeat(N)), deep);
    assert_limit(
        &format!("dx/dt = x{}", " + x".repeat(N)),
        "expression nested too deeply (more than 256 levels)",
    );
    // At the limit everything still parses, on this thread's stack.
    let mut at_limit = String::from("dx/dt = ");
    for i in 0..64 {
        at_limit.push_str(["f(1, k = ", "[1, ", "(1 + ", "x["][i % 4]);
    }
    at_limit.push_str(&"-".repeat(60));
    at_limit.push('x');
    at_limit.push_str(&"^x".repeat(60));
    for i in (0..64).rev() {
        at_limit.push_str([")", "]", ")", "]"][i % 4]);
    }
    let (model, diags) = run(&at_limit);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(model.decls.len(), 1);
    // 64 levels of one kind are fine, 65 are not.
    assert!(run(&format!("let a = {}x", "-".repeat(64))).1.is_empty());
    assert_limit(&format!("let a = {}x", "-".repeat(65)), deep);
    assert!(
        run(&format!("let a = {}x{}", "(".repeat(64), ")".repeat(64)))
            .1
            .is_empty()
    );
    assert_limit(
        &format!("let a = {}x{}", "(".repeat(65), ")".repeat(65)),
        deep,
    );
    // The limit applies per declaration: the next one still parses.
    let (model, diags) = run(&format!("dx/dt = {}\nstate x = 1", "(".repeat(N)));
    assert_eq!((model.decls.len(), diags.error_count()), (1, 1));
}

#[test]
fn files_over_one_mib_are_rejected_whole() {
    let text = format!("state x = 1\n{}", " ".repeat(limits::MAX_FILE_SIZE));
    let (model, diags) = run(&text);
    assert!(model.decls.is_empty());
    let d: Vec<_> = diags.iter().collect();
    assert_eq!(d.len(), 1);
    assert!(d[0].span.is_none());
    assert!(
        d[0].message.starts_with("file is too large"),
        "{}",
        d[0].message
    );
}

#[test]
fn large_valid_inputs_parse_in_linear_time() {
    // A 1 MiB file of small declarations, and one long list.
    let line = "state x = [1, 2, 3] * a + b\n";
    let text = line.repeat(limits::MAX_FILE_SIZE / line.len());
    let (model, diags) = run(&text);
    assert!(diags.is_empty());
    assert_eq!(model.decls.len(), limits::MAX_FILE_SIZE / line.len());
    let text = format!("let a = [{}]", "1, ".repeat(200_000));
    let (model, diags) = run(&text);
    assert!(diags.is_empty());
    assert_eq!(model.decls.len(), 1);
    // Many broken lines: one error each.
    let text = "x y\n".repeat(10_000);
    assert_eq!(run(&text).1.error_count(), 10_000);
}

#[test]
fn empty_and_comment_only_files_are_empty_models() {
    for text in ["", "// nothing\n/* at all */\n", "\u{FEFF}  \n\t"] {
        let (model, diags) = run(text);
        assert!(model.decls.is_empty() && diags.is_empty(), "{text:?}");
    }
}

mod fuzz {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::super::ast::{DeclKind, Expr, ExprKind, IndexItem, ParamInit, ParamTime};
    use super::super::{lex, parse};
    use super::models;
    use crate::diag::{SourceFile, Span};

    /// Parses `text` and checks what must hold for any input: every span lies inside the file
    /// on character boundaries, and the diagnostics render.
    fn run(text: &str) {
        let file = SourceFile::new("f.node", text);
        let (model, diags) = parse(&file);
        let ok = |span: Span| {
            let (s, e) = (span.start as usize, span.end as usize);
            assert!(s <= e && e <= text.len(), "{span:?} in {text:?}");
            assert!(
                text.is_char_boundary(s) && text.is_char_boundary(e),
                "{span:?}"
            );
        };
        for d in diags.iter() {
            d.span.map(ok);
        }
        let _ = diags.render(&file);
        fn walk(e: &Expr, ok: &dyn Fn(Span)) {
            ok(e.span);
            match &e.kind {
                ExprKind::Binary { lhs, rhs, .. }
                | ExprKind::Range {
                    start: lhs,
                    end: rhs,
                } => {
                    walk(lhs, ok);
                    walk(rhs, ok);
                }
                ExprKind::Neg(x) | ExprKind::Transpose(x) => walk(x, ok),
                ExprKind::Call(c) => c.args.iter().for_each(|a| walk(&a.value, ok)),
                ExprKind::List(xs) => xs.iter().for_each(|x| walk(x, ok)),
                ExprKind::Index { base, items } => {
                    walk(base, ok);
                    for item in items {
                        match item {
                            IndexItem::Single(x) => walk(x, ok),
                            IndexItem::Slice { start, end, span } => {
                                ok(*span);
                                start.iter().chain(end).for_each(|x| walk(x, ok));
                            }
                        }
                    }
                }
                ExprKind::IndexSum { binder, body } | ExprKind::Comprehension { binder, body } => {
                    ok(binder.span);
                    ok(binder.var.span);
                    walk(&binder.start, ok);
                    walk(&binder.end, ok);
                    walk(body, ok);
                }
                ExprKind::Number(_) | ExprKind::Str(_) | ExprKind::Name(_) => {}
            }
        }
        for decl in &model.decls {
            ok(decl.span);
            match &decl.kind {
                DeclKind::Const { value: e, .. }
                | DeclKind::State { init: e, .. }
                | DeclKind::Equation { rhs: e, .. }
                | DeclKind::Let { value: e, .. }
                | DeclKind::Fn { body: e, .. }
                | DeclKind::Cost { value: e, .. }
                | DeclKind::Metric { value: e, .. }
                | DeclKind::Output { value: e, .. } => walk(e, &ok),
                DeclKind::Param { time, init, .. } => {
                    if let ParamTime::Knots { times, .. } = time {
                        times.iter().for_each(|x| walk(x, &ok));
                    }
                    if let ParamInit::Value(e) = init {
                        walk(e, &ok);
                    }
                }
                _ => {}
            }
        }
    }

    /// Tokens (with the whitespace before them) that mutations insert.
    const INSERTS: [&str; 16] = [
        " (", " )", " [", " ]", ",", " =", " state", "\nparam", " -", " ^", "'", " ..", " \"",
        " /*", " dx/dt", " 1e999",
    ];

    /// The example models cut into pieces, each a token with the text before it.
    fn pieces() -> &'static [Vec<String>] {
        static PIECES: std::sync::OnceLock<Vec<Vec<String>>> = std::sync::OnceLock::new();
        PIECES.get_or_init(|| {
            models()
                .into_iter()
                .map(|(_, text)| {
                    let mut out = Vec::new();
                    let mut last = 0;
                    for t in lex::lex(&text) {
                        out.push(text[last..t.end].to_string());
                        last = t.end;
                    }
                    out.push(text[last..].to_string());
                    out
                })
                .collect()
        })
    }

    proptest! {
        // CI-sized; `SYNTAX_FUZZ_CASES=100000` runs a longer campaign.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("SYNTAX_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            run(&text);
        }

        #[test]
        fn random_token_soup_never_panics(
            picks in proptest::collection::vec(any::<Index>(), 0..64)
        ) {
            let text: String = picks.iter().map(|i| *i.get(&INSERTS)).collect();
            run(&text);
        }

        #[test]
        fn mutated_models_never_panic(
            model in any::<Index>(),
            edits in proptest::collection::vec((0u8..3, any::<Index>(), any::<Index>()), 1..6),
        ) {
            let all = pieces();
            let mut pieces = model.get(all).clone();
            for (kind, at, what) in edits {
                if pieces.is_empty() {
                    break;
                }
                let i = at.index(pieces.len());
                match kind {
                    0 => {
                        pieces.remove(i);
                    }
                    1 => {
                        let copy = pieces[i].clone();
                        pieces.insert(i, copy);
                    }
                    _ => pieces.insert(i, what.get(&INSERTS).to_string()),
                }
            }
            let text: String = pieces.concat();
            run(&text);
        }
    }
}

/// `sum(i in a..b, EXPR)` and `[EXPR for i in a..b]`: the index forms, and their errors with
/// their places.
#[test]
fn index_forms_parse_and_misuse_is_located() {
    assert_eq!(
        sexpr("sum(i in 0..N, x[i] * i)"),
        "(sum (in i 0 N) (* (index x i) i))"
    );
    assert_eq!(
        sexpr("[x[i + 1] - x[i] for i in 1..N - 1]"),
        "(for (in i 1 (- N 1)) (- (index x (+ i 1)) (index x i)))"
    );
    // `for` and `in` are not reserved: they are ordinary names elsewhere.
    assert_eq!(sexpr("[for, in]"), "(list for in)");
    assert_eq!(sexpr("f(in = 2)"), "(call f (= in 2))");
    assert_eq!(
        error("let e = max(i in 0..3, 2)"),
        "1:13: `i in ...` can only be the first argument of `sum`"
    );
    assert_eq!(
        error("let e = sum(x, i in 0..3)"),
        "1:16: `i in ...` can only be the first argument of `sum`"
    );
    assert_eq!(
        error("let e = sum(i in 3, 2)"),
        "1:18: expected a range such as `0..N` after `i in`"
    );
    assert_eq!(
        error("let e = sum(i in 0..3, 2, 3)"),
        "1:9: `sum(i in ...)` takes the index and one expression to sum"
    );
    assert_eq!(
        error("let e = sum(i in 0..3)"),
        "1:9: `sum(i in ...)` takes the index and one expression to sum"
    );
    assert_eq!(
        error("schedule rk4(i in 0..3)"),
        "1:14: `i in ...` can only be the first argument of `sum`"
    );
    assert_eq!(error("let e = [x for i 0..3]"), "1:18: unexpected `0`");
    assert!(error("let e = [x for i in]").starts_with("1:20: expected an expression"));
}
