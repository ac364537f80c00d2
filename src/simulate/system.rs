//! [`ModelSystem`]: a compiled program with its parameters and data, as the solvers see it.
//!
//! It lives here, not in `compile`, so that dependencies point back along the pipeline:
//! `compile` builds kernels without knowing the solvers, and this adapter names both.

use std::ops::Range;

use crate::compile::{Params, Program, Workspace};
use crate::solve::{EventSpec, System};

/// A [`Program`] with parameters and a data set's per-sample inputs and labels, implementing
/// [`System`]. Inputs and labels are sample-major (`inputs[s * input_len + i]`); the workspace
/// of a block binds its samples' rows.
#[derive(Clone, Debug)]
pub struct ModelSystem<'a> {
    /// The compiled model.
    pub program: &'a Program,
    /// Its parameters.
    pub params: &'a Params,
    /// Inputs of every sample, sample-major.
    pub inputs: &'a [f64],
    /// Labels of every sample, sample-major.
    pub labels: &'a [f64],
    /// LM-ResNet's `k` at the start of each layer (empty without `k`).
    lm_k: Vec<f64>,
    /// The model's events as the solvers see them (empty for most models).
    events: Vec<EventSpec>,
}

impl<'a> ModelSystem<'a> {
    /// A system over `inputs` and `labels` (either may be empty when the model has none).
    pub fn new(
        program: &'a Program,
        params: &'a Params,
        inputs: &'a [f64],
        labels: &'a [f64],
    ) -> Self {
        let mut lm_k = Vec::new();
        if program.has_lm_k() {
            let mut ws = program.workspace(1);
            let (t0, _) = program.span();
            lm_k = (program.layout().layer_times(t0).into_iter())
                .map(|t| program.lm_k(params, t, &mut ws))
                .collect();
        }
        let events = program
            .events()
            .iter()
            .map(|e| EventSpec {
                direction: e.direction,
                terminate: e.terminate,
                targets: e.targets.clone(),
                jump_offset: e.jump_offset,
            })
            .collect();
        ModelSystem {
            program,
            params,
            inputs,
            labels,
            lm_k,
            events,
        }
    }

    /// [`crate::solve::Sensitivity::event_jvp`] for the model's state (one sample, a
    /// workspace of width 1): the kernel's rows of event `e`'s condition and assigned values,
    /// placed in the state by the event's targets.
    #[allow(clippy::too_many_arguments)]
    pub fn event_jvp(
        &self,
        e: usize,
        t: f64,
        y: &[f64],
        v: &[f64],
        u: &[f64],
        dh: &mut [f64],
        dh_t: &mut [f64],
        ws: &mut Workspace,
    ) -> (f64, f64) {
        let n_conds = self.events.len();
        let rows = n_conds + crate::solve::jumps_len(&self.events);
        let mut out = vec![0.0; 2 * rows];
        self.program
            .event_jvp(self.params, &[t], y, v, u, &mut out, ws);
        dh.copy_from_slice(v);
        dh_t.fill(0.0);
        let spec = &self.events[e];
        let mut row = n_conds + spec.jump_offset;
        for &(offset, len) in &spec.targets {
            for j in offset..offset + len {
                dh[j] = out[row];
                dh_t[j] = out[rows + row];
                row += 1;
            }
        }
        (out[e], out[rows + e])
    }

    fn rows<'b>(data: &'b [f64], len: usize, samples: &Range<usize>) -> &'b [f64] {
        let start = (samples.start * len).min(data.len());
        let end = (samples.end * len).min(data.len());
        &data[start..end]
    }
}

impl System for ModelSystem<'_> {
    type Workspace = Workspace;

    fn workspace(&self, samples: Range<usize>) -> Workspace {
        let p = self.program;
        let mut ws = p.workspace(samples.len());
        ws.bind_inputs(Self::rows(self.inputs, p.input_len(), &samples));
        ws.bind_labels(Self::rows(self.labels, p.label_len(), &samples));
        ws
    }

    fn dim(&self) -> usize {
        self.program.dim()
    }

    /// Tensor kernels spend a block's time in GEMMs and elementwise passes over activations as
    /// wide as the layer. Where a block's largest register file at 64 samples would outgrow a
    /// core's share of L2 ([`WIDE_TENSOR_REGISTERS`] rows), they keep 32: 64-sample blocks
    /// measured slower on `wide_1024` and `mnist_sized` (4 288 and 2 240 rows; solve 31 → 36 ms
    /// and 17.6 → 22.5 ms at batch 256). Below it the wider block halves the GEMM calls and the
    /// dispatches per sample: P4 D = 32 (352 rows) trains 4 % faster in `f64` and 9 % in `f32`.
    fn block_width(&self, n_samples: usize) -> usize {
        if self.program.runs_tensor_kernels()
            && self.program.largest_register_file() > WIDE_TENSOR_REGISTERS
        {
            crate::solve::NARROW_BLOCK
        } else {
            crate::solve::block_width(n_samples)
        }
    }

    fn unit_roundoff(&self) -> f64 {
        self.program.precision().unit_roundoff()
    }

    #[inline(always)]
    fn rhs(&self, t: &[f64], y: &[f64], dy: &mut [f64], ws: &mut Workspace) {
        self.program.rhs(self.params, t, y, dy, ws);
    }

    fn field_call<'w>(&self, ws: &'w mut Workspace) -> Option<crate::compile::FieldCall<'w>> {
        self.program.field_call(self.params, self.dim(), ws)
    }

    fn saved_len(&self) -> usize {
        self.program.saved_len()
    }

    fn rhs_saving(
        &self,
        t: &[f64],
        y: &[f64],
        dy: &mut [f64],
        saved: &mut [f64],
        ws: &mut Workspace,
    ) {
        self.program.rhs_saving(self.params, t, y, dy, saved, ws);
    }

    fn jacobian(&self, t: f64, y: &[f64], jac: &mut [f64], ws: &mut Workspace) {
        self.program.jacobian(self.params, t, y, 0, jac, ws);
    }

    fn jacobian_pattern(&self) -> Option<&[Vec<u32>]> {
        self.program.jacobian_pattern()
    }

    fn jacobian_seeded(
        &self,
        t: f64,
        y: &[f64],
        seeds: &[f64],
        lanes: usize,
        out: &mut [f64],
        ws: &mut Workspace,
    ) {
        self.program
            .jacobian_seeded(self.params, t, y, 0, seeds, lanes, out, ws);
    }

    fn breakpoints(&self) -> Vec<f64> {
        self.program.breakpoints().to_vec()
    }

    fn lm_coefficient(&self, t: f64) -> f64 {
        if self.lm_k.is_empty() {
            return 0.0;
        }
        let layer = self.program.layout().layer_at(t);
        self.lm_k[layer.min(self.lm_k.len() - 1)]
    }

    fn is_autonomous(&self) -> bool {
        self.program.is_autonomous()
    }

    fn events(&self) -> &[EventSpec] {
        &self.events
    }

    fn event_conditions(&self, t: &[f64], y: &[f64], g: &mut [f64], ws: &mut Workspace) {
        self.program.event_conditions(self.params, t, y, g, ws);
    }

    fn event_jumps(&self, t: &[f64], y: &[f64], values: &mut [f64], ws: &mut Workspace) {
        self.program.event_jumps(self.params, t, y, values, ws);
    }
}

/// Register rows above which tensor kernels keep narrow blocks (see `System::block_width`):
/// 1 024 rows of 64 `f64` samples are 512 KB, a quarter of a core's L2 on the machines we
/// measure, which leaves room for the step records and the weights.
const WIDE_TENSOR_REGISTERS: usize = 1024;
