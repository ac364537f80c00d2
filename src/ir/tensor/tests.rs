//! Tests of the tensor IR against independent references: a direct evaluator of randomly
//! generated expression trees (simplification and the interpreter), the scalar IR (expansion),
//! central differences (JVP, VJP, `grad`, `jacobian`, `div`), the dot-product test between
//! forward and reverse mode, and node counts that must not grow with a layer's width.

use proptest::prelude::*;

use super::diff::{self, Wrt};
use super::expand::Expander;
use super::*;
use crate::ir::{CmpOp, Func, Pool, Shape};
use crate::rng::Rng;

/// The leaves of the random expressions: `x, y: [3]`, `K: [2, 3]`, `M: [3, 3]`, `s: scalar`.
const LEAVES: [(Leaf, Shape); 5] = [
    (Leaf::State(0), Shape::Vector(3)),
    (Leaf::State(1), Shape::Vector(3)),
    (Leaf::Param(0), Shape::Matrix(2, 3)),
    (Leaf::Param(1), Shape::Matrix(3, 3)),
    (Leaf::Time, Shape::Scalar),
];

fn leaf_shape(l: Leaf) -> Shape {
    LEAVES.iter().find(|(x, _)| *x == l).expect("a test leaf").1
}

/// An expression tree as generated, evaluated by [`reference`] without the pool.
#[derive(Clone, Debug)]
enum Tree {
    Leaf(Leaf),
    Const(f64, Shape),
    Add(Box<Tree>, Box<Tree>),
    Sub(Box<Tree>, Box<Tree>),
    Mul(Box<Tree>, Box<Tree>),
    /// `a / (1.5 + b²)`, so the denominator stays away from zero.
    SafeDiv(Box<Tree>, Box<Tree>),
    Func(Func, Box<Tree>),
    Square(Box<Tree>),
    Max(Box<Tree>, Box<Tree>),
    MatMul(Box<Tree>, Box<Tree>),
    Transpose(Box<Tree>),
    Sum(Box<Tree>),
    SumAxis(Box<Tree>, u8),
    Dot(Box<Tree>, Box<Tree>),
    Element(Box<Tree>, usize),
    Window(Box<Tree>, Window, Shape),
    Concat(Box<Tree>, Box<Tree>),
    Outer(Box<Tree>, Box<Tree>),
    Diag(Box<Tree>),
    DiagPart(Box<Tree>),
    MaxAll(Box<Tree>),
}

/// Functions whose derivatives are smooth on the whole line (so differences are accurate).
const SMOOTH: [Func; 5] = [
    Func::Tanh,
    Func::Sin,
    Func::Sigmoid,
    Func::Softplus,
    Func::Cos,
];

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len())]
}

/// A random tree of `shape` with at most `depth` levels of operations.
fn gen(rng: &mut Rng, shape: Shape, depth: u32) -> Tree {
    let b = |t: Tree| Box::new(t);
    if depth == 0 || rng.uniform(0.0, 1.0) < 0.2 {
        return match shape {
            Shape::Scalar if rng.uniform(0.0, 1.0) < 0.3 => {
                Tree::Const(pick(rng, &[0.5, -2.0, 3.0]), shape)
            }
            Shape::Scalar => Tree::Leaf(Leaf::Time),
            Shape::Vector(3) => Tree::Leaf(pick(rng, &[Leaf::State(0), Leaf::State(1)])),
            Shape::Matrix(2, 3) => Tree::Leaf(Leaf::Param(0)),
            Shape::Matrix(3, 3) => Tree::Leaf(Leaf::Param(1)),
            Shape::Matrix(3, 2) => Tree::Transpose(b(Tree::Leaf(Leaf::Param(0)))),
            Shape::Vector(2) => {
                Tree::MatMul(b(Tree::Leaf(Leaf::Param(0))), b(Tree::Leaf(Leaf::State(0))))
            }
            _ => unreachable!("test shapes"),
        };
    }
    let d = depth - 1;
    // Half the time an elementwise operation of the same shape.
    if rng.uniform(0.0, 1.0) < 0.5 {
        let a = gen(rng, shape, d);
        let other = if rng.uniform(0.0, 1.0) < 0.3 {
            Shape::Scalar
        } else {
            shape
        };
        return match rng.below(7) {
            0 => Tree::Add(b(a), b(gen(rng, other, d))),
            1 => Tree::Sub(b(a), b(gen(rng, other, d))),
            2 => Tree::Mul(b(a), b(gen(rng, other, d))),
            3 => Tree::SafeDiv(b(a), b(gen(rng, other, d))),
            4 => Tree::Func(pick(rng, &SMOOTH), b(a)),
            5 => Tree::Square(b(a)),
            _ => Tree::Max(b(a), b(gen(rng, other, d))),
        };
    }
    let v3 = Shape::Vector(3);
    let v2 = Shape::Vector(2);
    let m23 = Shape::Matrix(2, 3);
    let m33 = Shape::Matrix(3, 3);
    let m32 = Shape::Matrix(3, 2);
    match shape {
        Shape::Scalar => match rng.below(5) {
            0 => {
                let s = pick(rng, &[v3, m23, m33]);
                Tree::Sum(b(gen(rng, s, d)))
            }
            1 => Tree::Dot(b(gen(rng, v3, d)), b(gen(rng, v3, d))),
            2 => Tree::Element(b(gen(rng, m23, d)), rng.below(6)),
            3 => Tree::MaxAll(b(gen(rng, v3, d))),
            _ => Tree::Element(b(gen(rng, v3, d)), rng.below(3)),
        },
        Shape::Vector(3) => match rng.below(6) {
            0 => Tree::MatMul(b(gen(rng, m33, d)), b(gen(rng, v3, d))),
            1 => Tree::MatMul(b(gen(rng, m32, d)), b(gen(rng, v2, d))),
            2 => Tree::SumAxis(b(gen(rng, m23, d)), 0),
            3 => Tree::Concat(b(gen(rng, v2, d)), b(gen(rng, Shape::Scalar, d))),
            4 => Tree::DiagPart(b(gen(rng, m33, d))),
            // A column of a [3, 3] matrix.
            _ => Tree::Window(
                b(gen(rng, m33, d)),
                Window {
                    start: rng.below(3) as u32,
                    row_stride: 0,
                    col_stride: 3,
                },
                v3,
            ),
        },
        Shape::Vector(2) => match rng.below(3) {
            0 => Tree::MatMul(b(gen(rng, m23, d)), b(gen(rng, v3, d))),
            1 => Tree::SumAxis(b(gen(rng, m23, d)), 1),
            _ => Tree::Window(
                b(gen(rng, v3, d)),
                Window {
                    start: rng.below(2) as u32,
                    row_stride: 0,
                    col_stride: 1,
                },
                v2,
            ),
        },
        Shape::Matrix(2, 3) => match rng.below(3) {
            0 => Tree::Outer(b(gen(rng, v2, d)), b(gen(rng, v3, d))),
            1 => Tree::MatMul(b(gen(rng, m23, d)), b(gen(rng, m33, d))),
            _ => Tree::Transpose(b(gen(rng, m32, d))),
        },
        Shape::Matrix(3, 3) => match rng.below(4) {
            0 => Tree::Diag(b(gen(rng, v3, d))),
            1 => Tree::Outer(b(gen(rng, v3, d)), b(gen(rng, v3, d))),
            2 => Tree::MatMul(b(gen(rng, m32, d)), b(gen(rng, m23, d))),
            // The lower-right [2, 2] block would change shape; a [3, 3] window of itself
            // transposed exercises matrix windows.
            _ => Tree::Window(
                b(gen(rng, m33, d)),
                Window {
                    start: 0,
                    row_stride: 1,
                    col_stride: 3,
                },
                m33,
            ),
        },
        Shape::Matrix(3, 2) => Tree::Transpose(b(gen(rng, m23, d))),
        _ => unreachable!("test shapes"),
    }
}

/// A plain array with its shape, for the reference evaluator.
type Arr = (Vec<f64>, Shape);

fn reference(t: &Tree, leaf: &dyn Fn(Leaf) -> Vec<f64>) -> Arr {
    let r = |t: &Tree| reference(t, leaf);
    let zip = |a: Arr, b: Arr, f: &dyn Fn(f64, f64) -> f64| -> Arr {
        let shape = if a.1 == Shape::Scalar { b.1 } else { a.1 };
        let n = shape.len();
        let at = |x: &Arr, i| if x.0.len() == 1 { x.0[0] } else { x.0[i] };
        ((0..n).map(|i| f(at(&a, i), at(&b, i))).collect(), shape)
    };
    match t {
        Tree::Leaf(l) => (leaf(*l), leaf_shape(*l)),
        Tree::Const(c, s) => (vec![*c; s.len()], *s),
        Tree::Add(a, b) => zip(r(a), r(b), &|x, y| x + y),
        Tree::Sub(a, b) => zip(r(a), r(b), &|x, y| x - y),
        Tree::Mul(a, b) => zip(r(a), r(b), &|x, y| x * y),
        Tree::SafeDiv(a, b) => zip(r(a), r(b), &|x, y| x / (1.5 + y * y)),
        Tree::Func(f, a) => {
            let (x, s) = r(a);
            (x.iter().map(|&v| f.apply(v)).collect(), s)
        }
        Tree::Square(a) => {
            let (x, s) = r(a);
            (x.iter().map(|&v| v * v).collect(), s)
        }
        Tree::Max(a, b) => zip(r(a), r(b), &f64::max),
        Tree::MatMul(a, b) => {
            let ((x, sa), (y, sb)) = (r(a), r(b));
            let (m, k) = grid(sa);
            let p = if let Shape::Vector(_) = sb {
                1
            } else {
                grid(sb).1
            };
            let mut out = vec![0.0; m * p];
            for i in 0..m {
                for j in 0..p {
                    out[i * p + j] = (0..k).map(|l| x[i * k + l] * y[l * p + j]).sum();
                }
            }
            let shape = if p == 1 && matches!(sb, Shape::Vector(_)) {
                Shape::Vector(m)
            } else {
                Shape::Matrix(m, p)
            };
            (out, shape)
        }
        Tree::Transpose(a) => {
            let (x, s) = r(a);
            let (m, n) = grid(s);
            (
                (0..n)
                    .flat_map(|j| (0..m).map(move |i| (i, j)))
                    .map(|(i, j)| x[i * n + j])
                    .collect(),
                Shape::Matrix(n, m),
            )
        }
        Tree::Sum(a) => (vec![r(a).0.iter().sum()], Shape::Scalar),
        Tree::SumAxis(a, axis) => {
            let (x, s) = r(a);
            let (m, n) = grid(s);
            if *axis == 0 {
                (
                    (0..n).map(|j| (0..m).map(|i| x[i * n + j]).sum()).collect(),
                    Shape::Vector(n),
                )
            } else {
                (
                    (0..m).map(|i| (0..n).map(|j| x[i * n + j]).sum()).collect(),
                    Shape::Vector(m),
                )
            }
        }
        Tree::Dot(a, b) => {
            let (x, y) = (r(a).0, r(b).0);
            (
                vec![x.iter().zip(&y).map(|(p, q)| p * q).sum()],
                Shape::Scalar,
            )
        }
        Tree::Element(a, i) => (vec![r(a).0[*i]], Shape::Scalar),
        Tree::Window(a, w, s) => {
            let x = r(a).0;
            let (rows, cols) = grid(*s);
            (
                (0..rows)
                    .flat_map(|i| (0..cols).map(move |j| (i, j)))
                    .map(|(i, j)| x[w.at(i, j)])
                    .collect(),
                *s,
            )
        }
        Tree::Concat(a, b) => {
            let (mut x, y) = (r(a).0, r(b).0);
            x.extend(y);
            let n = x.len();
            (x, Shape::Vector(n))
        }
        Tree::Outer(a, b) => {
            let (x, y) = (r(a).0, r(b).0);
            let shape = Shape::Matrix(x.len(), y.len());
            (
                x.iter()
                    .flat_map(|p| y.iter().map(move |q| p * q))
                    .collect(),
                shape,
            )
        }
        Tree::Diag(a) => {
            let x = r(a).0;
            let n = x.len();
            let mut out = vec![0.0; n * n];
            for i in 0..n {
                out[i * n + i] = x[i];
            }
            (out, Shape::Matrix(n, n))
        }
        Tree::DiagPart(a) => {
            let (x, s) = r(a);
            let (m, n) = grid(s);
            (
                (0..m.min(n)).map(|i| x[i * n + i]).collect(),
                Shape::Vector(m.min(n)),
            )
        }
        Tree::MaxAll(a) => {
            let x = r(a).0;
            (
                vec![x[1..].iter().fold(x[0], |m, &v| m.max(v))],
                Shape::Scalar,
            )
        }
    }
}

/// The tree built through the pool's constructors.
fn build(pool: &mut TensorPool, t: &Tree) -> TId {
    match t {
        Tree::Leaf(l) => pool.leaf(*l, leaf_shape(*l)),
        Tree::Const(c, s) => {
            let k = pool.constant(*c);
            pool.fill(k, *s)
        }
        Tree::Add(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.add(x, y)
        }
        Tree::Sub(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.sub(x, y)
        }
        Tree::Mul(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.mul(x, y)
        }
        Tree::SafeDiv(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            let sq = pool.mul(y, y);
            let k = pool.constant(1.5);
            let den = pool.add(k, sq);
            pool.div(x, den)
        }
        Tree::Func(f, x) => {
            let x = build(pool, x);
            pool.func(*f, x)
        }
        Tree::Square(x) => {
            let x = build(pool, x);
            let two = pool.constant(2.0);
            pool.pow(x, two)
        }
        Tree::Max(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.max(x, y)
        }
        Tree::MatMul(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.matmul(x, y)
        }
        Tree::Transpose(x) => {
            let x = build(pool, x);
            pool.transpose(x)
        }
        Tree::Sum(x) => {
            let x = build(pool, x);
            pool.sum(x)
        }
        Tree::SumAxis(x, axis) => {
            let x = build(pool, x);
            pool.sum_axis(x, *axis)
        }
        Tree::Dot(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.dot(x, y)
        }
        Tree::Element(x, i) => {
            let x = build(pool, x);
            pool.element(x, *i)
        }
        Tree::Window(x, w, s) => {
            let x = build(pool, x);
            pool.gather(x, *w, *s)
        }
        Tree::Concat(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.concat(&[x, y])
        }
        Tree::Outer(x, y) => {
            let (x, y) = (build(pool, x), build(pool, y));
            pool.outer(x, y)
        }
        Tree::Diag(x) => {
            let x = build(pool, x);
            pool.diag(x)
        }
        Tree::DiagPart(x) => {
            let x = build(pool, x);
            pool.diag_part(x)
        }
        Tree::MaxAll(x) => {
            let x = build(pool, x);
            pool.max_all(x)
        }
    }
}

/// Leaf values drawn from `rng` (entries in [-1, 1]).
fn draw_leaves(rng: &mut Rng) -> Vec<Vec<f64>> {
    LEAVES
        .iter()
        .map(|(_, s)| {
            (0..s.len())
                .map(|_| 2.0 * rng.uniform(0.0, 1.0) - 1.0)
                .collect()
        })
        .collect()
}

fn lookup(values: &[Vec<f64>]) -> impl Fn(Leaf) -> Vec<f64> + '_ {
    move |l| {
        let k = LEAVES
            .iter()
            .position(|(x, _)| *x == l)
            .expect("a test leaf");
        values[k].clone()
    }
}

/// `|a − b| ≤ tol · (1 + |b|)` elementwise.
fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

/// Whether `max` or `max_all` sees a near-tie at these values, where a difference quotient
/// straddles a kink and cannot be compared with the one-sided derivative.
fn near_kink(t: &Tree, leaf: &dyn Fn(Leaf) -> Vec<f64>) -> bool {
    let sub = |t: &Tree| near_kink(t, leaf);
    let gap = 1e-4;
    match t {
        Tree::Max(a, b) => {
            let (x, y) = (reference(a, leaf), reference(b, leaf));
            let n = x.1.len().max(y.1.len());
            let at = |v: &Arr, i: usize| if v.0.len() == 1 { v.0[0] } else { v.0[i] };
            (0..n).any(|i| (at(&x, i) - at(&y, i)).abs() < gap) || sub(a) || sub(b)
        }
        Tree::MaxAll(a) => {
            let mut x = reference(a, leaf).0;
            x.sort_by(f64::total_cmp);
            x.windows(2).any(|w| (w[1] - w[0]).abs() < gap) || sub(a)
        }
        Tree::Leaf(_) | Tree::Const(..) => false,
        Tree::Func(_, a)
        | Tree::Square(a)
        | Tree::Transpose(a)
        | Tree::Sum(a)
        | Tree::SumAxis(a, _)
        | Tree::Element(a, _)
        | Tree::Window(a, ..)
        | Tree::Diag(a)
        | Tree::DiagPart(a) => sub(a),
        Tree::Add(a, b)
        | Tree::Sub(a, b)
        | Tree::Mul(a, b)
        | Tree::SafeDiv(a, b)
        | Tree::MatMul(a, b)
        | Tree::Dot(a, b)
        | Tree::Concat(a, b)
        | Tree::Outer(a, b) => sub(a) || sub(b),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Building through the constructors (folding, identities, pushed-down elements) and
    /// interpreting gives what a direct evaluation of the tree gives; expanding to the scalar
    /// IR and interpreting that gives it too.
    #[test]
    fn constructors_and_expansion_preserve_values(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let shape = pick(&mut rng, &[Shape::Scalar, Shape::Vector(3), Shape::Vector(2), Shape::Matrix(2, 3), Shape::Matrix(3, 3)]);
        let tree = gen(&mut rng, shape, 4);
        let values = draw_leaves(&mut rng);
        let leaf = lookup(&values);
        let (want, want_shape) = reference(&tree, &leaf);
        let mut pool = TensorPool::new();
        let id = build(&mut pool, &tree);
        prop_assert_eq!(pool.shape(id), want_shape);
        let got = eval(&pool, &[id], &leaf).remove(0);
        // Sums may be reassociated by canonical ordering: a few ulps of the terms' size.
        prop_assert!(close(&got, &want, 1e-12), "{:?}\n{} vs {}", tree, format!("{got:?}"), format!("{want:?}"));

        let mut scalar = Pool::new();
        let elems = Expander::new().expand(&pool, &mut scalar, id);
        let point = |v: crate::ir::Var| -> f64 {
            use crate::ir::Var;
            match v {
                Var::Time => values[4][0],
                Var::State { state, elem } => values[state as usize][elem as usize],
                Var::Param { param, elem } => values[2 + param as usize][elem as usize],
                other => panic!("unexpected {other:?}"),
            }
        };
        let expanded = crate::ir::eval(&scalar, &elems, &point);
        prop_assert!(close(&expanded, &want, 1e-12));
    }

    /// The JVP of every leaf direction matches central differences, and the VJP passes the
    /// dot-product test against it: ⟨w, J v⟩ = ⟨Jᵀ w, v⟩.
    #[test]
    fn jvp_matches_differences_and_vjp_its_transpose(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let shape = pick(&mut rng, &[Shape::Scalar, Shape::Vector(3), Shape::Matrix(2, 3)]);
        let tree = gen(&mut rng, shape, 4);
        let values = draw_leaves(&mut rng);
        let direction = draw_leaves(&mut rng);
        let cotangent: Vec<f64> = (0..shape.len()).map(|_| 2.0 * rng.uniform(0.0, 1.0) - 1.0).collect();
        prop_assume!(!near_kink(&tree, &lookup(&values)));

        let mut pool = TensorPool::new();
        let id = build(&mut pool, &tree);
        // Tangent leaves: the direction of each leaf as StateTangent(k).
        let tangent_leaf = |k: usize| Leaf::StateTangent(10 + k as u32);
        let leaf_ids: Vec<TId> = LEAVES.iter().map(|(l, s)| pool.leaf(*l, *s)).collect();
        let jv = diff::jvp(&mut pool, &[id], &mut |p, l| {
            LEAVES.iter().position(|(x, _)| *x == l).map(|k| p.leaf(tangent_leaf(k), LEAVES[k].1))
        })[0];
        let w = pool.leaf(Leaf::Cotangent(0), shape);
        let pulled = diff::vjp(&mut pool, &[id], &[w], &leaf_ids);

        let all = |l: Leaf| -> Vec<f64> {
            match l {
                Leaf::StateTangent(k) if k >= 10 => direction[(k - 10) as usize].clone(),
                Leaf::Cotangent(0) => cotangent.clone(),
                other => lookup(&values)(other),
            }
        };
        let mut roots = vec![jv];
        roots.extend(&pulled);
        let out = eval(&pool, &roots, &all);

        // Central difference along the direction; h balances truncation and rounding.
        let h = 1e-6;
        let shifted = |sign: f64| {
            let moved: Vec<Vec<f64>> = values.iter().zip(&direction)
                .map(|(v, d)| v.iter().zip(d).map(|(x, y)| x + sign * h * y).collect())
                .collect();
            let r = reference(&tree, &lookup(&moved)).0;
            r
        };
        let (plus, minus) = (shifted(1.0), shifted(-1.0));
        let fd: Vec<f64> = plus.iter().zip(&minus).map(|(p, m)| (p - m) / (2.0 * h)).collect();
        prop_assert!(close(&out[0], &fd, 1e-6), "{:?}\njvp {:?}\nfd {:?}", tree, out[0], fd);

        let lhs: f64 = cotangent.iter().zip(&out[0]).map(|(a, b)| a * b).sum();
        let rhs: f64 = out[1..].iter().zip(&direction)
            .map(|(g, d)| g.iter().zip(d).map(|(a, b)| a * b).sum::<f64>())
            .sum();
        prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()), "{:?}: {lhs} vs {rhs}", tree);
    }
}

/// `f(x) = K2 · tanh(K1 · x + b1)`, a neural field of state size `d` and width `w`, with its
/// leaves.
fn field(pool: &mut TensorPool, d: usize, w: usize) -> (TId, TId) {
    let x = pool.leaf(Leaf::State(0), Shape::Vector(d));
    let k1 = pool.leaf(Leaf::Param(0), Shape::Matrix(w, d));
    let b1 = pool.leaf(Leaf::Param(1), Shape::Vector(w));
    let k2 = pool.leaf(Leaf::Param(2), Shape::Matrix(d, w));
    let a = pool.matmul(k1, x);
    let a = pool.add(a, b1);
    let h = pool.func(Func::Tanh, a);
    (pool.matmul(k2, h), x)
}

/// Values for the field's leaves, seeded.
fn field_values(d: usize, w: usize, seed: u64) -> impl Fn(Leaf) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut draw = |n: usize, scale: f64| -> Vec<f64> {
        (0..n)
            .map(|_| scale * (2.0 * rng.uniform(0.0, 1.0) - 1.0))
            .collect()
    };
    let x = draw(d, 1.0);
    let k1 = draw(w * d, 0.8);
    let b1 = draw(w, 0.5);
    let k2 = draw(d * w, 0.8);
    move |l| match l {
        Leaf::State(0) => x.clone(),
        Leaf::Param(0) => k1.clone(),
        Leaf::Param(1) => b1.clone(),
        Leaf::Param(2) => k2.clone(),
        other => panic!("no value for {other:?}"),
    }
}

/// Every derivative the models need (JVP, VJP in state and parameters, `div`, `jacobian` and
/// the Laplacian `div(grad(Φ))` of a potential) has the same number of nodes at width 8 and at
/// width 1024: the IR follows the text, not the parameter count.
#[test]
fn node_count_does_not_grow_with_width() {
    let count = |w: usize| {
        let mut pool = TensorPool::new();
        let (f, x) = field(&mut pool, 4, w);
        let v = pool.leaf(Leaf::StateTangent(0), Shape::Vector(4));
        let wt = pool.leaf(Leaf::Cotangent(0), Shape::Vector(4));
        let wrt = Wrt::of(&pool, x).unwrap();
        diff::directional(&mut pool, &[f], &wrt, v);
        let params: Vec<TId> = (0..3)
            .map(|p| {
                let s = match p {
                    0 => Shape::Matrix(w, 4),
                    1 => Shape::Vector(w),
                    _ => Shape::Matrix(4, w),
                };
                pool.leaf(Leaf::Param(p), s)
            })
            .collect();
        let mut all = vec![x];
        all.extend(params);
        diff::vjp(&mut pool, &[f], &[wt], &all);
        diff::div(&mut pool, f, &wrt);
        diff::jacobian(&mut pool, f, &wrt);
        let phi = pool.dot(f, f);
        let g = diff::grad(&mut pool, phi, &wrt);
        diff::div(&mut pool, g, &wrt);
        pool.len()
    };
    assert_eq!(count(8), count(1024));
}

/// `grad`, `jacobian` and `div` of the neural field against central differences, and `div`
/// against the trace of `jacobian`.
#[test]
fn calculus_of_a_neural_field_matches_differences() {
    let (d, w) = (3, 7);
    let values = field_values(d, w, 7);
    let mut pool = TensorPool::new();
    let (f, x) = field(&mut pool, d, w);
    let wrt = Wrt::of(&pool, x).unwrap();
    let jac = diff::jacobian(&mut pool, f, &wrt);
    let dv = diff::div(&mut pool, f, &wrt);
    let phi = pool.dot(f, f);
    let g = diff::grad(&mut pool, phi, &wrt);
    let lap = diff::div(&mut pool, g, &wrt);
    assert_eq!(pool.shape(jac), Shape::Matrix(d, d));
    let out = eval(&pool, &[jac, dv, g, lap], &values);

    let x0 = values(Leaf::State(0));
    let at = |x: &[f64], root: TId| {
        let xs = x.to_vec();
        let shifted = |l: Leaf| {
            if l == Leaf::State(0) {
                xs.clone()
            } else {
                values(l)
            }
        };
        eval(&pool, &[root], &shifted).remove(0)
    };
    let h = 1e-6;
    let mut trace = 0.0;
    let mut laplacian = 0.0;
    for j in 0..d {
        let (mut p, mut m) = (x0.clone(), x0.clone());
        p[j] += h;
        m[j] -= h;
        let (fp, fm) = (at(&p, f), at(&m, f));
        for i in 0..d {
            let fd = (fp[i] - fm[i]) / (2.0 * h);
            assert!((out[0][i * d + j] - fd).abs() < 1e-8, "J[{i},{j}]");
        }
        trace += out[0][j * d + j];
        let (pp, pm) = (at(&p, phi)[0], at(&m, phi)[0]);
        assert!(
            (out[2][j] - (pp - pm) / (2.0 * h)).abs() < 1e-7,
            "grad[{j}]"
        );
        // Second difference of Φ along axis j, h larger for its rounding.
        let h2 = 1e-4;
        let (mut p2, mut m2) = (x0.clone(), x0.clone());
        p2[j] += h2;
        m2[j] -= h2;
        laplacian += (at(&p2, phi)[0] - 2.0 * at(&x0, phi)[0] + at(&m2, phi)[0]) / (h2 * h2);
    }
    assert!(
        (out[1][0] - trace).abs() < 1e-12,
        "div {} vs trace {}",
        out[1][0],
        trace
    );
    assert!(
        (out[3][0] - laplacian).abs() < 1e-5 * (1.0 + laplacian.abs()),
        "{} vs {}",
        out[3][0],
        laplacian
    );
}

/// The VJP of `K · x` is `Kᵀ · g` for `x` and the outer product `g xᵀ` for `K`: single nodes.
#[test]
fn matrix_vector_pullbacks_are_tensor_nodes() {
    let mut pool = TensorPool::new();
    let k = pool.leaf(Leaf::Param(0), Shape::Matrix(5, 3));
    let x = pool.leaf(Leaf::State(0), Shape::Vector(3));
    let y = pool.matmul(k, x);
    let g = pool.leaf(Leaf::Cotangent(0), Shape::Vector(5));
    let out = diff::vjp(&mut pool, &[y], &[g], &[x, k]);
    assert!(
        matches!(pool.node(out[0]), TNode::MatMul(t, gg) if *gg == g && matches!(pool.node(*t), TNode::Transpose(kk) if *kk == k))
    );
    assert_eq!(pool.node(out[1]), &TNode::Outer(g, x));
    let name = |l: Leaf| format!("{l:?}");
    assert_eq!(
        print::expr(&pool, out[0], &name),
        "Param(0)' · Cotangent(0)"
    );
}

/// Argmax and the first-maximum mask read the first of tied maxima, in the interpreter and in
/// the scalar expansion alike; comparisons give no derivative.
#[test]
fn argmax_and_first_max_take_the_first_of_ties() {
    let mut pool = TensorPool::new();
    let z = pool.leaf(Leaf::Input(0), Shape::Vector(4));
    let i = pool.argmax(z);
    let hot = pool.first_max(z);
    let zs = vec![0.5, 2.0, -1.0, 2.0];
    let out = eval(&pool, &[i, hot], &|_| zs.clone());
    assert_eq!(out[0], vec![1.0]);
    assert_eq!(out[1], vec![0.0, 1.0, 0.0, 0.0]);
    let mut scalar = Pool::new();
    let mut ex = Expander::new();
    let mut elems = ex.expand(&pool, &mut scalar, i);
    elems.extend(ex.expand(&pool, &mut scalar, hot));
    let got = crate::ir::eval(&scalar, &elems, &|v| match v {
        crate::ir::Var::Input { elem, .. } => zs[elem as usize],
        _ => unreachable!(),
    });
    assert_eq!(got, vec![1.0, 0.0, 1.0, 0.0, 0.0]);
    let c = pool.cmp(CmpOp::Lt, z, i);
    let d = diff::vjp(&mut pool, &[c], &[hot], &[z])[0];
    assert!(pool.is_zero(d));
}
