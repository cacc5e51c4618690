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
mod pair;

use std::cell::Cell as StdCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{DType, Device, Tensor};
use padless_kernels::{KernelConfig, Outputs};

use crate::mask::Mask;
pub(crate) use host::{HostData, read, write};
pub use ops::{FusedRecurrentBackend, FusedSpec};
/// The opt-in bfloat16 products of the CPU kernels (Intel AMX tiles): the fused recurrent
/// layers' and the fused dense layer's `f32` matrix products round their operands to
/// bfloat16 and sum in `f32`; off by default. See [`padless_kernels::set_bf16_products`].
pub use padless_kernels::{bf16_products, bf16_products_available, set_bf16_products};

static ENABLED: AtomicBool = AtomicBool::new(true);
static THREADS: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static PAIR_CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COMPOSITE_HERE: StdCell<bool> = const { StdCell::new(false) };
    static THREADS_HERE: StdCell<usize> = const { StdCell::new(0) };
}

/// Switches the fused path on or off for the whole process (default on).
pub fn set_fused_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Runs `f` with the composite loop on this thread (for comparisons and tests). Restored when
/// `f` returns or unwinds.
pub fn with_composite<R>(f: impl FnOnce() -> R) -> R {
    with_thread_setting(&COMPOSITE_HERE, true, f)
}

/// Runs `f` with this thread's `setting` at `value`, restoring the previous value when `f`
/// returns or unwinds (a drop guard).
fn with_thread_setting<T: Copy + 'static, R>(
    setting: &'static std::thread::LocalKey<StdCell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<StdCell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(setting, setting.with(|c| c.replace(value)));
    f()
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

/// Runs `f` with the fused kernels called on this thread using `threads` threads (1, or 2 for
/// the thread pair) whatever the process-wide setting ([`set_kernel_threads`]); 0 defers to
/// it. Work that already runs side by side on its own threads (the models of an ensemble
/// decoded together) keeps each kernel on one thread this way. Restored when `f` returns or
/// unwinds.
pub fn with_kernel_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    with_thread_setting(&THREADS_HERE, threads, f)
}

/// Runs `a` and `b`, side by side when the fused kernels called here may use two threads
/// ([`kernel_threads`]): `a` on this thread and `b` on the kernels' kept helper (or a scoped
/// thread, [`padless_kernels::side_by_side`]), each with one-thread kernels and this thread's
/// composite switch; else one after the other as they are. For independent pieces of work
/// that each run recurrent layers (the models of an ensemble, the two directions of a G2P
/// pair): two of them side by side keep both cores busier than one after the other with the
/// kernels' thread pair. The results are the same either way; a panic of either reaches the
/// caller.
pub fn side_by_side<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if kernel_threads() < 2 {
        let first = a();
        return (first, b());
    }
    let composite = composite_here();
    let one_thread = move |f: Box<dyn FnOnce() + Send + '_>| {
        let run = || with_kernel_threads(1, f);
        if composite {
            with_composite(run)
        } else {
            run()
        }
    };
    let (mut first, mut second) = (None, None);
    padless_kernels::side_by_side(
        || one_thread(Box::new(|| first = Some(a()))),
        || one_thread(Box::new(|| second = Some(b()))),
    );
    (
        first.expect("side_by_side ran a"),
        second.expect("side_by_side ran b"),
    )
}

/// Whether this thread is inside [`with_composite`] (a thread started from it must enter it
/// again to keep the composite path).
pub(crate) fn composite_here() -> bool {
    COMPOSITE_HERE.with(StdCell::get)
}

/// The threads the fused kernels called on this thread use: [`with_kernel_threads`]'s, else
/// the process-wide setting.
pub fn kernel_threads() -> usize {
    let here = THREADS_HERE.with(StdCell::get);
    if here != 0 {
        return here;
    }
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        n => n,
    }
}

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

/// Whether tensors on `device` run on the flex CPU backend (with or without autodiff).
pub(crate) fn on_flex(device: &Device) -> bool {
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
        let device = parts.kernel.device();
        if !on_flex(&device) || !matches!(parts.kernel.dtype(), DType::F32 | DType::F64) {
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
    let parts = parts.filter(|_| fused_enabled())?;
    let call = Call::new(
        parts,
        input,
        initial,
        zero_output_for_mask,
        kernel_threads(),
        outputs,
    )?;
    CALLS.fetch_add(1, Ordering::Relaxed);
    let [x, kernel, recurrent_kernel, bias, h0, c0] = call.tensors;
    let packed = <Dispatch as FusedRecurrentBackend>::fused_recurrent(
        x,
        kernel,
        recurrent_kernel,
        bias,
        h0,
        c0,
        call.spec.clone(),
    );
    Some(unpack(Tensor::from_dispatch(packed), &call.spec))
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
    if !fused_enabled() || kernel_threads() < 2 || first.x.dims() != second.x.dims() {
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
    let specs = [a.spec, b.spec];
    let packed = <Dispatch as FusedRecurrentBackend>::fused_recurrent_pair(
        x1,
        k1,
        r1,
        b1,
        h1,
        c1,
        x2,
        k2,
        r2,
        b2,
        h2,
        c2,
        specs.clone(),
    );
    let packed: Tensor<4> = Tensor::from_dispatch(packed);
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
