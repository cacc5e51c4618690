//! Functions that run vectorised on the CPU backend: [`tanh`] element-wise and [`softmax`]
//! over the last axis.
//!
//! burn's flex backend computes `tanh` one element at a time through the C library (measured:
//! about a fifth of a G2P decoding step went to `tanhf` in the attention's combine layer). On
//! flex, [`tanh`] runs [`padless_kernels::tanh_in_place`] as one burn operation
//! ([`FusedTanhBackend`]) with its own backward pass (`d_x = d_y (1 - y^2)` from the saved
//! output); other backends and float types use burn's `tanh`. [`softmax`] does the same with
//! [`padless_kernels::softmax_rows_in_place`] ([`FusedSoftmaxBackend`]; backward
//! `d_x = y (d_y - Σ d_y y)` per row), where burn's softmax is five tensor operations forward
//! and more backward.
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

use crate::rnn::fused::{HostData, fused_enabled, on_flex};

/// `tanh` as one operation with its own backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait FusedTanhBackend: Backend {
    /// `tanh(x)` element-wise; any shape, `f32` or `f64`.
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `tanh(x)` element-wise, same shape; vectorised on the CPU backend (see the module docs),
/// burn's `tanh` elsewhere. Differentiable. No mask: apply it to values and keep their mask.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let fused =
        fused_enabled() && on_flex(&x.device()) && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fused {
        return x.tanh();
    }
    let out = <Dispatch as FusedTanhBackend>::fused_tanh(x.into_dispatch());
    Tensor::from_dispatch(out)
}

/// The softmax over the last axis as one operation with its own backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait FusedSoftmaxBackend: Backend {
    /// `softmax(x)` over the last axis; any rank of at least 1, `f32` or `f64`.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
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
    let fused = fused_enabled()
        && on_flex(&x.device())
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dims()[D - 1] > 0;
    if !fused {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    let out = <Dispatch as FusedSoftmaxBackend>::fused_softmax(x.into_dispatch());
    Tensor::from_dispatch(out)
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

fn tanh_host<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    match x.dtype() {
        DType::F32 => on_host::<B, f32>(x, |v| padless_kernels::tanh_in_place(v)),
        DType::F64 => on_host::<B, f64>(x, |v| padless_kernels::tanh_in_place(v)),
        other => panic!("fused tanh runs on f32 or f64, got {other:?}"),
    }
}

/// `d_y (1 - y^2)`.
fn tanh_backward_host<B: Backend>(y: FloatTensor<B>, d_y: FloatTensor<B>) -> FloatTensor<B> {
    fn typed<B: Backend, T: Real + Element + bytemuck::Pod>(
        y: FloatTensor<B>,
        d_y: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let y = HostData::<T>::read::<B>(y);
        on_host::<B, T>(d_y, |d| {
            padless_kernels::tanh_backward_in_place(y.as_slice(), d)
        })
    }
    match y.dtype() {
        DType::F32 => typed::<B, f32>(y, d_y),
        DType::F64 => typed::<B, f64>(y, d_y),
        other => panic!("fused tanh runs on f32 or f64, got {other:?}"),
    }
}

/// The last axis' length (the softmax's row width).
fn row_width<B: Backend>(x: &FloatTensor<B>) -> usize {
    *x.shape().last().expect("softmax needs at least one axis")
}

fn softmax_host<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let width = row_width::<B>(&x);
    match x.dtype() {
        DType::F32 => on_host::<B, f32>(x, |v| padless_kernels::softmax_rows_in_place(v, width)),
        DType::F64 => on_host::<B, f64>(x, |v| padless_kernels::softmax_rows_in_place(v, width)),
        other => panic!("fused softmax runs on f32 or f64, got {other:?}"),
    }
}

/// `y (d_y - Σ d_y y)` per row.
fn softmax_backward_host<B: Backend>(y: FloatTensor<B>, d_y: FloatTensor<B>) -> FloatTensor<B> {
    fn typed<B: Backend, T: Real + Element + bytemuck::Pod>(
        y: FloatTensor<B>,
        d_y: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let width = row_width::<B>(&y);
        let y = HostData::<T>::read::<B>(y);
        on_host::<B, T>(d_y, |d| {
            padless_kernels::softmax_backward_rows_in_place(y.as_slice(), d, width)
        })
    }
    match y.dtype() {
        DType::F32 => typed::<B, f32>(y, d_y),
        DType::F64 => typed::<B, f64>(y, d_y),
        other => panic!("fused softmax runs on f32 or f64, got {other:?}"),
    }
}

impl FusedSoftmaxBackend for Flex {
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_host::<Flex>(x)
    }
}

#[derive(Debug)]
struct FusedSoftmaxBackward;

impl<B: Backend> Backward<B, 1> for FusedSoftmaxBackward {
    /// The output `y`.
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_y = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, softmax_backward_host::<B>(ops.state, d_y));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> FusedSoftmaxBackend for Autodiff<B, C> {
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let guards = [x.node()];
        let x = x.into_primitive();
        match FusedSoftmaxBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = softmax_host::<B>(x);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(softmax_host::<B>(x)),
        }
    }
}

impl FusedTanhBackend for Flex {
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tanh_host::<Flex>(x)
    }
}

#[derive(Debug)]
struct FusedTanhBackward;

impl<B: Backend> Backward<B, 1> for FusedTanhBackward {
    /// The output `y`.
    type State = FloatTensor<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_y = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, tanh_backward_host::<B>(ops.state, d_y));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> FusedTanhBackend for Autodiff<B, C> {
    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let guards = [x.node()];
        let x = x.into_primitive();
        match FusedTanhBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = tanh_host::<B>(x);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(tanh_host::<B>(x)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rnn::fused::with_composite;
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
