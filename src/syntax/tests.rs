//! Tests of the parser through `parse` and `to_sexpr`.

use super::*;

fn run(text: &str) -> (ast::Model, Diagnostics, SourceFile) {
    let file = SourceFile::new("t.node", text);
    let (m, d) = parse(&file);
    (m, d, file)
}

#[test]
fn scratch() {
    for f in std::fs::read_dir("models").unwrap() {
        let p = f.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let (m, d, file) = run(&text);
        eprintln!(
            "{}: {} decls\n{}",
            p.display(),
            m.decls.len(),
            d.render(&file)
        );
    }
    for src in [
        "state x[3] 1",
        "state x 1",
        "dx/dt = a * (b + )",
        "state x = 1 2\nstate y = 3",
        "state y = 3\nparm x = 1\nstate z = 2",
        "dx/dt = f(a, b\nstate y = 1",
        "state x = \nstate y = 1",
        "param w[3] 5",
        "x + 1",
        "state x = @",
        "const c = 1e999",
        "schedule 3",
        "data x = 3",
        "param k ~ 3",
        "dx/dy = 1",
        "dat x = 1",
        "state x = \"abc",
        "state x = 1 /* abc",
        "state x = [1, 2",
        "let a = (b",
        "fn f(1) = 2",
        "state x = 1 state y = 2",
        "input u[2] 3",
        "let y = 0..64..2",
        "let s = \"a\\qb\"",
        "dx / dt = 1",
        "output r = f(x,)",
        "output r = f(x,,)",
        "model",
        "state x = .5",
        "cost terminal = bce(p,\n  label)\nlabel y",
        "param k per 3",
        "param k[2, 3, 4]",
        "label = 3",
        "state x[3 = 1",
    ] {
        let (m, d, file) = run(src);
        eprintln!("--- {src:?}: {} decls", m.decls.len());
        for decl in &m.decls {
            let s = format!("{:?}", decl.kind);
            eprintln!("  {}", &s[..s.len().min(150)]);
        }
        eprint!("{}", d.render(&file));
    }
}
