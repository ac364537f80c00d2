//! Building a tensor [`Kernel`] from tensor IR roots: which nodes are uniform or per lane,
//! where each lives, which elementwise chains fuse, and how gradients reduce.

use super::exec::MIN_SIDE;
use super::{Arg, BinOp, EwInstr, Kernel, Loc, Op, Reduce, Ref, ULeaf};
use std::collections::HashMap;

use crate::compile::tape::{
    COTANGENT, INPUT, LABEL, OBSERVED, REG, SAVED, STATE, STATE_TANGENT, TIME,
};
use crate::ir::tensor::{grid, Leaf, TId, TNode, TensorPool};
use crate::ir::{Model, Shape};

/// Where each declared array starts in its bank (states, inputs, observations) or in the
/// resolved parameter view.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leaves {
    state: Vec<u32>,
    param: Vec<u32>,
    input: Vec<u32>,
    observed: Vec<u32>,
    /// Whether every parameter is constant in time, so that kernels read the parameters'
    /// storage in place rather than a copy in their uniform file.
    in_place: bool,
}

impl Leaves {
    /// The offsets of `model`'s declarations, in declaration order.
    pub(crate) fn new(model: &Model) -> Leaves {
        fn starts(shapes: impl Iterator<Item = Shape>) -> Vec<u32> {
            let mut at = 0;
            shapes
                .map(|s| {
                    let start = at;
                    at += s.len() as u32;
                    start
                })
                .collect()
        }
        Leaves {
            state: starts(model.states.iter().map(|s| s.shape)),
            param: starts(model.params.iter().map(|p| p.shape)),
            input: starts(model.inputs.iter().map(|i| i.shape)),
            observed: starts(model.observed.iter().map(|o| o.shape)),
            in_place: model
                .params
                .iter()
                .all(|p| matches!(p.time, crate::ir::ParamTime::Constant)),
        }
    }
}

/// A reduction before locations are known.
enum Pending {
    Lanes {
        at: u32,
        len: u32,
        node: TId,
        scalar: bool,
    },
    Outer {
        at: u32,
        a: TId,
        b: TId,
    },
}

/// Compiles `lanes` (per-sample outputs, concatenated) and `reduced` (summed over the lanes,
/// concatenated: one per parameter, in the parameter view's layout) into a kernel. A node in
/// `saved` is read from that row of the `SAVED` bank instead of being computed (the values an
/// evaluation of the right-hand side at the same point kept, see `Program::rhs_saving`).
pub(crate) fn build(
    pool: &TensorPool,
    leaves: &Leaves,
    lanes: &[TId],
    reduced: &[TId],
    saved: &HashMap<TId, u32>,
) -> Kernel {
    let mut pending = Vec::new();
    let mut at = 0u32;
    for &r in reduced {
        plan_reduce(pool, r, at, &mut pending);
        at += pool.shape(r).len() as u32;
    }
    let n_reduce = at as usize;

    // The nodes the kernel reads, how often, and by whom.
    let mut used_roots: Vec<TId> = lanes.to_vec();
    for p in &pending {
        match *p {
            Pending::Lanes { node, .. } => used_roots.push(node),
            Pending::Outer { a, b, .. } => used_roots.extend([a, b]),
        }
    }
    let end = used_roots.iter().map(|r| r.index() + 1).max().unwrap_or(0);
    let mut needed = vec![false; end];
    let mut uses = vec![0u32; end];
    let mut user: Vec<Option<TId>> = vec![None; end];
    for r in &used_roots {
        needed[r.index()] = true;
        uses[r.index()] += 1;
    }
    let mut varying = vec![false; end];
    for i in 0..end {
        varying[i] = match pool.node(TId(i as u32)) {
            _ if saved.contains_key(&TId(i as u32)) => true,
            TNode::Leaf(l) => !matches!(l, Leaf::Param(_) | Leaf::ParamTangent(_)),
            node => {
                let mut any = false;
                node.for_each_operand(|c| any |= varying[c.index()]);
                any
            }
        };
    }
    for i in (0..end).rev() {
        let id = TId(i as u32);
        if needed[i] && !saved.contains_key(&id) {
            pool.node(id).for_each_operand(|c| {
                needed[c.index()] = true;
                uses[c.index()] += 1;
                user[c.index()] = Some(id);
            });
        }
    }
    // An elementwise node read once, by an elementwise node of its shape in the same program,
    // is computed inside that node's loop rather than stored.
    let inline: Vec<bool> = (0..end)
        .map(|i| {
            let id = TId(i as u32);
            needed[i]
                && !saved.contains_key(&id)
                && uses[i] == 1
                && pool.node(id).is_elementwise()
                && user[i].is_some_and(|p| {
                    pool.node(p).is_elementwise()
                        && varying[p.index()] == varying[i]
                        && pool.shape(p).len() == pool.shape(id).len()
                })
        })
        .collect();

    let mut b = Builder {
        pool,
        loc: vec![None; end],
        reads: vec![std::cell::Cell::new(0); end],
        kernel: Kernel::default(),
        n_u: 0,
        n_r: 0,
        temps: 0,
        scratch: 0,
    };
    for i in 0..end {
        let id = TId(i as u32);
        if let Some(&row) = saved.get(&id).filter(|_| needed[i]) {
            b.loc[i] = Some(Loc::L(SAVED, row));
            b.kernel.saved.push(id);
        } else if needed[i] && !inline[i] {
            b.place(id, varying[i], leaves);
        }
    }
    let mut row = 0u32;
    for &r in lanes {
        let len = pool.shape(r).len() as u32;
        let arg = Arg {
            loc: b.loc(r),
            scalar: false,
        };
        b.kernel.outputs.push((row, arg, len));
        row += len;
    }
    // After the reductions have read their nodes (below), one read is the output's own.
    let output_nodes: Vec<TId> = lanes.to_vec();
    for p in pending {
        let r = match p {
            Pending::Lanes {
                at,
                len,
                node,
                scalar,
            } => Reduce::Lanes {
                at,
                len,
                src: b.loc(node),
                scalar,
            },
            Pending::Outer { at, a, b: bb } => {
                let (m, n) = (pool.shape(a).len() as u32, pool.shape(bb).len() as u32);
                Reduce::Outer {
                    at,
                    a: b.loc(a),
                    m,
                    b: b.loc(bb),
                    n,
                }
            }
        };
        b.kernel.reduces.push(r);
    }
    // A node whose registers are its own (not a reshape's view of another's) and that only
    // its output reads.
    let owns_registers: std::collections::HashSet<TId> =
        b.kernel.registers.iter().map(|&(id, _)| id).collect();
    b.kernel.output_only = output_nodes
        .iter()
        .map(|r| owns_registers.contains(r) && b.reads[r.index()].get() == 1)
        .collect();
    let mut kernel = b.kernel;
    kernel.n_uniform = b.n_u as usize;
    kernel.n_regs = b.n_r as usize;
    kernel.n_reduce = n_reduce;
    kernel.temps = b.temps;
    kernel.scratch = b.scratch;
    kernel
}

/// Splits a gradient root into reductions: sums term by term, outer products as GEMMs.
fn plan_reduce(pool: &TensorPool, node: TId, at: u32, out: &mut Vec<Pending>) {
    if pool.is_zero(node) {
        return;
    }
    let len = pool.shape(node).len() as u32;
    match pool.node(node) {
        TNode::Add(children) => {
            for &c in children.iter() {
                if pool.shape(c).len() as u32 == len {
                    plan_reduce(pool, c, at, out);
                } else if !pool.is_zero(c) {
                    out.push(Pending::Lanes {
                        at,
                        len,
                        node: c,
                        scalar: true,
                    });
                }
            }
        }
        TNode::Outer(a, b) => out.push(Pending::Outer { at, a: *a, b: *b }),
        TNode::Transpose(x) => match pool.node(*x) {
            // (a bᵀ)ᵀ = b aᵀ
            TNode::Outer(a, b) => out.push(Pending::Outer { at, a: *b, b: *a }),
            _ => out.push(Pending::Lanes {
                at,
                len,
                node,
                scalar: false,
            }),
        },
        TNode::Reshape(x) => plan_reduce(pool, *x, at, out),
        _ => out.push(Pending::Lanes {
            at,
            len,
            node,
            scalar: false,
        }),
    }
}

struct Builder<'p> {
    pool: &'p TensorPool,
    /// Where each placed node lives, as the lane program sees it.
    loc: Vec<Option<Loc>>,
    /// How many times each node's location was asked for (its readers, and the outputs).
    reads: Vec<std::cell::Cell<u32>>,
    kernel: Kernel,
    n_u: u32,
    n_r: u32,
    temps: usize,
    scratch: usize,
}

/// `loc` moved `d` elements on.
fn offset(loc: Loc, d: usize) -> Loc {
    match loc {
        Loc::U(k) => Loc::U(k + d as u32),
        Loc::P(k) => Loc::P(k + d as u32),
        Loc::L(bank, row) => Loc::L(bank, row + d as u32),
    }
}

impl Builder<'_> {
    fn loc(&self, id: TId) -> Loc {
        let reads = &self.reads[id.index()];
        reads.set(reads.get() + 1);
        self.loc[id.index()].expect("operands are placed before their users")
    }

    /// An operand as the program computing a node of `varying`-ness sees it: the uniform
    /// program runs over `u` as its own register file.
    fn operand(&self, id: TId, varying: bool) -> Loc {
        match (self.loc(id), varying) {
            (Loc::U(k), false) => Loc::L(REG, k),
            (loc, _) => loc,
        }
    }

    fn alloc_u(&mut self, len: usize) -> u32 {
        let at = self.n_u;
        self.n_u += len as u32;
        at
    }

    /// Gives `id` a location and, unless it is a leaf, a constant or a view, the operation
    /// computing it.
    fn place(&mut self, id: TId, varying: bool, leaves: &Leaves) {
        let pool = self.pool;
        let shape = pool.shape(id);
        let len = shape.len();
        let leaf_loc = |bank: u8, at: &[u32], i: u32| Loc::L(bank, at[i as usize]);
        let loc = match pool.node(id) {
            TNode::Leaf(l) => match *l {
                Leaf::Time => {
                    self.kernel.reads_time = true;
                    Loc::L(TIME, 0)
                }
                Leaf::State(i) => leaf_loc(STATE, &leaves.state, i),
                Leaf::StateTangent(i) => leaf_loc(STATE_TANGENT, &leaves.state, i),
                Leaf::Cotangent(i) => leaf_loc(COTANGENT, &leaves.state, i),
                Leaf::Input(i) => leaf_loc(INPUT, &leaves.input, i),
                Leaf::Label(i) => Loc::L(LABEL, i),
                Leaf::Observed(i) => leaf_loc(OBSERVED, &leaves.observed, i),
                Leaf::Param(i) if leaves.in_place => Loc::P(leaves.param[i as usize]),
                Leaf::Param(i) | Leaf::ParamTangent(i) => {
                    let at = self.alloc_u(len);
                    let from = leaves.param[i as usize];
                    let leaf = if matches!(l, Leaf::Param(_)) {
                        ULeaf::Param { from }
                    } else {
                        self.kernel.reads_tangent = true;
                        ULeaf::Tangent { from }
                    };
                    self.kernel.leaves.push((at, len as u32, leaf));
                    Loc::U(at)
                }
            },
            TNode::Const(bits) => {
                let at = self.alloc_u(1);
                self.kernel
                    .consts
                    .push((at, [f64::from_bits(*bits)].into()));
                Loc::U(at)
            }
            TNode::Literal(bits) => {
                let at = self.alloc_u(len);
                let values = bits.iter().map(|b| f64::from_bits(*b)).collect();
                self.kernel.consts.push((at, values));
                Loc::U(at)
            }
            TNode::Reshape(x) => self.loc(*x),
            node => {
                let dst = if varying {
                    let at = self.n_r;
                    self.n_r += len as u32;
                    at
                } else {
                    self.alloc_u(len)
                };
                let op = self.op(id, node, dst, varying);
                if varying {
                    self.kernel.lanes.push(op);
                    self.kernel.registers.push((id, dst));
                    Loc::L(REG, dst)
                } else {
                    self.kernel.uniform.push(op);
                    Loc::U(dst)
                }
            }
        };
        self.loc[id.index()] = Some(loc);
    }

    /// The operation computing `node` into `dst` of its program's file.
    fn op(&mut self, id: TId, node: &TNode, dst: u32, varying: bool) -> Op {
        let pool = self.pool;
        let shape = pool.shape(id);
        let len = shape.len() as u32;
        let at = |b: &Self, c: TId| b.operand(c, varying);
        match node {
            node if node.is_elementwise() => {
                let mut args = Vec::new();
                let mut code = Vec::new();
                self.ew_code(id, &mut args, &mut code, varying);
                self.temps = self.temps.max(code.len() - 1);
                Op::Ew {
                    dst,
                    len,
                    args: args.into(),
                    code: code.into(),
                }
            }
            TNode::Fill(a) => Op::Rows {
                dst,
                len,
                moves: (0..len).map(|i| (i, at(self, *a))).collect(),
                dense: true,
            },
            TNode::MatMul(a, b) => {
                let (m, k) = grid(pool.shape(*a));
                let n = match pool.shape(*b) {
                    Shape::Matrix(_, n) => n,
                    _ => 1,
                };
                // `Kᵀ g` reads the uniform program's copy of `Kᵀ`, row-major like every matrix a
                // GEMM reads: the `gemm` crate multiplies such a right side in place, where
                // swapped strides made it pack the whole matrix on every call (`mnist_sized`'s
                // gradient: 67 MB packed, 6 % of its time, 800 fresh pages), for the same bits.
                match (varying, self.loc[a.index()], self.loc(*b)) {
                    (true, Some(ua @ (Loc::U(_) | Loc::P(_))), Loc::L(bank, row)) => {
                        self.scratch = self.scratch.max(MIN_SIDE * (m + k));
                        Op::Gemm {
                            dst,
                            a: ua,
                            b: (bank, row),
                            m: m as u32,
                            k: k as u32,
                            n: n as u32,
                        }
                    }
                    _ => Op::MatMul {
                        dst,
                        a: at(self, *a),
                        b: at(self, *b),
                        m: m as u32,
                        k: k as u32,
                        n: n as u32,
                    },
                }
            }
            TNode::Transpose(a) => {
                let (m, k) = grid(pool.shape(*a));
                Op::Transpose {
                    dst,
                    src: at(self, *a),
                    m: m as u32,
                    k: k as u32,
                }
            }
            TNode::Sum(a) => Op::Sums {
                dst,
                src: at(self, *a),
                groups: [(0, pool.shape(*a).len() as u32, 1)].into(),
            },
            TNode::SumAxis(a, axis) => {
                let (m, k) = grid(pool.shape(*a));
                let (m, k) = (m as u32, k as u32);
                let groups = if *axis == 0 {
                    (0..k).map(|j| (j, m, k)).collect()
                } else {
                    (0..m).map(|i| (i * k, k, 1)).collect()
                };
                Op::Sums {
                    dst,
                    src: at(self, *a),
                    groups,
                }
            }
            TNode::MaxAll(a) => Op::MaxAll {
                dst,
                src: at(self, *a),
                len: pool.shape(*a).len() as u32,
            },
            TNode::FirstMax(a) | TNode::ArgMax(a) => Op::ArgMax {
                dst,
                src: at(self, *a),
                len: pool.shape(*a).len() as u32,
                onehot: matches!(node, TNode::FirstMax(_)),
            },
            TNode::Gather(a, w) => {
                let (rows, cols) = grid(shape);
                let src = at(self, *a);
                let moves = (0..rows)
                    .flat_map(|i| (0..cols).map(move |j| (i, j)))
                    .map(|(i, j)| ((i * cols + j) as u32, offset(src, w.at(i, j))))
                    .collect();
                Op::Rows {
                    dst,
                    len,
                    moves,
                    dense: true,
                }
            }
            TNode::Scatter(g, w) => {
                let (rows, cols) = grid(pool.shape(*g));
                let src = at(self, *g);
                let moves = (0..rows)
                    .flat_map(|i| (0..cols).map(move |j| (i, j)))
                    .map(|(i, j)| (w.at(i, j) as u32, offset(src, i * cols + j)))
                    .collect();
                Op::Rows {
                    dst,
                    len,
                    moves,
                    dense: false,
                }
            }
            TNode::Concat(parts) => {
                let mut moves = Vec::with_capacity(len as usize);
                for &p in parts.iter() {
                    let src = at(self, p);
                    for e in 0..pool.shape(p).len() {
                        moves.push((moves.len() as u32, offset(src, e)));
                    }
                }
                Op::Rows {
                    dst,
                    len,
                    moves: moves.into(),
                    dense: true,
                }
            }
            TNode::Outer(a, b) => Op::Outer {
                dst,
                a: at(self, *a),
                m: pool.shape(*a).len() as u32,
                b: at(self, *b),
                n: pool.shape(*b).len() as u32,
            },
            TNode::Diag(a) => {
                let k = pool.shape(*a).len();
                let src = at(self, *a);
                Op::Rows {
                    dst,
                    len,
                    moves: (0..k)
                        .map(|i| ((i * k + i) as u32, offset(src, i)))
                        .collect(),
                    dense: false,
                }
            }
            TNode::Const(_) | TNode::Literal(_) | TNode::Leaf(_) | TNode::Reshape(_) => {
                unreachable!("placed without an operation")
            }
            _ => unreachable!("elementwise nodes are matched first"),
        }
    }

    /// Appends the elementwise code of `id` (and of the children inlined into it), returning
    /// the reference to its result.
    fn ew_code(&self, id: TId, args: &mut Vec<Arg>, code: &mut Vec<EwInstr>, varying: bool) -> Ref {
        let pool = self.pool;
        let len = pool.shape(id).len();
        let mut refs: Vec<Ref> = Vec::new();
        let node = pool.node(id);
        node.for_each_operand(|c| {
            let r = if self.loc[c.index()].is_none() {
                self.ew_code(c, args, code, varying)
            } else {
                let arg = Arg {
                    loc: self.operand(c, varying),
                    scalar: pool.shape(c).len() == 1 && len > 1,
                };
                let j = match args.iter().position(|a| *a == arg) {
                    Some(j) => j,
                    None => {
                        args.push(arg);
                        args.len() - 1
                    }
                };
                Ref::Arg(j as u16)
            };
            refs.push(r);
        });
        let emit = |code: &mut Vec<EwInstr>, instr| {
            code.push(instr);
            Ref::Tmp(code.len() as u16 - 1)
        };
        let fold = |code: &mut Vec<EwInstr>, op: BinOp, refs: &[Ref]| {
            let mut acc = refs[0];
            for &r in &refs[1..] {
                code.push(EwInstr::Bin(op, acc, r));
                acc = Ref::Tmp(code.len() as u16 - 1);
            }
            acc
        };
        match node {
            TNode::Add(_) => fold(code, BinOp::Add, &refs),
            TNode::Mul(_) => fold(code, BinOp::Mul, &refs),
            TNode::Div(..) => emit(code, EwInstr::Bin(BinOp::Div, refs[0], refs[1])),
            TNode::Pow(..) => emit(code, EwInstr::Bin(BinOp::Pow, refs[0], refs[1])),
            TNode::Min(..) => emit(code, EwInstr::Bin(BinOp::Min, refs[0], refs[1])),
            TNode::Max(..) => emit(code, EwInstr::Bin(BinOp::Max, refs[0], refs[1])),
            TNode::Cmp(op, ..) => emit(code, EwInstr::Bin(BinOp::Cmp(*op), refs[0], refs[1])),
            TNode::Func(f, _) => emit(code, EwInstr::Func(*f, refs[0])),
            _ => unreachable!("only elementwise nodes are inlined"),
        }
    }
}
