//! Building a [`Kernel`] from IR roots: canonicalizing the pool (exact rewrites for primal
//! nodes, reassociated derivative-only products), classifying nodes as uniform or varying,
//! allocating registers and fusing sums (the tape's module docs say how and why).

use std::collections::HashMap;

use super::{
    matmul, Bin, Dst, Instr, Kernel, Kind, Opd, Reduce, ReducePlan, Shape, Src, Step, UInstr,
    ULeaf, COTANGENT, INPUT, LABEL, OBSERVED, REG, SAVED, STATE, STATE_TANGENT, TIME,
};
use crate::ir::{self, ExprId, Node, Pool, Var};

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
    if run
        .iter()
        .any(|r| r.shape.kind != Kind::Prod || r.second.is_some())
    {
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

/// Row offsets of every declared variable in its bank, from the model.
struct Rows {
    state: Vec<u32>,
    /// The state's length: the row of the running cost's cotangent.
    dim: u32,
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
            dim: model.states.iter().map(|s| s.shape.len() as u32).sum(),
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
            Var::RunningCotangent => (COTANGENT, self.rows.dim),
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
        // A varying sum of two terms that one reduction root reads, and nothing else, is
        // summed over the lanes as it is formed (`Reduce::second`): the lane values are those
        // `lin2` would store, added in the reduction's order, so the bits are the same. A sum
        // of `c·a` and constant terms only is left to its group, which may run as a GEMM
        // (`matmul::lin_gemm`) with other bits.
        // How many nodes and reductions read each node.
        let mut readers = vec![0u32; n];
        for i in 0..n {
            if needed[i] && !is_saved(i) {
                self.pool
                    .node(ExprId(i as u32))
                    .for_each_operand(|c| readers[c.index()] += 1);
            }
        }
        for r in &reduce_roots {
            readers[r.index()] += 1;
        }
        let mut lane_root = vec![false; n];
        for r in &lane_roots {
            lane_root[r.index()] = true;
        }
        let gemm_term = |c: &ExprId| {
            self.uniform[c.index()]
                || (inline_ok[c.index()] && matches!(self.pattern(*c), Some((Kind::Scaled, ..))))
        };
        let mut folded = vec![false; n];
        for r in &reduce_roots {
            let i = r.index();
            folded[i] = self.fuse
                && readers[i] == 1
                && !lane_root[i]
                && !self.uniform[i]
                && !is_saved(i)
                && matches!(self.pool.node(*r), Node::Add(t) if t.len() == 2 && !t.iter().all(gemm_term));
        }
        let materialize = |i: usize| {
            needed[i] && !self.uniform[i] && !is_leaf(&self.pool, i) && !inline_ok[i] && !folded[i]
        };

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
        let mut read: Vec<bool> = readers.iter().map(|&r| r > 0).collect();
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
            let reduce = match self.pool.node(r) {
                Node::Add(t) if folded[r.index()] => {
                    let (first, coef) = term(t[0], &reg);
                    let (second, second_coef) = term(t[1], &reg);
                    Reduce {
                        index: index as u32,
                        shape: first,
                        coef: coef.unwrap_or(0),
                        second: Some((second, second_coef.unwrap_or(0))),
                    }
                }
                _ => {
                    let (shape, coef) = term(r, &reg);
                    Reduce {
                        index: index as u32,
                        shape,
                        coef: coef.unwrap_or(0),
                        second: None,
                    }
                }
            };
            k.reduces.push(reduce);
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
