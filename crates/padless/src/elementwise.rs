//! Functions that run vectorised on the CPU backend: [`tanh`] element-wise and [`softmax`]
//! over the last axis.
//!
//! burn's flex backend computes `tanh` one element at a time through the C library, and its
//! softmax is five tensor operations forward and more backward. On flex both run as one
//! fused operation each (`OutputOp`): the forward pass through
//! [`padless_kernels::tanh_in_place`] or [`padless_kernels::softmax_rows_in_place`], the
//! backward pass from the kept output alone (`d_x = d_y (1 - y^2)`; `d_x = y (d_y - Σ d_y y)`
//! per row). Other backends and float types use burn's functions.
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

use burn::tensor::Tensor;

use crate::cpu::HostData;
use crate::ops::{self, BackwardInputs, Forward, FusedOp, HostFloat};

/// A function whose gradient its output alone gives, as a fused operation of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputOp {
    /// `tanh` element-wise; backward `d_x = d_y (1 - y^2)`.
    Tanh,
    /// Softmax over the last axis; backward `d_x = y (d_y - Σ d_y y)` per row.
    Softmax,
}

impl FusedOp<1> for OutputOp {
    const NAME: &'static str = "the fused tanh or softmax";
    const KEEP_OUTPUT: bool = true;
    type Saved<T: HostFloat> = ();

    fn forward<T: HostFloat>(&self, [x]: [HostData<T>; 1], keep: bool) -> Forward<T, ()> {
        let shape = x.shape().clone();
        let width = row_width(&shape);
        let mut values = x.into_vec();
        match self {
            OutputOp::Tanh => padless_kernels::tanh_in_place(&mut values),
            OutputOp::Softmax => padless_kernels::softmax_rows_in_place(&mut values, width),
        }
        Forward {
            values,
            shape,
            saved: keep.then_some(()),
        }
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, (), 1>) -> [Option<Vec<T>>; 1] {
        let y = args.output.expect("the output is kept");
        let width = row_width(y.shape());
        let mut d = args.grad.into_vec();
        match self {
            OutputOp::Tanh => padless_kernels::tanh_backward_in_place(y.as_slice(), &mut d),
            OutputOp::Softmax => {
                padless_kernels::softmax_backward_rows_in_place(y.as_slice(), &mut d, width)
            }
        }
        [Some(d)]
    }
}

/// The last axis' length (the softmax's row width; 1 for a tensor without axes).
fn row_width(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

/// `op(x)` through the fused operation on flex in f32 / f64, else `None`.
fn try_fused<const D: usize>(x: &Tensor<D>, op: OutputOp) -> Option<Tensor<D>> {
    ops::applies(&x.device(), x.dtype()).then(|| ops::apply(op, [x.clone().into_dispatch()]))
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
