//! The fused recurrent loop as a [`FusedOp`]: [`RecurrentOp`] runs one call of
//! [`padless_kernels::RecurrentKernel`], [`RecurrentPairOp`] two independent calls side by
//! side (a `Bidirectional` layer's directions).
//!
//! A call has six input tensors (`x`, kernel, recurrent kernel, bias, `h0`, `c0`); a cell
//! without bias passes untracked zeros and a cell with one state passes `h0` again as `c0`;
//! neither stand-in receives a gradient. The output is packed
//! (`[batch, n_steps + n_states, d_hidden]`, or one of its two parts: `KernelConfig::outputs`)
//! and sliced by the caller; the backward pass is the kernels' BPTT from the workspace the
//! forward pass kept.
//!
//! The pair: with the thread pair, each direction splits its rows (or, for a large layer, its
//! hidden units) over two threads and meets the other thread once per step; at small widths
//! those meetings dominate. Here each direction runs the one-thread kernel and the two
//! directions run side by side with no meeting at all. Both outputs are stacked into one
//! tensor; the backward pass splits its gradient and runs both directions' BPTT side by side
//! again.

use std::sync::Arc;

use burn::tensor::Shape;
use padless_kernels::{
    CellKind, Gradients, Gru, KernelConfig, Lstm, Real, RecurrentKernel, Sequences, SimpleRnn,
    Weights, Workspace,
};

use crate::cpu::HostData;
// The library's cell kind, mapped here (the one place) to the kernels' cell types.
use crate::ops::{BackwardInputs, Forward, FusedOp, HostFloat};
use crate::rnn::CellKind as Kind;

/// Everything about a fused call that is not a tensor: the cell, the kernel options, the
/// batch shape and the mask (row-major `[batch, n_steps]`, true = valid; `None` = all valid).
#[derive(Debug, Clone)]
pub(crate) struct FusedSpec {
    /// The cell.
    pub cell: Kind,
    /// The kernel options.
    pub config: KernelConfig,
    /// Rows.
    pub batch: usize,
    /// Time steps.
    pub n_steps: usize,
    /// The mask, shared with the kept backward state.
    pub mask: Option<Arc<[bool]>>,
}

impl FusedSpec {
    /// The shape of the packed output: `[batch, n_steps + n_states, d_hidden]`, or one of the
    /// two parts alone ([`KernelConfig::outputs`]).
    pub(crate) fn packed_shape(&self) -> [usize; 3] {
        let rows = self
            .config
            .outputs
            .rows_per_row(self.n_steps, self.cell.n_states());
        [self.batch, rows, self.config.d_hidden]
    }

    /// Elements of the packed output.
    fn packed_len(&self) -> usize {
        self.packed_shape().iter().product()
    }
}

/// One masked recurrent loop: inputs `[x, kernel, recurrent_kernel, bias, h0, c0]`, output
/// the packed `[batch, rows, d_hidden]` ([`FusedSpec::packed_shape`]).
#[derive(Debug, Clone)]
pub(crate) struct RecurrentOp {
    pub spec: FusedSpec,
}

impl FusedOp<6> for RecurrentOp {
    const NAME: &'static str = "the fused recurrent loop";
    type Saved<T: HostFloat> = Workspace<T>;

    fn forward<T: HostFloat>(
        &self,
        inputs: [HostData<T>; 6],
        keep: bool,
    ) -> Forward<T, Workspace<T>> {
        let (values, saved) = run_forward(&self.spec, &inputs, keep);
        Forward {
            values,
            shape: Shape::new(self.spec.packed_shape()),
            saved,
        }
    }

    fn backward<T: HostFloat>(
        &self,
        args: BackwardInputs<T, Workspace<T>, 6>,
    ) -> [Option<Vec<T>>; 6] {
        let input_gradient = args.wanted[0];
        let grads = run_backward(&self.spec, args.saved, args.grad.as_slice(), input_gradient);
        into_parents(grads, input_gradient)
    }
}

/// Two masked loops of the same cell and output shape, side by side on two threads with the
/// one-thread kernel: inputs the first call's six tensors then the second's, output both
/// packed outputs stacked, `[2, batch, rows, d_hidden]`.
#[derive(Debug, Clone)]
pub(crate) struct RecurrentPairOp {
    pub specs: [FusedSpec; 2],
}

impl FusedOp<12> for RecurrentPairOp {
    const NAME: &'static str = "the fused recurrent pair";
    type Saved<T: HostFloat> = [Workspace<T>; 2];

    fn forward<T: HostFloat>(
        &self,
        inputs: [HostData<T>; 12],
        keep: bool,
    ) -> Forward<T, [Workspace<T>; 2]> {
        let [first, second] = &self.specs;
        let shape = first.packed_shape();
        assert_eq!(
            shape,
            second.packed_shape(),
            "paired fused calls must have the same output shape"
        );
        let [x1, k1, r1, b1, h1, c1, x2, k2, r2, b2, h2, c2] = inputs;
        let (a, b) = ([x1, k1, r1, b1, h1, c1], [x2, k2, r2, b2, h2, c2]);
        let ((mut values, ws_first), (values_second, ws_second)) = padless_kernels::side_by_side(
            || run_forward(first, &a, keep),
            || run_forward(second, &b, keep),
        );
        values.extend(values_second);
        let [batch, rows, d_hidden] = shape;
        Forward {
            values,
            shape: Shape::new([2, batch, rows, d_hidden]),
            saved: ws_first.zip(ws_second).map(|(a, b)| [a, b]),
        }
    }

    fn backward<T: HostFloat>(
        &self,
        args: BackwardInputs<T, [Workspace<T>; 2], 12>,
    ) -> [Option<Vec<T>>; 12] {
        let [first, second] = &self.specs;
        let [ws_first, ws_second] = args.saved;
        let input_gradients = [args.wanted[0], args.wanted[6]];
        let (d_first, d_second) = args.grad.as_slice().split_at(first.packed_len());
        let (grads_first, grads_second) = padless_kernels::side_by_side(
            || run_backward(first, ws_first, d_first, input_gradients[0]),
            || run_backward(second, ws_second, d_second, input_gradients[1]),
        );
        let [a, b] = [
            into_parents(grads_first, input_gradients[0]),
            into_parents(grads_second, input_gradients[1]),
        ];
        let mut all = a.into_iter().chain(b);
        std::array::from_fn(|_| all.next().flatten())
    }
}

/// A call's gradients in parent order (`x`, kernel, recurrent kernel, bias, `h0`, `c0`);
/// `None` where a parent gets none (the input without `input_gradient`, no bias, no second
/// state).
fn into_parents<T>(grads: Gradients<T>, input_gradient: bool) -> [Option<Vec<T>>; 6] {
    let mut initial = grads.d_initial.into_iter();
    [
        input_gradient.then_some(grads.d_x),
        Some(grads.d_kernel),
        Some(grads.d_recurrent_kernel),
        grads.d_bias,
        initial.next(),
        initial.next(),
    ]
}

/// Runs the kernel over one call's inputs (in parent order; `c0` is read only by a cell with
/// two states): the packed output and, with `keep`, the workspace. Plain host work, so two
/// calls may run on two threads.
fn run_forward<T: HostFloat>(
    spec: &FusedSpec,
    inputs: &[HostData<T>; 6],
    keep: bool,
) -> (Vec<T>, Option<Workspace<T>>) {
    let [x, kernel, recurrent_kernel, bias, initial @ ..] = inputs;
    let initial: Vec<&[T]> = initial[..spec.cell.n_states()]
        .iter()
        .map(HostData::as_slice)
        .collect();
    let seq = Sequences {
        x: x.as_slice(),
        batch: spec.batch,
        n_steps: spec.n_steps,
        mask: spec.mask.as_deref(),
        initial: &initial,
    };
    let weights = Weights {
        kernel: kernel.as_slice(),
        recurrent_kernel: recurrent_kernel.as_slice(),
        bias: Some(bias.as_slice()),
    };
    let mut out = vec![T::ZERO; spec.packed_len()];
    fn run<C: CellKind, T: Real>(
        kernel: RecurrentKernel<C>,
        seq: &Sequences<'_, T>,
        weights: &Weights<'_, T>,
        out: &mut [T],
        keep: bool,
    ) -> Option<Workspace<T>> {
        if keep {
            Some(kernel.forward(seq, weights, out))
        } else {
            kernel.infer(seq, weights, out);
            None
        }
    }
    let cfg = spec.config;
    let ws = match spec.cell {
        Kind::Lstm => run(
            RecurrentKernel::<Lstm>::new(cfg),
            &seq,
            &weights,
            &mut out,
            keep,
        ),
        Kind::Gru => run(
            RecurrentKernel::<Gru>::new(cfg),
            &seq,
            &weights,
            &mut out,
            keep,
        ),
        Kind::SimpleRnn => run(
            RecurrentKernel::<SimpleRnn>::new(cfg),
            &seq,
            &weights,
            &mut out,
            keep,
        ),
    };
    (out, ws)
}

/// The kernel's backward pass from the gradient of the packed output (plain host work, like
/// [`run_forward`]); without `input_gradient` the input's gradient is skipped (`d_x` empty).
fn run_backward<T: Real>(
    spec: &FusedSpec,
    ws: Workspace<T>,
    d_out: &[T],
    input_gradient: bool,
) -> Gradients<T> {
    fn run<C: CellKind, T: Real>(
        kernel: RecurrentKernel<C>,
        ws: Workspace<T>,
        d_out: &[T],
        input_gradient: bool,
    ) -> Gradients<T> {
        if input_gradient {
            kernel.backward(ws, d_out)
        } else {
            kernel.backward_weights(ws, d_out)
        }
    }
    let cfg = spec.config;
    match spec.cell {
        Kind::Lstm => run(RecurrentKernel::<Lstm>::new(cfg), ws, d_out, input_gradient),
        Kind::Gru => run(RecurrentKernel::<Gru>::new(cfg), ws, d_out, input_gradient),
        Kind::SimpleRnn => run(
            RecurrentKernel::<SimpleRnn>::new(cfg),
            ws,
            d_out,
            input_gradient,
        ),
    }
}
