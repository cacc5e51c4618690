//! [`FusedOpBackend`] under autodiff: one graph node per call, whose backward pass is the
//! operation's own ([`FusedOp::backward`]), fed by what its forward pass kept.
//!
//! The node has one parent per input. An input that is data (no parent node) gets no
//! gradient, and the operation is told so (`wanted`) so that it can skip computing it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::Shape;

use super::backend::{FusedOpBackend, TensorList};
use super::{BackwardInputs, FusedOp, HostFloat, Saved, Typed};
use crate::cpu::{self, HostData};

/// What a tracked call keeps for its backward pass.
struct Kept<B: Backend, O: FusedOp<N>, const N: usize> {
    op: O,
    saved: Saved<O, N>,
    /// The inputs that [`FusedOp::KEEP_INPUTS`] names.
    inputs: [Option<FloatTensor<B>>; N],
    /// The output, where [`FusedOp::KEEP_OUTPUT`] asks for it.
    output: Option<FloatTensor<B>>,
    /// Every input's shape, the shape of its gradient.
    shapes: [Shape; N],
}

impl<B: Backend, O: FusedOp<N>, const N: usize> Clone for Kept<B, O, N> {
    fn clone(&self) -> Self {
        Kept {
            op: self.op.clone(),
            saved: self.saved.clone(),
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            shapes: self.shapes.clone(),
        }
    }
}

impl<B: Backend, O: FusedOp<N>, const N: usize> fmt::Debug for Kept<B, O, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kept")
            .field("op", &self.op)
            .field("shapes", &self.shapes)
            .finish_non_exhaustive()
    }
}

/// The graph node's backward step of operation `O`.
struct FusedOpBackward<O, const N: usize>(PhantomData<fn() -> O>);

impl<O, const N: usize> fmt::Debug for FusedOpBackward<O, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FusedOpBackward")
    }
}

impl<B: Backend, O: FusedOp<N>, const N: usize> Backward<B, N> for FusedOpBackward<O, N> {
    type State = Arc<Kept<B, O, N>>;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let kept = Arc::try_unwrap(ops.state).unwrap_or_else(|shared| (*shared).clone());
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let input_grads = match kept.saved {
            Typed::F32(saved) => backward::<B, O, N, f32>(
                &kept.op,
                saved,
                kept.inputs,
                kept.output,
                grad,
                wanted,
                kept.shapes,
            ),
            Typed::F64(saved) => backward::<B, O, N, f64>(
                &kept.op,
                saved,
                kept.inputs,
                kept.output,
                grad,
                wanted,
                kept.shapes,
            ),
        };
        for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The backward pass in the float type `T` the forward pass ran in: the wanted inputs'
/// gradients as primitives of `B`.
fn backward<B: Backend, O: FusedOp<N>, const N: usize, T: HostFloat>(
    op: &O,
    saved: O::Saved<T>,
    inputs: [Option<FloatTensor<B>>; N],
    output: Option<FloatTensor<B>>,
    grad: FloatTensor<B>,
    wanted: [bool; N],
    shapes: [Shape; N],
) -> [Option<FloatTensor<B>>; N] {
    let device = grad.device();
    let args = BackwardInputs {
        saved,
        inputs: inputs.map(|t| t.map(HostData::<T>::read::<B>)),
        output: output.map(HostData::<T>::read::<B>),
        grad: HostData::<T>::read::<B>(grad),
        wanted,
    };
    let mut out: [Option<FloatTensor<B>>; N] = std::array::from_fn(|_| None);
    let input_grads = op.backward(args).into_iter().zip(shapes);
    for (i, (values, shape)) in input_grads.enumerate() {
        let Some(values) = values.filter(|_| wanted[i]) else {
            continue;
        };
        assert_eq!(
            values.len(),
            shape.num_elements(),
            "{}: a gradient of {} values for input {i} of shape {shape:?}",
            O::NAME,
            values.len(),
        );
        out[i] = Some(cpu::write::<B, T>(values, shape, &device));
    }
    out
}

impl<B: Backend, C: CheckpointStrategy> FusedOpBackend for Autodiff<B, C> {
    fn fused_op<O: FusedOp<N>, const N: usize>(
        inputs: TensorList<Self>,
        op: O,
    ) -> FloatTensor<Self> {
        let tensors = inputs.into_array::<N>(O::NAME);
        let guards = tensors.each_ref().map(|t| t.node());
        let primitives = tensors.map(|t| t.into_primitive());
        match FusedOpBackward::<O, N>(PhantomData)
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shapes = primitives.each_ref().map(|t| t.shape());
                let inputs: [_; N] =
                    std::array::from_fn(|i| O::KEEP_INPUTS[i].then(|| primitives[i].clone()));
                let (out, saved) = super::forward::<B, O, N>(&op, primitives, true);
                let saved = saved.unwrap_or_else(|| {
                    panic!(
                        "{}: a forward pass asked to keep its state kept none",
                        O::NAME
                    )
                });
                let output = O::KEEP_OUTPUT.then(|| out.clone());
                let kept = Kept {
                    op,
                    saved,
                    inputs,
                    output,
                    shapes,
                };
                prep.finish(Arc::new(kept), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(super::forward::<B, O, N>(&op, primitives, false).0)
            }
        }
    }
}
