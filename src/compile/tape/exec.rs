//! Running a [`Kernel`] over a range of lanes: the uniform prologue, the instructions in SSA
//! order over the register file, lane outputs and the parameter-gradient reductions.

use super::{
    matmul, Bin, Dst, Instr, Kernel, Kind, Opd, Reduce, ReducePlan, Shape, Src, UInstr, ULeaf,
    BANKS, REG,
};
use crate::ir::{apply_pow, ExprId, Func, Node};
use crate::real::Real;

/// The lane sources of one call: banks other than the registers, the block width and the lane
/// range being computed.
#[derive(Clone, Copy)]
pub(crate) struct Lanes<'a, R> {
    pub(crate) banks: [&'a [R]; BANKS],
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
pub(super) struct Ctx<'r, 'a, R> {
    pub(super) l: &'r Lanes<'a, R>,
    pub(super) regs: &'r [R],
}

impl<'a, R: Real> Lanes<'a, R> {
    /// The same lanes as `f64`, when `R` is `f64`.
    #[inline(always)]
    pub(crate) fn as_f64(&self) -> Option<Lanes<'a, f64>> {
        let mut banks: [&'a [f64]; BANKS] = [&[]; BANKS];
        for (d, s) in banks.iter_mut().zip(self.banks) {
            *d = R::as_f64(s)?;
        }
        Some(Lanes {
            banks,
            width: self.width,
            lo: self.lo,
            hi: self.hi,
            matmul: self.matmul,
            native: self.native,
        })
    }
}

impl<'r, R> Ctx<'r, '_, R> {
    /// A whole bank (the registers written so far for `REG`).
    #[inline(always)]
    pub(super) fn bank(&self, bank: u8) -> &'r [R] {
        if bank == REG {
            self.regs
        } else {
            self.l.banks[bank as usize]
        }
    }

    #[inline(always)]
    fn lane(&self, s: Src) -> &'r [R] {
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
            if let Some((second, _)) = &r.second {
                shape(second, &mut src);
            }
        }
        rows
    }

    /// A rough count of lane operations per sample, to compare kernels ([`Instr::row_cost`]).
    pub(crate) fn cost(&self) -> usize {
        let steps: usize = self
            .steps
            .iter()
            .map(|s| s.instr.rows() * s.instr.row_cost())
            .sum();
        let reduces: usize = self
            .reduces
            .iter()
            .map(|r| 1 + usize::from(r.second.is_some()))
            .sum();
        steps + self.outputs.len() + reduces
    }

    /// The lane operations per sample that recomputing each register takes (its own
    /// instruction's [`Instr::row_cost`]), indexed by register.
    pub(crate) fn register_costs(&self) -> Vec<usize> {
        let mut costs = vec![0; self.n_regs];
        for step in &self.steps {
            if let Dst::Reg(first) = step.dst {
                let first = first as usize;
                costs[first..first + step.instr.rows()].fill(step.instr.row_cost());
            }
        }
        costs
    }

    /// How many reductions sum a two-term sum as it is formed ([`Reduce::second`]).
    #[cfg(test)]
    pub(crate) fn sums_reduced_as_formed(&self) -> usize {
        self.reduces.iter().filter(|r| r.second.is_some()).count()
    }

    /// Whether some linear-combination group or reduction grid runs as a matrix product.
    pub(crate) fn has_matmuls(&self) -> bool {
        self.matmuls() != (0, 0)
    }

    /// How many linear-combination groups and reduction grids run as matrix products.
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
    pub(crate) fn run<R: Real>(
        &self,
        u: &[R],
        regs: &mut [R],
        lanes: Lanes<'_, R>,
        out: &mut [R],
        reduced: &mut [R],
        scratch: &mut [R],
    ) {
        if let Some(n) = lanes.native.then(|| self.native()).flatten() {
            // Native code is f64 (see `native`): an f32 kernel is interpreted.
            if let (Some(f64_lanes), Some(u), Some(regs), Some(out)) = (
                lanes.as_f64(),
                R::as_f64(u),
                R::as_f64_mut(regs),
                R::as_f64_mut(out),
            ) {
                if n.run(u, regs, &f64_lanes, out) {
                    return;
                }
            }
        }
        interpret(self, u, regs, lanes, out, reduced, scratch);
    }
}

impl Instr {
    /// Rows the instruction writes.
    fn rows(&self) -> usize {
        match self {
            Instr::Lin { rows, .. } => *rows as usize,
            _ => 1,
        }
    }

    /// Lane operations per sample for each row it writes: a transcendental function counts as
    /// ten, a multiply-add term as one.
    fn row_cost(&self) -> usize {
        match self {
            Instr::Lin { shape, .. } => shape.len(),
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
        }
    }
}

crate::compile::isa::multiversion!(
    /// The interpreter: [`Kernel::run`] without native code.
    fn interpret<R: Real>(
        kernel: &Kernel,
        u: &[R],
        regs: &mut [R],
        lanes: Lanes<'_, R>,
        out: &mut [R],
        reduced: &mut [R],
        scratch: &mut [R],
    ) => Kernel::interpret_lanes
);

impl Kernel {
    #[inline(always)]
    fn interpret_lanes<R: Real>(
        &self,
        u: &[R],
        regs: &mut [R],
        lanes: Lanes<'_, R>,
        out: &mut [R],
        reduced: &mut [R],
        scratch: &mut [R],
    ) {
        let w = lanes.width;
        let (lo, hi) = (lanes.lo, lanes.hi);
        for step in &self.steps {
            let (below, above) = regs.split_at_mut(step.below as usize * w);
            let c = Ctx {
                l: &lanes,
                regs: below,
            };
            let rows = step.instr.rows();
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
                        Bin::Min => binary(&c, u, *a, *b, d, R::min),
                        Bin::Max => binary(&c, u, *a, *b, d, R::max),
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
                Instr::Func { f, a } => lanes::func(&mut dst[lo..hi], *f, c.lane(*a)),
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

    fn reduce_step<R: Real>(
        &self,
        c: &Ctx<'_, '_, R>,
        u: &[R],
        step: &ReducePlan,
        reduced: &mut [R],
        scratch: &mut [R],
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

use crate::compile::lanes::{self, at_block_width, map, update, zip};

/// `d = f(d, a, b)`.
#[inline(always)]
fn update2<R: Real>(d: &mut [R], a: &[R], b: &[R], f: impl Fn(R, R, R) -> R) {
    at_block_width!(W; [mut d, ref a, ref b] {
        for k in 0..W {
            d[k] = f(d[k], a[k], b[k]);
        }
    } else {
        d.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(d, (&a, &b))| *d = f(*d, a, b));
    })
}

/// `d = f(d)`.
#[inline(always)]
#[expect(clippy::needless_range_loop, reason = "an indexed loop, as above")]
fn update_uniform<R: Real>(d: &mut [R], f: impl Fn(R) -> R) {
    at_block_width!(W; [mut d] {
        for k in 0..W {
            d[k] = f(d[k]);
        }
    } else {
        d.iter_mut().for_each(|d| *d = f(*d));
    })
}

#[inline(always)]
fn binary<R: Real>(
    c: &Ctx<'_, '_, R>,
    u: &[R],
    a: Opd,
    b: Opd,
    d: &mut [R],
    f: impl Fn(R, R) -> R,
) {
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

crate::compile::isa::multiversion!(
    /// Rows of a linear combination. Each row accumulates its terms in its destination lane, which
    /// stays in L1: the loop over samples is innermost and vectorizes, and a source lane is
    /// resolved (and bounds-checked) once per term rather than once per chunk of samples. This is
    /// the loop nest a hand-written blocked kernel uses, and it measured faster than keeping 4×4
    /// accumulators in registers, whose per-chunk source look-ups cost more than they save.
    fn lin<R: Real>(
        c: &Ctx<'_, '_, R>,
        shape: &[Shape],
        table: &[R],
        coefs: usize,
        rows: usize,
        dst: &mut [R],
    ) => lin_rows
);

#[inline(always)]
fn lin_rows<R: Real>(
    c: &Ctx<'_, '_, R>,
    shape: &[Shape],
    table: &[R],
    coefs: usize,
    rows: usize,
    dst: &mut [R],
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
trait Term<R>: Copy {
    fn at(self, s: usize) -> R;
    /// The term over lanes `from..from + n`.
    fn window(self, from: usize, n: usize) -> Self;
}

#[derive(Clone, Copy)]
struct LaneT<'a, R>(&'a [R]);
#[derive(Clone, Copy)]
struct UniT<R>(R);
#[derive(Clone, Copy)]
struct ScaledT<'a, R>(R, &'a [R]);
#[derive(Clone, Copy)]
struct ProdT<'a, R>(&'a [R], &'a [R]);
#[derive(Clone, Copy)]
struct ScaledProdT<'a, R>(R, &'a [R], &'a [R]);

impl<R: Real> Term<R> for LaneT<'_, R> {
    #[inline(always)]
    fn at(self, s: usize) -> R {
        self.0[s]
    }
    #[inline(always)]
    fn window(self, from: usize, n: usize) -> Self {
        LaneT(&self.0[from..from + n])
    }
}
impl<R: Real> Term<R> for UniT<R> {
    #[inline(always)]
    fn at(self, _: usize) -> R {
        self.0
    }
    #[inline(always)]
    fn window(self, _: usize, _: usize) -> Self {
        self
    }
}
impl<R: Real> Term<R> for ScaledT<'_, R> {
    #[inline(always)]
    fn at(self, s: usize) -> R {
        self.0 * self.1[s]
    }
    #[inline(always)]
    fn window(self, from: usize, n: usize) -> Self {
        ScaledT(self.0, &self.1[from..from + n])
    }
}
impl<R: Real> Term<R> for ProdT<'_, R> {
    #[inline(always)]
    fn at(self, s: usize) -> R {
        self.0[s] * self.1[s]
    }
    #[inline(always)]
    fn window(self, from: usize, n: usize) -> Self {
        ProdT(&self.0[from..from + n], &self.1[from..from + n])
    }
}
impl<R: Real> Term<R> for ScaledProdT<'_, R> {
    #[inline(always)]
    fn at(self, s: usize) -> R {
        (self.0 * self.1[s]) * self.2[s]
    }
    #[inline(always)]
    fn window(self, from: usize, n: usize) -> Self {
        ScaledProdT(self.0, &self.1[from..from + n], &self.2[from..from + n])
    }
}

/// `d = a + b`, in one pass: the bits of `lin_first(a)` then `lin_term(b)`.
#[inline(always)]
fn sum2<R: Real>(d: &mut [R], a: impl Term<R>, b: impl Term<R>) {
    at_block_width!(_W; [mut d] {
        for (s, d) in d.iter_mut().enumerate() {
            *d = a.at(s) + b.at(s);
        }
    } else {
        for (s, d) in d.iter_mut().enumerate() {
            *d = a.at(s) + b.at(s);
        }
    })
}

crate::compile::isa::multiversion!(
    /// A row of two terms: dispatches on both kinds once, then [`sum2`]. Kept out of line: its
    /// 25 loops inlined into `Kernel::run` slowed the dispatch of small kernels.
    #[inline(never)]
    fn lin2<R: Real>(c: &Ctx<'_, '_, R>, first: &Shape, second: &Shape, coefs: &[R], d: &mut [R]) => lin2_row
);

/// Runs `$body` with `$v` the [`Term`] of shape `$t`, its lanes from `$lane` and its
/// coefficient `$coef`: one monomorphized body per kind.
macro_rules! with_term {
    ($t:expr, $lane:expr, $coef:expr, |$v:ident| $body:expr) => {
        match $t.kind {
            Kind::Lane => {
                let $v = LaneT($lane($t.a));
                $body
            }
            Kind::Uni => {
                let $v = UniT($coef);
                $body
            }
            Kind::Scaled => {
                let $v = ScaledT($coef, $lane($t.a));
                $body
            }
            Kind::Prod => {
                let $v = ProdT($lane($t.a), $lane($t.b));
                $body
            }
            Kind::ScaledProd => {
                let $v = ScaledProdT($coef, $lane($t.a), $lane($t.b));
                $body
            }
        }
    };
}

#[inline(always)]
fn lin2_row<R: Real>(c: &Ctx<'_, '_, R>, first: &Shape, second: &Shape, coefs: &[R], d: &mut [R]) {
    let n = d.len();
    // Every lane is cut to the row's length, so the loop's bounds checks fold away.
    let lane = |s: Src| &c.lane(s)[..n];
    let coef = |t: &Shape| coefs[t.slot as usize];
    with_term!(first, lane, coef(first), |a| with_term!(
        second,
        lane,
        coef(second),
        |b| sum2(d, a, b)
    ))
}

/// `d = term`.
#[inline(always)]
fn lin_first<R: Real>(c: &Ctx<'_, '_, R>, t: &Shape, coefs: &[R], d: &mut [R]) {
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
fn lin_term<R: Real>(c: &Ctx<'_, '_, R>, t: &Shape, coefs: &[R], d: &mut [R]) {
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

crate::compile::isa::multiversion!(
    /// `Σ_s term(s)` over the lane range, in a fixed order: four interleaved partial sums over
    /// chunks of four samples, then the remainder, so the loop vectorizes and the result depends
    /// only on the lane range.
    fn reduce<R: Real>(l: &Ctx<'_, '_, R>, u: &[R], r: &Reduce) -> R => reduce_lanes
);

#[inline(always)]
fn reduce_lanes<R: Real>(l: &Ctx<'_, '_, R>, u: &[R], r: &Reduce) -> R {
    let c = u.get(r.coef as usize).copied().unwrap_or(R::zero());
    let t = r.shape;
    let n = l.l.hi - l.l.lo;
    if let Some((second, second_coef)) = r.second {
        let c2 = u.get(second_coef as usize).copied().unwrap_or(R::zero());
        let lane = |s: Src| &l.lane(s)[..n];
        return with_term!(t, lane, c, |a| with_term!(second, lane, c2, |b| sum4_sum2(
            n, a, b
        )));
    }
    match t.kind {
        Kind::Lane => sum4(l.lane(t.a), |a| a),
        // A uniform term (rare: a gradient that reads no lane) is added once per sample.
        Kind::Uni => (0..n).fold(R::zero(), |acc, _| acc + c),
        Kind::Scaled => sum4(l.lane(t.a), |a| c * a),
        Kind::Prod => sum4_2(l.lane(t.a), l.lane(t.b), |a, b| a * b),
        Kind::ScaledProd => sum4_2(l.lane(t.a), l.lane(t.b), |a, b| (c * a) * b),
    }
}

/// `Σ_s (a(s) + b(s))` over `n` lanes (every term's lanes cut to `n`), in [`sum4`]'s order:
/// the bits of `sum4` over the row that [`lin2`] would store, without storing it. At the
/// block widths the loop has a constant length, so it vectorizes without bounds checks.
#[inline(always)]
fn sum4_sum2<R: Real>(n: usize, a: impl Term<R>, b: impl Term<R>) -> R {
    /// Lanes `from..from + N` in chunks of four (every lane cut to them: no bounds checks).
    #[inline(always)]
    fn chunks<R: Real, const N: usize>(
        a: impl Term<R>,
        b: impl Term<R>,
        from: usize,
        acc: &mut [R; 4],
    ) {
        let (a, b) = (a.window(from, N), b.window(from, N));
        for s in 0..N / 4 {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc += a.at(4 * s + k) + b.at(4 * s + k);
            }
        }
    }
    use crate::compile::lanes::{NARROW, WIDE};
    let mut acc = [R::zero(); 4];
    let mut done = 0;
    while n - done >= WIDE {
        chunks::<R, WIDE>(a, b, done, &mut acc);
        done += WIDE;
    }
    if n - done >= NARROW {
        chunks::<R, NARROW>(a, b, done, &mut acc);
        done += NARROW;
    }
    while n - done >= 4 {
        chunks::<R, 4>(a, b, done, &mut acc);
        done += 4;
    }
    let mut total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for s in done..n {
        total += a.at(s) + b.at(s);
    }
    total
}

#[inline(always)]
fn sum4<R: Real>(a: &[R], f: impl Fn(R) -> R) -> R {
    let mut acc = [R::zero(); 4];
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

crate::compile::isa::multiversion!(
    /// Four [`sum4_2`] products `Σ a·b[k]` in one pass over `a`, each in `sum4_2`'s order.
    fn sum4_2_four<R: Real>(a: &[R], b: [&[R]; 4]) -> [R; 4] => sum4_2_four_lanes
);

#[inline(always)]
fn sum4_2_four_lanes<R: Real>(a: &[R], b: [&[R]; 4]) -> [R; 4] {
    let n = b.iter().fold(a.len(), |n, b| n.min(b.len()));
    let full = n / 4 * 4;
    let mut acc = [[R::zero(); 4]; 4];
    let mut s = 0;
    while s < full {
        for (acc, b) in acc.iter_mut().zip(&b) {
            for k in 0..4 {
                acc[k] += a[s + k] * b[s + k];
            }
        }
        s += 4;
    }
    let mut totals = [R::zero(); 4];
    for ((total, acc), b) in totals.iter_mut().zip(&acc).zip(&b) {
        *total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for s in full..n {
            *total += a[s] * b[s];
        }
    }
    totals
}

#[inline(always)]
fn sum4_2<R: Real>(a: &[R], b: &[R], f: impl Fn(R, R) -> R) -> R {
    let mut acc = [R::zero(); 4];
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

    /// A deterministic sequence in [−0.5, 0.5) from `x` in [0, 1).
    fn values_from(mut x: f64) -> impl FnMut() -> f64 {
        move || {
            x = (x * 3.7 + 0.1).fract();
            x - 0.5
        }
    }

    /// A two-term sum reduced as it is formed has the bits of the row `lin2` stores, reduced
    /// by `sum4`: at the block widths, across them and in the remainders.
    #[test]
    fn a_sum_reduced_as_formed_is_the_bits_of_the_stored_row() {
        let mut next = values_from(0.7);
        for n in [1, 3, 4, 7, 31, 32, 33, 64, 67, 100, 128, 130] {
            let lanes: Vec<Vec<f64>> = (0..4).map(|_| (0..n).map(|_| next()).collect()).collect();
            let (c1, c2) = (next(), next());
            let check = |a: &dyn Fn(&mut [f64]), fused: f64| {
                let mut row = vec![0.0; n];
                a(&mut row);
                assert_eq!(sum4(&row, |x| x).to_bits(), fused.to_bits(), "n = {n}");
            };
            let (p, q) = (
                ProdT(&lanes[0], &lanes[1]),
                ScaledProdT(c1, &lanes[2], &lanes[3]),
            );
            check(&|d| sum2(d, p, q), sum4_sum2(n, p, q));
            let (p, q) = (ScaledT(c2, &lanes[1]), LaneT(&lanes[3][..]));
            check(&|d| sum2(d, p, q), sum4_sum2(n, p, q));
            let (p, q) = (UniT(c1), ProdT(&lanes[2], &lanes[0]));
            check(&|d| sum2(d, p, q), sum4_sum2(n, p, q));
        }
    }

    #[test]
    fn four_products_in_one_pass_are_the_bits_of_four_alone() {
        let mut next = values_from(0.3);
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
