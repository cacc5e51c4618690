//! Functions that run vectorised on the CPU backend: [`tanh`] element-wise and [`softmax`]
//! over the last axis.
//!
//! burn's flex backend computes `tanh` one element at a time through the C library (measured:
//! about a fifth of a G2P decoding step went to `tanhf` in the attention's combine layer), and
//! its softmax is five tensor operations forward and more backward. On flex both run as one
//! burn operation each ([`FusedOutputOpBackend`], an [`OutputOp`]): the forward pass through
//! [`padless_kernels::tanh_in_place`] or [`padless_kernels::softmax_rows_in_place`], the
//! backward pass from the saved output alone (`d_x = d_y (1 - y^2)`; `d_x = y (d_y - Σ d_y
//! y)` per row). Other backends and float types use burn's functions.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//!
//! let device = Device::flex();
//! let x = Tensor::<2>::from_floats([[0.0, 0.5], [-1.0, 3.0]], &device);
//! let y: Vec<f32> = padless::elementwise::tanh(x).into_data().to_vec().unwrap();
//! for (got, x) in y.iter().zip([0.0f32, 0.5, -1.0, 3.0]) {
//!     assert!((got - x.tanh()).abs() < 1e-6);
//! }
//! ```

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Element, Tensor, TensorData};
use padless_kernels::Real;

use crate::cpu::{fused_enabled, on_flex};
use crate::rnn::fused::HostData;

/// A function whose gradient its output alone gives, run by [`FusedOutputOpBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputOp {
    /// `tanh` element-wise; backward `d_x = d_y (1 - y^2)`.
    Tanh,
    /// Softmax over the last axis; backward `d_x = y (d_y - Σ d_y y)` per row.
    Softmax,
}

/// An [`OutputOp`] as one operation with its own backward pass (from the saved output).
#[backend_extension(Flex, Autodiff)]
pub trait FusedOutputOpBackend: Backend {
    /// `op(x)`, same shape (softmax over the last axis); `f32` or `f64`.
    fn fused_output_op(x: FloatTensor<Self>, op: OutputOp) -> FloatTensor<Self>;
}

/// `op(x)` through the fused operation on flex in f32 / f64, else `None`.
fn try_fused<const D: usize>(x: &Tensor<D>, op: OutputOp) -> Option<Tensor<D>> {
    let fused =
        fused_enabled() && on_flex(&x.device()) && matches!(x.dtype(), DType::F32 | DType::F64);
    fused.then(|| {
        let out =
            <Dispatch as FusedOutputOpBackend>::fused_output_op(x.clone().into_dispatch(), op);
        Tensor::from_dispatch(out)
    })
}

/// `tanh(x)` element-wise, same shape; vectorised on the CPU backend (see the module docs),
/// burn's `tanh` elsewhere. Differentiable. No mask: apply it to values and keep their mask.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    try_fused(&x, OutputOp::Tanh).unwrap_or_else(|| x.tanh())
}

/// `softmax(x)` over the last axis, same shape; one vectorised pass per row on the CPU
/// backend (see the module docs), burn's `softmax` elsewhere. Differentiable. No mask: every
/// entry of a row takes part (for scores with invalid entries see
/// [`masked_softmax`](crate::seq2seq::masked_softmax)); apply it to values and keep their mask.
///
/// ```
/// use burn::tensor::{Device, Tensor};
///
/// let device = Device::flex();
/// let x = Tensor::<2>::from_floats([[0.0, 0.0], [0.0, 2.0f32.ln()]], &device);
/// let y: Vec<f32> = padless::elementwise::softmax(x).into_data().to_vec().unwrap();
/// for (got, want) in y.iter().zip([0.5f32, 0.5, 1.0 / 3.0, 2.0 / 3.0]) {
///     assert!((got - want).abs() < 1e-6);
/// }
/// ```
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dims()[D - 1] > 0
        && let Some(y) = try_fused(&x, OutputOp::Softmax)
    {
        return y;
    }
    burn::tensor::activation::softmax(x, D - 1)
}

/// Reads a primitive of `B` into a host vector of `T`, runs `f` on it and writes it back in
/// the same shape.
fn on_host<B: Backend, T: Real + Element>(
    x: FloatTensor<B>,
    f: impl FnOnce(&mut Vec<T>),
) -> FloatTensor<B> {
    let (device, shape) = (x.device(), x.shape());
    let mut values = crate::rnn::fused::read::<B, T>(x);
    f(&mut values);
    B::float_from_data(TensorData::new(values, shape), &device)
}

/// The last axis' length (the softmax's row width; 1 for a tensor without axes).
fn row_width<B: Backend>(x: &FloatTensor<B>) -> usize {
    x.shape().last().copied().unwrap_or(1)
}

/// `op(x)` on the host.
fn forward_host<B: Backend>(x: FloatTensor<B>, op: OutputOp) -> FloatTensor<B> {
    fn typed<B: Backend, T: Real + Element>(x: FloatTensor<B>, op: OutputOp) -> FloatTensor<B> {
        let width = row_width::<B>(&x);
        on_host::<B, T>(x, |v| match op {
            OutputOp::Tanh => padless_kernels::tanh_in_place(v),
            OutputOp::Softmax => padless_kernels::softmax_rows_in_place(v, width),
        })
    }
    match x.dtype() {
        DType::F32 => typed::<B, f32>(x, op),
        DType::F64 => typed::<B, f64>(x, op),
        other => panic!("fused {op:?} runs on f32 or f64, got {other:?}"),
    }
}

/// The input's gradient from the output `y` and its gradient `d_y`.
fn backward_host<B: Backend>(
    y: FloatTensor<B>,
    d_y: FloatTensor<B>,
    op: OutputOp,
) -> FloatTensor<B> {
    fn typed<B: Backend, T: Real + Element + bytemuck::Pod>(
        y: FloatTensor<B>,
        d_y: FloatTensor<B>,
        op: OutputOp,
    ) -> FloatTensor<B> {
        let width = row_width::<B>(&y);
        let y = HostData::<T>::read::<B>(y);
        on_host::<B, T>(d_y, |d| match op {
            OutputOp::Tanh => padless_kernels::tanh_backward_in_place(y.as_slice(), d),
            OutputOp::Softmax => {
                padless_kernels::softmax_backward_rows_in_place(y.as_slice(), d, width)
            }
        })
    }
    match y.dtype() {
        DType::F32 => typed::<B, f32>(y, d_y, op),
        DType::F64 => typed::<B, f64>(y, d_y, op),
        other => panic!("fused {op:?} runs on f32 or f64, got {other:?}"),
    }
}

impl FusedOutputOpBackend for Flex {
    fn fused_output_op(x: FloatTensor<Self>, op: OutputOp) -> FloatTensor<Self> {
        forward_host::<Flex>(x, op)
    }
}

#[derive(Debug)]
struct FusedOutputOpBackward;

impl<B: Backend> Backward<B, 1> for FusedOutputOpBackward {
    /// The output `y` and the function.
    type State = (FloatTensor<B>, OutputOp);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_y = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let (y, op) = ops.state;
            grads.register::<B>(node.id, backward_host::<B>(y, d_y, op));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> FusedOutputOpBackend for Autodiff<B, C> {
    fn fused_output_op(x: FloatTensor<Self>, op: OutputOp) -> FloatTensor<Self> {
        let guards = [x.node()];
        let x = x.into_primitive();
        match FusedOutputOpBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward_host::<B>(x, op);
                prep.finish((y.clone(), op), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_host::<B>(x, op)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::with_composite;
    use crate::tensor_util::f32_vec;

    /// Values and gradients of `sum(w * tanh(x))` through [`tanh`] (fused on flex) and through
    /// burn's `tanh` (the composite path), on the autodiff CPU device; `x` spans the small-
    /// argument polynomial, the exponential form and saturation.
    fn value_and_gradient(composite: bool) -> (Vec<f32>, Vec<f32>) {
        let device = crate::training_device();
        let run = || {
            let xs: Vec<f32> = (0..42).map(|i| (i as f32 - 21.0) * 0.37).collect();
            let ws: Vec<f32> = (0..42).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
            let x = Tensor::<1>::from_floats(xs.as_slice(), &device)
                .reshape([2, 3, 7])
                .require_grad();
            let w = Tensor::<1>::from_floats(ws.as_slice(), &device).reshape([2, 3, 7]);
            let y = tanh(x.clone());
            let grads = (y.clone() * w).sum().backward();
            let d_x = x.grad(&grads).expect("x takes part in the loss");
            (f32_vec(y), f32_vec(d_x))
        };
        if composite {
            with_composite(run)
        } else {
            run()
        }
    }

    /// Values and gradients of `sum(w * softmax(x))` over the last axis through [`softmax`]
    /// and through burn's; rows with large scores (overflow without the maximum) and equal
    /// scores.
    fn softmax_value_and_gradient(composite: bool) -> (Vec<f32>, Vec<f32>) {
        let device = crate::training_device();
        let run = || {
            let mut xs: Vec<f32> = (0..60)
                .map(|i| ((i * 37) % 23) as f32 * 0.41 - 4.0)
                .collect();
            xs[5] = 95.0;
            xs[12..18].fill(0.25);
            let ws: Vec<f32> = (0..60).map(|i| (i % 7) as f32 - 3.0).collect();
            let x = Tensor::<1>::from_floats(xs.as_slice(), &device)
                .reshape([2, 5, 6])
                .require_grad();
            let w = Tensor::<1>::from_floats(ws.as_slice(), &device).reshape([2, 5, 6]);
            let y = softmax(x.clone());
            let grads = (y.clone() * w).sum().backward();
            let d_x = x.grad(&grads).expect("x takes part in the loss");
            (f32_vec(y), f32_vec(d_x))
        };
        if composite {
            with_composite(run)
        } else {
            run()
        }
    }

    #[test]
    fn fused_softmax_matches_burns_values_and_gradients() {
        let (y_fused, d_fused) = softmax_value_and_gradient(false);
        let (y_ref, d_ref) = softmax_value_and_gradient(true);
        for (i, (a, b)) in y_fused.iter().zip(&y_ref).enumerate() {
            assert!((a - b).abs() <= 1e-6, "y[{i}]: {a} vs {b}");
        }
        for (i, (a, b)) in d_fused.iter().zip(&d_ref).enumerate() {
            assert!(
                (a - b).abs() <= 2e-6 * b.abs().max(1.0),
                "dx[{i}]: {a} vs {b}"
            );
        }
        // The row with 95: all its weight on that entry, so no gradient to any of the row.
        assert!((y_fused[5] - 1.0).abs() < 1e-6);
        assert!(d_fused[0..6].iter().all(|d| d.abs() < 1e-6));
        // Six equal scores: a sixth each.
        assert!(y_fused[12..18].iter().all(|y| (y - 1.0 / 6.0).abs() < 1e-6));
    }

    #[test]
    fn fused_tanh_matches_burns_values_and_gradients() {
        let (y_fused, d_fused) = value_and_gradient(false);
        let (y_ref, d_ref) = value_and_gradient(true);
        for (i, (a, b)) in y_fused.iter().zip(&y_ref).enumerate() {
            assert!((a - b).abs() <= 1e-6, "y[{i}]: {a} vs {b}");
        }
        for (i, (a, b)) in d_fused.iter().zip(&d_ref).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "dx[{i}]: {a} vs {b}"
            );
        }
        // Near saturation (x = -7.77) the gradient is nearly 0; at x = 0 (element 21) the
        // output is 0 and the gradient the weight itself (0.5 + 1 * 0.25).
        assert!(d_fused[0].abs() < 1e-5);
        assert_eq!(y_fused[21], 0.0);
        assert_eq!(d_fused[21], 0.75);
    }
}
