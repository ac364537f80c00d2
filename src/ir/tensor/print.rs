//! Text forms of the tensor IR: readable expressions (`K2 · tanh(K1 · x + b1)`), with shared
//! nodes written once (`%14 = tanh(K1 · x + b1) : [1024]`) and leaf names supplied by the caller.

use std::fmt::Write;

use super::node::{Leaf, TId, TNode, Window};
use super::pool::{grid, TensorPool};
use crate::ir::print::number;
use crate::ir::Shape;

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

/// `id` as one readable expression, everything inlined (for short expressions and tests).
pub fn expr(pool: &TensorPool, id: TId, name: &dyn Fn(Leaf) -> String) -> String {
    Printer {
        pool,
        name,
        bound: &[],
    }
    .write(id, true)
}

/// Expressions of several roots, in which every non-leaf node used more than once is written
/// once as a numbered line (`%12 = tanh(K1 · x + b1) : [64]`) and referred to by its number,
/// so that shared activations print once and the text stays proportional to the DAG.
pub fn roots_text(
    pool: &TensorPool,
    roots: &[(String, TId)],
    name: &dyn Fn(Leaf) -> String,
) -> String {
    let ids: Vec<TId> = roots.iter().map(|(_, r)| *r).collect();
    let size = ids.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let mut uses = vec![0u32; size];
    let mut reached = vec![false; size];
    for r in &ids {
        reached[r.index()] = true;
    }
    for i in (0..size).rev() {
        if reached[i] {
            pool.node(TId(i as u32)).for_each_operand(|c| {
                uses[c.index()] += 1;
                reached[c.index()] = true;
            });
        }
    }
    let bound: Vec<bool> = (0..size)
        .map(|i| {
            uses[i] > 1
                && !matches!(
                    pool.node(TId(i as u32)),
                    TNode::Leaf(_) | TNode::Const(_) | TNode::Fill(_)
                )
        })
        .collect();
    let printer = Printer {
        pool,
        name,
        bound: &bound,
    };
    let mut out = String::new();
    for (i, _) in bound.iter().enumerate().filter(|(_, b)| **b) {
        let id = TId(i as u32);
        let _ = writeln!(
            out,
            "{id} = {} : {}",
            printer.write(id, true),
            shape_text(pool.shape(id))
        );
    }
    if !out.is_empty() {
        out.push('\n');
    }
    for (label, r) in roots {
        let _ = writeln!(out, "{label} = {}", printer.write(*r, true));
    }
    out
}

struct Printer<'a> {
    pool: &'a TensorPool,
    name: &'a dyn Fn(Leaf) -> String,
    /// Nodes written on their own line, referred to by number.
    bound: &'a [bool],
}

impl Printer<'_> {
    fn write(&self, id: TId, top: bool) -> String {
        if !top && self.bound.get(id.index()).copied().unwrap_or(false) {
            return id.to_string();
        }
        let pool = self.pool;
        let node = pool.node(id);
        let sub = |c: TId, min: u8| {
            let text = self.write(c, false);
            let bound = self.bound.get(c.index()).copied().unwrap_or(false);
            if !bound && precedence(pool.node(c)) < min {
                format!("({text})")
            } else {
                text
            }
        };
        match node {
            TNode::Const(bits) => number(f64::from_bits(*bits)),
            TNode::Leaf(l) => (self.name)(*l),
            TNode::Literal(bits) if bits.len() <= 8 => {
                let shown: Vec<String> = bits.iter().map(|b| number(f64::from_bits(*b))).collect();
                format!("[{}]", shown.join(", "))
            }
            TNode::Literal(_) => format!("literal{}", pool.shape(id)),
            TNode::Fill(a) => format!("fill({}, {})", sub(*a, 0), pool.shape(id)),
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
                let elementwise = c
                    .iter()
                    .filter(|&&x| pool.shape(x) != Shape::Scalar)
                    .count()
                    > 1;
                let op = if elementwise { " .* " } else { " * " };
                // A product inside an elementwise one is parenthesized: `(K · x) .* s`.
                c.iter()
                    .map(|&x| match pool.node(x) {
                        TNode::MatMul(..) => sub(x, 3),
                        _ => sub(x, 2),
                    })
                    .collect::<Vec<_>>()
                    .join(op)
            }
            TNode::Div(a, b) => format!("{} / {}", sub(*a, 2), sub(*b, 3)),
            TNode::Pow(a, b) => format!("{} ^ {}", sub(*a, 4), sub(*b, 4)),
            TNode::MatMul(a, b) => format!("{} · {}", sub(*a, 3), sub(*b, 3)),
            TNode::Transpose(a) => format!("{}'", sub(*a, 4)),
            TNode::Gather(a, w) => self.window(*a, *w, pool.shape(id), &sub),
            TNode::Scatter(a, w) => {
                let inner = self.window_text(pool.shape(id), *w, pool.shape(*a));
                format!("scatter({}, {inner}, {})", sub(*a, 0), pool.shape(id))
            }
            TNode::Cmp(op, a, b) => format!("{}({}, {})", op.name(), sub(*a, 0), sub(*b, 0)),
            TNode::SumAxis(a, axis) => format!("sum({}, axis = {axis})", sub(*a, 0)),
            TNode::Reshape(a) => format!("reshape({}, {})", sub(*a, 0), pool.shape(id)),
            other => {
                let args: Vec<String> = other.operands().iter().map(|&c| sub(c, 0)).collect();
                format!("{}({})", other.kind(), args.join(", "))
            }
        }
    }

    /// `x[2:5]`, `K[3, :]`, `K[:, 1]`, `x[4]`, `diag(K)` or a general window.
    fn window(&self, a: TId, w: Window, shape: Shape, sub: &dyn Fn(TId, u8) -> String) -> String {
        let source = self.pool.shape(a);
        let text = self.window_text(source, w, shape);
        if text.starts_with('[') {
            format!("{}{text}", sub(a, 4))
        } else {
            format!("{text}({})", sub(a, 0))
        }
    }

    fn window_text(&self, source: Shape, w: Window, shape: Shape) -> String {
        let (_, cols) = grid(source);
        let start = w.start as usize;
        let (r0, c0) = (start / cols.max(1), start % cols.max(1));
        let matrix = matches!(source, Shape::Matrix(..));
        let len = shape.len();
        match shape {
            Shape::Scalar if matrix => format!("[{r0}, {c0}]"),
            Shape::Scalar => format!("[{start}]"),
            Shape::Vector(_) if !matrix && w.col_stride <= 1 => {
                format!("[{start}:{}]", start + len)
            }
            Shape::Vector(_) if matrix && w.col_stride == 1 => {
                format!("[{r0}, {c0}:{}]", c0 + len)
            }
            Shape::Vector(_) if matrix && w.col_stride as usize == cols => {
                format!("[{r0}:{}, {c0}]", r0 + len)
            }
            Shape::Vector(_) if matrix && w.col_stride as usize == cols + 1 && start == 0 => {
                "diag".to_string()
            }
            _ => format!(
                "window[start {}, strides ({}, {})]",
                w.start, w.row_stride, w.col_stride
            ),
        }
    }
}
