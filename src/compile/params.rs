//! Parameter storage, its flat layout, and the resolution of time-varying parameters.
//!
//! Layout of [`Params::values`] (and of every parameter gradient): parameters in declaration
//! order; each parameter is a block of `copies × len` values, copies outermost, each copy
//! row-major. A constant parameter has one copy, a `per layer` one has `layers` copies (layer 0
//! first), an `on knots` one a copy per knot. This is the value convention of `--params` files
//! and of `nodec grad` ("layers outermost").
//!
//! A kernel sees *one copy* of every parameter (`θ` of [`crate::ir::Derivatives`], indexed like
//! [`crate::ir::Model::param_vars`]): the copies in force at a time `t`. [`ParamLayout::piece`]
//! finds it: per-layer params take the layer whose piece `[b_k, b_{k+1})` holds `t`, knot
//! params interpolate linearly between the two neighbouring knots (constant outside the knots).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ir::{self, ParamInit, ParamTime, Shape};
use crate::real::Real;

/// Where one parameter lives in the flat storage.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// The declared name.
    pub name: String,
    /// The shape of one copy.
    pub shape: Shape,
    /// How the parameter varies in time.
    pub time: ParamTime,
    /// Number of copies (1, `layers`, or the number of knots).
    pub copies: usize,
    /// Offset of copy 0 in [`Params::values`].
    pub offset: usize,
    /// Offset of element 0 within one copy of all parameters (`θ`).
    pub view_offset: usize,
}

impl ParamEntry {
    /// Elements of one copy.
    pub fn len(&self) -> usize {
        self.shape.len()
    }

    /// Whether one copy has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of all its values as a parameter file records it: one copy's axes, after an
    /// axis of copies (layers or knots, outermost) for a `per layer` or `on knots` param, so
    /// `[10, 8, 2]` for `param K[8, 2] per layer` under 10 layers and `[]` for a scalar.
    pub fn saved_shape(&self) -> Vec<usize> {
        let mut shape = self.shape.dims();
        if !matches!(self.time, ParamTime::Constant) {
            shape.insert(0, self.copies);
        }
        shape
    }

    /// The values of every copy of this parameter from `numbers`, values saved for another
    /// model (whole copies, copies outermost): copy `layer` of them repeated into every copy,
    /// or without a layer, all copies as they are when the counts agree, one copy repeated into
    /// every copy, and for a `per layer` param another number of layers resampled piecewise
    /// constant in time (new layer `j` of `L` takes old layer `⌊j·M/L⌋` of `M`), so that a
    /// network trained with `M` layers starts a run with `L` at the same function of time.
    pub fn fit_copies(&self, numbers: &[f64], layer: Option<usize>) -> Result<Vec<f64>, FitError> {
        let (len, copies) = (self.len().max(1), self.copies);
        // No values are no copy at all (`[]`), not zero copies to resample from.
        if numbers.is_empty() || !numbers.len().is_multiple_of(len) {
            return Err(FitError::Ragged {
                values: numbers.len(),
            });
        }
        let source_copies = numbers.len() / len;
        let copy = |k: usize| &numbers[k * len..(k + 1) * len];
        if let Some(k) = layer {
            if k >= source_copies {
                return Err(FitError::NoLayer {
                    layer: k,
                    copies: source_copies,
                });
            }
            return Ok(copy(k).repeat(copies));
        }
        if source_copies == copies {
            return Ok(numbers.to_vec());
        }
        if source_copies == 1 {
            return Ok(numbers.repeat(copies));
        }
        if copies > 1 && matches!(self.time, ParamTime::PerLayer) {
            return Ok((0..copies)
                .flat_map(|j| copy(j * source_copies / copies).iter().copied())
                .collect());
        }
        Err(FitError::Copies {
            values: numbers.len(),
            copies: source_copies,
        })
    }
}

/// Why saved values do not fit a parameter's copies ([`ParamEntry::fit_copies`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitError {
    /// The values are not a whole number of copies, or there are none.
    Ragged {
        /// How many values there are.
        values: usize,
    },
    /// The layer asked for is not among the saved copies.
    NoLayer {
        /// The layer asked for.
        layer: usize,
        /// The saved copies.
        copies: usize,
    },
    /// Another number of copies, which only a `per layer` param of several layers resamples.
    Copies {
        /// How many values there are.
        values: usize,
        /// The saved copies.
        copies: usize,
    },
}

/// The layout of all parameters, and the pieces of time that select their copies.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    /// One entry per parameter, in declaration order.
    pub entries: Vec<ParamEntry>,
    /// Length of [`Params::values`].
    pub total: usize,
    /// Length of one copy of every parameter (`θ`).
    pub view_len: usize,
    /// Boundaries between layers of `per layer` params, strictly increasing; empty without such
    /// params. The pieces are `[b_{k-1}, b_k)`; piece `k` is layer `k` when the schedule runs
    /// forward and layer `layers − 1 − k` when it runs backward, so that layer 0 is always
    /// where integration starts.
    pub layer_breaks: Vec<f64>,
    /// Number of layers of `per layer` params (1 without them).
    pub layers: usize,
    /// The schedule integrates backward (`t1 < t0`): layers are numbered from `t0` down.
    pub backward: bool,
}

/// How the copies in force at one time are combined: the layer, and for knot params the
/// interval and weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Piece {
    /// Layer index of `per layer` params.
    pub layer: usize,
    /// The time, for knot interpolation.
    pub t: f64,
}

impl ParamLayout {
    /// The layout of `model`'s parameters; `per layer` params get `schedule.layers` copies,
    /// else `schedule.steps`, else 1.
    pub fn new(model: &ir::Model) -> ParamLayout {
        let layers = model.layer_count();
        let has_layers = model
            .params
            .iter()
            .any(|p| matches!(p.time, ParamTime::PerLayer));
        let mut entries = Vec::new();
        let (mut offset, mut view_offset) = (0, 0);
        for (p, copies) in model.params.iter().zip(model.param_copies()) {
            entries.push(ParamEntry {
                name: p.name.clone(),
                shape: p.shape,
                time: p.time.clone(),
                copies,
                offset,
                view_offset,
            });
            offset += copies * p.shape.len();
            view_offset += p.shape.len();
        }
        let mut layer_breaks = Vec::new();
        let backward = model.schedule.as_ref().is_some_and(|s| s.t1 < s.t0);
        if has_layers {
            if let Some(s) = &model.schedule {
                // The same arithmetic as the fixed-step grid `t0 + n h`, so that with
                // `layers == steps` every breakpoint is exactly a grid point.
                let h = (s.t1 - s.t0) / layers as f64;
                layer_breaks = (1..layers).map(|k| s.t0 + k as f64 * h).collect();
                layer_breaks.sort_by(f64::total_cmp);
            }
        }
        ParamLayout {
            entries,
            total: offset,
            view_len: view_offset,
            layer_breaks,
            layers: if has_layers { layers } else { 1 },
            backward,
        }
    }

    /// Whether any parameter varies in time.
    pub fn is_time_varying(&self) -> bool {
        self.entries
            .iter()
            .any(|e| !matches!(e.time, ParamTime::Constant))
    }

    /// Whether any parameter is interpolated on knots.
    pub fn has_knots(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.time, ParamTime::Knots(_)))
    }

    /// The layer of `per layer` params in force at `t`: the piece `[b_k, b_{k+1})` holding it,
    /// counted in the order of integration.
    pub fn layer_at(&self, t: f64) -> usize {
        let piece = self.layer_breaks.partition_point(|&b| b <= t);
        if self.backward {
            self.layer_breaks.len() - piece
        } else {
            piece
        }
    }

    /// A time inside each layer, in layer order, for values resolved once per layer: `t0` for
    /// the first, then each layer's start in the order of integration (a backward layer that
    /// starts at a boundary `b` holds the times just below it, so `b.next_down()`).
    pub fn layer_times(&self, t0: f64) -> Vec<f64> {
        let starts = self.layer_breaks.iter().copied();
        if self.backward {
            std::iter::once(t0)
                .chain(starts.rev().map(f64::next_down))
                .collect()
        } else {
            std::iter::once(t0).chain(starts).collect()
        }
    }

    /// The piece in force at `t`.
    pub fn piece(&self, t: f64) -> Piece {
        Piece {
            layer: self.layer_at(t),
            t,
        }
    }

    /// A key that is equal for two times exactly when they resolve to the same values.
    pub(crate) fn piece_key(&self, t: f64) -> u64 {
        if self.has_knots() {
            t.to_bits()
        } else if self.layer_breaks.is_empty() {
            0
        } else {
            self.layer_at(t) as u64
        }
    }

    /// For each copy that contributes at `piece`, its index and weight: one copy with weight 1,
    /// or two neighbouring knots with weights `1 − λ` and `λ`.
    pub fn weights(&self, entry: &ParamEntry, piece: Piece) -> [(usize, f64); 2] {
        match &entry.time {
            ParamTime::Constant => [(0, 1.0), (0, 0.0)],
            ParamTime::PerLayer => [(piece.layer.min(entry.copies - 1), 1.0), (0, 0.0)],
            ParamTime::Knots(knots) => knot_weights(knots, piece.t),
        }
    }

    /// Writes one copy of every parameter (`θ`, length [`ParamLayout::view_len`]) in force at
    /// `piece`, reading the full storage `values` (length [`ParamLayout::total`]).
    pub fn resolve(&self, values: &[f64], piece: Piece, view: &mut [f64]) {
        for e in &self.entries {
            let n = e.len();
            let dst = &mut view[e.view_offset..e.view_offset + n];
            let [(i, wi), (j, wj)] = self.weights(e, piece);
            let a = &values[e.offset + i * n..e.offset + (i + 1) * n];
            if wj == 0.0 {
                dst.copy_from_slice(a);
            } else {
                let b = &values[e.offset + j * n..e.offset + (j + 1) * n];
                for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                    *d = wi * x + wj * y;
                }
            }
        }
    }

    /// Writes copy `copy` of every parameter (`θ`), clamped to each parameter's last copy, so
    /// a constant parameter gives its only copy.
    pub fn resolve_copy(&self, values: &[f64], copy: usize, view: &mut [f64]) {
        for e in &self.entries {
            let n = e.len();
            let c = copy.min(e.copies - 1);
            view[e.view_offset..e.view_offset + n]
                .copy_from_slice(&values[e.offset + c * n..e.offset + (c + 1) * n]);
        }
    }

    /// Adds a gradient with respect to one copy (`g`) into copy `copy` of every parameter of
    /// `grad`, clamped as in [`ParamLayout::resolve_copy`].
    pub fn scatter_copy<R: Real>(&self, g: &[R], copy: usize, grad: &mut [R]) {
        for e in &self.entries {
            let n = e.len();
            let c = copy.min(e.copies - 1);
            let src = &g[e.view_offset..e.view_offset + n];
            let dst = &mut grad[e.offset + c * n..e.offset + (c + 1) * n];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
        }
    }

    /// Adds a gradient with respect to one copy (`g`, length `view_len`) at `piece` into the
    /// full gradient `grad` (length `total`): into the layer in force, or scattered to the two
    /// neighbouring knots with the interpolation weights.
    pub fn scatter<R: Real>(&self, g: &[R], piece: Piece, grad: &mut [R]) {
        for e in &self.entries {
            let n = e.len();
            let src = &g[e.view_offset..e.view_offset + n];
            for (c, w) in self.weights(e, piece) {
                if w == 0.0 {
                    continue;
                }
                let dst = &mut grad[e.offset + c * n..e.offset + (c + 1) * n];
                if w == 1.0 {
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                } else {
                    let w = R::cast(w);
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += w * s);
                }
            }
        }
    }
}

/// Interpolation weights on sorted knots: constant outside, linear inside; a time exactly on
/// a knot takes that knot with weight 1.
fn knot_weights(knots: &[f64], t: f64) -> [(usize, f64); 2] {
    let n = knots.len();
    if n <= 1 || t <= knots[0] || t.is_nan() {
        return [(0, 1.0), (0, 0.0)];
    }
    if t >= knots[n - 1] {
        return [(n - 1, 1.0), (0, 0.0)];
    }
    let k = knots.partition_point(|&x| x <= t) - 1;
    let lambda = (t - knots[k]) / (knots[k + 1] - knots[k]);
    if lambda == 0.0 {
        [(k, 1.0), (0, 0.0)]
    } else {
        [(k, 1.0 - lambda), (k + 1, lambda)]
    }
}

/// Every parameter's values in the layout of [`ParamLayout`].
///
/// Each value carries a generation number, fresh on creation and on every mutable access, so
/// that a workspace can keep the parameters it resolved until they change.
#[derive(Debug)]
pub struct Params {
    values: Vec<f64>,
    generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl Clone for Params {
    fn clone(&self) -> Self {
        Params {
            values: self.values.clone(),
            generation: self.generation,
        }
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl Params {
    /// Parameters with the given flat values (layout of [`ParamLayout`]).
    pub fn from_values(values: Vec<f64>) -> Params {
        Params {
            values,
            generation: next_generation(),
        }
    }

    /// The initial values that the model states: `= EXPR` values repeated for every copy, and
    /// zero for random initialisations (`~ normal`, `~ uniform`), which the seeded generator of a
    /// later stage fills in.
    pub fn initial(model: &ir::Model, layout: &ParamLayout) -> Params {
        let mut values = vec![0.0; layout.total];
        for (p, e) in model.params.iter().zip(&layout.entries) {
            if let ParamInit::Values(v) = &p.init {
                for c in 0..e.copies {
                    let dst = &mut values[e.offset + c * e.len()..e.offset + (c + 1) * e.len()];
                    if v.len() == dst.len() {
                        dst.copy_from_slice(v);
                    }
                }
            }
        }
        Params::from_values(values)
    }

    /// All values, flat.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// All values, flat, for writing (gives the parameters a new generation).
    pub fn values_mut(&mut self) -> &mut [f64] {
        self.generation = next_generation();
        &mut self.values
    }

    /// The values of the parameter `name` (all copies), if it exists.
    pub fn get<'a>(&'a self, layout: &ParamLayout, name: &str) -> Option<&'a [f64]> {
        let e = layout.entries.iter().find(|e| e.name == name)?;
        Some(&self.values[e.offset..e.offset + e.copies * e.len()])
    }

    /// The values of the parameter `name` (all copies), for writing.
    pub fn get_mut<'a>(&'a mut self, layout: &ParamLayout, name: &str) -> Option<&'a mut [f64]> {
        let e = layout.entries.iter().find(|e| e.name == name)?;
        self.generation = next_generation();
        Some(&mut self.values[e.offset..e.offset + e.copies * e.len()])
    }

    /// Identifies these values: equal generations mean equal values.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_layer_vector(copies: usize) -> ParamEntry {
        ParamEntry {
            name: "A".into(),
            shape: Shape::Vector(2),
            time: ParamTime::PerLayer,
            copies,
            offset: 0,
            view_offset: 0,
        }
    }

    #[test]
    fn one_copy_fills_every_layer_and_other_layer_counts_are_resampled() {
        let entry = per_layer_vector(4);
        assert_eq!(
            entry.fit_copies(&[1., 2.], None).unwrap(),
            [1., 2., 1., 2., 1., 2., 1., 2.]
        );
        // Two layers onto four: layers 0, 1 take old layer 0; layers 2, 3 old layer 1.
        assert_eq!(
            entry.fit_copies(&[1., 2., 3., 4.], None).unwrap(),
            [1., 2., 1., 2., 3., 4., 3., 4.]
        );
        // Eight layers onto four: every other layer.
        let eight: Vec<f64> = (0..16).map(f64::from).collect();
        assert_eq!(
            entry.fit_copies(&eight, None).unwrap(),
            [0., 1., 4., 5., 8., 9., 12., 13.]
        );
    }

    #[test]
    fn a_layer_is_picked_and_counts_that_do_not_fit_are_errors() {
        let entry = per_layer_vector(2);
        assert_eq!(
            entry.fit_copies(&[1., 2., 3., 4., 5., 6.], Some(2)),
            Ok(vec![5., 6., 5., 6.])
        );
        assert_eq!(
            entry.fit_copies(&[1., 2., 3.], None),
            Err(FitError::Ragged { values: 3 })
        );
        // `[]` is no copy, for a per-layer param as for any other (it used to panic).
        assert_eq!(
            entry.fit_copies(&[], None),
            Err(FitError::Ragged { values: 0 })
        );
        assert_eq!(
            entry.fit_copies(&[], Some(0)),
            Err(FitError::Ragged { values: 0 })
        );
        assert_eq!(
            entry.fit_copies(&[1., 2.], Some(1)),
            Err(FitError::NoLayer {
                layer: 1,
                copies: 1
            })
        );
        let constant = ParamEntry {
            time: ParamTime::Constant,
            copies: 1,
            ..entry
        };
        assert_eq!(
            constant.fit_copies(&[1., 2., 3., 4.], None),
            Err(FitError::Copies {
                values: 4,
                copies: 2
            })
        );
    }

    #[test]
    fn layers_are_counted_in_the_order_of_integration() {
        let layout = |span: &str| {
            let file = crate::diag::SourceFile::new(
                "m.node",
                format!("param a per layer = 1\nstate x = 1\ndx/dt = a * x\nschedule euler(t = {span}, steps = 4)\n"),
            );
            let (model, diags) = crate::check_source(&file, &Default::default(), "m");
            assert!(!diags.has_errors());
            ParamLayout::new(&model)
        };
        let forward = layout("[0, 2]");
        assert_eq!(forward.layer_breaks, [0.5, 1.0, 1.5]);
        assert_eq!(
            [0.0, 0.4, 0.5, 1.2, 2.0].map(|t| forward.layer_at(t)),
            [0, 0, 1, 2, 3]
        );
        assert_eq!(forward.layer_times(0.0), [0.0, 0.5, 1.0, 1.5]);
        // Backward from 2: layer 0 is [1.5, 2], the first one integrated; pieces keep their
        // `[b_k, b_{k+1})` form, so a boundary belongs to the layer above it.
        let backward = layout("[2, 0]");
        assert_eq!(backward.layer_breaks, [0.5, 1.0, 1.5]);
        assert_eq!(
            [2.0, 1.6, 1.5, 1.2, 0.5, 0.0].map(|t| backward.layer_at(t)),
            [0, 0, 0, 1, 2, 3]
        );
        let times = backward.layer_times(2.0);
        assert_eq!(
            times,
            [
                2.0,
                1.5f64.next_down(),
                1.0f64.next_down(),
                0.5f64.next_down()
            ]
        );
        assert_eq!(
            times
                .iter()
                .map(|&t| backward.layer_at(t))
                .collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn knot_weights_interpolate_and_clamp() {
        let k = [0.0, 0.5, 1.0];
        assert_eq!(knot_weights(&k, -1.0), [(0, 1.0), (0, 0.0)]);
        assert_eq!(knot_weights(&k, 0.5), [(1, 1.0), (0, 0.0)]);
        assert_eq!(knot_weights(&k, 0.75), [(1, 0.5), (2, 0.5)]);
        assert_eq!(knot_weights(&k, 2.0), [(2, 1.0), (0, 0.0)]);
    }
}
