//! The fused recurrent path: on the CPU (flex) backend, a recurrent layer's whole masked loop
//! runs as one burn operation backed by [`padless_kernels`], with its own backward pass.
//!
//! [`masked_loop`](super::recurrent) tries this path first and falls back to the composite
//! per-step loop for other backends, other float types, cells without fused kernels, or when
//! the fused path is switched off ([`set_fused_enabled`], [`with_composite`]). Both paths
//! follow the same contract, and the tests run the fused path against the composite one.

mod autodiff;
mod host;
mod ops;

use std::cell::Cell as StdCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{DType, Device, Tensor};
use padless_kernels::KernelConfig;

use crate::mask::Mask;
pub use ops::{FusedCell, FusedRecurrentBackend, FusedSpec};

static ENABLED: AtomicBool = AtomicBool::new(true);
static THREADS: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COMPOSITE_HERE: StdCell<bool> = const { StdCell::new(false) };
}

/// Switches the fused path on or off for the whole process (default on).
pub fn set_fused_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Runs `f` with the composite loop on this thread (for comparisons and tests).
pub fn with_composite<R>(f: impl FnOnce() -> R) -> R {
    let before = COMPOSITE_HERE.with(|c| c.replace(true));
    let result = f();
    COMPOSITE_HERE.with(|c| c.set(before));
    result
}

/// Whether a recurrent layer called on this thread now would try the fused path.
pub fn fused_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed) && !COMPOSITE_HERE.with(StdCell::get)
}

/// Sets the threads of the fused kernels: 1, or 2 for the thread pair; 0 restores the
/// default (2 when the machine has 2 or more cores, else 1).
pub fn set_kernel_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

/// The threads the fused kernels use.
pub fn kernel_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        n => n,
    }
}

/// How many recurrent loops have run fused in this process (lets tests prove the path ran).
pub fn fused_calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

/// A cell's weights as the fused kernels take them, in Keras layout.
#[derive(Debug, Clone)]
pub struct FusedParts {
    /// Which kernel.
    pub cell: FusedCell,
    /// `[d_input, n_gates * d_hidden]`.
    pub kernel: Tensor<2>,
    /// `[d_hidden, n_gates * d_hidden]`.
    pub recurrent_kernel: Tensor<2>,
    /// The bias flattened (`[n_gates * d_hidden]`; the GRU's `[2, 3 d_hidden]` as `[6 d_hidden]`).
    pub bias: Option<Tensor<1>>,
}

/// Whether tensors on `device` run on the flex CPU backend (with or without autodiff).
fn on_flex(device: &Device) -> bool {
    #[allow(unreachable_patterns)]
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        _ => false,
    }
}

/// What a fused loop reads.
pub(crate) enum FusedInput<'a> {
    /// A sequence `[batch, time, d_input]` with its mask.
    Sequence(&'a Tensor<3>, Option<&'a Mask>),
    /// One vector per row `[batch, d_input]`, the input of every one of `n_steps` steps (a
    /// `RepeatVector` output): projected once per row; with a mask of the steps to compute.
    Repeated(&'a Tensor<2>, usize, Option<&'a Mask>),
}

/// The masked loop as one fused operation, or `None` where the fused path does not apply.
/// Same contract as the composite loop: `(sequence [batch, time, d_hidden], states)`.
pub(crate) fn try_fused_loop(
    parts: Option<FusedParts>,
    input: FusedInput<'_>,
    initial: &[Tensor<2>],
    zero_output_for_mask: bool,
) -> Option<(Tensor<3>, Vec<Tensor<2>>)> {
    let parts = parts.filter(|_| fused_enabled())?;
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
    let device = parts.kernel.device();
    if !on_flex(&device) || !matches!(parts.kernel.dtype(), DType::F32 | DType::F64) {
        return None;
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    let d_hidden = parts.recurrent_kernel.dims()[0];
    let n_states = parts.cell.n_states();
    let n_bias = if parts.cell == FusedCell::Gru {
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
            threads: kernel_threads(),
            zero_output_for_mask,
            go_backwards: false,
            constant_input: matches!(input, FusedInput::Repeated(..)),
        },
        batch,
        n_steps,
        mask: mask.map(|m| m.to_vec().into()),
    };
    let packed = <Dispatch as FusedRecurrentBackend>::fused_recurrent(
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
        spec,
    );
    let packed: Tensor<3> = Tensor::from_dispatch(packed);
    let sequence = packed.clone().slice([0..batch, 0..n_steps, 0..d_hidden]);
    let states = (0..n_states)
        .map(|s| {
            let at = n_steps + s;
            packed
                .clone()
                .slice([0..batch, at..at + 1, 0..d_hidden])
                .reshape([batch, d_hidden])
        })
        .collect();
    Some((sequence, states))
}
