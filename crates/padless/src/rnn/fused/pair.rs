//! Two fused calls as one operation, each on its own thread: a `Bidirectional` layer's two
//! directions, which are independent until their outputs merge.
//!
//! With the thread pair, each direction splits its rows (or, for a large layer, its hidden
//! units) over two threads; when this was written they split units and met once per step,
//! and at small widths those meetings dominated (an LSTM(128) ran only 1.2 times faster on
//! two threads than on one). Here each direction runs the one-thread kernel and the two
//! directions run side by side with no meeting at all. The outputs are stacked into one
//! tensor (a custom operation's node has one output); the backward pass splits its gradient
//! and runs both directions' BPTT side by side again.

use std::sync::Arc;

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Element};
use padless_kernels::{Real, Workspace};

use super::host::{self, Grads, HostInputs, Inputs, Saved};
use super::ops::FusedSpec;

/// Runs `first` and `second` on two threads ([`padless_kernels::side_by_side`]: the caller's
/// and the kernels' kept helper, or a scoped thread when the helper is busy) and returns both
/// results; a panic on either thread reaches the caller.
fn side_by_side<R: Send>(first: impl FnOnce() -> R, second: impl FnOnce() -> R + Send) -> [R; 2] {
    let (mine, theirs) = padless_kernels::side_by_side(first, second);
    [mine, theirs]
}

/// Both forward passes side by side: the stacked packed outputs
/// `[2, batch, n_steps + n_states, d_hidden]` and, with `keep`, both workspaces.
///
/// # Panics
/// On a float type other than f32 and f64, or on calls of different output shapes.
pub(crate) fn forward<B: Backend>(
    inputs: [Inputs<B>; 2],
    specs: &[FusedSpec; 2],
    keep: bool,
) -> (FloatTensor<B>, Option<[Saved; 2]>) {
    assert_eq!(
        host::packed_shape(&specs[0]),
        host::packed_shape(&specs[1]),
        "paired fused calls must have the same output shape"
    );
    match inputs[0].x.dtype() {
        DType::F32 => {
            let (out, saved) = forward_typed::<B, f32>(inputs, specs, keep);
            (out, saved.map(|[a, b]| [Saved::F32(a), Saved::F32(b)]))
        }
        DType::F64 => {
            let (out, saved) = forward_typed::<B, f64>(inputs, specs, keep);
            (out, saved.map(|[a, b]| [Saved::F64(a), Saved::F64(b)]))
        }
        other => panic!("fused recurrent kernels run on f32 or f64, got {other:?}"),
    }
}

fn forward_typed<B: Backend, T: Real + Element + bytemuck::Pod>(
    [first, second]: [Inputs<B>; 2],
    specs: &[FusedSpec; 2],
    keep: bool,
) -> (FloatTensor<B>, Option<[Workspace<T>; 2]>) {
    let device = first.x.device();
    let (first, second) = (HostInputs::<T>::read(first), HostInputs::<T>::read(second));
    let [(mut out, ws_first), (out_second, ws_second)] = side_by_side(
        || first.run(&specs[0], keep),
        || second.run(&specs[1], keep),
    );
    out.extend(out_second);
    let mut shape = host::packed_shape(&specs[0]);
    shape.insert(0, 2);
    let saved = ws_first.zip(ws_second).map(|(a, b)| [a, b]);
    (host::write::<B, T>(out, shape, &device), saved)
}

/// Both backward passes side by side from the gradient of the stacked output.
pub(crate) fn backward<B: Backend>(
    saved: [Saved; 2],
    specs: &[FusedSpec; 2],
    grad: FloatTensor<B>,
    input_gradients: [bool; 2],
) -> [Grads<B>; 2] {
    let inputs = input_gradients;
    match saved {
        [Saved::F32(a), Saved::F32(b)] => backward_typed::<B, f32>([a, b], specs, grad, inputs),
        [Saved::F64(a), Saved::F64(b)] => backward_typed::<B, f64>([a, b], specs, grad, inputs),
        _ => unreachable!("both directions run in the input's float type"),
    }
}

fn backward_typed<B: Backend, T: Real + Element + bytemuck::Pod>(
    [ws_first, ws_second]: [Workspace<T>; 2],
    specs: &[FusedSpec; 2],
    grad: FloatTensor<B>,
    input_gradients: [bool; 2],
) -> [Grads<B>; 2] {
    let device = grad.device();
    // Viewed in place on flex (a copy of the whole output gradient otherwise).
    let d_out = host::HostData::<T>::read::<B>(grad);
    let (d_first, d_second) = d_out.as_slice().split_at(host::packed_len(&specs[0]));
    let [first, second] = side_by_side(
        || host::run_backward(&specs[0], ws_first, d_first, input_gradients[0]),
        || host::run_backward(&specs[1], ws_second, d_second, input_gradients[1]),
    );
    [
        host::grads_to_tensors(first, &specs[0], &device, input_gradients[0]),
        host::grads_to_tensors(second, &specs[1], &device, input_gradients[1]),
    ]
}

/// The autodiff node: twelve parents (each call's `x`, kernel, recurrent kernel, bias, `h0`,
/// `c0`, as in [`super::autodiff`]); stand-ins receive no gradient.
#[derive(Debug)]
struct FusedPairBackward;

impl<B: Backend> Backward<B, 12> for FusedPairBackward {
    type State = (Arc<[Saved; 2]>, [FusedSpec; 2]);

    fn backward(
        self,
        ops: Ops<Self::State, 12>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let (saved, specs) = ops.state;
        let saved = Arc::try_unwrap(saved).unwrap_or_else(|shared| (*shared).clone());
        // An input that is data (no parent node) gets no gradient, so none is computed.
        let input_gradients = [ops.parents[0].is_some(), ops.parents[6].is_some()];
        let all = backward::<B>(saved, &specs, grad, input_gradients)
            .into_iter()
            .flat_map(Grads::into_parents);
        for (parent, grad) in ops.parents.into_iter().zip(all) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// One call's six tensors as autodiff tensors, in parent order.
type Six<B, C> = [FloatTensor<Autodiff<B, C>>; 6];

/// The pair under autodiff (called by the `FusedRecurrentBackend` implementation).
pub(crate) fn autodiff_pair<B: Backend, C: CheckpointStrategy>(
    first: Six<B, C>,
    second: Six<B, C>,
    specs: [FusedSpec; 2],
) -> FloatTensor<Autodiff<B, C>> {
    let guards: [_; 12] = std::array::from_fn(|i| {
        if i < 6 {
            first[i].node()
        } else {
            second[i - 6].node()
        }
    });
    let n_states = specs[0].cell.n_states();
    let primitives =
        [first, second].map(|six| Inputs::<B>::new(six.map(|t| t.into_primitive()), n_states));
    match FusedPairBackward
        .prepare::<C>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, saved) = forward(primitives, &specs, true);
            let saved = saved.expect("the forward passes keep their workspaces when asked");
            prep.finish((Arc::new(saved), specs), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(primitives, &specs, false).0),
    }
}
