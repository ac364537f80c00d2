//! The instruction tape: building it from IR roots, and running it over a range of lanes.
//!
//! A [`Kernel`] evaluates a list of IR roots for a block of samples. Every needed node is
//! *uniform* (depends only on constants and parameters: one scalar per block, computed by the
//! uniform prologue when the parameters in force change) or *varying* (one lane of `width`
//! values). Varying leaves (states, directions, inputs, labels, observations, time) are read in
//! place from their banks; other varying nodes get a register (a lane of the register file) in
//! SSA order, so an instruction's sources always lie below its destination. A lane root that no
//! other node reads is written straight into its output row, without a register and a copy.
//!
//! Fusion: a varying `Add` becomes one linear-combination instruction whose terms are lanes,
//! uniforms, `c·a`, `a·b` or `(c·a)·b` (a product feeding only sums is never materialized).
//! Sums with the same term structure over the same lanes (the rows of `K x`) form one
//! instruction, run row by row (see `lin`). Parameter-gradient roots are reduced over the lanes
//! by fused `Σ_s a_s b_s` instructions.
//!
//! Exactness: nodes reachable from primal roots (equations, costs, outputs, ...) are computed in
//! the interpreter's order (sums and products left to right), so they agree with `ir::eval` to
//! the last bit except for the vectorized `tanh`, `exp` and `sigmoid` (see `math`) and matrix
//! products run as GEMMs (see `matmul`: a few ulps per term). Products
//! reachable only from derivative roots are reassociated as `c · (v_1 · v_2 ...)`, varying
//! factors from the highest id down, so that a VJP's `W1[h,j] · d_h · c_h` shares `d_h · c_h`
//! between all `j` and between the state and parameter pull-backs, exactly as a hand-written
//! reverse sweep would.

use std::collections::HashMap;

mod matmul;
pub(crate) mod native;

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
/// Values a kernel reads instead of computing: registers of the right-hand side saved at the
/// same point (see [`Builder::kernel_reading`]).
pub(crate) const SAVED: u8 = 8;
pub(crate) const BANKS: usize = 9;

/// A lane: row `row` of bank `bank`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// Where an instruction writes: registers, or rows of the output block (a lane root that no
/// other node reads is computed in place, without a register and a copy).
#[derive(Clone, Copy, Debug)]
enum Dst {
    Reg(u32),
    Out(u32),
}

/// One lane instruction with its destination; its sources lie in registers below `below`.
#[derive(Clone, Debug)]
struct Step {
    dst: Dst,
    below: u32,
    instr: Instr,
}

/// One lane operation.
#[derive(Clone, Debug)]
enum Instr {
    /// Rows `dst .. dst + rows` are linear combinations with the same term shapes; row `r`'s
    /// coefficients are `u[table + r * coefs ..][..coefs]`.
    Lin {
        rows: u32,
        shape: Box<[Shape]>,
        coefs: u32,
        table: u32,
        /// The same rows as one matrix product, when they are one (see `matmul`).
        gemm: Option<Box<matmul::LinGemm>>,
    },
    /// `dst = a ∘ b`.
    Bin { op: Bin, a: Opd, b: Opd },
    /// `dst = ((a · b) · c) ...`, left to right.
    Fold { ops: Box<[Opd]> },
    /// `dst = a · a`.
    Square { a: Src },
    /// `dst = f(a)`.
    Func { f: Func, a: Src },
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

/// One step of a kernel's reductions.
#[derive(Clone, Debug)]
enum ReducePlan {
    /// `reduces[i]` alone.
    One(usize),
    /// Four products `shared · others[k]` into `reduced[index[k]]`.
    Four {
        shared: Src,
        others: [Src; 4],
        index: [u32; 4],
    },
    /// A grid of products summed as one matrix product (see `matmul`).
    Gemm(Box<matmul::ReduceGemm>),
}

/// Grids of products become matrix products (each with the lane-loop plan of its members for
/// short lane ranges); of the rest, consecutive plain products (`a·b`, no coefficient) that
/// share an operand are grouped into fours. Products commute exactly, so each sum of a four is
/// the same bits as alone.
fn plan_reduces(reduces: &[Reduce]) -> Vec<ReducePlan> {
    let (grids, covered) = matmul::reduce_grids(reduces);
    let mut plan = Vec::new();
    for (mut grid, members) in grids {
        grid.fallback = plan_lane_reduces(reduces, &members);
        plan.push(ReducePlan::Gemm(Box::new(grid)));
    }
    let rest: Vec<usize> = (0..reduces.len()).filter(|&i| !covered[i]).collect();
    plan.extend(plan_lane_reduces(reduces, &rest));
    plan
}

/// The lane-loop plan of `reduces[members]` (`members` ascending).
fn plan_lane_reduces(reduces: &[Reduce], members: &[usize]) -> Vec<ReducePlan> {
    let mut plan = Vec::new();
    let mut i = 0;
    while i < members.len() {
        let run: Option<Vec<Reduce>> = members
            .get(i..i + 4)
            .map(|m| m.iter().map(|&k| reduces[k]).collect());
        if let Some(group) = run.as_deref().and_then(shared_product) {
            plan.push(group);
            i += 4;
        } else {
            plan.push(ReducePlan::One(members[i]));
            i += 1;
        }
    }
    plan
}

fn shared_product(run: &[Reduce]) -> Option<ReducePlan> {
    if run.iter().any(|r| r.shape.kind != Kind::Prod) {
        return None;
    }
    let first = run[0].shape;
    for shared in [first.a, first.b] {
        let others: Option<Vec<Src>> = run
            .iter()
            .map(|r| match (r.shape.a == shared, r.shape.b == shared) {
                (true, _) => Some(r.shape.b),
                (_, true) => Some(r.shape.a),
                _ => None,
            })
            .collect();
        if let Some(others) = others {
            return Some(ReducePlan::Four {
                shared,
                others: [others[0], others[1], others[2], others[3]],
                index: [run[0].index, run[1].index, run[2].index, run[3].index],
            });
        }
    }
    None
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
    steps: Vec<Step>,
    /// Lane outputs: row of the output block and its operand.
    outputs: Vec<(u32, Opd)>,
    reduces: Vec<Reduce>,
    /// The order `reduces` are computed in: runs of four products that share a lane are
    /// summed in one pass, which reads the shared lane once instead of four times.
    reduce_plan: Vec<ReducePlan>,
    /// Number of reduced outputs.
    pub(crate) n_reduce: usize,
    /// Scratch the matrix products need.
    pub(crate) scratch: usize,
    /// The node each register holds (canonical ids), for kernels that read them saved.
    pub(crate) registers: Vec<(ExprId, u32)>,
    /// Whether the kernel reads parameter tangents (its uniforms change with every call).
    pub(crate) reads_tangent: bool,
    /// Whether the kernel reads the time `t`.
    pub(crate) reads_time: bool,
    /// The same kernel as native code, when it is small and elementwise (see `native`).
    pub(crate) native: Option<native::Native>,
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
    pub(crate) fn kernel(&mut self, lane_roots: &[ExprId], reduce_roots: &[ExprId]) -> Kernel {
        self.kernel_reading(lane_roots, reduce_roots, &HashMap::new())
    }

    /// [`Builder::kernel`] for a kernel that reads the nodes of `saved` (canonical ids, as in
    /// [`Kernel::registers`]) from rows of the `SAVED` bank instead of computing them: a VJP
    /// that takes the activations of the forward evaluation at the same point.
    #[expect(
        clippy::needless_range_loop,
        reason = "node ids index several per-node tables at once"
    )]
    pub(crate) fn kernel_reading(
        &mut self,
        lane_roots: &[ExprId],
        reduce_roots: &[ExprId],
        saved: &HashMap<ExprId, u32>,
    ) -> Kernel {
        let is_saved = |i: usize| saved.contains_key(&ExprId(i as u32));
        let lane_roots: Vec<ExprId> = lane_roots.iter().map(|r| self.canon[r.index()]).collect();
        let reduce_roots: Vec<ExprId> =
            reduce_roots.iter().map(|r| self.canon[r.index()]).collect();
        let n = self.pool.len();
        let mut needed = vec![false; n];
        for r in lane_roots.iter().chain(&reduce_roots) {
            needed[r.index()] = true;
        }
        for i in (0..n).rev() {
            if needed[i] && !is_saved(i) {
                self.pool
                    .node(ExprId(i as u32))
                    .for_each_operand(|c| needed[c.index()] = true);
            }
        }
        let is_leaf = |pool: &Pool, i: usize| {
            matches!(pool.node(ExprId(i as u32)), Node::Var(_)) || is_saved(i)
        };
        // A varying product can be inlined into its consumers when each of them is a varying
        // sum (it becomes a term) or a reduction root, and it is no lane root.
        let mut inline_ok: Vec<bool> = (0..n)
            .map(|i| {
                self.fuse
                    && needed[i]
                    && !self.uniform[i]
                    && !is_saved(i)
                    && self.pattern(ExprId(i as u32)).is_some()
            })
            .collect();
        for r in &lane_roots {
            inline_ok[r.index()] = false;
        }
        for i in 0..n {
            if !needed[i] || is_saved(i) {
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
            } else if let Some(&row) = saved.get(&id) {
                Opd::L(Src { bank: SAVED, row })
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
        // Lane roots that no other node (or reduction) reads are written straight into their
        // output row.
        let mut read = vec![false; n];
        for i in 0..n {
            if needed[i] && !is_saved(i) {
                self.pool
                    .node(ExprId(i as u32))
                    .for_each_operand(|c| read[c.index()] = true);
            }
        }
        for r in &reduce_roots {
            read[r.index()] = true;
        }
        let mut out_row: Vec<Option<u32>> = vec![None; n];
        for (row, r) in lane_roots.iter().enumerate() {
            let i = r.index();
            if read[i] {
                // A node that is several roots is written once and copied.
                out_row[i] = None;
            } else if materialize(i) {
                out_row[i] = Some(row as u32);
                read[i] = true;
            }
        }
        let mut direct = vec![false; n];
        let mut emitted = vec![false; n];
        // The destination of `rows` consecutive results: output rows if every one is a direct
        // root in order, else fresh registers.
        let place = |k: &mut Kernel, members: &[ExprId], direct: &mut [bool]| -> Dst {
            let first = out_row[members[0].index()];
            let in_order = members.iter().enumerate().all(|(r, m)| {
                matches!((first, out_row[m.index()]), (Some(f), Some(o)) if o == f + r as u32)
            });
            match first {
                Some(row) if in_order => {
                    for m in members {
                        direct[m.index()] = true;
                    }
                    Dst::Out(row)
                }
                _ => {
                    let dst = k.n_regs as u32;
                    k.n_regs += members.len();
                    Dst::Reg(dst)
                }
            }
        };
        for i in 0..n {
            if !materialize(i) || emitted[i] {
                continue;
            }
            let id = ExprId(i as u32);
            let node = self.pool.node(id).clone();
            let below = k.n_regs as u32;
            let (members, instr) = match node {
                Node::Add(ref terms) => {
                    // Every sum with this key reads the same lanes as this one, the first in id
                    // order, so all are ready now.
                    let members = if self.fuse {
                        groups[&key_of(terms)].clone()
                    } else {
                        vec![id]
                    };
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
                    }
                    k.n_uniform += members.len() * slots as usize;
                    let rows = members.len();
                    let gemm = matmul::lin_gemm(&shape, rows).filter(|_| self.fuse).map(
                        |(mut g, order, bias)| {
                            // The product's own coefficient table, copied from the rows' table
                            // (earlier in the gather list) in ascending source order.
                            let coef =
                                |r: usize, t: usize| table + (r as u32) * slots + shape[t].slot;
                            g.table = k.n_uniform as u32;
                            for r in 0..rows {
                                for (i, &t) in order.iter().enumerate() {
                                    k.gather
                                        .push((g.table + (r * order.len() + i) as u32, coef(r, t)));
                                }
                            }
                            k.n_uniform += rows * order.len();
                            if let Some(t) = bias {
                                let b = k.n_uniform as u32;
                                for r in 0..rows {
                                    k.gather.push((b + r as u32, coef(r, t)));
                                }
                                k.n_uniform += rows;
                                g.bias = Some(b);
                            }
                            Box::new(g)
                        },
                    );
                    let instr = Instr::Lin {
                        rows: rows as u32,
                        shape: shape.into(),
                        coefs: slots,
                        table,
                        gemm,
                    };
                    (members, instr)
                }
                Node::Mul(ref f) => {
                    let ops: Vec<Opd> = f.iter().map(|&c| opd(c, &reg)).collect();
                    let instr = if ops.len() == 2 {
                        Instr::Bin {
                            op: Bin::Mul,
                            a: ops[0],
                            b: ops[1],
                        }
                    } else {
                        Instr::Fold { ops: ops.into() }
                    };
                    (vec![id], instr)
                }
                Node::Func(f, a) => (
                    vec![id],
                    Instr::Func {
                        f,
                        a: lane(a, &reg),
                    },
                ),
                Node::Pow(a, e) if self.pool.const_value(e) == Some(2.0) => {
                    (vec![id], Instr::Square { a: lane(a, &reg) })
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
                    let instr = Instr::Bin {
                        op,
                        a: opd(a, &reg),
                        b: opd(b, &reg),
                    };
                    (vec![id], instr)
                }
                Node::Const(_) | Node::Var(_) => unreachable!("leaves are not materialized"),
            };
            let dst = place(&mut k, &members, &mut direct);
            for (r, m) in members.iter().enumerate() {
                emitted[m.index()] = true;
                if let Dst::Reg(d) = dst {
                    reg.insert(*m, d + r as u32);
                    k.registers.push((*m, d + r as u32));
                }
            }
            k.steps.push(Step { dst, below, instr });
        }

        for (row, r) in lane_roots.iter().enumerate() {
            if !direct[r.index()] {
                k.outputs.push((row as u32, opd(*r, &reg)));
            }
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
        k.reduce_plan = if self.fuse {
            plan_reduces(&k.reduces)
        } else {
            plan_lane_reduces(&k.reduces, &(0..k.reduces.len()).collect::<Vec<_>>())
        };
        let reduce_scratch = k.reduce_plan.iter().map(|p| match p {
            ReducePlan::Gemm(g) => g.cells(),
            _ => 0,
        });
        let lin_scratch = k.steps.iter().map(|s| match &s.instr {
            Instr::Lin {
                rows,
                gemm: Some(g),
                ..
            } => g.padded(*rows as usize),
            _ => 0,
        });
        k.scratch = reduce_scratch.chain(lin_scratch).max().unwrap_or(0);
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
    /// Whether matrix products run as GEMMs (see `matmul`); off only to test and measure the
    /// lane loops.
    pub(crate) matmul: bool,
    /// Whether kernels compiled to native code run it (see `native`); off only to test and
    /// measure the interpreter.
    pub(crate) native: bool,
}

/// The sources of one instruction: the banks, and the registers written before it.
#[derive(Clone, Copy)]
struct Ctx<'r, 'a> {
    l: &'r Lanes<'a>,
    regs: &'r [f64],
}

impl<'r> Ctx<'r, '_> {
    /// A whole bank (the registers written so far for `REG`).
    #[inline(always)]
    fn bank(&self, bank: u8) -> &'r [f64] {
        if bank == REG {
            self.regs
        } else {
            self.l.banks[bank as usize]
        }
    }

    #[inline(always)]
    fn lane(&self, s: Src) -> &'r [f64] {
        let start = s.row as usize * self.l.width;
        &self.bank(s.bank)[start + self.l.lo..start + self.l.hi]
    }
}

impl Kernel {
    /// Rows of `bank` that the kernel reads.
    pub(crate) fn rows_read(&self, bank: u8) -> std::collections::BTreeSet<u32> {
        let mut rows = std::collections::BTreeSet::new();
        let mut src = |s: Src| {
            if s.bank == bank {
                rows.insert(s.row);
            }
        };
        let shape = |sh: &Shape, src: &mut dyn FnMut(Src)| match sh.kind {
            Kind::Uni => {}
            Kind::Lane | Kind::Scaled => src(sh.a),
            Kind::Prod | Kind::ScaledProd => {
                src(sh.a);
                src(sh.b)
            }
        };
        for step in &self.steps {
            match &step.instr {
                // A GEMM reads the same sources as the rows it computes.
                Instr::Lin { shape: sh, .. } => sh.iter().for_each(|t| shape(t, &mut src)),
                Instr::Bin { a, b, .. } => {
                    for o in [a, b] {
                        if let Opd::L(s) = o {
                            src(*s)
                        }
                    }
                }
                Instr::Fold { ops } => ops.iter().for_each(|o| {
                    if let Opd::L(s) = o {
                        src(*s)
                    }
                }),
                Instr::Square { a } | Instr::Func { a, .. } => src(*a),
            }
        }
        for (_, o) in &self.outputs {
            if let Opd::L(s) = o {
                src(*s)
            }
        }
        for r in &self.reduces {
            shape(&r.shape, &mut src);
        }
        rows
    }

    /// A rough count of lane operations per sample, to compare kernels: a transcendental
    /// function counts as ten, a multiply-add term as one.
    pub(crate) fn cost(&self) -> usize {
        let steps: usize = self
            .steps
            .iter()
            .map(|s| match &s.instr {
                Instr::Lin { rows, shape, .. } => *rows as usize * shape.len(),
                Instr::Bin { op, .. } => match op {
                    Bin::Div | Bin::Pow => 4,
                    _ => 1,
                },
                Instr::Fold { ops } => ops.len(),
                Instr::Square { .. } => 1,
                Instr::Func { f, .. } => match f {
                    Func::Abs | Func::Relu => 1,
                    _ => 10,
                },
            })
            .sum();
        steps + self.outputs.len() + self.reduces.len()
    }

    /// How many linear-combination groups and reduction grids run as matrix products.
    #[cfg(test)]
    pub(crate) fn matmuls(&self) -> (usize, usize) {
        let lin = self
            .steps
            .iter()
            .filter(|s| matches!(&s.instr, Instr::Lin { gemm: Some(_), .. }))
            .count();
        let reduce = self
            .reduce_plan
            .iter()
            .filter(|p| matches!(p, ReducePlan::Gemm(_)))
            .count();
        (lin, reduce)
    }

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
        scratch: &mut [f64],
    ) {
        if let Some(n) = self.native.as_ref().filter(|_| lanes.native) {
            if n.run(u, regs, &lanes, out) {
                return;
            }
        }
        let w = lanes.width;
        let (lo, hi) = (lanes.lo, lanes.hi);
        for step in &self.steps {
            let (below, above) = regs.split_at_mut(step.below as usize * w);
            let c = Ctx {
                l: &lanes,
                regs: below,
            };
            let rows = match step.instr {
                Instr::Lin { rows, .. } => rows as usize,
                _ => 1,
            };
            let dst = match step.dst {
                Dst::Reg(_) => &mut above[..rows * w],
                Dst::Out(row) => &mut out[row as usize * w..(row as usize + rows) * w],
            };
            match &step.instr {
                Instr::Lin {
                    shape,
                    coefs,
                    table,
                    gemm,
                    ..
                } => match gemm.as_deref() {
                    Some(g) if lanes.matmul => matmul::run_lin(&c, u, g, rows, dst, scratch),
                    _ => {
                        let coefs = *coefs as usize;
                        let table = &u[*table as usize..*table as usize + rows * coefs];
                        lin(&c, shape, table, coefs, rows, dst);
                    }
                },
                Instr::Bin { op, a, b } => {
                    let d = &mut dst[lo..hi];
                    match op {
                        Bin::Mul => binary(&c, u, *a, *b, d, |x, y| x * y),
                        Bin::Div => binary(&c, u, *a, *b, d, |x, y| x / y),
                        Bin::Pow => binary(&c, u, *a, *b, d, apply_pow),
                        Bin::Min => binary(&c, u, *a, *b, d, f64::min),
                        Bin::Max => binary(&c, u, *a, *b, d, f64::max),
                        Bin::Cmp(op) => binary(&c, u, *a, *b, d, |x, y| op.apply(x, y)),
                    }
                }
                Instr::Fold { ops } => {
                    let d = &mut dst[lo..hi];
                    binary(&c, u, ops[0], ops[1], d, |x, y| x * y);
                    for op in &ops[2..] {
                        match *op {
                            Opd::L(s) => update(d, c.lane(s), |x, y| x * y),
                            Opd::U(k) => {
                                let y = u[k as usize];
                                update_uniform(d, |x| x * y)
                            }
                        }
                    }
                }
                Instr::Square { a } => map(&mut dst[lo..hi], c.lane(*a), |x| x * x),
                Instr::Func { f, a } => {
                    let d = &mut dst[lo..hi];
                    let x = c.lane(*a);
                    match f {
                        Func::Tanh => map(d, x, math::tanh),
                        Func::Exp => map(d, x, math::exp),
                        Func::Sigmoid => map(d, x, math::sigmoid),
                        Func::Abs => map(d, x, f64::abs),
                        Func::Sqrt => map(d, x, f64::sqrt),
                        Func::Relu => map(d, x, |x| Func::Relu.apply(x)),
                        f => map(d, x, |x| f.apply(x)),
                    }
                }
            }
        }
        let c = Ctx {
            l: &lanes,
            regs: &*regs,
        };
        for &(row, o) in &self.outputs {
            let d = &mut out[row as usize * w + lo..row as usize * w + hi];
            match o {
                Opd::L(s) => map(d, c.lane(s), |x| x),
                Opd::U(k) => d.fill(u[k as usize]),
            }
        }
        for step in &self.reduce_plan {
            self.reduce_step(&c, u, step, reduced, scratch);
        }
    }

    fn reduce_step(
        &self,
        c: &Ctx<'_, '_>,
        u: &[f64],
        step: &ReducePlan,
        reduced: &mut [f64],
        scratch: &mut [f64],
    ) {
        match step {
            ReducePlan::One(i) => {
                let r = &self.reduces[*i];
                reduced[r.index as usize] += reduce(c, u, r);
            }
            ReducePlan::Four {
                shared,
                others,
                index,
            } => {
                let sums = sum4_2_four(
                    c.lane(*shared),
                    [
                        c.lane(others[0]),
                        c.lane(others[1]),
                        c.lane(others[2]),
                        c.lane(others[3]),
                    ],
                );
                for (k, sum) in index.iter().zip(sums) {
                    reduced[*k as usize] += sum;
                }
            }
            ReducePlan::Gemm(g) => {
                if !(c.l.matmul && matmul::run_reduce(c, g, scratch, reduced)) {
                    for step in &g.fallback {
                        self.reduce_step(c, u, step, reduced, scratch);
                    }
                }
            }
        }
    }
}

// Elementwise loops (indexed: at a fixed length these unrolled and vectorized better than `zip`
// in measurements). At the solvers' block width (32) each is one fixed-length loop whose
// result is formed before it is stored: it is fully unrolled and vectorized without alias
// checks, and a call costs a few nanoseconds rather than a loop with a remainder.

/// The block width the elementwise loops are specialized for.
const W: usize = 32;

#[inline(always)]
fn map(d: &mut [f64], a: &[f64], f: impl Fn(f64) -> f64) {
    if let (Ok(d), Ok(a)) = (<&mut [f64; W]>::try_from(&mut *d), <&[f64; W]>::try_from(a)) {
        for k in 0..W {
            d[k] = f(a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(a));
    }
}

#[inline(always)]
fn zip(d: &mut [f64], a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) {
    if let (Ok(d), Ok(a), Ok(b)) = (
        <&mut [f64; W]>::try_from(&mut *d),
        <&[f64; W]>::try_from(a),
        <&[f64; W]>::try_from(b),
    ) {
        for k in 0..W {
            d[k] = f(a[k], b[k]);
        }
    } else {
        d.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(d, (&a, &b))| *d = f(a, b));
    }
}

/// `d = f(d, a)`.
#[inline(always)]
fn update(d: &mut [f64], a: &[f64], f: impl Fn(f64, f64) -> f64) {
    if let (Ok(d), Ok(a)) = (<&mut [f64; W]>::try_from(&mut *d), <&[f64; W]>::try_from(a)) {
        for k in 0..W {
            d[k] = f(d[k], a[k]);
        }
    } else {
        d.iter_mut().zip(a).for_each(|(d, &a)| *d = f(*d, a));
    }
}

/// `d = f(d, a, b)`.
#[inline(always)]
fn update2(d: &mut [f64], a: &[f64], b: &[f64], f: impl Fn(f64, f64, f64) -> f64) {
    if let (Ok(d), Ok(a), Ok(b)) = (
        <&mut [f64; W]>::try_from(&mut *d),
        <&[f64; W]>::try_from(a),
        <&[f64; W]>::try_from(b),
    ) {
        for k in 0..W {
            d[k] = f(d[k], a[k], b[k]);
        }
    } else {
        d.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(d, (&a, &b))| *d = f(*d, a, b));
    }
}

/// `d = f(d)`.
#[inline(always)]
#[expect(clippy::needless_range_loop, reason = "an indexed loop, as above")]
fn update_uniform(d: &mut [f64], f: impl Fn(f64) -> f64) {
    if let Ok(d) = <&mut [f64; W]>::try_from(&mut *d) {
        for k in 0..W {
            d[k] = f(d[k]);
        }
    } else {
        d.iter_mut().for_each(|d| *d = f(*d));
    }
}

#[inline(always)]
fn binary(c: &Ctx<'_, '_>, u: &[f64], a: Opd, b: Opd, d: &mut [f64], f: impl Fn(f64, f64) -> f64) {
    match (a, b) {
        (Opd::L(a), Opd::L(b)) => zip(d, c.lane(a), c.lane(b), f),
        (Opd::U(a), Opd::L(b)) => {
            let x = u[a as usize];
            map(d, c.lane(b), |y| f(x, y))
        }
        (Opd::L(a), Opd::U(b)) => {
            let y = u[b as usize];
            map(d, c.lane(a), |x| f(x, y))
        }
        (Opd::U(a), Opd::U(b)) => d.fill(f(u[a as usize], u[b as usize])),
    }
}

/// Rows of a linear combination. Each row accumulates its terms in its destination lane, which
/// stays in L1: the loop over samples is innermost and vectorizes, and a source lane is
/// resolved (and bounds-checked) once per term rather than once per chunk of samples. This is
/// the loop nest a hand-written blocked kernel uses, and it measured faster than keeping 4×4
/// accumulators in registers, whose per-chunk source look-ups cost more than they save.
fn lin(
    c: &Ctx<'_, '_>,
    shape: &[Shape],
    table: &[f64],
    coefs: usize,
    rows: usize,
    dst: &mut [f64],
) {
    let l = c.l;
    let Some((first, rest)) = shape.split_first() else {
        return;
    };
    for r in 0..rows {
        let d = &mut dst[r * l.width + l.lo..r * l.width + l.hi];
        let k = &table[r * coefs..(r + 1) * coefs];
        if let [second] = rest {
            lin2(c, first, second, k, d);
            continue;
        }
        lin_first(c, first, k, d);
        for t in rest {
            lin_term(c, t, k, d);
        }
    }
}

/// One term of a linear combination, resolved to its lanes and coefficient, so that a sum of
/// two terms is one loop (monomorphized per pair of kinds) instead of two passes over `d`.
trait Term: Copy {
    fn at(self, s: usize) -> f64;
}

#[derive(Clone, Copy)]
struct LaneT<'a>(&'a [f64]);
#[derive(Clone, Copy)]
struct UniT(f64);
#[derive(Clone, Copy)]
struct ScaledT<'a>(f64, &'a [f64]);
#[derive(Clone, Copy)]
struct ProdT<'a>(&'a [f64], &'a [f64]);
#[derive(Clone, Copy)]
struct ScaledProdT<'a>(f64, &'a [f64], &'a [f64]);

impl Term for LaneT<'_> {
    #[inline(always)]
    fn at(self, s: usize) -> f64 {
        self.0[s]
    }
}
impl Term for UniT {
    #[inline(always)]
    fn at(self, _: usize) -> f64 {
        self.0
    }
}
impl Term for ScaledT<'_> {
    #[inline(always)]
    fn at(self, s: usize) -> f64 {
        self.0 * self.1[s]
    }
}
impl Term for ProdT<'_> {
    #[inline(always)]
    fn at(self, s: usize) -> f64 {
        self.0[s] * self.1[s]
    }
}
impl Term for ScaledProdT<'_> {
    #[inline(always)]
    fn at(self, s: usize) -> f64 {
        (self.0 * self.1[s]) * self.2[s]
    }
}

/// `d = a + b`, in one pass: the bits of `lin_first(a)` then `lin_term(b)`.
#[inline(always)]
fn sum2(d: &mut [f64], a: impl Term, b: impl Term) {
    if let Ok(d) = <&mut [f64; W]>::try_from(&mut *d) {
        for (s, d) in d.iter_mut().enumerate() {
            *d = a.at(s) + b.at(s);
        }
    } else {
        for (s, d) in d.iter_mut().enumerate() {
            *d = a.at(s) + b.at(s);
        }
    }
}

/// A row of two terms: dispatches on both kinds once, then [`sum2`]. Kept out of line: its
/// 25 loops inlined into `Kernel::run` slowed the dispatch of small kernels.
#[inline(never)]
fn lin2(c: &Ctx<'_, '_>, first: &Shape, second: &Shape, coefs: &[f64], d: &mut [f64]) {
    let n = d.len();
    // Every lane is cut to the row's length, so the loop's bounds checks fold away.
    let lane = |s: Src| &c.lane(s)[..n];
    macro_rules! with_term {
        ($t:expr, |$v:ident| $body:expr) => {
            match $t.kind {
                Kind::Lane => {
                    let $v = LaneT(lane($t.a));
                    $body
                }
                Kind::Uni => {
                    let $v = UniT(coefs[$t.slot as usize]);
                    $body
                }
                Kind::Scaled => {
                    let $v = ScaledT(coefs[$t.slot as usize], lane($t.a));
                    $body
                }
                Kind::Prod => {
                    let $v = ProdT(lane($t.a), lane($t.b));
                    $body
                }
                Kind::ScaledProd => {
                    let $v = ScaledProdT(coefs[$t.slot as usize], lane($t.a), lane($t.b));
                    $body
                }
            }
        };
    }
    with_term!(first, |a| with_term!(second, |b| sum2(d, a, b)))
}

/// `d = term`.
#[inline(always)]
fn lin_first(c: &Ctx<'_, '_>, t: &Shape, coefs: &[f64], d: &mut [f64]) {
    match t.kind {
        Kind::Lane => map(d, c.lane(t.a), |a| a),
        Kind::Uni => d.fill(coefs[t.slot as usize]),
        Kind::Scaled => {
            let k = coefs[t.slot as usize];
            map(d, c.lane(t.a), |a| k * a)
        }
        Kind::Prod => zip(d, c.lane(t.a), c.lane(t.b), |a, b| a * b),
        Kind::ScaledProd => {
            let k = coefs[t.slot as usize];
            zip(d, c.lane(t.a), c.lane(t.b), |a, b| (k * a) * b)
        }
    }
}

/// `d += term`.
#[inline(always)]
fn lin_term(c: &Ctx<'_, '_>, t: &Shape, coefs: &[f64], d: &mut [f64]) {
    match t.kind {
        Kind::Lane => update(d, c.lane(t.a), |d, a| d + a),
        Kind::Uni => {
            let k = coefs[t.slot as usize];
            update_uniform(d, |d| d + k)
        }
        Kind::Scaled => {
            let k = coefs[t.slot as usize];
            update(d, c.lane(t.a), |d, a| d + k * a)
        }
        Kind::Prod => update2(d, c.lane(t.a), c.lane(t.b), |d, a, b| d + a * b),
        Kind::ScaledProd => {
            let k = coefs[t.slot as usize];
            update2(d, c.lane(t.a), c.lane(t.b), |d, a, b| d + (k * a) * b)
        }
    }
}

/// `Σ_s term(s)` over the lane range, in a fixed order: four interleaved partial sums over
/// chunks of four samples, then the remainder, so the loop vectorizes and the result depends
/// only on the lane range.
fn reduce(l: &Ctx<'_, '_>, u: &[f64], r: &Reduce) -> f64 {
    let c = u.get(r.coef as usize).copied().unwrap_or(0.0);
    let t = r.shape;
    let n = l.l.hi - l.l.lo;
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

/// Four [`sum4_2`] products `Σ a·b[k]` in one pass over `a`, each in `sum4_2`'s order.
fn sum4_2_four(a: &[f64], b: [&[f64]; 4]) -> [f64; 4] {
    let n = b.iter().fold(a.len(), |n, b| n.min(b.len()));
    let full = n / 4 * 4;
    let mut acc = [[0.0f64; 4]; 4];
    let mut s = 0;
    while s < full {
        for (acc, b) in acc.iter_mut().zip(&b) {
            for k in 0..4 {
                acc[k] += a[s + k] * b[s + k];
            }
        }
        s += 4;
    }
    let mut totals = [0.0; 4];
    for ((total, acc), b) in totals.iter_mut().zip(&acc).zip(&b) {
        *total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for s in full..n {
            *total += a[s] * b[s];
        }
    }
    totals
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_products_in_one_pass_are_the_bits_of_four_alone() {
        let mut x = 0.3f64;
        let mut next = move || {
            x = (x * 3.7 + 0.1).fract();
            x - 0.5
        };
        for n in [1, 3, 4, 7, 32, 33] {
            let a: Vec<f64> = (0..n).map(|_| next()).collect();
            let b: Vec<Vec<f64>> = (0..4).map(|_| (0..n).map(|_| next()).collect()).collect();
            let four = sum4_2_four(&a, [&b[0], &b[1], &b[2], &b[3]]);
            for k in 0..4 {
                // The shared lane on either side of the product.
                assert_eq!(four[k].to_bits(), sum4_2(&a, &b[k], |x, y| x * y).to_bits());
                assert_eq!(four[k].to_bits(), sum4_2(&b[k], &a, |x, y| x * y).to_bits());
            }
        }
    }
}
