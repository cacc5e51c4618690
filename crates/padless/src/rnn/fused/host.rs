//! Between burn tensors and the kernels' plain slices: read the primitives into host vectors,
//! run [`padless_kernels`] in the tensors' float type, and wrap the results back.
//!
//! Written once for any backend `B` (only its data transfer is used); the fused path runs only
//! on the CPU backend, where reading a tensor is a copy at most.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::{DType, Element, TensorData};
use padless_kernels::{
    CellKind, Gradients, Gru, Lstm, Real, RecurrentKernel, Sequences, SimpleRnn, Weights, Workspace,
};

use super::ops::{FusedCell, FusedSpec};

/// The tensor inputs of a fused call, as primitives of backend `B`.
pub(crate) struct Inputs<B: Backend> {
    pub x: FloatTensor<B>,
    pub kernel: FloatTensor<B>,
    pub recurrent_kernel: FloatTensor<B>,
    pub bias: FloatTensor<B>,
    pub initial: Vec<FloatTensor<B>>,
}

/// The gradients of a fused call, as primitives of backend `B`.
pub(crate) struct Grads<B: Backend> {
    pub x: FloatTensor<B>,
    pub kernel: FloatTensor<B>,
    pub recurrent_kernel: FloatTensor<B>,
    pub bias: Option<FloatTensor<B>>,
    pub initial: Vec<FloatTensor<B>>,
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

fn read<B: Backend, T: Element>(tensor: FloatTensor<B>) -> Vec<T> {
    block_on(B::float_into_data(tensor))
        .expect("reading a tensor for the fused kernels")
        .try_into_vec::<T>()
        .expect("fused kernels: tensors of one float type")
}

fn write<B: Backend, T: Element>(
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

/// The forward pass on the host; the workspace only with `keep` (inference skips saving it).
fn forward_typed<B: Backend, T: Real + Element>(
    inputs: Inputs<B>,
    spec: &FusedSpec,
    keep: bool,
) -> (FloatTensor<B>, Option<Workspace<T>>) {
    let device = inputs.x.device();
    let x: Vec<T> = read::<B, T>(inputs.x);
    let kernel: Vec<T> = read::<B, T>(inputs.kernel);
    let recurrent_kernel: Vec<T> = read::<B, T>(inputs.recurrent_kernel);
    let bias: Vec<T> = read::<B, T>(inputs.bias);
    let initial: Vec<Vec<T>> = inputs.initial.into_iter().map(read::<B, T>).collect();
    let initial_refs: Vec<&[T]> = initial.iter().map(Vec::as_slice).collect();
    let seq = Sequences {
        x: &x,
        batch: spec.batch,
        n_steps: spec.n_steps,
        mask: spec.mask.as_deref(),
        initial: &initial_refs,
    };
    let weights = Weights {
        kernel: &kernel,
        recurrent_kernel: &recurrent_kernel,
        bias: Some(&bias),
    };
    let n_states = spec.cell.n_states();
    let mut out = vec![T::ZERO; spec.batch * (spec.n_steps + n_states) * spec.config.d_hidden];
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
    let ws = match spec.cell {
        FusedCell::Lstm => run(
            RecurrentKernel::<Lstm>::new(spec.config),
            &seq,
            &weights,
            &mut out,
            keep,
        ),
        FusedCell::Gru => run(
            RecurrentKernel::<Gru>::new(spec.config),
            &seq,
            &weights,
            &mut out,
            keep,
        ),
        FusedCell::SimpleRnn => run(
            RecurrentKernel::<SimpleRnn>::new(spec.config),
            &seq,
            &weights,
            &mut out,
            keep,
        ),
    };
    let shape = vec![spec.batch, spec.n_steps + n_states, spec.config.d_hidden];
    (write::<B, T>(out, shape, &device), ws)
}

/// Runs the backward pass from the gradient of the packed output.
pub(crate) fn backward<B: Backend>(
    saved: Saved,
    spec: &FusedSpec,
    grad: FloatTensor<B>,
) -> Grads<B> {
    match saved {
        Saved::F32(ws) => backward_typed::<B, f32>(ws, spec, grad),
        Saved::F64(ws) => backward_typed::<B, f64>(ws, spec, grad),
    }
}

fn run_backward<C: CellKind, T: Real>(
    spec: &FusedSpec,
    ws: Workspace<T>,
    d_out: &[T],
) -> Gradients<T> {
    RecurrentKernel::<C>::new(spec.config).backward(ws, d_out)
}

fn backward_typed<B: Backend, T: Real + Element>(
    ws: Workspace<T>,
    spec: &FusedSpec,
    grad: FloatTensor<B>,
) -> Grads<B> {
    let device = grad.device();
    let d_out: Vec<T> = read::<B, T>(grad);
    let grads = match spec.cell {
        FusedCell::Lstm => run_backward::<Lstm, T>(spec, ws, &d_out),
        FusedCell::Gru => run_backward::<Gru, T>(spec, ws, &d_out),
        FusedCell::SimpleRnn => run_backward::<SimpleRnn, T>(spec, ws, &d_out),
    };
    let cfg = &spec.config;
    let (d, h, batch) = (cfg.d_input, cfg.d_hidden, spec.batch);
    let width = grads.d_recurrent_kernel.len() / h.max(1);
    let x_shape = if cfg.constant_input {
        vec![batch, d]
    } else {
        vec![batch, spec.n_steps, d]
    };
    Grads {
        x: write::<B, T>(grads.d_x, x_shape, &device),
        kernel: write::<B, T>(grads.d_kernel, vec![d, width], &device),
        recurrent_kernel: write::<B, T>(grads.d_recurrent_kernel, vec![h, width], &device),
        bias: grads.d_bias.map(|b| {
            let n = b.len();
            write::<B, T>(b, vec![n], &device)
        }),
        initial: grads
            .d_initial
            .into_iter()
            .map(|s| write::<B, T>(s, vec![batch, h], &device))
            .collect(),
    }
}
