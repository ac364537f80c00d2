//! S-expression dump of expressions, for tests and debugging: `-x^2` prints as `(neg (^ x 2))`.

use std::fmt::Write as _;

use super::ast::{Expr, ExprKind, IndexItem};

/// Prints an expression as an S-expression: `(neg (^ x 2))`, `(call f x (= k kappa))`,
/// `(index x (: 0 2))` (an absent slice bound prints as `_`), `(' A)`, `(list 1 2)`, `(.. 0 64)`,
/// `"str"`, `(sum (in i 0 n) body)`, `(for (in i 0 n) body)`. Numbers use Rust's shortest round-trip form (`1e-3` prints as `0.001`).
pub fn to_sexpr(expr: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, expr);
    out
}

fn write_expr(out: &mut String, expr: &Expr) {
    match &expr.kind {
        ExprKind::Number(v) => {
            let _ = write!(out, "{v}");
        }
        ExprKind::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        ExprKind::Name(n) => out.push_str(n),
        ExprKind::Binary { op, lhs, rhs } => list(out, op.symbol(), [&**lhs, &**rhs]),
        ExprKind::Neg(e) => list(out, "neg", [&**e]),
        ExprKind::Call(call) => {
            let _ = write!(out, "(call {}", call.name.name);
            for arg in &call.args {
                out.push(' ');
                match &arg.name {
                    Some(name) => {
                        let _ = write!(out, "(= {} ", name.name);
                        write_expr(out, &arg.value);
                        out.push(')');
                    }
                    None => write_expr(out, &arg.value),
                }
            }
            out.push(')');
        }
        ExprKind::Index { base, items } => {
            out.push_str("(index ");
            write_expr(out, base);
            for item in items {
                out.push(' ');
                match item {
                    IndexItem::Single(e) => write_expr(out, e),
                    IndexItem::Slice { start, end, .. } => {
                        out.push_str("(:");
                        for bound in [start, end] {
                            out.push(' ');
                            match bound {
                                Some(e) => write_expr(out, e),
                                None => out.push('_'),
                            }
                        }
                        out.push(')');
                    }
                }
            }
            out.push(')');
        }
        ExprKind::Transpose(e) => list(out, "'", [&**e]),
        ExprKind::List(items) => list(out, "list", items),
        ExprKind::Range { start, end } => list(out, "..", [&**start, &**end]),
        ExprKind::IndexSum { binder, body } | ExprKind::Comprehension { binder, body } => {
            let head = match &expr.kind {
                ExprKind::IndexSum { .. } => "sum",
                _ => "for",
            };
            let _ = write!(out, "({head} (in {} ", binder.var.name);
            write_expr(out, &binder.start);
            out.push(' ');
            write_expr(out, &binder.end);
            out.push_str(") ");
            write_expr(out, body);
            out.push(')');
        }
    }
}

fn list<'e>(out: &mut String, head: &str, items: impl IntoIterator<Item = &'e Expr>) {
    out.push('(');
    out.push_str(head);
    for item in items {
        out.push(' ');
        write_expr(out, item);
    }
    out.push(')');
}
