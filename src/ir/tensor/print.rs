//! Text forms of the tensor IR: one node per line (`%7 = matmul %3, %5 : [64]`) and readable
//! expressions (`K2 · tanh(K1 · x + b1)`), with leaf names supplied by the caller.

use std::fmt::Write;

use super::node::{Leaf, TId, TNode};
use super::pool::TensorPool;
use crate::ir::print::number;
use crate::ir::Shape;

/// The nodes that `roots` reach, one per line in id order.
pub fn print_nodes(pool: &TensorPool, roots: &[TId], name: &dyn Fn(Leaf) -> String) -> String {
    let mut keep = vec![false; pool.len()];
    for r in roots {
        keep[r.index()] = true;
    }
    for i in (0..pool.len()).rev() {
        if keep[i] {
            pool.node(TId(i as u32))
                .for_each_operand(|c| keep[c.index()] = true);
        }
    }
    let mut out = String::new();
    for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
        let id = TId(i as u32);
        let node = pool.node(id);
        let args = match node {
            TNode::Const(bits) => number(f64::from_bits(*bits)),
            TNode::Literal(bits) => {
                let shown: Vec<String> = bits
                    .iter()
                    .take(8)
                    .map(|b| number(f64::from_bits(*b)))
                    .collect();
                let more = if bits.len() > 8 { ", …" } else { "" };
                format!("[{}{more}]", shown.join(", "))
            }
            TNode::Leaf(l) => name(*l),
            TNode::Gather(a, w) | TNode::Scatter(a, w) => format!(
                "{a}, start {}, strides ({}, {})",
                w.start, w.row_stride, w.col_stride
            ),
            TNode::SumAxis(a, axis) => format!("{a}, axis {axis}"),
            _ => node
                .operands()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            out,
            "{id} = {} {args} : {}",
            node.kind(),
            shape_text(pool.shape(id))
        );
    }
    out
}

fn shape_text(s: Shape) -> String {
    match s {
        Shape::Scalar => "scalar".into(),
        _ => s.to_string(),
    }
}

/// Binding strength, for parentheses: sums bind weakest, leaves and calls strongest.
fn precedence(node: &TNode) -> u8 {
    match node {
        TNode::Add(_) => 1,
        TNode::Mul(_) | TNode::Div(..) | TNode::MatMul(..) => 2,
        TNode::Pow(..) => 3,
        _ => 4,
    }
}

/// `id` as one readable expression; subexpressions deeper than a few levels, or beyond a size
/// budget, are shown by id so that the text stays short for shared DAGs.
pub fn expr(pool: &TensorPool, id: TId, name: &dyn Fn(Leaf) -> String) -> String {
    let mut budget = 200usize;
    write_expr(pool, id, name, &mut budget)
}

fn write_expr(
    pool: &TensorPool,
    id: TId,
    name: &dyn Fn(Leaf) -> String,
    budget: &mut usize,
) -> String {
    if *budget == 0 {
        return id.to_string();
    }
    *budget -= 1;
    let node = pool.node(id);
    let mut sub = |c: TId, min: u8| {
        let text = write_expr(pool, c, name, budget);
        if precedence(pool.node(c)) < min {
            format!("({text})")
        } else {
            text
        }
    };
    match node {
        TNode::Const(bits) => number(f64::from_bits(*bits)),
        TNode::Leaf(l) => name(*l),
        TNode::Literal(_) => format!("{id}"),
        TNode::Fill(a) => format!("fill({}, {})", sub(*a, 0), shape_text(pool.shape(id))),
        TNode::Add(c) => {
            let mut out = String::new();
            for (k, &x) in c.iter().enumerate() {
                let (negated, base) = match pool.node(x) {
                    TNode::Mul(f) if f.len() == 2 && pool.uniform_value(f[0]) == Some(-1.0) => {
                        (true, f[1])
                    }
                    _ => (false, x),
                };
                let text = sub(base, if negated { 2 } else { 1 });
                match (k, negated) {
                    (0, true) => out.push_str(&format!("-{text}")),
                    (0, false) => out.push_str(&text),
                    (_, true) => out.push_str(&format!(" - {text}")),
                    (_, false) => out.push_str(&format!(" + {text}")),
                }
            }
            out
        }
        TNode::Mul(c) => {
            let op = if pool.shape(id) == Shape::Scalar {
                " * "
            } else {
                " .* "
            };
            c.iter().map(|&x| sub(x, 2)).collect::<Vec<_>>().join(op)
        }
        TNode::Div(a, b) => format!("{} / {}", sub(*a, 2), sub(*b, 3)),
        TNode::Pow(a, b) => format!("{} ^ {}", sub(*a, 4), sub(*b, 4)),
        TNode::MatMul(a, b) => format!("{} · {}", sub(*a, 2), sub(*b, 3)),
        TNode::Transpose(a) => format!("{}'", sub(*a, 4)),
        TNode::Gather(a, w) => format!(
            "{}[{}:{}:{}]",
            sub(*a, 4),
            w.start,
            w.row_stride,
            w.col_stride
        ),
        TNode::Cmp(op, a, b) => format!("{}({}, {})", op.name(), sub(*a, 0), sub(*b, 0)),
        TNode::SumAxis(a, axis) => format!("sum({}, axis = {axis})", sub(*a, 0)),
        other => {
            let args: Vec<String> = other.operands().iter().map(|&c| sub(c, 0)).collect();
            format!("{}({})", other.kind(), args.join(", "))
        }
    }
}
