//! The instruction tape: building it from IR roots, and running it over a range of lanes.
//!
//! A [`Kernel`] evaluates a list of IR roots for a block of samples. Every needed node is
//! *uniform* (depends only on constants and parameters: one scalar per block, computed by the
//! uniform prologue when the parameters in force change) or *varying* (one lane of `width`
//! values). Varying leaves (states, directions, inputs, labels, observations, time) are read in
//! place from their banks; other varying nodes get a register (a lane of the register file) in
//! SSA order, so an instruction's sources always lie below its destination.
//!
//! Fusion: a varying `Add` becomes one linear-combination instruction whose terms are lanes,
//! uniforms, `c·a`, `a·b` or `(c·a)·b` (a product feeding only sums is never materialized).
//! Sums with the same term structure over the same lanes (the rows of `K x`) form one
//! instruction that runs up to four rows at once over chunks of samples held in registers, like
//! a gemm micro-kernel. Parameter-gradient roots are reduced over the lanes by fused
//! `Σ_s a_s b_s` instructions.
//!
//! Exactness: nodes reachable from primal roots (equations, costs, outputs, ...) are computed in
//! the interpreter's order (sums and products left to right), so they agree with `ir::eval` to
//! the last bit except for the vectorized `tanh`, `exp` and `sigmoid` (see `math`). Products
//! reachable only from derivative roots are reassociated as `c · (v_1 · v_2 ...)`, varying
//! factors from the highest id down, so that a VJP's `W1[h,j] · d_h · c_h` shares `d_h · c_h`
//! between all `j` and between the state and parameter pull-backs, exactly as a hand-written
//! reverse sweep would.

use std::collections::HashMap;

use super::math;
use crate::ir::{self, apply_pow, CmpOp, ExprId, Func, Node, Pool, Var};

/// Banks of lane sources.
pub(crate) const REG: u8 = 0;
pub(crate) const STATE: u8 = 1;
pub(crate) const STATE_TANGENT: u8 = 2;
pub(crate) const COTANGENT: u8 = 3;
pub(crate) const INPUT: u8 = 4;
pub(crate) const LABEL: u8 = 5;
pub(crate) const OBSERVED: u8 = 6;
pub(crate) const TIME: u8 = 7;
pub(crate) const BANKS: usize = 8;

/// A lane: row `row` of bank `bank`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Src {
    bank: u8,
    row: u32,
}

/// An operand: a lane or a uniform register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Opd {
    L(Src),
    U(u32),
}

/// The kinds of terms of a linear combination (and of a reduction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// `a`
    Lane,
    /// `c`
    Uni,
    /// `c·a`
    Scaled,
    /// `a·b`
    Prod,
    /// `(c·a)·b`
    ScaledProd,
}

/// A term without its coefficient: the part shared by the rows of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Shape {
    kind: Kind,
    a: Src,
    b: Src,
    /// Index of this term's coefficient within a row of the coefficient table.
    slot: u32,
}

/// Binary elementwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bin {
    Mul,
    Div,
    Pow,
    Min,
    Max,
    Cmp(CmpOp),
}

/// One lane instruction.
#[derive(Clone, Debug)]
enum Instr {
    /// Rows `dst .. dst + rows` are linear combinations with the same term shapes; row `r`'s
    /// coefficients are `u[table + r * coefs ..][..coefs]`.
    Lin {
        dst: u32,
        rows: u32,
        shape: Box<[Shape]>,
        coefs: u32,
        table: u32,
    },
    /// `dst = a ∘ b`.
    Bin { dst: u32, op: Bin, a: Opd, b: Opd },
    /// `dst = ((a · b) · c) ...`, left to right.
    Fold { dst: u32, ops: Box<[Opd]> },
    /// `dst = a · a`.
    Square { dst: u32, a: Src },
    /// `dst = f(a)`.
    Func { dst: u32, f: Func, a: Src },
}

impl Instr {
    fn dst(&self) -> u32 {
        match self {
            Instr::Lin { dst, .. }
            | Instr::Bin { dst, .. }
            | Instr::Fold { dst, .. }
            | Instr::Square { dst, .. }
            | Instr::Func { dst, .. } => *dst,
        }
    }
}

/// Scalar operations of the uniform prologue.
#[derive(Clone, Debug)]
enum UInstr {
    Node { dst: u32, node: Node },
}

/// Where a uniform leaf takes its value.
#[derive(Clone, Copy, Debug)]
enum ULeaf {
    /// Element of the resolved parameter copy `θ`.
    Param(u32),
    /// Element of the resolved parameter tangent.
    Tangent(u32),
    /// A constant.
    Const(f64),
}

/// A reduction `out[index] += Σ_s term(s)`.
#[derive(Clone, Copy, Debug)]
struct Reduce {
    index: u32,
    shape: Shape,
    coef: u32,
}

/// A compiled kernel: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Kernel {
    leaves: Vec<(u32, ULeaf)>,
    prologue: Vec<UInstr>,
    /// `u[dst] = u[src]`: coefficient tables of the linear combinations.
    gather: Vec<(u32, u32)>,
    /// Size of the uniform file.
    pub(crate) n_uniform: usize,
    /// Number of lane registers.
    pub(crate) n_regs: usize,
    instrs: Vec<Instr>,
    /// Lane outputs: row of the output block and its operand.
    outputs: Vec<(u32, Opd)>,
    reduces: Vec<Reduce>,
    /// Number of reduced outputs.
    pub(crate) n_reduce: usize,
    /// Whether the kernel reads parameter tangents (its uniforms change with every call).
    pub(crate) reads_tangent: bool,
    /// Whether the kernel reads the time `t`.
    pub(crate) reads_time: bool,
}

/// Row offsets of every declared variable in its bank, from the model.
struct Rows {
    state: Vec<u32>,
    param: Vec<u32>,
    input: Vec<u32>,
    observed: Vec<u32>,
}

impl Rows {
    fn new(model: &ir::Model) -> Rows {
        fn offsets(lens: impl Iterator<Item = usize>) -> Vec<u32> {
            let mut acc = 0u32;
            lens.map(|n| {
                let o = acc;
                acc += n as u32;
                o
            })
            .collect()
        }
        Rows {
            state: offsets(model.states.iter().map(|s| s.shape.len())),
            param: offsets(model.params.iter().map(|p| p.shape.len())),
            input: offsets(model.inputs.iter().map(|i| i.shape.len())),
            observed: offsets(model.observed.iter().map(|o| o.shape.len())),
        }
    }
}

/// Builds kernels from one model; holds the canonicalized copy of the pool.
pub(crate) struct Builder {
    pool: Pool,
    /// Canonical id of every original node.
    canon: Vec<ExprId>,
    /// Whether each node (original or new) is uniform.
    uniform: Vec<bool>,
    rows: Rows,
    /// Inline products into sums and group rows (the default); off only to measure the gain.
    pub(crate) fuse: bool,
}

fn var_is_uniform(v: Var) -> bool {
    matches!(v, Var::Param { .. } | Var::ParamTangent { .. })
}

impl Builder {
    /// Canonicalizes `model`'s pool: exact rewrites for primal nodes, reassociation of
    /// derivative-only products (module docs).
    #[expect(
        clippy::needless_range_loop,
        reason = "ids index several tables that grow as nodes are interned"
    )]
    pub(crate) fn new(model: &ir::Model) -> Builder {
        let mut pool = model.pool.clone();
        let n = pool.len();
        let mut primal = vec![false; n];
        for id in ir::diff::reachable(&pool, &model.primal_roots()) {
            primal[id.index()] = true;
        }
        let mut b = Builder {
            pool: Pool::new(),
            canon: Vec::with_capacity(n),
            uniform: Vec::with_capacity(n),
            rows: Rows::new(model),
            fuse: true,
        };
        for i in 0..n {
            let is_uniform = match pool.node(ExprId(i as u32)) {
                Node::Const(_) => true,
                Node::Var(v) => var_is_uniform(*v),
                node => {
                    let mut u = true;
                    node.for_each_operand(|c| u &= b.uniform[c.index()]);
                    u
                }
            };
            b.uniform.push(is_uniform);
        }
        std::mem::swap(&mut b.pool, &mut pool);
        for i in 0..n {
            let id = ExprId(i as u32);
            let node = b.pool.node(id).map_operands(|c| b.canon[c.index()]);
            let new = match node {
                Node::Mul(ref f) if !b.uniform[i] => b.product(f, primal[i]),
                _ => b.intern(node),
            };
            b.canon.push(new);
        }
        b
    }

    fn intern(&mut self, node: Node) -> ExprId {
        let id = self.pool.intern(node);
        if id.index() == self.uniform.len() {
            let is_uniform = match self.pool.node(id) {
                Node::Const(_) => true,
                Node::Var(v) => var_is_uniform(*v),
                node => {
                    let mut u = true;
                    node.for_each_operand(|c| u &= self.uniform[c.index()]);
                    u
                }
            };
            self.uniform.push(is_uniform);
        }
        id
    }

    /// A varying product in canonical form. Exact (primal) products keep their left-to-right
    /// order, except that a leading run of uniform factors becomes one uniform node and a
    /// product of two factors is ordered by descending id (both exact). Derivative-only
    /// products become `c · fold(varying factors by descending id)`.
    fn product(&mut self, factors: &[ExprId], exact: bool) -> ExprId {
        if exact {
            let lead = factors
                .iter()
                .take_while(|f| self.uniform[f.index()])
                .count();
            if lead >= 2 {
                let c = self.intern(Node::Mul(factors[..lead].into()));
                let mut rest = vec![c];
                rest.extend_from_slice(&factors[lead..]);
                if rest.len() == 1 {
                    return c;
                }
                return self.intern(Node::Mul(rest.into()));
            }
            if factors.len() == 2 && factors[0] < factors[1] {
                return self.intern(Node::Mul(Box::new([factors[1], factors[0]])));
            }
            return self.intern(Node::Mul(factors.into()));
        }
        let (u, mut v): (Vec<ExprId>, Vec<ExprId>) =
            factors.iter().partition(|f| self.uniform[f.index()]);
        v.sort_by(|a, b| b.cmp(a));
        let mut g = v[0];
        for &x in &v[1..] {
            g = self.intern(Node::Mul(Box::new([g, x])));
        }
        match u.len() {
            0 => g,
            1 => self.intern(Node::Mul(Box::new([u[0], g]))),
            _ => {
                let c = self.intern(Node::Mul(u.into()));
                self.intern(Node::Mul(Box::new([c, g])))
            }
        }
    }

    /// The lane a varying leaf reads.
    fn leaf_src(&self, v: Var) -> Src {
        let (bank, row) = match v {
            Var::Time => (TIME, 0),
            Var::State { state, elem } => (STATE, self.rows.state[state as usize] + elem),
            Var::StateTangent { state, elem } => {
                (STATE_TANGENT, self.rows.state[state as usize] + elem)
            }
            Var::Cotangent { state, elem } => (COTANGENT, self.rows.state[state as usize] + elem),
            Var::Input { input, elem } => (INPUT, self.rows.input[input as usize] + elem),
            Var::Label { label } => (LABEL, label),
            Var::Observed { observed, elem } => {
                (OBSERVED, self.rows.observed[observed as usize] + elem)
            }
            Var::Param { .. } | Var::ParamTangent { .. } => unreachable!("uniform leaf"),
        };
        Src { bank, row }
    }

    /// The term pattern of a varying product `m` (children in fold order), if it has one.
    fn pattern(&self, m: ExprId) -> Option<(Kind, Option<ExprId>, ExprId, Option<ExprId>)> {
        let Node::Mul(f) = self.pool.node(m) else {
            return None;
        };
        let u = |x: &ExprId| self.uniform[x.index()];
        match f.as_ref() {
            [c, a] if u(c) && !u(a) => Some((Kind::Scaled, Some(*c), *a, None)),
            [a, c] if u(c) && !u(a) => Some((Kind::Scaled, Some(*c), *a, None)),
            [a, b] if !u(a) && !u(b) => Some((Kind::Prod, None, *a, Some(*b))),
            // (a·c)·b = (c·a)·b exactly: multiplication commutes.
            [c, a, b] | [a, c, b] if u(c) && !u(a) && !u(b) => {
                Some((Kind::ScaledProd, Some(*c), *a, Some(*b)))
            }
            _ => None,
        }
    }

    /// Compiles a kernel for `lane_roots` (written as rows of an output block) and
    /// `reduce_roots` (summed over the lanes into a gradient vector).
    #[expect(
        clippy::needless_range_loop,
        reason = "node ids index several per-node tables at once"
    )]
    pub(crate) fn kernel(&mut self, lane_roots: &[ExprId], reduce_roots: &[ExprId]) -> Kernel {
        let lane_roots: Vec<ExprId> = lane_roots.iter().map(|r| self.canon[r.index()]).collect();
        let reduce_roots: Vec<ExprId> =
            reduce_roots.iter().map(|r| self.canon[r.index()]).collect();
        let n = self.pool.len();
        let mut needed = vec![false; n];
        for r in lane_roots.iter().chain(&reduce_roots) {
            needed[r.index()] = true;
        }
        for i in (0..n).rev() {
            if needed[i] {
                self.pool
                    .node(ExprId(i as u32))
                    .for_each_operand(|c| needed[c.index()] = true);
            }
        }
        let is_leaf = |pool: &Pool, i: usize| matches!(pool.node(ExprId(i as u32)), Node::Var(_));
        // A varying product can be inlined into its consumers when each of them is a varying
        // sum (it becomes a term) or a reduction root, and it is no lane root.
        let mut inline_ok: Vec<bool> = (0..n)
            .map(|i| {
                self.fuse
                    && needed[i]
                    && !self.uniform[i]
                    && self.pattern(ExprId(i as u32)).is_some()
            })
            .collect();
        for r in &lane_roots {
            inline_ok[r.index()] = false;
        }
        for i in 0..n {
            if !needed[i] {
                continue;
            }
            let node = self.pool.node(ExprId(i as u32));
            let sum = matches!(node, Node::Add(_)) && !self.uniform[i];
            if !sum {
                node.for_each_operand(|c| inline_ok[c.index()] = false);
            }
        }
        let materialize =
            |i: usize| needed[i] && !self.uniform[i] && !is_leaf(&self.pool, i) && !inline_ok[i];

        let mut k = Kernel::default();
        // Uniform file: every needed uniform node, in id order.
        let mut uidx: HashMap<ExprId, u32> = HashMap::new();
        for i in 0..n {
            if !(needed[i] && self.uniform[i]) {
                continue;
            }
            let id = ExprId(i as u32);
            let dst = k.n_uniform as u32;
            k.n_uniform += 1;
            uidx.insert(id, dst);
            match self.pool.node(id) {
                Node::Const(bits) => k.leaves.push((dst, ULeaf::Const(f64::from_bits(*bits)))),
                Node::Var(Var::Param { param, elem }) => k
                    .leaves
                    .push((dst, ULeaf::Param(self.rows.param[*param as usize] + elem))),
                Node::Var(Var::ParamTangent { param, elem }) => {
                    k.reads_tangent = true;
                    k.leaves
                        .push((dst, ULeaf::Tangent(self.rows.param[*param as usize] + elem)))
                }
                Node::Var(_) => unreachable!("varying leaf classified uniform"),
                node => {
                    let node = node.map_operands(|c| ExprId(uidx[&c]));
                    k.prologue.push(UInstr::Node { dst, node });
                }
            }
        }

        // Registers and lane operands.
        let mut reg: HashMap<ExprId, u32> = HashMap::new();
        let opd = |id: ExprId, reg: &HashMap<ExprId, u32>| -> Opd {
            if self.uniform[id.index()] {
                Opd::U(uidx[&id])
            } else if let Node::Var(v) = self.pool.node(id) {
                Opd::L(self.leaf_src(*v))
            } else {
                Opd::L(Src {
                    bank: REG,
                    row: reg[&id],
                })
            }
        };
        let lane = |id: ExprId, reg: &HashMap<ExprId, u32>| match opd(id, reg) {
            Opd::L(s) => s,
            Opd::U(_) => unreachable!("lane operand is uniform"),
        };
        let none = Src { bank: REG, row: 0 };
        // A term of a sum (or a reduction): its shape (without slot) and coefficient.
        let term = |c: ExprId, reg: &HashMap<ExprId, u32>| -> (Shape, Option<u32>) {
            let shape = |kind, a, b| Shape {
                kind,
                a,
                b,
                slot: 0,
            };
            if self.uniform[c.index()] {
                return (shape(Kind::Uni, none, none), Some(uidx[&c]));
            }
            if inline_ok[c.index()] {
                let (kind, coef, a, b) = self.pattern(c).expect("inlined products have a pattern");
                let b = b.map_or(none, |b| lane(b, reg));
                return (shape(kind, lane(a, reg), b), coef.map(|c| uidx[&c]));
            }
            (shape(Kind::Lane, lane(c, reg), none), None)
        };

        // Group sums by term structure: the kind of each term and the nodes it reads.
        type Key = Vec<(Kind, Option<ExprId>, Option<ExprId>)>;
        let key_of = |terms: &[ExprId]| -> Key {
            terms
                .iter()
                .map(|&c| {
                    if self.uniform[c.index()] {
                        (Kind::Uni, None, None)
                    } else if inline_ok[c.index()] {
                        let (kind, _, a, b) = self.pattern(c).expect("inlined products");
                        (kind, Some(a), b)
                    } else {
                        (Kind::Lane, Some(c), None)
                    }
                })
                .collect()
        };
        let mut groups: HashMap<Key, Vec<ExprId>> = HashMap::new();
        for i in 0..n {
            if materialize(i) {
                if let Node::Add(terms) = self.pool.node(ExprId(i as u32)) {
                    groups
                        .entry(key_of(terms))
                        .or_default()
                        .push(ExprId(i as u32));
                }
            }
        }
        let mut emitted = vec![false; n];
        for i in 0..n {
            if !materialize(i) || emitted[i] {
                continue;
            }
            let id = ExprId(i as u32);
            let node = self.pool.node(id).clone();
            match node {
                Node::Add(ref terms) => {
                    // Every sum with this key reads the same lanes as this one, the first in id
                    // order, so all are ready now.
                    let members = if self.fuse {
                        groups[&key_of(terms)].clone()
                    } else {
                        vec![id]
                    };
                    let dst = k.n_regs as u32;
                    let mut shape: Vec<Shape> = Vec::with_capacity(terms.len());
                    let mut slots = 0u32;
                    for &c in terms.iter() {
                        let (mut sh, coef) = term(c, &reg);
                        sh.slot = slots;
                        if coef.is_some() {
                            slots += 1;
                        }
                        shape.push(sh);
                    }
                    let table = k.n_uniform as u32;
                    for (r, &m) in members.iter().enumerate() {
                        let Node::Add(mt) = self.pool.node(m) else {
                            unreachable!("groups hold sums")
                        };
                        let mut slot = 0;
                        for &c in mt.iter() {
                            if let (_, Some(coef)) = term(c, &reg) {
                                k.gather.push((table + r as u32 * slots + slot, coef));
                                slot += 1;
                            }
                        }
                        reg.insert(m, dst + r as u32);
                        emitted[m.index()] = true;
                    }
                    k.n_uniform += members.len() * slots as usize;
                    k.n_regs += members.len();
                    k.instrs.push(Instr::Lin {
                        dst,
                        rows: members.len() as u32,
                        shape: shape.into(),
                        coefs: slots,
                        table,
                    });
                }
                Node::Mul(ref f) => {
                    let ops: Vec<Opd> = f.iter().map(|&c| opd(c, &reg)).collect();
                    let dst = k.n_regs as u32;
                    k.n_regs += 1;
                    reg.insert(id, dst);
                    emitted[i] = true;
                    k.instrs.push(if ops.len() == 2 {
                        Instr::Bin {
                            dst,
                            op: Bin::Mul,
                            a: ops[0],
                            b: ops[1],
                        }
                    } else {
                        Instr::Fold {
                            dst,
                            ops: ops.into(),
                        }
                    });
                }
                Node::Func(f, a) => {
                    let dst = k.n_regs as u32;
                    k.n_regs += 1;
                    reg.insert(id, dst);
                    emitted[i] = true;
                    k.instrs.push(Instr::Func {
                        dst,
                        f,
                        a: lane(a, &reg),
                    });
                }
                Node::Pow(a, e) if self.pool.const_value(e) == Some(2.0) => {
                    let dst = k.n_regs as u32;
                    k.n_regs += 1;
                    reg.insert(id, dst);
                    emitted[i] = true;
                    k.instrs.push(Instr::Square {
                        dst,
                        a: lane(a, &reg),
                    });
                }
                Node::Div(a, b)
                | Node::Pow(a, b)
                | Node::Min(a, b)
                | Node::Max(a, b)
                | Node::Cmp(_, a, b) => {
                    let op = match node {
                        Node::Div(..) => Bin::Div,
                        Node::Pow(..) => Bin::Pow,
                        Node::Min(..) => Bin::Min,
                        Node::Max(..) => Bin::Max,
                        Node::Cmp(op, ..) => Bin::Cmp(op),
                        _ => unreachable!(),
                    };
                    let dst = k.n_regs as u32;
                    k.n_regs += 1;
                    reg.insert(id, dst);
                    emitted[i] = true;
                    k.instrs.push(Instr::Bin {
                        dst,
                        op,
                        a: opd(a, &reg),
                        b: opd(b, &reg),
                    });
                }
                Node::Const(_) | Node::Var(_) => unreachable!("leaves are not materialized"),
            }
        }

        for (row, r) in lane_roots.iter().enumerate() {
            k.outputs.push((row as u32, opd(*r, &reg)));
        }
        for (index, &r) in reduce_roots.iter().enumerate() {
            let (mut shape, coef) = term(r, &reg);
            shape.slot = 0;
            k.reduces.push(Reduce {
                index: index as u32,
                shape,
                coef: coef.unwrap_or(0),
            });
        }
        k.n_reduce = reduce_roots.len();
        k.reads_time = (0..n)
            .any(|i| needed[i] && matches!(self.pool.node(ExprId(i as u32)), Node::Var(Var::Time)));
        k
    }
}

// ------------------------------------------------------------------------------------ running

/// The lane sources of one call: banks other than the registers, the block width and the lane
/// range being computed.
#[derive(Clone, Copy)]
pub(crate) struct Lanes<'a> {
    pub(crate) banks: [&'a [f64]; BANKS],
    pub(crate) width: usize,
    pub(crate) lo: usize,
    pub(crate) hi: usize,
}

impl<'a> Lanes<'a> {
    #[inline(always)]
    fn lane(&self, s: Src) -> &'a [f64] {
        let start = s.row as usize * self.width;
        &self.banks[s.bank as usize][start + self.lo..start + self.hi]
    }
}

impl Kernel {
    /// Fills the uniform file `u` from the resolved parameters `theta` and tangent.
    pub(crate) fn prepare(&self, theta: &[f64], tangent: &[f64], u: &mut [f64]) {
        for &(dst, leaf) in &self.leaves {
            u[dst as usize] = match leaf {
                ULeaf::Param(i) => theta[i as usize],
                ULeaf::Tangent(i) => tangent.get(i as usize).copied().unwrap_or(0.0),
                ULeaf::Const(c) => c,
            };
        }
        for UInstr::Node { dst, node } in &self.prologue {
            let v = |id: &ExprId| u[id.index()];
            let value = match node {
                Node::Add(c) => c[1..].iter().fold(v(&c[0]), |acc, x| acc + v(x)),
                Node::Mul(c) => c[1..].iter().fold(v(&c[0]), |acc, x| acc * v(x)),
                Node::Div(a, b) => v(a) / v(b),
                Node::Pow(a, b) => apply_pow(v(a), v(b)),
                Node::Func(f, a) => f.apply(v(a)),
                Node::Min(a, b) => v(a).min(v(b)),
                Node::Max(a, b) => v(a).max(v(b)),
                Node::Cmp(op, a, b) => op.apply(v(a), v(b)),
                Node::Const(_) | Node::Var(_) => unreachable!("leaves are not in the prologue"),
            };
            u[*dst as usize] = value;
        }
        for &(dst, src) in &self.gather {
            u[dst as usize] = u[src as usize];
        }
    }

    /// Runs the lane instructions over `lanes.lo..lanes.hi`, writing the lane outputs into
    /// `out` (rows of `lanes.width`) and adding the reductions into `reduced`.
    pub(crate) fn run(
        &self,
        u: &[f64],
        regs: &mut [f64],
        lanes: Lanes<'_>,
        out: &mut [f64],
        reduced: &mut [f64],
    ) {
        let w = lanes.width;
        for ins in &self.instrs {
            let (below, above) = regs.split_at_mut(ins.dst() as usize * w);
            let mut l = lanes;
            l.banks[REG as usize] = below;
            match ins {
                Instr::Lin {
                    rows,
                    shape,
                    coefs,
                    table,
                    ..
                } => {
                    let rows = *rows as usize;
                    let coefs = *coefs as usize;
                    let table = &u[*table as usize..*table as usize + rows * coefs];
                    lin(&l, shape, table, coefs, &mut above[..rows * w]);
                }
                Instr::Bin { op, a, b, .. } => {
                    let dst = &mut above[l.lo..l.hi];
                    match op {
                        Bin::Mul => binary(&l, u, *a, *b, dst, |x, y| x * y),
                        Bin::Div => binary(&l, u, *a, *b, dst, |x, y| x / y),
                        Bin::Pow => binary(&l, u, *a, *b, dst, apply_pow),
                        Bin::Min => binary(&l, u, *a, *b, dst, f64::min),
                        Bin::Max => binary(&l, u, *a, *b, dst, f64::max),
                        Bin::Cmp(c) => binary(&l, u, *a, *b, dst, |x, y| c.apply(x, y)),
                    }
                }
                Instr::Fold { ops, .. } => {
                    let dst = &mut above[l.lo..l.hi];
                    binary(&l, u, ops[0], ops[1], dst, |x, y| x * y);
                    for op in &ops[2..] {
                        match *op {
                            Opd::L(s) => dst.iter_mut().zip(l.lane(s)).for_each(|(d, x)| *d *= x),
                            Opd::U(c) => {
                                let c = u[c as usize];
                                dst.iter_mut().for_each(|d| *d *= c)
                            }
                        }
                    }
                }
                Instr::Square { a, .. } => {
                    let dst = &mut above[l.lo..l.hi];
                    dst.iter_mut().zip(l.lane(*a)).for_each(|(d, x)| *d = x * x);
                }
                Instr::Func { f, a, .. } => {
                    let dst = &mut above[l.lo..l.hi];
                    let x = l.lane(*a);
                    match f {
                        Func::Tanh => map(dst, x, math::tanh),
                        Func::Exp => map(dst, x, math::exp),
                        Func::Sigmoid => map(dst, x, math::sigmoid),
                        Func::Abs => map(dst, x, f64::abs),
                        Func::Sqrt => map(dst, x, f64::sqrt),
                        Func::Relu => map(dst, x, |x| Func::Relu.apply(x)),
                        f => map(dst, x, |x| f.apply(x)),
                    }
                }
            }
        }
        let mut l = lanes;
        l.banks[REG as usize] = regs;
        for &(row, o) in &self.outputs {
            let dst = &mut out[row as usize * w + l.lo..row as usize * w + l.hi];
            match o {
                // A fixed-size copy is inlined; a slice copy calls `memmove`, which costs as
                // much as a small instruction.
                Opd::L(s) => match <&mut [f64; 32]>::try_from(&mut *dst) {
                    Ok(d) => *d = l.lane(s).try_into().expect("lane of the block width"),
                    Err(_) => dst.copy_from_slice(l.lane(s)),
                },
                Opd::U(c) => dst.fill(u[c as usize]),
            }
        }
        for r in &self.reduces {
            reduced[r.index as usize] += reduce(&l, u, r);
        }
    }
}

#[inline(always)]
fn map(dst: &mut [f64], x: &[f64], f: impl Fn(f64) -> f64) {
    dst.iter_mut().zip(x).for_each(|(d, &x)| *d = f(x));
}

#[inline(always)]
fn binary(l: &Lanes<'_>, u: &[f64], a: Opd, b: Opd, dst: &mut [f64], f: impl Fn(f64, f64) -> f64) {
    match (a, b) {
        (Opd::L(a), Opd::L(b)) => dst
            .iter_mut()
            .zip(l.lane(a).iter().zip(l.lane(b)))
            .for_each(|(d, (&x, &y))| *d = f(x, y)),
        (Opd::U(a), Opd::L(b)) => {
            let x = u[a as usize];
            dst.iter_mut()
                .zip(l.lane(b))
                .for_each(|(d, &y)| *d = f(x, y))
        }
        (Opd::L(a), Opd::U(b)) => {
            let y = u[b as usize];
            dst.iter_mut()
                .zip(l.lane(a))
                .for_each(|(d, &x)| *d = f(x, y))
        }
        (Opd::U(a), Opd::U(b)) => dst.fill(f(u[a as usize], u[b as usize])),
    }
}

/// Rows of a linear combination. Each row accumulates its terms in its destination lane, which
/// stays in L1: the loop over samples is innermost and vectorizes, and a source lane is
/// resolved (and bounds-checked) once per term rather than once per chunk of samples. This is
/// the loop nest a hand-written blocked kernel uses, and it measured faster than keeping 4×4
/// accumulators in registers, whose per-chunk source look-ups cost more than they save.
fn lin(l: &Lanes<'_>, shape: &[Shape], table: &[f64], coefs: usize, dst: &mut [f64]) {
    let w = l.width;
    for (r, row) in dst.chunks_exact_mut(w).enumerate() {
        let d = &mut row[l.lo..l.hi];
        let c = &table[r * coefs..(r + 1) * coefs];
        let Some((first, rest)) = shape.split_first() else {
            continue;
        };
        // The solvers' block width gets loops of known length: fully unrolled, no remainder.
        if let Ok(d) = <&mut [f64; 32]>::try_from(&mut *d) {
            lin_term::<true, 32>(l, first, c, d);
            for t in rest {
                lin_term::<false, 32>(l, t, c, d);
            }
        } else {
            lin_term_any::<true>(l, first, c, d);
            for t in rest {
                lin_term_any::<false>(l, t, c, d);
            }
        }
    }
}

#[inline(always)]
fn put<const FIRST: bool>(acc: &mut f64, v: f64) {
    if FIRST {
        *acc = v;
    } else {
        *acc += v;
    }
}

/// One term of a linear combination on exactly `N` lanes.
#[inline(always)]
fn lin_term<const FIRST: bool, const N: usize>(
    l: &Lanes<'_>,
    t: &Shape,
    coefs: &[f64],
    d: &mut [f64; N],
) {
    let lane = |s: Src| -> &[f64; N] { l.lane(s).try_into().expect("lane of the block width") };
    match t.kind {
        Kind::Lane => {
            let a = lane(t.a);
            for k in 0..N {
                put::<FIRST>(&mut d[k], a[k]);
            }
        }
        Kind::Uni => {
            let c = coefs[t.slot as usize];
            for v in d.iter_mut() {
                put::<FIRST>(v, c);
            }
        }
        Kind::Scaled => {
            let c = coefs[t.slot as usize];
            let a = lane(t.a);
            for k in 0..N {
                put::<FIRST>(&mut d[k], c * a[k]);
            }
        }
        Kind::Prod => {
            let (a, b) = (lane(t.a), lane(t.b));
            for k in 0..N {
                put::<FIRST>(&mut d[k], a[k] * b[k]);
            }
        }
        Kind::ScaledProd => {
            let c = coefs[t.slot as usize];
            let (a, b) = (lane(t.a), lane(t.b));
            for k in 0..N {
                put::<FIRST>(&mut d[k], (c * a[k]) * b[k]);
            }
        }
    }
}

/// One term of a linear combination on any number of lanes.
#[inline(always)]
fn lin_term_any<const FIRST: bool>(l: &Lanes<'_>, t: &Shape, coefs: &[f64], d: &mut [f64]) {
    match t.kind {
        Kind::Lane => {
            let a = l.lane(t.a);
            d.iter_mut().zip(a).for_each(|(d, &a)| put::<FIRST>(d, a));
        }
        Kind::Uni => {
            let c = coefs[t.slot as usize];
            d.iter_mut().for_each(|d| put::<FIRST>(d, c));
        }
        Kind::Scaled => {
            let c = coefs[t.slot as usize];
            let a = l.lane(t.a);
            d.iter_mut()
                .zip(a)
                .for_each(|(d, &a)| put::<FIRST>(d, c * a));
        }
        Kind::Prod => {
            let (a, b) = (l.lane(t.a), l.lane(t.b));
            d.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(d, (&a, &b))| put::<FIRST>(d, a * b));
        }
        Kind::ScaledProd => {
            let c = coefs[t.slot as usize];
            let (a, b) = (l.lane(t.a), l.lane(t.b));
            d.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(d, (&a, &b))| put::<FIRST>(d, (c * a) * b));
        }
    }
}

/// `Σ_s term(s)` over the lane range, in a fixed order: four interleaved partial sums over
/// chunks of four samples, then the remainder, so the loop vectorizes and the result depends
/// only on the lane range.
fn reduce(l: &Lanes<'_>, u: &[f64], r: &Reduce) -> f64 {
    let c = u.get(r.coef as usize).copied().unwrap_or(0.0);
    let t = r.shape;
    let n = l.hi - l.lo;
    match t.kind {
        Kind::Lane => sum4(l.lane(t.a), |a| a),
        // A uniform term (rare: a gradient that reads no lane) is added once per sample.
        Kind::Uni => (0..n).fold(0.0, |acc, _| acc + c),
        Kind::Scaled => sum4(l.lane(t.a), |a| c * a),
        Kind::Prod => sum4_2(l.lane(t.a), l.lane(t.b), |a, b| a * b),
        Kind::ScaledProd => sum4_2(l.lane(t.a), l.lane(t.b), |a, b| (c * a) * b),
    }
}

#[inline(always)]
fn sum4(a: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = a.chunks_exact(4);
    let tail = chunks.remainder();
    for ch in chunks {
        for k in 0..4 {
            acc[k] += f(ch[k]);
        }
    }
    let mut total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for &x in tail {
        total += f(x);
    }
    total
}

#[inline(always)]
fn sum4_2(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let full = n / 4 * 4;
    for (x, y) in a[..full].chunks_exact(4).zip(b[..full].chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += f(x[k], y[k]);
        }
    }
    let mut total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (&x, &y) in a[full..].iter().zip(&b[full..]) {
        total += f(x, y);
    }
    total
}
