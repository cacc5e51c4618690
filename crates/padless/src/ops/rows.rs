//! A Transformer block's element-wise ends over packed rows as fused operations:
//! [`add_norm_rows`] (`LayerNorm(x + dropout(y))`, the post-norm residual) and
//! [`dropout_rows`] (dropout, optionally after a ReLU), both on the kernels' thread pair
//! (`padless_kernels::ops::rows`).
//!
//! Composed from burn's operations these are a dropout mask drawn into a tensor of its own, a
//! product, a sum and a LayerNorm, each writing a new tensor, run on one thread. Here each is
//! one pass forward and one backward; which elements dropout keeps is a hash of a seed (drawn
//! from the device's generator, so `device.seed` keeps runs repeatable) and the element's
//! index, so the backward pass drops the same elements without a stored mask.

use burn::tensor::{Device, Tensor};
use padless_kernels::{ElementDropout, RowNorm};

use super::{BackwardInputs, Forward, FusedOp, HostFloat};
use crate::cpu::{self, HostData};
use crate::layers::seed_from;

/// Dropout at `rate` on a training (autodiff) device, with a seed from its generator; `None`
/// at rate 0 or on an inference device.
pub(crate) fn element_dropout(rate: f64, device: &Device) -> Option<ElementDropout> {
    (rate > 0.0 && device.is_autodiff()).then(|| ElementDropout::new(rate, seed_from(device)))
}

/// `LayerNorm(x + dropout(y))` over rows: inputs `x`, `y [rows, d]`, `weight`, `bias [d]`;
/// `x`, `y` and the weight kept, each row's mean and inverse standard deviation saved.
#[derive(Debug, Clone, Copy)]
struct AddNormOp {
    epsilon: f64,
    dropout: Option<ElementDropout>,
}

impl FusedOp<4> for AddNormOp {
    const NAME: &'static str = "the fused residual layer normalisation";
    const KEEP_INPUTS: [bool; 4] = [true, true, true, false];
    /// `[rows, 2]`: each row's mean and inverse standard deviation.
    type Saved<T: HostFloat> = Vec<T>;

    fn forward<T: HostFloat>(
        &self,
        [x, y, weight, bias]: [HostData<T>; 4],
        keep: bool,
    ) -> Forward<T, Vec<T>> {
        let norm = RowNorm {
            weight: weight.as_slice(),
            bias: bias.as_slice(),
            epsilon: self.epsilon,
        };
        let result = padless_kernels::add_norm_forward(
            x.as_slice(),
            y.as_slice(),
            self.dropout.as_ref(),
            &norm,
            cpu::threads(),
        );
        Forward {
            values: result.out,
            shape: x.shape().clone(),
            saved: keep.then_some(result.stats),
        }
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, Vec<T>, 4>) -> [Option<Vec<T>>; 4] {
        let [Some(x), Some(y), Some(weight), _] = args.inputs else {
            unreachable!("x, y and the weight are kept");
        };
        let g = padless_kernels::add_norm_backward(
            x.as_slice(),
            y.as_slice(),
            self.dropout.as_ref(),
            weight.as_slice(),
            &args.saved,
            args.grad.as_slice(),
            args.wanted[1],
            cpu::threads(),
        );
        [
            args.wanted[0].then_some(g.d_x),
            args.wanted[1].then_some(g.d_y),
            Some(g.d_weight),
            Some(g.d_bias),
        ]
    }
}

/// `LayerNorm(x + dropout(y))` over each row of `x`, `y [rows, d]` with `weight`, `bias
/// [d]` (PyTorch's LayerNorm: biased variance, `epsilon` added to it), as one differentiable
/// operation; without `dropout`, `LayerNorm(x + y)`.
///
/// The caller checks [`super::applies`] first; all inputs have one float type.
pub(crate) fn add_norm_rows(
    x: Tensor<2>,
    y: Tensor<2>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    epsilon: f64,
    dropout: Option<ElementDropout>,
) -> Tensor<2> {
    super::apply(
        AddNormOp { epsilon, dropout },
        [
            x.into_dispatch(),
            y.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
        ],
    )
}

/// `dropout(relu(x))` (with `relu`) or `dropout(x)` element by element; `x` kept.
#[derive(Debug, Clone, Copy)]
struct DropoutOp {
    dropout: ElementDropout,
    relu: bool,
}

impl FusedOp<1> for DropoutOp {
    const NAME: &'static str = "the fused dropout";
    const KEEP_INPUTS: [bool; 1] = [true];
    type Saved<T: HostFloat> = ();

    fn forward<T: HostFloat>(&self, [x]: [HostData<T>; 1], keep: bool) -> Forward<T, ()> {
        let values = padless_kernels::dropout_forward(
            x.as_slice(),
            &self.dropout,
            self.relu,
            cpu::threads(),
        );
        Forward {
            values,
            shape: x.shape().clone(),
            saved: keep.then_some(()),
        }
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, (), 1>) -> [Option<Vec<T>>; 1] {
        let [Some(x)] = args.inputs else {
            unreachable!("the input is kept");
        };
        let d_x = padless_kernels::dropout_backward(
            x.as_slice(),
            &self.dropout,
            self.relu,
            args.grad.as_slice(),
            cpu::threads(),
        );
        [Some(d_x)]
    }
}

/// `dropout(relu(x))` with `relu`, else `dropout(x)`, as one differentiable operation.
///
/// The caller checks [`super::applies`] first.
pub(crate) fn dropout_rows(x: Tensor<2>, dropout: ElementDropout, relu: bool) -> Tensor<2> {
    super::apply(DropoutOp { dropout, relu }, [x.into_dispatch()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{set_threads, with_composite};
    use crate::layers::ActivationKind;
    use crate::tensor_util::f32_vec;
    use burn::tensor::DType;

    /// Deterministic values in about [-1, 1].
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + 1) * (2 * seed + 1) * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Without dropout, `add_norm_rows` and `dropout_rows` (rate 0, after a ReLU) give burn's
    /// composite `LayerNorm(x + y)` and `relu(x)` values and gradients (f64, on one and two
    /// threads); with dropout, the kept elements are those of the kernel's hash, and the
    /// gradient reaching `y` is `x`'s times the same factors.
    #[test]
    fn fused_rows_match_burns_composite_operations() {
        let device = crate::training_device();
        let (rows, d) = (700, 48);
        let tensor = |seed: usize, shape: [usize; 2]| {
            Tensor::<1>::from_floats(values(shape[0] * shape[1], seed).as_slice(), &device)
                .reshape(shape)
                .cast(DType::F64)
        };
        let run = |fused: bool| {
            let x = tensor(1, [rows, d]).require_grad();
            let y = tensor(2, [rows, d]).require_grad();
            let weight = (tensor(3, [1, d]).reshape([d]) + 1.0).require_grad();
            let bias = tensor(4, [1, d]).reshape([d]).require_grad();
            let w = tensor(5, [rows, d]);
            let (normed, relu) = if fused {
                let none = ElementDropout::new(0.0, 0);
                (
                    add_norm_rows(
                        x.clone(),
                        y.clone(),
                        weight.clone(),
                        bias.clone(),
                        1e-5,
                        None,
                    ),
                    dropout_rows(y.clone(), none, true),
                )
            } else {
                let z = x.clone() + y.clone();
                let (var, mean) = z.clone().var_mean_bias(1);
                let normed = (z - mean) / (var + 1e-5).sqrt() * weight.clone().unsqueeze_dim(0)
                    + bias.clone().unsqueeze_dim(0);
                (normed, ActivationKind::Relu.apply(y.clone()))
            };
            let loss = (normed.clone() * w.clone()).sum() + (relu.clone() * w).sum();
            let grads = loss.backward();
            let to_f32 = |t: Tensor<2>| t.cast(DType::F32);
            vec![
                f32_vec(to_f32(normed)),
                f32_vec(to_f32(relu)),
                f32_vec(x.grad(&grads).unwrap().cast(DType::F32)),
                f32_vec(y.grad(&grads).unwrap().cast(DType::F32)),
                f32_vec(weight.grad(&grads).unwrap().cast(DType::F32)),
                f32_vec(bias.grad(&grads).unwrap().cast(DType::F32)),
            ]
        };
        let composite = with_composite(|| run(false));
        for threads in [1, 2] {
            set_threads(threads);
            let fused = run(true);
            for (part, (f, c)) in fused.iter().zip(&composite).enumerate() {
                let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in f.iter().zip(c).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * scale,
                        "part {part}[{i}] ({threads} threads): {a} vs {b}"
                    );
                }
            }
        }
        set_threads(0);

        // With dropout: the output is LayerNorm(x + f ⊙ y) with the kernel's factors f, and
        // y's gradient is x's times f.
        let dropout = ElementDropout::new(0.25, 77);
        let factors: Vec<f32> = (0..rows * d)
            .map(|i| if dropout.keeps(i) { 4.0 / 3.0 } else { 0.0 })
            .collect();
        let x = tensor(1, [rows, d]).require_grad();
        let y = tensor(2, [rows, d]).require_grad();
        let (weight, bias) = (
            Tensor::<1>::ones([d], &device),
            Tensor::<1>::zeros([d], &device),
        );
        let (weight, bias) = (weight.cast(DType::F64), bias.cast(DType::F64));
        let out = add_norm_rows(x.clone(), y.clone(), weight, bias, 1e-5, Some(dropout));
        let grads = (out.clone() * tensor(5, [rows, d])).sum().backward();
        let f = Tensor::<1>::from_floats(factors.as_slice(), &device)
            .reshape([rows, d])
            .cast(DType::F64);
        let z = tensor(1, [rows, d]) + tensor(2, [rows, d]) * f.clone();
        let (var, mean) = z.clone().var_mean_bias(1);
        let want = f32_vec(((z - mean) / (var + 1e-5).sqrt()).cast(DType::F32));
        let got = f32_vec(out.cast(DType::F32));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-5, "dropped output[{i}]: {a} vs {b}");
        }
        let d_x = f32_vec(x.grad(&grads).unwrap().cast(DType::F32));
        let d_y = f32_vec(y.grad(&grads).unwrap().cast(DType::F32));
        for (i, ((dx, dy), f)) in d_x.iter().zip(&d_y).zip(&factors).enumerate() {
            assert!((dx * f - dy).abs() < 1e-6, "d_y[{i}]: {dy} vs {dx} x {f}");
        }
    }
}
