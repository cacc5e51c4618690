//! Layer normalisation of rows as one fused operation: [`layer_norm_rows`].
//!
//! burn composes a LayerNorm from a mean, a variance, a subtraction, a division, a square
//! root and the affine map, each a pass over the tensor with its own output, and as many
//! again in backward. Here the forward pass is one pass per row (its mean and variance, then
//! `(x - mean) / sqrt(var + epsilon) * weight + bias`) keeping each row's mean and inverse
//! standard deviation, and the backward pass one pass per row for the input gradient plus
//! the column sums of the weight and bias gradients.

use burn::tensor::{Shape, Tensor};
use padless_kernels::Real;

use super::{BackwardInputs, Forward, FusedOp, HostFloat};
use crate::cpu::HostData;

/// `LayerNorm(x [rows, d]; weight [d], bias [d])` as a fused operation of three inputs; the
/// input and the weight are kept, and each row's mean and inverse standard deviation saved.
#[derive(Debug, Clone, Copy)]
struct LayerNormOp {
    epsilon: f64,
}

/// A row's mean and `1 / sqrt(var + epsilon)` (biased variance, as PyTorch).
fn statistics<T: HostFloat>(row: &[T], epsilon: T) -> (T, T) {
    let n = T::from_f64(row.len() as f64);
    let mean = row.iter().copied().sum::<T>() / n;
    let var = row.iter().map(|&x| (x - mean) * (x - mean)).sum::<T>() / n;
    (mean, T::ONE / Real::sqrt(var + epsilon))
}

impl FusedOp<3> for LayerNormOp {
    const NAME: &'static str = "the fused layer normalisation";
    const KEEP_INPUTS: [bool; 3] = [true, true, false];
    /// `[rows, 2]`: each row's mean and inverse standard deviation.
    type Saved<T: HostFloat> = Vec<T>;

    fn forward<T: HostFloat>(
        &self,
        [x, weight, bias]: [HostData<T>; 3],
        keep: bool,
    ) -> Forward<T, Vec<T>> {
        let (weight, bias) = (weight.as_slice(), bias.as_slice());
        let d = weight.len();
        let rows = x.shape()[0];
        let epsilon = T::from_f64(self.epsilon);
        let mut values = vec![T::ZERO; rows * d];
        let mut saved = Vec::with_capacity(if keep { 2 * rows } else { 0 });
        for (row, out) in x.as_slice().chunks_exact(d).zip(values.chunks_exact_mut(d)) {
            let (mean, inverse) = statistics(row, epsilon);
            for (((o, &x), &w), &b) in out.iter_mut().zip(row).zip(weight).zip(bias) {
                *o = (x - mean) * inverse * w + b;
            }
            if keep {
                saved.extend([mean, inverse]);
            }
        }
        Forward {
            values,
            shape: Shape::new([rows, d]),
            saved: keep.then_some(saved),
        }
    }

    /// With `x̂ = (x - mean) inverse` and `g = dy ⊙ weight`: `dx = inverse (g - mean(g) - x̂
    /// mean(g ⊙ x̂))` per row, `d weight = Σ_rows dy ⊙ x̂`, `d bias = Σ_rows dy`.
    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, Vec<T>, 3>) -> [Option<Vec<T>>; 3] {
        let [Some(x), Some(weight), _] = args.inputs else {
            unreachable!("the input and the weight are kept");
        };
        let weight = weight.as_slice();
        let d = weight.len();
        let n = T::from_f64(d as f64);
        let mut d_x = vec![
            T::ZERO;
            if args.wanted[0] {
                x.as_slice().len()
            } else {
                0
            }
        ];
        let mut d_weight = vec![T::ZERO; d];
        let mut d_bias = vec![T::ZERO; d];
        let mut normed = vec![T::ZERO; d];
        let mut g = vec![T::ZERO; d];
        let rows = x
            .as_slice()
            .chunks_exact(d)
            .zip(args.grad.as_slice().chunks_exact(d));
        for (i, ((row, dy), stats)) in rows.zip(args.saved.chunks_exact(2)).enumerate() {
            let (mean, inverse) = (stats[0], stats[1]);
            let (mut sum_g, mut sum_g_normed) = (T::ZERO, T::ZERO);
            for j in 0..d {
                normed[j] = (row[j] - mean) * inverse;
                d_weight[j] += dy[j] * normed[j];
                d_bias[j] += dy[j];
                g[j] = dy[j] * weight[j];
                sum_g += g[j];
                sum_g_normed += g[j] * normed[j];
            }
            if args.wanted[0] {
                let (mean_g, mean_g_normed) = (sum_g / n, sum_g_normed / n);
                for (j, dx) in d_x[i * d..(i + 1) * d].iter_mut().enumerate() {
                    *dx = inverse * (g[j] - mean_g - normed[j] * mean_g_normed);
                }
            }
        }
        [args.wanted[0].then_some(d_x), Some(d_weight), Some(d_bias)]
    }
}

/// `(x - mean) / sqrt(var + epsilon) * weight + bias` over each row of `x [rows, d]` (the
/// biased variance of the row's `d` values), as one differentiable operation.
///
/// The caller checks [`super::applies`] first; `x`, `weight [d]` and `bias [d]` have one
/// float type.
pub(crate) fn layer_norm_rows(
    x: Tensor<2>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    epsilon: f64,
) -> Tensor<2> {
    super::apply(
        LayerNormOp { epsilon },
        [
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
        ],
    )
}
