//! Fused, packed recurrent kernels on plain slices: the forward pass and the backward pass
//! (BPTT) of an LSTM, a GRU (`reset_after`, Keras layout) or a SimpleRNN (tanh) over a whole
//! masked batch of sequences in one call.
//!
//! What makes them fast:
//! - **Packing** ([`Packing`]): rows are sorted by their number of valid steps, so each packed
//!   step multiplies only the rows still running. Any mask works: holes inside a row carry
//!   the state (the row simply skips them), pre- and post-padding alike, rows with no valid
//!   step. Time scales with the number of valid steps, not with `batch * n_steps`.
//! - **Large products**: the input projection of all valid steps is one matrix product per
//!   gate, and the weight and input gradients are large products too; only `h · U` and its
//!   transpose run per step, by the recurrent weights packed once per call. Every `f32`
//!   product runs on a register-tile microkernel for the CPU's instruction set ([`Isa`]:
//!   AVX-512 or AVX2 + FMA, chosen at run time, forced with `PADLESS_ISA`, [`set_isa`] or
//!   [`with_isa`]); `f64` products, and those of CPUs with neither, go through the `gemm`
//!   crate.
//! - **Fused cells** ([`CellKind`]): gate non-linearities and the state update in one
//!   branch-free pass per row, vectorised through run-time SIMD dispatch (the same
//!   instruction set).
//! - **A thread pair**: with `threads = 2` each thread runs every other row of each packed
//!   step, all units, with no meeting inside the loop; above a recurrent matrix of 1 MB
//!   (where a core's cache cannot hold all of it) each thread owns half of the hidden units
//!   (all their gates) instead and the two meet once per step. The large products are split
//!   by columns either way.
//! - **Constant input** ([`KernelConfig::constant_input`]): a layer fed by `RepeatVector`
//!   projects its input once per row and adds that row to each step's gates.
//! - **Opt-in bfloat16 products** ([`set_bf16_products`]): on CPUs with Intel AMX (Xeon of
//!   the 4th generation on), every `f32` product above runs on the tile unit with operands
//!   rounded to bfloat16 and sums in `f32`: several times the `f32` rate, about three
//!   significant digits per product; on CPUs with AVX512-BF16 but no tiles (AMD Zen 4 on),
//!   the same operands run on `vdpbf16ps` (up to twice the `f32` rate). Off by default;
//!   `f64` never uses it, nor does an instruction set other than AVX-512.
//!
//! The masking rules are padless' contract (`docs/SEMANTICS.md`): a masked step leaves the
//! states unchanged, its output is the carried `h` (or 0 with `zero_output_for_mask`), the
//! final states are those after each row's last valid step, and masked inputs are never
//! read and get a gradient of exactly 0. [`reference`](mod@reference) is the naive padded loop the kernels
//! are tested against.
//!
//! The modules: `threads` (the thread pair, its helper thread and barrier, the buffers its
//! threads share), `gemm` (the products: the `gemm` crate's wrapper, the packed panels,
//! a microkernel per instruction set, the bfloat16 units), `rnn` (the recurrent kernels:
//! entry point, packing, forward, backward, thread blocks, cells, [`reference`](mod@reference)) and `ops`
//! (dense, Adam, softmax, `tanh`, a Transformer block's row passes); `isa` chooses the instruction set, `real` the element
//! types.
//!
//! # Example
//! ```
//! use padless_kernels::{KernelConfig, LstmKernel, Sequences, Weights};
//!
//! let (batch, n_steps, d_input, d_hidden) = (2, 3, 2, 4);
//! let kernel = LstmKernel::new(KernelConfig::new(d_input, d_hidden));
//! let x = vec![0.5f32; batch * n_steps * d_input];
//! // Row 0 has a hole at step 1; row 1 is post-padded to length 2.
//! let mask = [true, false, true, true, true, false];
//! let w_in = vec![0.1f32; d_input * 4 * d_hidden];
//! let w_rec = vec![0.05f32; d_hidden * 4 * d_hidden];
//! let seq = Sequences { x: &x, batch, n_steps, mask: Some(&mask), initial: &[] };
//! let weights = Weights { kernel: &w_in, recurrent_kernel: &w_rec, bias: None };
//!
//! let mut out = vec![0.0f32; kernel.output_len(batch, n_steps)];
//! let workspace = kernel.forward(&seq, &weights, &mut out);
//! // Both rows ran two valid steps from the same inputs: the same final h.
//! let per_row = (n_steps + 2) * d_hidden;
//! let final_h = |row: usize| &out[row * per_row + n_steps * d_hidden..][..d_hidden];
//! assert_eq!(final_h(0), final_h(1));
//! // The hole carries row 0's output from step 0.
//! assert_eq!(out[..d_hidden], out[d_hidden..2 * d_hidden]);
//!
//! // Backward from a loss on the final h of row 0.
//! let mut d_out = vec![0.0f32; out.len()];
//! d_out[n_steps * d_hidden..(n_steps + 1) * d_hidden].fill(1.0);
//! let grads = kernel.backward(workspace, &d_out);
//! // The masked input step of row 0 gets exactly 0.
//! assert!(grads.d_x[d_input..2 * d_input].iter().all(|&g| g == 0.0));
//! assert!(grads.d_recurrent_kernel.iter().any(|&g| g != 0.0));
//! ```

mod gemm;
mod isa;
mod ops;
mod real;
mod rnn;
mod threads;

pub use gemm::bf16::{bf16_products, bf16_products_available, set_bf16_products};
pub use isa::{Isa, isa, set_isa, with_isa};
pub use ops::adam::{AdamStep, adam_update, norm_clip_scale};
pub use ops::attention;
pub use ops::attention::{
    AttentionConfig, AttentionDropout, AttentionGradients, AttentionOutput, PackedQkv,
    attention_backward, attention_forward,
};
pub use ops::dense::{
    DenseGradients, dense_backward, dense_forward, linear_backward, linear_forward,
};
pub use ops::rows::{
    AddNormGradients, AddNormOutput, ElementDropout, RowNorm, add_norm_backward, add_norm_forward,
    dropout_backward, dropout_forward,
};
pub use ops::softmax::{softmax_backward_rows_in_place, softmax_rows_in_place};
pub use ops::tanh::{tanh_backward_in_place, tanh_in_place};
pub use real::Real;
pub use rnn::cells::{BackwardRow, CellKind, ForwardRow, Gru, Lstm, SimpleRnn};
pub use rnn::kernel::{
    Gradients, GruKernel, KernelConfig, LstmKernel, Outputs, RecurrentKernel, Sequences,
    SimpleRnnKernel, Weights, Workspace,
};
pub use rnn::packing::Packing;
pub use rnn::reference;
pub use threads::side_by_side;
