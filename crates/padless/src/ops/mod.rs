//! One burn backend extension for every fused CPU operation.
//!
//! A fused operation is host code over plain slices: a [`FusedOp`] says how to compute its one
//! output from its inputs' values, and its inputs' gradients from the output's. [`apply`] runs
//! it as a single burn operation, written once for every such operation here: on the flex
//! backend a direct call; under autodiff one graph node whose backward pass is the
//! operation's own (`autodiff.rs`); the float type (`f32` or `f64`) read from the first input.
//! Other backends never reach it: each caller checks [`applies`] first and composes burn's
//! operations otherwise.
//!
//! A graph node of a burn custom operation has one output tensor, so an operation with
//! several results packs them into one (a recurrent loop's steps and final states, a pair's
//! two outputs) and its caller slices them apart.
//!
//! The operations: the recurrent loop and its pair (`rnn::fused`), `tanh` and softmax
//! (`elementwise`), the dense layer's affine map (`layers::fused_dense`), the categorical
//! cross-entropy (`losses::fused_cross_entropy`), and here the Transformer's packed attention
//! (`attention.rs`), the layer normalisation of rows (`layer_norm.rs`), and a Transformer
//! block's residual LayerNorm with dropout and its feed-forward dropout (`rows.rs`). Adam
//! (`train::fused_adam`) updates its parameter and moments in place, has no backward pass and
//! three outputs, so it has a flex-only extension of its own.

mod attention;
mod autodiff;
mod backend;
mod layer_norm;
mod rows;

use std::fmt::Debug;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, Device, Element, Shape, Tensor};
use padless_kernels::Real;

use crate::cpu::{self, HostData};
pub(crate) use attention::{
    RowOffsets, cached_attention_step, packed_cross_attention, packed_self_attention,
};
use backend::{FusedOpBackend, TensorList};
pub(crate) use layer_norm::layer_norm_rows;
pub(crate) use rows::{add_norm_rows, dropout_rows, element_dropout};

/// A float type the fused operations run in: `f32` or `f64`.
pub(crate) trait HostFloat:
    Real + Element + bytemuck::Pod + num_traits::Float + std::iter::Sum + Send + Sync
{
}

impl HostFloat for f32 {}
impl HostFloat for f64 {}

/// What a forward pass returns: the output's values and shape and, when the caller asked to
/// keep it, what the backward pass needs beyond the kept tensors.
pub(crate) struct Forward<T, S> {
    /// The output, row-major.
    pub values: Vec<T>,
    /// Its shape.
    pub shape: Shape,
    /// `Some` when asked (`keep`), else `None`.
    pub saved: Option<S>,
}

/// What a backward pass reads.
pub(crate) struct BackwardInputs<T, S, const N: usize> {
    /// The forward pass's state.
    pub saved: S,
    /// The inputs that [`FusedOp::KEEP_INPUTS`] names (`None` for the others).
    pub inputs: [Option<HostData<T>>; N],
    /// The output, where [`FusedOp::KEEP_OUTPUT`] asks for it.
    pub output: Option<HostData<T>>,
    /// The gradient of the output.
    pub grad: HostData<T>,
    /// Which inputs take part in the graph: only their gradients are read.
    pub wanted: [bool; N],
}

/// An operation of `N` input tensors and one output, on the host, with its own backward pass.
pub(crate) trait FusedOp<const N: usize>: Clone + Debug + Send + Sync + 'static {
    /// Names the operation in messages.
    const NAME: &'static str;
    /// Which inputs the backward pass reads: kept as tensors (viewed in place on the CPU
    /// backend, no copy).
    const KEEP_INPUTS: [bool; N] = [false; N];
    /// Whether the backward pass reads the output (kept as a tensor).
    const KEEP_OUTPUT: bool = false;

    /// What the forward pass keeps for the backward pass besides the kept tensors.
    type Saved<T: HostFloat>: Clone + Debug + Send + Sync + 'static;

    /// The output from the inputs' values; with `keep`, also the state the backward pass
    /// needs (a forward pass for inference may skip work that only the backward pass reads).
    fn forward<T: HostFloat>(
        &self,
        inputs: [HostData<T>; N],
        keep: bool,
    ) -> Forward<T, Self::Saved<T>>;

    /// The gradients of the inputs in their shapes, flattened; `None` for an input that gets
    /// none. Only those of `wanted` inputs are read.
    fn backward<T: HostFloat>(
        &self,
        args: BackwardInputs<T, Self::Saved<T>, N>,
    ) -> [Option<Vec<T>>; N];
}

/// Whether a fused operation applies to a tensor on `device` of `dtype`: the fused operations
/// are on ([`cpu::fused_enabled`]), the device is the flex backend and the type `f32` or `f64`.
pub(crate) fn applies(device: &Device, dtype: DType) -> bool {
    cpu::fused_enabled() && cpu::on_flex(device) && matches!(dtype, DType::F32 | DType::F64)
}

/// Runs `op` over `inputs` (tensors of the flex backend, with or without autodiff, all of one
/// float type; see [`applies`]) as one burn operation; its output has `D` axes.
pub(crate) fn apply<O: FusedOp<N>, const N: usize, const D: usize>(
    op: O,
    inputs: [FloatTensor<Dispatch>; N],
) -> Tensor<D> {
    let out = <Dispatch as FusedOpBackend>::fused_op::<O, N>(TensorList(inputs.into()), op);
    Tensor::from_dispatch(out)
}

/// A forward pass's state in the float type it ran in.
#[derive(Debug, Clone)]
enum Typed<A, B> {
    F32(A),
    F64(B),
}

/// [`FusedOp::Saved`] of `O` in either float type.
type Saved<O, const N: usize> = Typed<<O as FusedOp<N>>::Saved<f32>, <O as FusedOp<N>>::Saved<f64>>;

/// Runs the forward pass on primitives of `B` in their float type: the output and, with
/// `keep`, the state.
///
/// # Panics
/// On a float type other than `f32` and `f64`.
fn forward<B: Backend, O: FusedOp<N>, const N: usize>(
    op: &O,
    inputs: [FloatTensor<B>; N],
    keep: bool,
) -> (FloatTensor<B>, Option<Saved<O, N>>) {
    fn typed<B: Backend, O: FusedOp<N>, const N: usize, T: HostFloat>(
        op: &O,
        inputs: [FloatTensor<B>; N],
        keep: bool,
    ) -> (FloatTensor<B>, Option<O::Saved<T>>) {
        let device = inputs[0].device();
        let out = op.forward(inputs.map(HostData::<T>::read::<B>), keep);
        assert_eq!(
            out.values.len(),
            out.shape.num_elements(),
            "{}: an output of {} values for the shape {:?}",
            O::NAME,
            out.values.len(),
            out.shape
        );
        (
            cpu::write::<B, T>(out.values, out.shape, &device),
            out.saved,
        )
    }
    match inputs[0].dtype() {
        DType::F32 => {
            let (out, saved) = typed::<B, O, N, f32>(op, inputs, keep);
            (out, saved.map(Typed::F32))
        }
        DType::F64 => {
            let (out, saved) = typed::<B, O, N, f64>(op, inputs, keep);
            (out, saved.map(Typed::F64))
        }
        other => panic!("{} runs on f32 or f64, got {other:?}", O::NAME),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::tensor_util::f32_vec;

    /// `x * y` element-wise, both inputs kept; records the inputs each backward pass was told
    /// to compute gradients for, and saves the element count to check that it comes back.
    #[derive(Debug, Clone, Default)]
    struct Product {
        wanted: Arc<Mutex<Vec<[bool; 2]>>>,
    }

    impl FusedOp<2> for Product {
        const NAME: &'static str = "the test product";
        const KEEP_INPUTS: [bool; 2] = [true, true];
        type Saved<T: HostFloat> = usize;

        fn forward<T: HostFloat>(&self, [x, y]: [HostData<T>; 2], keep: bool) -> Forward<T, usize> {
            let values: Vec<T> = (x.as_slice().iter().zip(y.as_slice()))
                .map(|(&a, &b)| a * b)
                .collect();
            Forward {
                saved: keep.then_some(values.len()),
                values,
                shape: x.shape().clone(),
            }
        }

        fn backward<T: HostFloat>(&self, args: BackwardInputs<T, usize, 2>) -> [Option<Vec<T>>; 2] {
            self.wanted.lock().unwrap().push(args.wanted);
            let [Some(x), Some(y)] = args.inputs else {
                panic!("both inputs are kept");
            };
            let g = args.grad.as_slice();
            assert_eq!(args.saved, g.len());
            assert!(args.output.is_none(), "the output is not kept");
            let times = |v: &[T]| g.iter().zip(v).map(|(&a, &b)| a * b).collect();
            [Some(times(y.as_slice())), Some(times(x.as_slice()))]
        }
    }

    /// Through [`apply`] on the autodiff CPU device in each float type: the product's values,
    /// `d/dx sum(w * x * y) = w * y` by hand, no gradient for `y` (data) and the backward pass
    /// told so; on the device without autodiff, the forward pass alone.
    #[test]
    fn a_fused_op_runs_forward_and_backward_in_f32_and_f64() {
        let device = crate::training_device();
        for dtype in [DType::F32, DType::F64] {
            let tensor = |v: [f32; 3]| Tensor::<1>::from_floats(v, &device).cast(dtype);
            let x = tensor([1.0, -2.0, 3.0]).require_grad();
            let y = tensor([0.5, 4.0, -1.0]);
            let w = tensor([1.0, 2.0, 3.0]);
            let op = Product::default();
            let out: Tensor<1> = apply(op.clone(), [x.clone().into_dispatch(), y.into_dispatch()]);
            assert_eq!(out.dtype(), dtype);
            assert_eq!(f32_vec(out.clone()), vec![0.5, -8.0, -3.0]);
            let grads = (out * w).sum().backward();
            let d_x = x.grad(&grads).expect("x is tracked");
            assert_eq!(d_x.dtype(), dtype);
            assert_eq!(f32_vec(d_x), vec![0.5, 8.0, -3.0]);
            assert_eq!(*op.wanted.lock().unwrap(), vec![[true, false]]);
        }
        let device = crate::default_device();
        let op = Product::default();
        let x = Tensor::<1>::from_floats([2.0, 3.0], &device);
        let out: Tensor<1> = apply(op.clone(), [x.clone().into_dispatch(), x.into_dispatch()]);
        assert_eq!(f32_vec(out), vec![4.0, 9.0]);
        assert!(op.wanted.lock().unwrap().is_empty());
    }
}
