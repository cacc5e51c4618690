//! The fused recurrent operation under autodiff: one graph node whose backward pass is the
//! kernels' BPTT, fed by the workspace its forward pass saved.
//!
//! A burn custom operation's node has one output tensor, so the outputs are packed into one
//! (`[batch, n_steps + n_states, d_hidden]`, sliced by the caller) and its gradient arrives
//! whole. The node always has six parents (`x`, kernel, recurrent kernel, bias, `h0`, `c0`);
//! a cell without bias passes untracked zeros and a cell with one state passes `h0` again as
//! `c0`; neither stand-in receives a gradient.

use std::sync::Arc;

use burn::backend::Backend;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::host::{self, Inputs, Saved};
use super::ops::{FusedRecurrentBackend, FusedSpec};
use super::pair;

#[derive(Debug)]
struct FusedRecurrentBackward;

impl<B: Backend> Backward<B, 6> for FusedRecurrentBackward {
    type State = (Arc<Saved>, FusedSpec);

    fn backward(
        self,
        ops: Ops<Self::State, 6>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (saved, spec) = ops.state;
        let saved = Arc::try_unwrap(saved).unwrap_or_else(|shared| (*shared).clone());
        // An input that is data (no parent node) gets no gradient, so none is computed.
        let input_gradient = ops.parents[0].is_some();
        let all = host::backward::<B>(saved, &spec, grad, input_gradient).into_parents();
        for (parent, grad) in ops.parents.into_iter().zip(all) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> FusedRecurrentBackend for Autodiff<B, C> {
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
        let guards = tensors.each_ref().map(|t| t.node());
        let inputs = Inputs::<B>::new(tensors.map(|t| t.into_primitive()), spec.cell.n_states());
        match FusedRecurrentBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, saved) = host::forward(inputs, &spec, true);
                let saved = saved.expect("the forward pass keeps its workspace when asked");
                prep.finish((Arc::new(saved), spec), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(host::forward(inputs, &spec, false).0),
        }
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
        pair::autodiff_pair::<B, C>(
            [
                first_x,
                first_kernel,
                first_recurrent_kernel,
                first_bias,
                first_h0,
                first_c0,
            ],
            [
                second_x,
                second_kernel,
                second_recurrent_kernel,
                second_bias,
                second_h0,
                second_c0,
            ],
            specs,
        )
    }
}
