//! A [`Dense`](super::Dense) layer's `x W + b` as one operation on the CPU backend, with its
//! own backward pass: [`fused_affine`].
//!
//! burn's CPU backend runs a matrix product on one thread and the bias as a second pass with
//! its own output; here [`padless_kernels::dense_forward`] writes the bias and accumulates
//! the product into it, on the kernels' thread pair when the product is large (a dense layer
//! over every step of a batch), and [`padless_kernels::dense_backward`] computes the input,
//! weight and bias gradients the same way (the input's only when it needs one). Other
//! backends and float types compose burn's operations, with the same values.

use burn::tensor::{Shape, Tensor};

use crate::cpu::{self, HostData};
use crate::ops::{self, BackwardInputs, Forward, FusedOp, HostFloat};

/// `x [rows, d_in] · kernel [d_in, d_out] + bias [d_out]` as a fused operation of three
/// inputs, or with `transposed` `x · weight^T + bias` for `weight [d_out, d_in]` (PyTorch's
/// layout, read in place); without `has_bias` the bias input is a stand-in, ignored and given
/// no gradient.
#[derive(Debug, Clone, Copy)]
struct AffineOp {
    has_bias: bool,
    transposed: bool,
}

impl AffineOp {
    /// `[rows, d_in, d_out]` of a call.
    fn dims(&self, x: &Shape, kernel: &Shape) -> [usize; 3] {
        let d_out = if self.transposed {
            kernel[0]
        } else {
            kernel[1]
        };
        [x[0], x[1], d_out]
    }
}

impl FusedOp<3> for AffineOp {
    const NAME: &'static str = "the fused dense layer";
    /// The input and the kernel.
    const KEEP_INPUTS: [bool; 3] = [true, true, false];
    type Saved<T: HostFloat> = ();

    fn forward<T: HostFloat>(
        &self,
        [x, kernel, bias]: [HostData<T>; 3],
        keep: bool,
    ) -> Forward<T, ()> {
        let [rows, d_in, d_out] = self.dims(x.shape(), kernel.shape());
        let forward = if self.transposed {
            padless_kernels::linear_forward
        } else {
            padless_kernels::dense_forward
        };
        let values = forward(
            x.as_slice(),
            rows,
            d_in,
            kernel.as_slice(),
            d_out,
            self.has_bias.then(|| bias.as_slice()),
            cpu::threads(),
        );
        Forward {
            values,
            shape: Shape::new([rows, d_out]),
            saved: keep.then_some(()),
        }
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, (), 3>) -> [Option<Vec<T>>; 3] {
        let [Some(x), Some(kernel), _] = args.inputs else {
            unreachable!("the input and the kernel are kept");
        };
        let [rows, d_in, d_out] = self.dims(x.shape(), kernel.shape());
        let input_gradient = args.wanted[0];
        let with_bias = self.has_bias && args.wanted[2];
        let backward = if self.transposed {
            padless_kernels::linear_backward
        } else {
            padless_kernels::dense_backward
        };
        let g = backward(
            x.as_slice(),
            rows,
            d_in,
            kernel.as_slice(),
            d_out,
            args.grad.as_slice(),
            with_bias,
            input_gradient,
            cpu::threads(),
        );
        [
            input_gradient.then_some(g.d_x),
            Some(g.d_w),
            g.d_bias.filter(|_| with_bias),
        ]
    }
}

/// `x [rows, d_in] · kernel [d_in, d_out] (+ bias [d_out])`: one operation on the CPU backend
/// (see the module docs), burn's `matmul` and `add` elsewhere. Differentiable.
pub(crate) fn fused_affine(x: Tensor<2>, kernel: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    affine(x, kernel, bias, false)
}

/// `x [rows, d_in] · weight^T + bias` for `weight [d_out, d_in]` (PyTorch's `Linear` layout):
/// as [`fused_affine`], the weight read as it is stored (no transposed copy on the CPU
/// backend, and its gradient comes out in the same layout).
pub(crate) fn fused_linear(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    affine(x, weight, bias, true)
}

fn affine(x: Tensor<2>, kernel: Tensor<2>, bias: Option<Tensor<1>>, transposed: bool) -> Tensor<2> {
    if !ops::applies(&x.device(), x.dtype()) || x.dtype() != kernel.dtype() {
        let kernel = if transposed {
            kernel.transpose()
        } else {
            kernel
        };
        let y = x.matmul(kernel);
        return match bias {
            Some(b) => y + b.unsqueeze_dim::<2>(0),
            None => y,
        };
    }
    let has_bias = bias.is_some();
    // A stand-in without a bias: read by nobody, given no gradient.
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1], &x.device()));
    ops::apply(
        AffineOp {
            has_bias,
            transposed,
        },
        [
            x.into_dispatch(),
            kernel.into_dispatch(),
            bias.into_dispatch(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{set_threads, with_composite};
    use crate::tensor_util::f32_vec;

    /// Output and the gradients of input, kernel and bias of `sum(w * (x K + b))` through
    /// [`fused_affine`] and through burn's composite operations.
    fn observe(rows: usize, with_bias: bool, composite: bool) -> Vec<Vec<f32>> {
        observe_layout(rows, with_bias, composite, false)
    }

    /// As [`observe`], the kernel passed to [`fused_linear`] as its transpose `[d_out, d_in]`
    /// when `transposed` (its gradient transposed back).
    fn observe_layout(
        rows: usize,
        with_bias: bool,
        composite: bool,
        transposed: bool,
    ) -> Vec<Vec<f32>> {
        let device = crate::training_device();
        let (d_in, d_out) = (130, 33);
        let run = || {
            let values = |n: usize, seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i + 1) * (2 * seed + 1) * 7919) % 2001) as f32 / 1000.0 - 1.0)
                    .collect()
            };
            let x = Tensor::<1>::from_floats(values(rows * d_in, 1).as_slice(), &device)
                .reshape([rows, d_in])
                .require_grad();
            let k = Tensor::<1>::from_floats(values(d_in * d_out, 2).as_slice(), &device)
                .reshape([d_in, d_out])
                .require_grad();
            let b = Tensor::<1>::from_floats(values(d_out, 3).as_slice(), &device).require_grad();
            let w = Tensor::<1>::from_floats(values(rows * d_out, 4).as_slice(), &device)
                .reshape([rows, d_out]);
            let bias = with_bias.then(|| b.clone());
            let (y, grads, d_k) = if transposed {
                let k_t = Tensor::<2>::from_data(k.clone().transpose().into_data(), &device)
                    .require_grad();
                let y = fused_linear(x.clone(), k_t.clone(), bias);
                let grads = (y.clone() * w).sum().backward();
                let d_k = k_t.grad(&grads).unwrap().transpose();
                (y, grads, d_k)
            } else {
                let y = fused_affine(x.clone(), k.clone(), bias);
                let grads = (y.clone() * w).sum().backward();
                let d_k = k.grad(&grads).unwrap();
                (y, grads, d_k)
            };
            let mut out = vec![f32_vec(y), f32_vec(x.grad(&grads).unwrap()), f32_vec(d_k)];
            if with_bias {
                out.push(f32_vec(b.grad(&grads).unwrap()));
            } else {
                assert!(b.grad(&grads).is_none(), "no bias, no gradient");
            }
            out
        };
        if composite {
            with_composite(run)
        } else {
            run()
        }
    }

    #[test]
    fn fused_affine_matches_burns_values_and_gradients() {
        // 7 rows run on one thread, 2000 rows on the thread pair.
        for threads in [1, 2] {
            set_threads(threads);
            let cases = [(7, true), (2000, true), (2000, false)];
            for ((rows, with_bias), transposed) in cases
                .into_iter()
                .flat_map(|case| [(case, false), (case, true)])
            {
                let fused = observe_layout(rows, with_bias, false, transposed);
                let composite = observe(rows, with_bias, true);
                for (i, (f, c)) in fused.iter().zip(&composite).enumerate() {
                    let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    for (a, b) in f.iter().zip(c) {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "part {i} ({rows} rows, transposed {transposed}): {a} vs {b}"
                        );
                    }
                }
            }
        }
        set_threads(0);
    }
}
