//! [`RecurrentKernel`]: the public entry point, its configuration and the buffers it takes
//! and returns.

use std::marker::PhantomData;

use crate::real::Real;
use crate::rnn::cells::CellKind;
use crate::rnn::packing::Packing;

/// Options of a kernel call (Keras names where Keras has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelConfig {
    /// Input features per step.
    pub d_input: usize,
    /// Hidden units.
    pub d_hidden: usize,
    /// Threads: 1, or 2 for the thread pair (each runs half of the rows of every step, or
    /// half of the hidden units for a large layer). More than `d_hidden` is clamped.
    pub threads: usize,
    /// Output 0 at masked steps instead of the carried `h`.
    pub zero_output_for_mask: bool,
    /// Process the steps from last to first; outputs come in processing order.
    pub go_backwards: bool,
    /// The input is the same at every step (`[batch, d_input]`, as behind a `RepeatVector`):
    /// its projection is computed once per row instead of once per step.
    pub constant_input: bool,
    /// Which parts of the result the output buffer holds (default [`Outputs::All`]).
    pub outputs: Outputs,
}

/// Which parts of a call's result the output buffer holds, per row: the step outputs
/// (`n_steps * d_hidden`), the final states (`n_states * d_hidden`), or both, in that order.
/// A caller that reads only one part asks for it alone: the other is never written, and its
/// gradient is not read (it is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outputs {
    /// Step outputs, then final states: `[batch, n_steps + n_states, d_hidden]`.
    #[default]
    All,
    /// Step outputs only: `[batch, n_steps, d_hidden]` (a layer returning sequences).
    Sequence,
    /// Final states only: `[batch, n_states, d_hidden]` (a layer returning its last output).
    States,
}

impl Outputs {
    /// Rows of `d_hidden` values per batch row: `n_steps`, `n_states` or their sum.
    pub fn rows_per_row(self, n_steps: usize, n_states: usize) -> usize {
        match self {
            Outputs::All => n_steps + n_states,
            Outputs::Sequence => n_steps,
            Outputs::States => n_states,
        }
    }

    /// Whether the step outputs are written.
    pub fn has_sequence(self) -> bool {
        self != Outputs::States
    }

    /// Whether the final states are written.
    pub fn has_states(self) -> bool {
        self != Outputs::Sequence
    }

    /// The row (of `d_hidden` values, within a batch row) where the final states start:
    /// after the `n_steps` step outputs when those are written, else 0.
    pub fn states_at(self, n_steps: usize) -> usize {
        if self.has_sequence() { n_steps } else { 0 }
    }
}

impl KernelConfig {
    /// One thread, outputs carried over masked steps, forward in time, an input per step.
    pub fn new(d_input: usize, d_hidden: usize) -> Self {
        KernelConfig {
            d_input,
            d_hidden,
            threads: 1,
            zero_output_for_mask: false,
            go_backwards: false,
            constant_input: false,
            outputs: Outputs::All,
        }
    }
}

/// A batch of sequences to run.
#[derive(Debug, Clone, Copy)]
pub struct Sequences<'a, T> {
    /// Inputs, row-major `[batch, n_steps, d_input]`, or `[batch, d_input]` with
    /// [`KernelConfig::constant_input`]. Values at masked steps are never read.
    pub x: &'a [T],
    /// Rows.
    pub batch: usize,
    /// Time steps.
    pub n_steps: usize,
    /// `[batch, n_steps]`, true = valid; `None`: every step is valid.
    pub mask: Option<&'a [bool]>,
    /// Initial states (`[h]`, or `[h, c]` for an LSTM), `[batch, d_hidden]` each; empty:
    /// zeros.
    pub initial: &'a [&'a [T]],
}

/// Weights in Keras layout.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a, T> {
    /// `[d_input, n_gates * d_hidden]`.
    pub kernel: &'a [T],
    /// `[d_hidden, n_gates * d_hidden]`.
    pub recurrent_kernel: &'a [T],
    /// `[n_gates * d_hidden]`; for the GRU `[2, 3 d_hidden]` (input bias, recurrent bias).
    pub bias: Option<&'a [T]>,
}

/// What the forward pass saves for the backward pass: the packing, the weights (Keras
/// layout), the packed inputs, the activated gates and the packed states.
#[derive(Debug, Clone)]
pub struct Workspace<T> {
    pub(crate) config: KernelConfig,
    pub(crate) packing: Packing,
    pub(crate) n_blocks: usize,
    pub(crate) has_bias: bool,
    pub(crate) kernel: Vec<T>,
    pub(crate) recurrent_kernel: Vec<T>,
    pub(crate) inputs: Vec<T>,
    pub(crate) gates: Vec<T>,
    pub(crate) recurrent: Vec<T>,
    pub(crate) h_prev: Vec<T>,
    pub(crate) h: Vec<T>,
    pub(crate) c: Vec<T>,
    pub(crate) c_initial: Vec<T>,
}

impl<T> Workspace<T> {
    /// The packing of the batch the forward pass ran.
    pub fn packing(&self) -> &Packing {
        &self.packing
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let buffers = [
            &self.kernel,
            &self.recurrent_kernel,
            &self.inputs,
            &self.gates,
            &self.recurrent,
            &self.h_prev,
            &self.h,
            &self.c,
            &self.c_initial,
        ];
        buffers.iter().map(|b| b.len()).sum::<usize>() * size_of::<T>()
    }
}

/// The gradients of a backward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    /// Of the inputs, the shape of [`Sequences::x`]; exactly 0 at masked steps. Empty from
    /// [`RecurrentKernel::backward_weights`].
    pub d_x: Vec<T>,
    /// Of the kernel, `[d_input, n_gates * d_hidden]`.
    pub d_kernel: Vec<T>,
    /// Of the recurrent kernel, `[d_hidden, n_gates * d_hidden]`.
    pub d_recurrent_kernel: Vec<T>,
    /// Of the bias (its shape), if the forward pass had one.
    pub d_bias: Option<Vec<T>>,
    /// Of the initial states, `[batch, d_hidden]` each.
    pub d_initial: Vec<Vec<T>>,
}

/// A fused recurrent layer over whole masked sequences: [`LstmKernel`], [`GruKernel`] or
/// [`SimpleRnnKernel`].
///
/// # Shapes
/// Inputs as [`Sequences`]; weights as [`Weights`]; the output buffer is
/// `[batch, n_steps + n_states, d_hidden]`: each step's output in processing order, then the
/// final states (`h`, then `c` for an LSTM); or one of the two parts alone
/// ([`KernelConfig::outputs`]).
///
/// # Masking
/// A masked step leaves the states unchanged. Its output is the carried `h` (the initial `h`
/// before the row's first valid step), or 0 with `zero_output_for_mask`. The final states are
/// those after the row's last valid step (the initial states for a row with no valid step).
/// Inputs at masked steps are never read and get a gradient of exactly 0.
///
/// # Panics
/// If a buffer's length does not match its shape.
#[derive(Debug, Clone, Copy)]
pub struct RecurrentKernel<C> {
    /// The options.
    pub config: KernelConfig,
    cell: PhantomData<C>,
}

/// The fused LSTM.
pub type LstmKernel = RecurrentKernel<crate::rnn::cells::Lstm>;
/// The fused GRU (`reset_after`).
pub type GruKernel = RecurrentKernel<crate::rnn::cells::Gru>;
/// The fused SimpleRNN (tanh).
pub type SimpleRnnKernel = RecurrentKernel<crate::rnn::cells::SimpleRnn>;

impl<C: CellKind> RecurrentKernel<C> {
    /// A kernel with these options.
    pub fn new(config: KernelConfig) -> Self {
        RecurrentKernel {
            config,
            cell: PhantomData,
        }
    }

    /// States per row (`2` for an LSTM).
    pub fn n_states(&self) -> usize {
        C::N_STATES
    }

    /// The length of the output buffer: `batch * (n_steps + n_states) * d_hidden` for
    /// [`Outputs::All`] (see [`KernelConfig::outputs`] for the others).
    pub fn output_len(&self, batch: usize, n_steps: usize) -> usize {
        batch * self.config.outputs.rows_per_row(n_steps, C::N_STATES) * self.config.d_hidden
    }

    /// The training forward pass: writes the outputs into `out` and returns what
    /// [`RecurrentKernel::backward`] needs.
    pub fn forward<T: Real>(
        &self,
        seq: &Sequences<'_, T>,
        weights: &Weights<'_, T>,
        out: &mut [T],
    ) -> Workspace<T> {
        crate::rnn::forward::forward::<C, T>(&self.config, seq, weights, out, true)
    }

    /// The inference forward pass: the same outputs, nothing kept.
    pub fn infer<T: Real>(&self, seq: &Sequences<'_, T>, weights: &Weights<'_, T>, out: &mut [T]) {
        drop(crate::rnn::forward::forward::<C, T>(
            &self.config,
            seq,
            weights,
            out,
            false,
        ));
    }

    /// The backward pass (BPTT) from the gradient of the output buffer (same layout as `out`).
    pub fn backward<T: Real>(&self, workspace: Workspace<T>, d_out: &[T]) -> Gradients<T> {
        crate::rnn::backward::backward::<C, T>(workspace, d_out, true)
    }

    /// [`RecurrentKernel::backward`] without the input gradient: [`Gradients::d_x`] comes
    /// back empty and its product (`d_gates · K^T` over every valid step) is never computed.
    /// For a layer whose input needs no gradient (data, not another layer's output).
    pub fn backward_weights<T: Real>(&self, workspace: Workspace<T>, d_out: &[T]) -> Gradients<T> {
        crate::rnn::backward::backward::<C, T>(workspace, d_out, false)
    }
}
