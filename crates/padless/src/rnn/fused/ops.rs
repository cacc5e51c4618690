//! [`FusedRecurrentBackend`]: the fused recurrent kernels as a burn backend extension, and
//! its implementation for the flex CPU backend (inference: nothing is saved).

use std::sync::Arc;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use padless_kernels::KernelConfig;

use super::{host, pair};
use crate::rnn::CellKind;

/// Everything about a fused call that is not a tensor: the cell, the kernel options, the
/// batch shape and the mask (row-major `[batch, n_steps]`, true = valid; `None` = all valid).
#[derive(Debug, Clone)]
pub struct FusedSpec {
    /// The cell.
    pub cell: CellKind,
    /// The kernel options.
    pub config: KernelConfig,
    /// Rows.
    pub batch: usize,
    /// Time steps.
    pub n_steps: usize,
    /// The mask, shared with the saved backward state.
    pub mask: Option<Arc<[bool]>>,
}

/// A recurrent layer over a whole masked batch in one operation, with its own backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait FusedRecurrentBackend: Backend {
    /// Runs the cell over `x` (`[batch, n_steps, d_input]`, or `[batch, d_input]` with
    /// `constant_input`) with weights in Keras layout (`kernel [d_input, n_gates d_hidden]`,
    /// `recurrent_kernel [d_hidden, n_gates d_hidden]`, `bias` flattened; zeros for a cell
    /// without bias) and initial states `[batch, d_hidden]` (`c0` is ignored by a cell with one
    /// state; pass `h0` again). Returns
    /// `[batch, n_steps + n_states, d_hidden]`: every step's output, then the final states.
    /// Masking as [`padless_kernels::RecurrentKernel`].
    fn fused_recurrent(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        recurrent_kernel: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        spec: FusedSpec,
    ) -> FloatTensor<Self>;

    /// Two independent fused calls (`first_*` with `specs[0]`, `second_*` with `specs[1]`,
    /// each as [`FusedRecurrentBackend::fused_recurrent`] takes them) run side by side, one
    /// thread each, as a `Bidirectional` layer's two directions are. Both must have the same
    /// batch, steps, hidden units and cell. Returns both packed outputs stacked:
    /// `[2, batch, n_steps + n_states, d_hidden]`.
    #[allow(clippy::too_many_arguments)]
    fn fused_recurrent_pair(
        first_x: FloatTensor<Self>,
        first_kernel: FloatTensor<Self>,
        first_recurrent_kernel: FloatTensor<Self>,
        first_bias: FloatTensor<Self>,
        first_h0: FloatTensor<Self>,
        first_c0: FloatTensor<Self>,
        second_x: FloatTensor<Self>,
        second_kernel: FloatTensor<Self>,
        second_recurrent_kernel: FloatTensor<Self>,
        second_bias: FloatTensor<Self>,
        second_h0: FloatTensor<Self>,
        second_c0: FloatTensor<Self>,
        specs: [FusedSpec; 2],
    ) -> FloatTensor<Self>;
}

impl FusedRecurrentBackend for Flex {
    fn fused_recurrent(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        recurrent_kernel: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        spec: FusedSpec,
    ) -> FloatTensor<Self> {
        let tensors = [x, kernel, recurrent_kernel, bias, h0, c0];
        let inputs = host::Inputs::<Flex>::new(tensors, spec.cell.n_states());
        host::forward(inputs, &spec, false).0
    }

    fn fused_recurrent_pair(
        first_x: FloatTensor<Self>,
        first_kernel: FloatTensor<Self>,
        first_recurrent_kernel: FloatTensor<Self>,
        first_bias: FloatTensor<Self>,
        first_h0: FloatTensor<Self>,
        first_c0: FloatTensor<Self>,
        second_x: FloatTensor<Self>,
        second_kernel: FloatTensor<Self>,
        second_recurrent_kernel: FloatTensor<Self>,
        second_bias: FloatTensor<Self>,
        second_h0: FloatTensor<Self>,
        second_c0: FloatTensor<Self>,
        specs: [FusedSpec; 2],
    ) -> FloatTensor<Self> {
        let n_states = specs[0].cell.n_states();
        let first = [
            first_x,
            first_kernel,
            first_recurrent_kernel,
            first_bias,
            first_h0,
            first_c0,
        ];
        let second = [
            second_x,
            second_kernel,
            second_recurrent_kernel,
            second_bias,
            second_h0,
            second_c0,
        ];
        let inputs = [first, second].map(|six| host::Inputs::<Flex>::new(six, n_states));
        pair::forward(inputs, &specs, false).0
    }
}
