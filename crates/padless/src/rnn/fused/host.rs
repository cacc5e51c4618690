//! Between burn tensors and the kernels' plain slices: read the primitives into host vectors,
//! run [`padless_kernels`] in the tensors' float type, and wrap the results back.
//!
//! Written once for any backend `B` (only its data transfer is used); the fused path runs only
//! on the CPU backend, where reading a tensor is a copy at most.

use std::any::Any;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata};
use burn::tensor::{DType, Element, TensorData};
use padless_kernels::{
    CellKind, Gradients, Gru, Lstm, Real, RecurrentKernel, Sequences, SimpleRnn, Weights, Workspace,
};

use super::ops::FusedSpec;
// The library's cell kind, mapped here (the one place) to the kernels' cell types.
use crate::rnn::CellKind as Kind;

/// The tensor inputs of a fused call, as primitives of backend `B`.
pub(crate) struct Inputs<B: Backend> {
    pub x: FloatTensor<B>,
    pub kernel: FloatTensor<B>,
    pub recurrent_kernel: FloatTensor<B>,
    pub bias: FloatTensor<B>,
    pub initial: Vec<FloatTensor<B>>,
}

impl<B: Backend> Inputs<B> {
    /// From the six tensors in parent order (`x`, kernel, recurrent kernel, bias, `h0`,
    /// `c0`); `c0` is dropped for a cell with one state.
    pub fn new(tensors: [FloatTensor<B>; 6], n_states: usize) -> Self {
        let [x, kernel, recurrent_kernel, bias, h0, c0] = tensors;
        Inputs {
            x,
            kernel,
            recurrent_kernel,
            bias,
            initial: [h0, c0].into_iter().take(n_states).collect(),
        }
    }
}

/// The gradients of a fused call, as primitives of backend `B`.
pub(crate) struct Grads<B: Backend> {
    /// `None` when the input needs no gradient.
    pub x: Option<FloatTensor<B>>,
    pub kernel: FloatTensor<B>,
    pub recurrent_kernel: FloatTensor<B>,
    pub bias: Option<FloatTensor<B>>,
    pub initial: Vec<FloatTensor<B>>,
}

impl<B: Backend> Grads<B> {
    /// The gradients in parent order (as [`Inputs::new`] takes the tensors); `None` where a
    /// parent gets none (no bias, no second state).
    pub fn into_parents(self) -> [Option<FloatTensor<B>>; 6] {
        let mut initial = self.initial.into_iter();
        [
            self.x,
            Some(self.kernel),
            Some(self.recurrent_kernel),
            self.bias,
            initial.next(),
            initial.next(),
        ]
    }
}

/// The kernel workspace in the float type the forward pass ran in.
#[derive(Debug, Clone)]
pub(crate) enum Saved {
    F32(Workspace<f32>),
    F64(Workspace<f64>),
}

/// Polls a future to completion on this thread. The CPU backend's reads are ready at once.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}

pub(crate) fn read<B: Backend, T: Element>(tensor: FloatTensor<B>) -> Vec<T> {
    block_on(B::float_into_data(tensor))
        .expect("reading a tensor for the fused kernels")
        .try_into_vec::<T>()
        .expect("fused kernels: tensors of one float type")
}

pub(crate) fn write<B: Backend, T: Element>(
    values: Vec<T>,
    shape: Vec<usize>,
    device: &B::Device,
) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(values, shape), device)
}

/// Runs the forward pass; returns the packed output and, with `keep`, the workspace.
///
/// # Panics
/// On a float type other than f32 and f64 (the caller routes only those here).
pub(crate) fn forward<B: Backend>(
    inputs: Inputs<B>,
    spec: &FusedSpec,
    keep: bool,
) -> (FloatTensor<B>, Option<Saved>) {
    match inputs.x.dtype() {
        DType::F32 => {
            let (out, ws) = forward_typed::<B, f32>(inputs, spec, keep);
            (out, ws.map(Saved::F32))
        }
        DType::F64 => {
            let (out, ws) = forward_typed::<B, f64>(inputs, spec, keep);
            (out, ws.map(Saved::F64))
        }
        other => panic!("fused recurrent kernels run on f32 or f64, got {other:?}"),
    }
}

/// A tensor's values on the host: borrowed in place from a contiguous CPU-backend tensor of
/// the right float type (the weights, which the model still holds, are not copied on every
/// call: that copy was about a tenth of a G2P decoding step), else read into a vector.
pub(crate) enum HostData<T> {
    /// Read (copied where the tensor was shared) into a vector.
    Owned(Vec<T>),
    /// A flex tensor whose storage is viewed in place.
    Flex(FloatTensor<Flex>),
}

impl<T: Element + bytemuck::Pod> HostData<T> {
    /// The values of a primitive of `B`, in place where they can be.
    pub(crate) fn read<B: Backend>(tensor: FloatTensor<B>) -> Self {
        let any: Box<dyn Any> = Box::new(tensor);
        match any.downcast::<FloatTensor<Flex>>() {
            Ok(flex) if flex.as_slice::<T>().is_some() => HostData::Flex(*flex),
            Ok(flex) => HostData::Owned(read::<Flex, T>(*flex)),
            Err(any) => {
                let tensor = any
                    .downcast::<FloatTensor<B>>()
                    .expect("a boxed primitive of B is one");
                HostData::Owned(read::<B, T>(*tensor))
            }
        }
    }

    /// The values, row-major.
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            HostData::Owned(values) => values,
            HostData::Flex(tensor) => tensor
                .as_slice::<T>()
                .expect("checked contiguous and of type T when read"),
        }
    }
}

/// A fused call's inputs on the host.
pub(crate) struct HostInputs<T> {
    x: HostData<T>,
    kernel: HostData<T>,
    recurrent_kernel: HostData<T>,
    bias: HostData<T>,
    initial: Vec<HostData<T>>,
}

impl<T: Real + Element + bytemuck::Pod> HostInputs<T> {
    /// Reads the primitives (on the calling thread).
    pub(crate) fn read<B: Backend>(inputs: Inputs<B>) -> Self {
        HostInputs {
            x: HostData::read::<B>(inputs.x),
            kernel: HostData::read::<B>(inputs.kernel),
            recurrent_kernel: HostData::read::<B>(inputs.recurrent_kernel),
            bias: HostData::read::<B>(inputs.bias),
            initial: inputs
                .initial
                .into_iter()
                .map(HostData::read::<B>)
                .collect(),
        }
    }

    /// Runs the kernel: the packed output `[batch, n_steps + n_states, d_hidden]` and, with
    /// `keep`, the workspace. Plain host work, so two calls may run on two threads.
    pub(crate) fn run(&self, spec: &FusedSpec, keep: bool) -> (Vec<T>, Option<Workspace<T>>) {
        let initial_refs: Vec<&[T]> = self.initial.iter().map(HostData::as_slice).collect();
        let seq = Sequences {
            x: self.x.as_slice(),
            batch: spec.batch,
            n_steps: spec.n_steps,
            mask: spec.mask.as_deref(),
            initial: &initial_refs,
        };
        let weights = Weights {
            kernel: self.kernel.as_slice(),
            recurrent_kernel: self.recurrent_kernel.as_slice(),
            bias: Some(self.bias.as_slice()),
        };
        let mut out = vec![T::ZERO; packed_len(spec)];
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
}

/// Elements of one call's packed output.
pub(crate) fn packed_len(spec: &FusedSpec) -> usize {
    packed_shape(spec).iter().product()
}

/// The shape of one call's packed output: `[batch, n_steps + n_states, d_hidden]`, or one of
/// the two parts alone ([`KernelConfig::outputs`](padless_kernels::KernelConfig::outputs)).
pub(crate) fn packed_shape(spec: &FusedSpec) -> Vec<usize> {
    let rows = spec
        .config
        .outputs
        .rows_per_row(spec.n_steps, spec.cell.n_states());
    vec![spec.batch, rows, spec.config.d_hidden]
}

/// The forward pass in the float type `T`: the packed output and, with `keep`, the workspace.
fn forward_typed<B: Backend, T: Real + Element + bytemuck::Pod>(
    inputs: Inputs<B>,
    spec: &FusedSpec,
    keep: bool,
) -> (FloatTensor<B>, Option<Workspace<T>>) {
    let device = inputs.x.device();
    let (out, ws) = HostInputs::<T>::read(inputs).run(spec, keep);
    (write::<B, T>(out, packed_shape(spec), &device), ws)
}

/// Runs the backward pass from the gradient of the packed output; the input's gradient only
/// with `input_gradient`.
pub(crate) fn backward<B: Backend>(
    saved: Saved,
    spec: &FusedSpec,
    grad: FloatTensor<B>,
    input_gradient: bool,
) -> Grads<B> {
    match saved {
        Saved::F32(ws) => backward_typed::<B, f32>(ws, spec, grad, input_gradient),
        Saved::F64(ws) => backward_typed::<B, f64>(ws, spec, grad, input_gradient),
    }
}

/// The kernel's backward pass on host vectors (plain host work, like [`HostInputs::run`]);
/// without `input_gradient` the input's gradient is skipped (`d_x` empty).
pub(crate) fn run_backward<T: Real>(
    spec: &FusedSpec,
    ws: Workspace<T>,
    d_out: &[T],
    input_gradient: bool,
) -> Gradients<T> {
    fn run<C: padless_kernels::CellKind, T: Real>(
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

fn backward_typed<B: Backend, T: Real + Element + bytemuck::Pod>(
    ws: Workspace<T>,
    spec: &FusedSpec,
    grad: FloatTensor<B>,
    input_gradient: bool,
) -> Grads<B> {
    let device = grad.device();
    // Viewed in place on flex (a copy of the whole output gradient otherwise).
    let d_out = HostData::<T>::read::<B>(grad);
    let grads = run_backward(spec, ws, d_out.as_slice(), input_gradient);
    grads_to_tensors(grads, spec, &device, input_gradient)
}

/// The kernel's gradients as primitives of `B`, in the shapes of the call's inputs.
pub(crate) fn grads_to_tensors<B: Backend, T: Real + Element>(
    grads: Gradients<T>,
    spec: &FusedSpec,
    device: &B::Device,
    input_gradient: bool,
) -> Grads<B> {
    let cfg = &spec.config;
    let (d, h, batch) = (cfg.d_input, cfg.d_hidden, spec.batch);
    let width = grads.d_recurrent_kernel.len() / h.max(1);
    let x_shape = if cfg.constant_input {
        vec![batch, d]
    } else {
        vec![batch, spec.n_steps, d]
    };
    Grads {
        x: input_gradient.then(|| write::<B, T>(grads.d_x, x_shape, device)),
        kernel: write::<B, T>(grads.d_kernel, vec![d, width], device),
        recurrent_kernel: write::<B, T>(grads.d_recurrent_kernel, vec![h, width], device),
        bias: grads.d_bias.map(|b| {
            let n = b.len();
            write::<B, T>(b, vec![n], device)
        }),
        initial: grads
            .d_initial
            .into_iter()
            .map(|s| write::<B, T>(s, vec![batch, h], device))
            .collect(),
    }
}
