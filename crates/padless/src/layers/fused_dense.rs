//! A [`Dense`](super::Dense) layer's `x W + b` as one operation on the CPU backend, with its
//! own backward pass: [`fused_affine`].
//!
//! burn's CPU backend runs a matrix product on one thread and the bias as a second pass with
//! its own output; here [`padless_kernels::dense_forward`] writes the bias and accumulates
//! the product into it, on the kernels' thread pair when the product is large (a dense layer
//! over every step of a batch), and [`padless_kernels::dense_backward`] computes the input,
//! weight and bias gradients the same way (the input's only when it needs one). Other
//! backends and float types compose burn's operations, with the same values.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Element, Tensor};
use padless_kernels::Real;

use crate::cpu::{fused_enabled, on_flex, threads};
use crate::rnn::fused::{HostData, write};

/// `x W + b` as one operation with its own backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait FusedAffineBackend: Backend {
    /// `x [rows, d_in] · kernel [d_in, d_out] + bias [d_out]` (the bias ignored and given no
    /// gradient without `has_bias`); `f32` or `f64`.
    fn fused_affine(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self>;
}

/// `x [rows, d_in] · kernel [d_in, d_out] (+ bias [d_out])`: one operation on the CPU backend
/// (see the module docs), burn's `matmul` and `add` elsewhere. Differentiable.
pub(crate) fn fused_affine(x: Tensor<2>, kernel: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    let fused = fused_enabled()
        && on_flex(&x.device())
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == kernel.dtype();
    if !fused {
        let y = x.matmul(kernel);
        return match bias {
            Some(b) => y + b.unsqueeze_dim::<2>(0),
            None => y,
        };
    }
    let has_bias = bias.is_some();
    // A stand-in without a bias: read by nobody, given no gradient.
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1], &x.device()));
    let out = <Dispatch as FusedAffineBackend>::fused_affine(
        x.into_dispatch(),
        kernel.into_dispatch(),
        bias.into_dispatch(),
        has_bias,
    );
    Tensor::from_dispatch(out)
}

/// `[rows, d_in]` and `d_out` of a call.
fn dims<B: Backend>(x: &FloatTensor<B>, kernel: &FloatTensor<B>) -> (usize, usize, usize) {
    let (x_shape, k_shape) = (x.shape(), kernel.shape());
    (x_shape[0], x_shape[1], k_shape[1])
}

fn forward_host<B: Backend>(
    x: FloatTensor<B>,
    kernel: FloatTensor<B>,
    bias: FloatTensor<B>,
    has_bias: bool,
) -> FloatTensor<B> {
    fn typed<B: Backend, T: Real + Element + bytemuck::Pod>(
        x: FloatTensor<B>,
        kernel: FloatTensor<B>,
        bias: FloatTensor<B>,
        has_bias: bool,
    ) -> FloatTensor<B> {
        let (rows, d_in, d_out) = dims::<B>(&x, &kernel);
        let device = x.device();
        let (x, kernel, bias) = (
            HostData::<T>::read::<B>(x),
            HostData::<T>::read::<B>(kernel),
            HostData::<T>::read::<B>(bias),
        );
        let y = padless_kernels::dense_forward(
            x.as_slice(),
            rows,
            d_in,
            kernel.as_slice(),
            d_out,
            has_bias.then(|| bias.as_slice()),
            threads(),
        );
        write::<B, T>(y, vec![rows, d_out], &device)
    }
    match x.dtype() {
        DType::F32 => typed::<B, f32>(x, kernel, bias, has_bias),
        DType::F64 => typed::<B, f64>(x, kernel, bias, has_bias),
        other => panic!("fused dense runs on f32 or f64, got {other:?}"),
    }
}

impl FusedAffineBackend for Flex {
    fn fused_affine(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        forward_host::<Flex>(x, kernel, bias, has_bias)
    }
}

#[derive(Debug)]
struct FusedAffineBackward;

impl<B: Backend> Backward<B, 3> for FusedAffineBackward {
    /// The input, the kernel and whether the bias is real.
    type State = (FloatTensor<B>, FloatTensor<B>, bool);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_y = grads.consume::<B>(&ops.node);
        let (x, kernel, has_bias) = ops.state;
        let [x_node, kernel_node, bias_node] = ops.parents;
        let bias_node = bias_node.filter(|_| has_bias);
        let (rows, d_in, d_out) = dims::<B>(&x, &kernel);
        let device = x.device();
        fn typed<B: Backend, T: Real + Element + bytemuck::Pod>(
            x: FloatTensor<B>,
            kernel: FloatTensor<B>,
            d_y: FloatTensor<B>,
            [rows, d_in, d_out]: [usize; 3],
            with_bias: bool,
            input_gradient: bool,
        ) -> padless_kernels::DenseGradients<T> {
            let (x, kernel, d_y) = (
                HostData::<T>::read::<B>(x),
                HostData::<T>::read::<B>(kernel),
                HostData::<T>::read::<B>(d_y),
            );
            padless_kernels::dense_backward(
                x.as_slice(),
                rows,
                d_in,
                kernel.as_slice(),
                d_out,
                d_y.as_slice(),
                with_bias,
                input_gradient,
                threads(),
            )
        }
        let shape = [rows, d_in, d_out];
        let (with_bias, input_gradient) = (bias_node.is_some(), x_node.is_some());
        macro_rules! register {
            ($t:ty) => {{
                let g = typed::<B, $t>(x, kernel, d_y, shape, with_bias, input_gradient);
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, write::<B, $t>(g.d_x, vec![rows, d_in], &device));
                }
                if let Some(node) = kernel_node {
                    grads.register::<B>(node.id, write::<B, $t>(g.d_w, vec![d_in, d_out], &device));
                }
                if let (Some(node), Some(d_bias)) = (bias_node, g.d_bias) {
                    grads.register::<B>(node.id, write::<B, $t>(d_bias, vec![d_out], &device));
                }
            }};
        }
        match x.dtype() {
            DType::F32 => register!(f32),
            DType::F64 => register!(f64),
            other => panic!("fused dense runs on f32 or f64, got {other:?}"),
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> FusedAffineBackend for Autodiff<B, C> {
    fn fused_affine(
        x: FloatTensor<Self>,
        kernel: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let guards = [x.node(), kernel.node(), bias.node()];
        let (x, kernel, bias) = (
            x.into_primitive(),
            kernel.into_primitive(),
            bias.into_primitive(),
        );
        match FusedAffineBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward_host::<B>(x.clone(), kernel.clone(), bias, has_bias);
                prep.finish((x, kernel, has_bias), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_host::<B>(x, kernel, bias, has_bias)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{set_threads, with_composite};
    use crate::tensor_util::f32_vec;

    /// Output and the gradients of input, kernel and bias of `sum(w * (x K + b))` through
    /// [`fused_affine`] and through burn's composite operations.
    fn observe(rows: usize, with_bias: bool, composite: bool) -> Vec<Vec<f32>> {
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
            let y = fused_affine(x.clone(), k.clone(), with_bias.then(|| b.clone()));
            let grads = (y.clone() * w).sum().backward();
            let mut out = vec![
                f32_vec(y),
                f32_vec(x.grad(&grads).unwrap()),
                f32_vec(k.grad(&grads).unwrap()),
            ];
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
            for (rows, with_bias) in [(7, true), (2000, true), (2000, false)] {
                let fused = observe(rows, with_bias, false);
                let composite = observe(rows, with_bias, true);
                for (i, (f, c)) in fused.iter().zip(&composite).enumerate() {
                    let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    for (a, b) in f.iter().zip(c) {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "part {i} ({rows} rows): {a} vs {b}"
                        );
                    }
                }
            }
        }
        set_threads(0);
    }
}
