//! Running a tensor [`Kernel`]: the uniform program over `u`, the lane program over the
//! registers, the lane outputs and the reductions.

use super::{Arg, BinOp, EwInstr, Kernel, Loc, Op, Reduce, Ref, ULeaf};
use crate::compile::gemm::{gemm as product, View};
use crate::compile::lanes::{self, map, update};
use crate::compile::tape::{Lanes, BANKS, REG};
use crate::ir::{apply_pow, Func};
use crate::real::Real;

/// The smallest side of a product run as a GEMM; see `tape::matmul::MIN_SIDE`.
pub(super) const MIN_SIDE: usize = 8;

/// A lane operand: a row of lanes, or one value for every lane.
#[derive(Clone, Copy)]
enum V<'a, R> {
    S(&'a [R]),
    C(R),
}

/// What one program runs over: the file it writes (registers, or `u` for the uniform
/// program), the uniform file it reads, the banks and the lane range.
struct Frame<'a, R> {
    u: &'a [R],
    params: &'a [R],
    banks: [&'a [R]; BANKS],
    width: usize,
    lo: usize,
    hi: usize,
    matmul: bool,
    /// Rows of an elementwise program run per pass (see [`ew_rows`]).
    ew_rows: usize,
}

/// Rows of elements an elementwise program runs per instruction: about [`EW_CHUNK`] values,
/// so that one dispatch covers several rows of a narrow block while the temporaries of a pass
/// stay in L1.
pub(super) fn ew_rows(width: usize) -> usize {
    (EW_CHUNK / width.max(1)).max(1)
}

/// Values per pass of an elementwise program (see [`ew_rows`]).
const EW_CHUNK: usize = 256;

/// Rows `i0 .. i0 + rows` of an elementwise operand.
#[derive(Clone, Copy)]
enum Rows<'a, R> {
    /// Row `r` at `data[r * stride ..][..n]` (`stride` 0: one lane row for every element).
    Lanes(&'a [R], usize),
    /// One uniform value per row.
    PerRow(&'a [R]),
    /// One value for every row and lane.
    Const(R),
}

impl<'a, R: Copy> Rows<'a, R> {
    #[inline(always)]
    fn row(self, r: usize, n: usize) -> V<'a, R> {
        match self {
            Rows::Lanes(data, stride) => V::S(&data[r * stride..r * stride + n]),
            Rows::PerRow(values) => V::C(values[r]),
            Rows::Const(c) => V::C(c),
        }
    }

    /// `rows` rows of `n` lanes as one run of values, when they are one (rows `n` apart, or a
    /// constant).
    #[inline(always)]
    fn flat(self, rows: usize, n: usize) -> Option<V<'a, R>> {
        match self {
            Rows::Lanes(data, stride) if stride == n || rows == 1 => Some(V::S(&data[..rows * n])),
            Rows::Const(c) => Some(V::C(c)),
            _ => None,
        }
    }
}

impl<'a, R: Real> Frame<'a, R> {
    /// Rows `i0 .. i0 + rows` of the argument `a` (registers from `below`).
    #[inline(always)]
    fn rows_of<'b>(&self, a: Arg, i0: usize, rows: usize, below: &'b [R]) -> Rows<'b, R>
    where
        'a: 'b,
    {
        let n = self.hi - self.lo;
        match (a.loc, a.scalar) {
            (Loc::U(k), true) => Rows::Const(self.u[k as usize]),
            (Loc::P(k), true) => Rows::Const(self.params[k as usize]),
            (Loc::U(k), false) => Rows::PerRow(&self.u[k as usize + i0..k as usize + i0 + rows]),
            (Loc::P(k), false) => {
                Rows::PerRow(&self.params[k as usize + i0..k as usize + i0 + rows])
            }
            (Loc::L(bank, row), scalar) => {
                let bank = self.bank(bank, below);
                let (first, stride) = if scalar { (0, 0) } else { (i0, self.width) };
                let start = (row as usize + first) * self.width + self.lo;
                let end = start
                    + if scalar {
                        n
                    } else {
                        (rows - 1) * self.width + n
                    };
                Rows::Lanes(&bank[start..end], stride)
            }
        }
    }

    /// Element `i` of `loc`, reading registers from `below` (the file under the destination).
    #[inline(always)]
    fn at<'b>(&self, loc: Loc, i: usize, below: &'b [R]) -> V<'b, R>
    where
        'a: 'b,
    {
        match loc {
            Loc::U(k) => V::C(self.u[k as usize + i]),
            Loc::P(k) => V::C(self.params[k as usize + i]),
            Loc::L(bank, row) => {
                let bank = if bank == REG {
                    below
                } else {
                    self.banks[bank as usize]
                };
                let start = (row as usize + i) * self.width;
                V::S(&bank[start + self.lo..start + self.hi])
            }
        }
    }

    #[inline(always)]
    fn arg<'b>(&self, a: Arg, i: usize, below: &'b [R]) -> V<'b, R>
    where
        'a: 'b,
    {
        self.at(a.loc, if a.scalar { 0 } else { i }, below)
    }

    /// `len` uniform values from `loc` (the uniform file or the parameters).
    fn uniform(&self, loc: Loc, len: usize) -> &'a [R] {
        match loc {
            Loc::U(k) => &self.u[k as usize..k as usize + len],
            Loc::P(k) => &self.params[k as usize..k as usize + len],
            Loc::L(..) => unreachable!("a uniform operand"),
        }
    }

    /// The whole bank of lane rows `loc` lies in (registers: `below`).
    fn bank<'b>(&self, bank: u8, below: &'b [R]) -> &'b [R]
    where
        'a: 'b,
    {
        if bank == REG {
            below
        } else {
            self.banks[bank as usize]
        }
    }
}

impl Kernel {
    /// Fills the uniform file `u` from the resolved parameters `theta` and tangent, then runs
    /// the uniform program.
    pub(crate) fn prepare(&self, theta: &[f64], tangent: &[f64], u: &mut [f64]) {
        for (at, values) in &self.consts {
            u[*at as usize..*at as usize + values.len()].copy_from_slice(values);
        }
        for &(at, len, leaf) in &self.leaves {
            let dst = &mut u[at as usize..(at + len) as usize];
            match leaf {
                ULeaf::Param { from } => {
                    dst.copy_from_slice(&theta[from as usize..(from + len) as usize])
                }
                ULeaf::Tangent { from } => {
                    match tangent.get(from as usize..(from + len) as usize) {
                        Some(t) => dst.copy_from_slice(t),
                        None => dst.fill(0.0),
                    }
                }
            }
        }
        let frame = Frame {
            u: &[],
            params: theta,
            banks: [&[]; BANKS],
            width: 1,
            lo: 0,
            hi: 1,
            matmul: false,
            ew_rows: 1,
        };
        // One lane per temporary; `temps` bounds the uniform programs' needs too.
        let mut stack = [0.0; 64];
        let mut heap = Vec::new();
        let temps = if self.temps <= stack.len() {
            &mut stack[..]
        } else {
            heap.resize(self.temps, 0.0);
            &mut heap[..]
        };
        for op in &self.uniform {
            run_op(op, &frame, u, temps, None);
        }
    }

    /// Runs the lane program over `lanes.lo..lanes.hi`, writing the lane outputs into `out`
    /// (rows of `lanes.width`) and adding the reductions into `reduced`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run<R: Real>(
        &self,
        u: &[R],
        params: &[R],
        regs: &mut [R],
        lanes: Lanes<'_, R>,
        out: &mut [R],
        reduced: &mut [R],
        scratch: &mut [R],
    ) {
        let frame = Frame {
            u,
            params,
            banks: lanes.banks,
            width: lanes.width,
            lo: lanes.lo,
            hi: lanes.hi,
            matmul: lanes.matmul,
            ew_rows: ew_rows(lanes.width),
        };
        for (k, op) in self.lanes.iter().enumerate() {
            let to_output = self.in_place.get(k).copied().flatten();
            run_op(
                op,
                &frame,
                regs,
                scratch,
                to_output.map(|row| (&mut *out, row as usize)),
            );
        }
        let (w, lo, hi) = (frame.width, frame.lo, frame.hi);
        for &(row, arg, len) in &self.outputs {
            if self.in_place.contains(&Some(row)) {
                continue;
            }
            for i in 0..len as usize {
                let d = &mut out[(row as usize + i) * w + lo..(row as usize + i) * w + hi];
                match frame.arg(arg, i, regs) {
                    V::S(x) => d.copy_from_slice(x),
                    V::C(x) => d.fill(x),
                }
            }
        }
        for r in &self.reduces {
            reduce(r, &frame, regs, reduced);
        }
    }
}

crate::compile::isa::multiversion!(
    /// Runs one operation, writing rows of `file` (the registers, or `u` itself). The AVX2
    /// and AVX-512 copies run a fused elementwise program's arithmetic four or eight lanes at
    /// a time, its `tanh` inlined, with no dispatch per instruction and row.
    fn run_op<R: Real>(
        op: &Op,
        f: &Frame<'_, R>,
        file: &mut [R],
        scratch: &mut [R],
        to_output: Option<(&mut [R], usize)>,
    ) => run_op_here
);

/// [`run_op`]: `to_output`, the output rows and the first the operation writes instead of its
/// registers (see [`Kernel::outputs_in_place`]).
#[inline(always)]
fn run_op_here<R: Real>(
    op: &Op,
    f: &Frame<'_, R>,
    file: &mut [R],
    scratch: &mut [R],
    to_output: Option<(&mut [R], usize)>,
) {
    let (w, lo, hi) = (f.width, f.lo, f.hi);
    let n = hi - lo;
    let dst_of = |op: &Op| match op {
        Op::Ew { dst, .. }
        | Op::Gemm { dst, .. }
        | Op::MatMul { dst, .. }
        | Op::Outer { dst, .. }
        | Op::Transpose { dst, .. }
        | Op::Rows { dst, .. }
        | Op::Sums { dst, .. }
        | Op::MaxAll { dst, .. }
        | Op::ArgMax { dst, .. } => *dst as usize,
    };
    // Operands always lie below the destination (registers are allocated in node order).
    let (below, above): (&[R], &mut [R]) = match to_output {
        Some((out, row)) => (file, &mut out[row * w..]),
        None => {
            let (below, above) = file.split_at_mut(dst_of(op) * w);
            (below, above)
        }
    };
    match op {
        Op::Ew {
            len, args, code, ..
        } => {
            let (len, last) = (*len as usize, code.len() - 1);
            let chunk = f.ew_rows;
            let mut i0 = 0;
            while i0 < len {
                let rows = chunk.min(len - i0);
                let temps = &mut scratch[..last * chunk * n];
                for (k, instr) in code.iter().enumerate() {
                    let (done, rest) = temps.split_at_mut(k.min(last) * chunk * n);
                    let get = |r: Ref| match r {
                        Ref::Arg(j) => f.rows_of(args[j as usize], i0, rows, below),
                        Ref::Tmp(t) => {
                            let at = t as usize * chunk * n;
                            Rows::Lanes(&done[at..at + rows * n], n)
                        }
                    };
                    let (d, stride) = if k == last {
                        (&mut above[i0 * w + lo..(i0 + rows - 1) * w + hi], w)
                    } else {
                        (&mut rest[..rows * n], n)
                    };
                    match *instr {
                        EwInstr::Bin(op, a, b) => {
                            let (a, b) = (get(a), get(b));
                            match (stride == n || rows == 1, a.flat(rows, n), b.flat(rows, n)) {
                                (true, Some(a), Some(b)) => bin(d, op, a, b),
                                _ => {
                                    for r in 0..rows {
                                        let d = &mut d[r * stride..r * stride + n];
                                        bin(d, op, a.row(r, n), b.row(r, n));
                                    }
                                }
                            }
                        }
                        EwInstr::Func(func, a) => {
                            let a = get(a);
                            match (stride == n || rows == 1, a.flat(rows, n)) {
                                (true, Some(a)) => apply(d, func, a),
                                _ => {
                                    for r in 0..rows {
                                        apply(
                                            &mut d[r * stride..r * stride + n],
                                            func,
                                            a.row(r, n),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
                i0 += rows;
            }
        }
        Op::Gemm {
            a,
            b,
            m,
            k,
            n: cols,
            ..
        } => {
            let (m, k, cols) = (*m as usize, *k as usize, *cols as usize);
            let a = Matrix {
                values: f.uniform(*a, m * k),
                m,
                k,
            };
            let bank = f.bank(b.0, below);
            for c in 0..cols {
                let src = &bank[(b.1 as usize + c) * w..];
                let dst = &mut above[c * w..];
                gemm(&a, src, dst, cols * w, (lo, n), scratch);
            }
        }
        Op::MatMul {
            a,
            b,
            m,
            k,
            n: cols,
            ..
        } => {
            let (m, k, cols) = (*m as usize, *k as usize, *cols as usize);
            for r in 0..m {
                for c in 0..cols {
                    let d = &mut above[(r * cols + c) * w + lo..(r * cols + c) * w + hi];
                    for i in 0..k {
                        let x = f.at(*a, r * k + i, below);
                        let y = f.at(*b, i * cols + c, below);
                        if i == 0 {
                            bin(d, BinOp::Mul, x, y);
                        } else {
                            fma(d, x, y);
                        }
                    }
                }
            }
        }
        Op::Outer {
            a, m, b, n: cols, ..
        } => {
            for i in 0..*m as usize {
                for j in 0..*cols as usize {
                    let r = (i * *cols as usize + j) * w;
                    let d = &mut above[r + lo..r + hi];
                    bin(d, BinOp::Mul, f.at(*a, i, below), f.at(*b, j, below));
                }
            }
        }
        Op::Transpose { src, m, k, .. } => {
            let (m, k) = (*m as usize, *k as usize);
            // The uniform program's transposes (`K1ᵀ` of a VJP, which its GEMMs read row-major):
            // one element per row, from its own rows or a parameter read in place.
            let whole = match *src {
                Loc::L(bank, row) if w == 1 && n == 1 => {
                    Some(&f.bank(bank, below)[row as usize..row as usize + m * k])
                }
                Loc::P(_) if w == 1 && n == 1 => Some(f.uniform(*src, m * k)),
                _ => None,
            };
            match whole {
                Some(x) => {
                    for j in 0..k {
                        for i in 0..m {
                            above[j * m + i] = x[i * k + j];
                        }
                    }
                }
                None => {
                    for j in 0..k {
                        for i in 0..m {
                            let r = (j * m + i) * w;
                            assign(&mut above[r + lo..r + hi], f.at(*src, i * k + j, below));
                        }
                    }
                }
            }
        }
        Op::Rows {
            len, moves, dense, ..
        } => {
            if !dense {
                for i in 0..*len as usize {
                    above[i * w + lo..i * w + hi].fill(R::zero());
                }
            }
            for &(r, src) in moves.iter() {
                let d = &mut above[r as usize * w + lo..r as usize * w + hi];
                match (f.at(src, 0, below), dense) {
                    (V::S(x), true) => d.copy_from_slice(x),
                    (V::C(x), true) => d.fill(x),
                    (x, false) => bin_update(d, BinOp::Add, x),
                }
            }
        }
        Op::Sums { src, groups, .. } => {
            for (g, &(start, count, stride)) in groups.iter().enumerate() {
                let d = &mut above[g * w + lo..g * w + hi];
                for c in 0..count as usize {
                    let x = f.at(*src, start as usize + c * stride as usize, below);
                    if c == 0 {
                        assign(d, x);
                    } else {
                        bin_update(d, BinOp::Add, x);
                    }
                }
            }
        }
        Op::MaxAll { src, len, .. } => {
            let d = &mut above[lo..hi];
            assign(d, f.at(*src, 0, below));
            for i in 1..*len as usize {
                bin_update(d, BinOp::Max, f.at(*src, i, below));
            }
        }
        Op::ArgMax {
            src, len, onehot, ..
        } => {
            let len = *len as usize;
            for s in 0..n {
                let value = |i: usize| match f.at(*src, i, below) {
                    V::S(x) => x[s],
                    V::C(x) => x,
                };
                let mut best = 0;
                for i in 1..len {
                    let (v, b) = (value(i), value(best));
                    if v > b || (b.is_nan() && !v.is_nan()) {
                        best = i;
                    }
                }
                if *onehot {
                    for i in 0..len {
                        above[i * w + lo + s] = if i == best { R::one() } else { R::zero() };
                    }
                } else {
                    above[lo + s] = R::cast(best as f64);
                }
            }
        }
    }
}

/// A uniform `m × k` matrix, row-major.
struct Matrix<'a, R> {
    values: &'a [R],
    m: usize,
    k: usize,
}

impl<R: Real> Matrix<'_, R> {
    #[inline(always)]
    fn at(&self, r: usize, i: usize) -> R {
        self.values[r * self.k + i]
    }
}

/// `dst = A · X` for the lanes `lo .. lo + n`: row `i` of `X` at `src[i * step + lo ..]`, row
/// `r` of the result at `dst[r * step + lo ..]`. Fewer than [`MIN_SIDE`] lanes are padded in
/// `scratch`, and small products use the lane loops, so that every lane count takes the same
/// path (see the module docs).
fn gemm<R: Real>(
    a: &Matrix<'_, R>,
    src: &[R],
    dst: &mut [R],
    step: usize,
    (lo, n): (usize, usize),
    scratch: &mut [R],
) {
    let (m, k) = (a.m, a.k);
    if m < MIN_SIDE || k < MIN_SIDE {
        for r in 0..m {
            let d = &mut dst[r * step + lo..r * step + lo + n];
            for i in 0..k {
                let x = &src[i * step + lo..i * step + lo + n];
                if i == 0 {
                    bin(d, BinOp::Mul, V::C(a.at(r, 0)), V::S(x));
                } else {
                    fma(d, V::C(a.at(r, i)), V::S(x));
                }
            }
        }
        return;
    }
    // Aᵀ as a k × m matrix: element (i, r) is A[r][i].
    let at = View {
        data: a.values,
        rows: k,
        cols: m,
        rs: 1,
        cs: k,
    };
    if n >= MIN_SIDE {
        let x = View {
            data: &src[lo..],
            rows: n,
            cols: k,
            rs: 1,
            cs: step,
        };
        product(&mut dst[lo..], (1, step), x, at, false);
        return;
    }
    let (x, rest) = scratch.split_at_mut(MIN_SIDE * k);
    let out = &mut rest[..MIN_SIDE * m];
    for (i, col) in x.chunks_exact_mut(MIN_SIDE).enumerate() {
        col[..n].copy_from_slice(&src[i * step + lo..i * step + lo + n]);
        col[n..].fill(R::zero());
    }
    let xv = View {
        data: x,
        rows: MIN_SIDE,
        cols: k,
        rs: 1,
        cs: MIN_SIDE,
    };
    product(out, (1, MIN_SIDE), xv, at, false);
    for (r, col) in out.chunks_exact(MIN_SIDE).enumerate() {
        dst[r * step + lo..r * step + lo + n].copy_from_slice(&col[..n]);
    }
}

/// Adds one reduction over the frame's lanes into `reduced`.
fn reduce<R: Real>(r: &Reduce, f: &Frame<'_, R>, regs: &[R], reduced: &mut [R]) {
    let n = f.hi - f.lo;
    match *r {
        Reduce::Lanes {
            at,
            len,
            src,
            scalar,
        } => {
            if let (Loc::L(bank, row), false) = (src, scalar) {
                let out = &mut reduced[at as usize..(at + len) as usize];
                let bank = f.bank(bank, regs);
                sum_rows(bank, row as usize, f.width, (f.lo, f.hi), out);
                return;
            }
            for i in 0..len as usize {
                let x = f.at(src, if scalar { 0 } else { i }, regs);
                reduced[at as usize + i] += match x {
                    V::S(x) => x.iter().copied().sum::<R>(),
                    V::C(x) => (0..n).map(|_| x).sum::<R>(),
                };
            }
        }
        Reduce::Outer {
            at,
            a,
            m,
            b,
            n: cols,
        } => {
            let (m, cols) = (m as usize, cols as usize);
            let at = at as usize;
            if let (Loc::L(ab, ar), Loc::L(bb, br), true) = (
                a,
                b,
                f.matmul && n >= MIN_SIDE && m >= MIN_SIDE && cols >= MIN_SIDE,
            ) {
                let w = f.width;
                // reduced[at + i·cols + j] is cell (j, i) of a column-major cols × m matrix:
                // += Bᵀ Aᵀ, with the lanes as the inner dimension.
                let at_v = View {
                    data: &f.bank(ab, regs)[ar as usize * w + f.lo..],
                    rows: n,
                    cols: m,
                    rs: 1,
                    cs: w,
                };
                let bt_v = View {
                    data: &f.bank(bb, regs)[br as usize * w + f.lo..],
                    rows: cols,
                    cols: n,
                    rs: w,
                    cs: 1,
                };
                product(&mut reduced[at..at + m * cols], (1, cols), bt_v, at_v, true);
                return;
            }
            for i in 0..m {
                for j in 0..cols {
                    reduced[at + i * cols + j] += dot(f.at(a, i, regs), f.at(b, j, regs), n);
                }
            }
        }
    }
}

/// `out[i] += Σ_s` of lane row `first + i` of `bank` over the lanes `lo..hi`, each row summed
/// in lane order (as `Iterator::sum`, from −0), eight rows at a time so that their chains of
/// additions overlap instead of each waiting on its own.
fn sum_rows<R: Real>(bank: &[R], first: usize, w: usize, (lo, hi): (usize, usize), out: &mut [R]) {
    let n = hi - lo;
    for (c, out) in out.chunks_mut(SUMMED_ROWS).enumerate() {
        let mut rows: [&[R]; SUMMED_ROWS] = [&[]; SUMMED_ROWS];
        for (r, row) in rows.iter_mut().enumerate().take(out.len()) {
            let start = (first + c * SUMMED_ROWS + r) * w + lo;
            *row = &bank[start..start + n];
        }
        let acc = if out.len() < SUMMED_ROWS {
            let mut acc = [-R::zero(); SUMMED_ROWS];
            for (acc, row) in acc.iter_mut().zip(&rows[..out.len()]) {
                *acc = row.iter().copied().sum::<R>();
            }
            acc
        } else if let Some(rows) = at_width::<R, { lanes::WIDE }>(&rows) {
            sum_eight(rows)
        } else if let Some(rows) = at_width::<R, { lanes::NARROW }>(&rows) {
            sum_eight(rows)
        } else {
            let mut acc = [-R::zero(); SUMMED_ROWS];
            #[expect(
                clippy::needless_range_loop,
                reason = "lane s of eight rows at once: the rows' chains interleave"
            )]
            for s in 0..n {
                for r in 0..SUMMED_ROWS {
                    acc[r] += rows[r][s];
                }
            }
            acc
        };
        for (o, a) in out.iter_mut().zip(acc) {
            *o += a;
        }
    }
}

/// Rows [`sum_rows`] sums together.
const SUMMED_ROWS: usize = 8;

/// The rows as arrays of `N` lanes, if they all are that long.
fn at_width<'a, R: Real, const N: usize>(
    rows: &[&'a [R]; SUMMED_ROWS],
) -> Option<[&'a [R; N]; SUMMED_ROWS]> {
    let arrays = rows.map(|row| <&[R; N]>::try_from(row).ok());
    arrays
        .iter()
        .all(Option::is_some)
        .then(|| arrays.map(Option::unwrap))
}

/// Each row's lane-order sum from −0, the eight chains interleaved. At a fixed length the
/// lanes need no bounds checks and the sums stay in registers: the loop over slices kept them
/// on the stack (a load and a store per addition), a third of the bias gradients' time.
#[inline(always)]
fn sum_eight<R: Real, const N: usize>(rows: [&[R; N]; SUMMED_ROWS]) -> [R; SUMMED_ROWS] {
    let mut acc = [-R::zero(); SUMMED_ROWS];
    for s in 0..N {
        for (acc, row) in acc.iter_mut().zip(&rows) {
            *acc += row[s];
        }
    }
    acc
}

/// `Σ_s x[s] · y[s]` over `n` lanes, in lane order.
fn dot<R: Real>(x: V<'_, R>, y: V<'_, R>, n: usize) -> R {
    match (x, y) {
        (V::S(x), V::S(y)) => x.iter().zip(y).map(|(&a, &b)| a * b).sum(),
        (V::S(x), V::C(c)) | (V::C(c), V::S(x)) => x.iter().map(|&a| a * c).sum(),
        (V::C(a), V::C(b)) => (0..n).map(|_| a * b).sum(),
    }
}

/// `d = x`.
#[inline(always)]
fn assign<R: Real>(d: &mut [R], x: V<'_, R>) {
    match x {
        V::S(x) => d.copy_from_slice(x),
        V::C(x) => d.fill(x),
    }
}

#[inline(always)]
fn binop<R: Real>(op: BinOp) -> impl Fn(R, R) -> R {
    move |x, y| match op {
        BinOp::Add => x + y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Pow => apply_pow(x, y),
        BinOp::Min => x.min(y),
        BinOp::Max => x.max(y),
        BinOp::Cmp(c) => c.apply(x, y),
    }
}

/// `d = a ∘ b`.
#[inline(always)]
fn bin<R: Real>(d: &mut [R], op: BinOp, a: V<'_, R>, b: V<'_, R>) {
    match op {
        BinOp::Add => zip(d, a, b, |x, y| x + y),
        BinOp::Mul => zip(d, a, b, |x, y| x * y),
        BinOp::Div => zip(d, a, b, |x, y| x / y),
        _ => zip(d, a, b, binop(op)),
    }
}

/// `d = d ∘ x`.
#[inline(always)]
fn bin_update<R: Real>(d: &mut [R], op: BinOp, x: V<'_, R>) {
    match (op, x) {
        (BinOp::Add, V::S(x)) => update(d, x, |d, x| d + x),
        (BinOp::Max, V::S(x)) => update(d, x, R::max),
        (op, V::S(x)) => update(d, x, binop(op)),
        (op, V::C(c)) => {
            let g = binop(op);
            d.iter_mut().for_each(|d| *d = g(*d, c));
        }
    }
}

/// `d += x · y`, rounding the product first as the interpreter's sums do.
#[inline(always)]
fn fma<R: Real>(d: &mut [R], x: V<'_, R>, y: V<'_, R>) {
    match (x, y) {
        (V::S(x), V::S(y)) => {
            for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                *d += x * y;
            }
        }
        (V::S(x), V::C(c)) | (V::C(c), V::S(x)) => update(d, x, |d, x| d + x * c),
        (V::C(a), V::C(b)) => d.iter_mut().for_each(|d| *d += a * b),
    }
}

/// `d = g(a, b)` lane by lane, broadcasting a uniform side.
#[inline(always)]
fn zip<R: Real>(d: &mut [R], a: V<'_, R>, b: V<'_, R>, g: impl Fn(R, R) -> R) {
    match (a, b) {
        (V::S(a), V::S(b)) => lanes::zip(d, a, b, g),
        (V::S(a), V::C(c)) => map(d, a, |x| g(x, c)),
        (V::C(c), V::S(b)) => map(d, b, |y| g(c, y)),
        (V::C(a), V::C(b)) => d.fill(g(a, b)),
    }
}

/// `d = func(x)`, with the kernels' vectorizable `tanh`, `exp` and `sigmoid`.
#[inline(always)]
fn apply<R: Real>(d: &mut [R], func: Func, x: V<'_, R>) {
    match x {
        V::C(x) => d.fill(lanes::func_one(func, x)),
        // Not the dispatching `lanes::func`: this runs inside `run_op`'s instruction set.
        V::S(x) => lanes::func_lanes(d, func, x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows summed eight at a time have the bits of each row summed alone in lane order, for
    /// whole and partial groups of rows and for a lane range inside the block.
    #[test]
    fn rows_summed_together_have_the_bits_of_each_row_alone() {
        // 13 lanes take the general loop, 32 and 64 (whole blocks) the fixed-length ones.
        for (w, (lo, hi)) in [
            (13, (2, 9)),
            (13, (0, 13)),
            (32, (0, 32)),
            (64, (0, 64)),
            (64, (0, 40)),
        ] {
            let bank: Vec<f64> = (0..40 * w)
                .map(|i| ((i * 7919) % 1000) as f64 * 1.37e-3 - 0.61)
                .collect();
            for (first, len) in [(0, 8), (3, 19), (5, 11)] {
                let mut out = vec![0.25; len];
                sum_rows(&bank, first, w, (lo, hi), &mut out);
                for (i, got) in out.iter().enumerate() {
                    let row = &bank[(first + i) * w + lo..(first + i) * w + hi];
                    let alone = 0.25 + row.iter().copied().sum::<f64>();
                    assert_eq!(got.to_bits(), alone.to_bits(), "row {i} of {first}..+{len}");
                }
            }
        }
    }
}
