//! The fused recurrent path: on the CPU (flex) backend, a recurrent layer's whole masked loop
//! runs as one burn operation backed by [`padless_kernels`], with its own backward pass.
//!
//! [`masked_loop`](super::recurrent) tries this path first and falls back to the composite
//! per-step loop for other backends, other float types, cells without fused kernels, or when
//! the fused operations are switched off ([`cpu::set_fused_enabled`],
//! [`cpu::with_composite`]). Both paths follow the same contract, and the tests run the fused
//! path against the composite one. The operation itself, on the host, is `op.rs`.

mod op;

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Dispatch;
use burn::tensor::{Device, Tensor};
use padless_kernels::{KernelConfig, Outputs};

use crate::cpu;
use crate::mask::Mask;
use crate::ops;
use op::{FusedSpec, RecurrentOp, RecurrentPairOp};

static CALLS: AtomicUsize = AtomicUsize::new(0);
static PAIR_CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many recurrent loops have run fused in this process (lets tests prove the path ran).
pub fn fused_calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

/// How many pairs of recurrent loops (`Bidirectional` halves) have run as one fused
/// operation, side by side, in this process (each pair also counts 2 in [`fused_calls`]).
pub fn fused_pair_calls() -> usize {
    PAIR_CALLS.load(Ordering::Relaxed)
}

/// A cell's weights as the fused kernels take them, in Keras layout.
#[derive(Debug, Clone)]
pub struct FusedParts {
    /// Which kernel.
    pub cell: crate::rnn::CellKind,
    /// `[d_input, n_gates * d_hidden]`.
    pub kernel: Tensor<2>,
    /// `[d_hidden, n_gates * d_hidden]`.
    pub recurrent_kernel: Tensor<2>,
    /// The bias flattened (`[n_gates * d_hidden]`; the GRU's `[2, 3 d_hidden]` as `[6 d_hidden]`).
    pub bias: Option<Tensor<1>>,
}

/// What a fused loop reads.
pub(crate) enum FusedInput<'a> {
    /// A sequence `[batch, time, d_input]` with its mask.
    Sequence(&'a Tensor<3>, Option<&'a Mask>),
    /// One vector per row `[batch, d_input]`, the input of every one of `n_steps` steps (a
    /// `RepeatVector` output): projected once per row; with a mask of the steps to compute.
    Repeated(&'a Tensor<2>, usize, Option<&'a Mask>),
}

/// A fused call ready to run: the six tensors in parent order and the spec.
struct Call {
    tensors: [DispatchTensor; 6],
    spec: FusedSpec,
}

type DispatchTensor = burn::backend::tensor::FloatTensor<Dispatch>;

impl Call {
    /// The call for `parts` over `input`, or `None` off the flex backend or for a float type
    /// without kernels.
    fn new(
        parts: FusedParts,
        input: FusedInput<'_>,
        initial: &[Tensor<2>],
        zero_output_for_mask: bool,
        threads: usize,
        outputs: Outputs,
    ) -> Option<Call> {
        let (x, batch, n_steps, d_input, mask) = match input {
            FusedInput::Sequence(x, mask) => {
                let [batch, n_steps, d_input] = x.dims();
                (x.clone().into_dispatch(), batch, n_steps, d_input, mask)
            }
            FusedInput::Repeated(x, n_steps, mask) => {
                let [batch, d_input] = x.dims();
                (x.clone().into_dispatch(), batch, n_steps, d_input, mask)
            }
        };
        let device: Device = parts.kernel.device();
        if !ops::applies(&device, parts.kernel.dtype()) {
            return None;
        }
        let d_hidden = parts.recurrent_kernel.dims()[0];
        let n_bias = if parts.cell == crate::rnn::CellKind::Gru {
            6
        } else {
            parts.cell.n_gates()
        } * d_hidden;
        let bias = parts
            .bias
            .unwrap_or_else(|| Tensor::zeros([n_bias], &device));
        let spec = FusedSpec {
            cell: parts.cell,
            config: KernelConfig {
                d_input,
                d_hidden,
                threads,
                zero_output_for_mask,
                go_backwards: false,
                constant_input: matches!(input, FusedInput::Repeated(..)),
                outputs,
            },
            batch,
            n_steps,
            mask: mask.map(|m| m.to_vec().into()),
        };
        let tensors = [
            x,
            parts.kernel.into_dispatch(),
            parts.recurrent_kernel.into_dispatch(),
            bias.into_dispatch(),
            initial[0].clone().into_dispatch(),
            initial
                .get(1)
                .unwrap_or(&initial[0])
                .clone()
                .into_dispatch(),
        ];
        Some(Call { tensors, spec })
    }
}

/// A loop's results: the sequence `[batch, time, d_hidden]` and the final states `[batch,
/// d_hidden]` each, where they were asked for.
pub(crate) struct LoopParts {
    pub sequence: Option<Tensor<3>>,
    pub states: Option<Vec<Tensor<2>>>,
}

impl LoopParts {
    /// Both parts (the composite loop and `Outputs::All` have them).
    pub fn both(self) -> (Tensor<3>, Vec<Tensor<2>>) {
        (
            self.sequence.expect("the loop ran with its sequence"),
            self.states.expect("the loop ran with its states"),
        )
    }
}

/// Splits a packed output (`[batch, rows, d_hidden]`, the rows as `spec.config.outputs`
/// says) into the sequence and the final states. A part asked for alone is the output
/// itself or a small slice of it: no slice of a large tensor, whose backward pass would
/// allocate and fill a zero gradient of the whole output.
fn unpack(packed: Tensor<3>, spec: &FusedSpec) -> LoopParts {
    let (batch, n_steps, d_hidden) = (spec.batch, spec.n_steps, spec.config.d_hidden);
    let outputs = spec.config.outputs;
    let states_at = outputs.states_at(n_steps);
    let states = outputs.has_states().then(|| {
        (0..spec.cell.n_states())
            .map(|s| {
                let at = states_at + s;
                packed
                    .clone()
                    .slice([0..batch, at..at + 1, 0..d_hidden])
                    .reshape([batch, d_hidden])
            })
            .collect()
    });
    let sequence = match outputs {
        Outputs::Sequence => Some(packed),
        Outputs::All => Some(packed.slice([0..batch, 0..n_steps, 0..d_hidden])),
        Outputs::States => None,
    };
    LoopParts { sequence, states }
}

/// The masked loop as one fused operation, or `None` where the fused path does not apply.
/// Same contract as the composite loop, for the parts `outputs` asks for.
pub(crate) fn try_fused_loop(
    parts: Option<FusedParts>,
    input: FusedInput<'_>,
    initial: &[Tensor<2>],
    zero_output_for_mask: bool,
    outputs: Outputs,
) -> Option<LoopParts> {
    let parts = parts.filter(|_| cpu::fused_enabled())?;
    let call = Call::new(
        parts,
        input,
        initial,
        zero_output_for_mask,
        cpu::threads(),
        outputs,
    )?;
    CALLS.fetch_add(1, Ordering::Relaxed);
    let spec = call.spec;
    let packed = ops::apply(RecurrentOp { spec: spec.clone() }, call.tensors);
    Some(unpack(packed, &spec))
}

/// One direction of a [`try_fused_pair`]: the cell's weights, its input sequence and its
/// initial states.
pub(crate) struct PairHalf<'a> {
    pub parts: Option<FusedParts>,
    pub x: &'a Tensor<3>,
    pub initial: &'a [Tensor<2>],
}

/// Two masked loops of the same cell over same-shaped sequences (a `Bidirectional` layer's
/// directions) as one fused operation, each direction on its own thread with the one-thread
/// kernel; `None` where the fused path does not apply or only one kernel thread is allowed.
/// Each result is what [`try_fused_loop`] returns for that half.
pub(crate) fn try_fused_pair(
    first: PairHalf<'_>,
    second: PairHalf<'_>,
    mask: Option<&Mask>,
    zero_output_for_mask: bool,
) -> Option<[(Tensor<3>, Vec<Tensor<2>>); 2]> {
    if !cpu::fused_enabled() || cpu::threads() < 2 || first.x.dims() != second.x.dims() {
        return None;
    }
    let (parts_first, parts_second) = (first.parts?, second.parts?);
    let same_shape = parts_first.cell == parts_second.cell
        && parts_first.recurrent_kernel.dims() == parts_second.recurrent_kernel.dims()
        && parts_first.kernel.dtype() == parts_second.kernel.dtype();
    if !same_shape {
        return None;
    }
    let call = |parts, x, initial| {
        Call::new(
            parts,
            FusedInput::Sequence(x, mask),
            initial,
            zero_output_for_mask,
            1,
            Outputs::All,
        )
    };
    let a = call(parts_first, first.x, first.initial)?;
    let b = call(parts_second, second.x, second.initial)?;
    CALLS.fetch_add(2, Ordering::Relaxed);
    PAIR_CALLS.fetch_add(1, Ordering::Relaxed);
    let [x1, k1, r1, b1, h1, c1] = a.tensors;
    let [x2, k2, r2, b2, h2, c2] = b.tensors;
    let tensors = [x1, k1, r1, b1, h1, c1, x2, k2, r2, b2, h2, c2];
    let specs = [a.spec, b.spec];
    let packed: Tensor<4> = ops::apply(
        RecurrentPairOp {
            specs: specs.clone(),
        },
        tensors,
    );
    let [_, batch, rows, d_hidden] = packed.dims();
    let half = |i: usize| {
        packed
            .clone()
            .slice([i..i + 1, 0..batch, 0..rows, 0..d_hidden])
            .reshape([batch, rows, d_hidden])
    };
    Some([
        unpack(half(0), &specs[0]).both(),
        unpack(half(1), &specs[1]).both(),
    ])
}
