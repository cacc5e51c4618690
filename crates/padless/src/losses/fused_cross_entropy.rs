//! The categorical cross-entropies' per-step loss as one operation on the CPU backend, with
//! its own backward pass: [`fused_per_step`].
//!
//! The composite loss ([`LossKind::per_step`](super::LossKind)) is a chain of a dozen burn
//! operations over `[batch, time, classes]` (mask fills, normalisation, clip, log, products,
//! sums) and as many again in backward. Here one pass per step computes the same value:
//! `-Σ_c t'_c log p_c` with `t' = (1 - ε) t + ε / C` (`t` the dense target or the label's
//! one-hot), `log p` the log-softmax of logits or `log clip(y / Σ y, ε_clip, 1 - ε_clip)` of
//! probabilities; and one pass its gradient. Masked steps give 0 and get a gradient of 0,
//! without reading their predictions or targets.

use std::sync::Arc;

use burn::tensor::{DType, Shape, Tensor};
use num_traits::Float;

use super::kind::EPSILON;
use crate::cpu::HostData;
use crate::ops::{self, BackwardInputs, Forward, FusedOp, HostFloat};

/// The targets of a fused call, on the host.
#[derive(Debug, Clone)]
pub enum CrossEntropyTargets {
    /// `[batch, time, classes]`, row-major.
    Dense(Arc<[f32]>),
    /// `[batch, time]` class ids (read at valid steps only).
    Labels(Arc<[i64]>),
}

/// Everything about a fused cross-entropy call that is not the prediction tensor.
#[derive(Debug, Clone)]
pub struct CrossEntropySpec {
    /// Rows, steps and classes of the prediction.
    pub shape: [usize; 3],
    /// Logits (log-softmax) or probabilities (normalised and clipped).
    pub from_logits: bool,
    /// Label smoothing in `[0, 1)`.
    pub epsilon: f32,
    /// The targets.
    pub targets: CrossEntropyTargets,
    /// `[batch, time]`, true = valid.
    pub valid: Arc<[bool]>,
}

/// The per-step loss `[batch, time]` (0 at masked steps) through the fused operation, or
/// `None` where it does not apply (another backend or float type, or the fused operations
/// switched off): the caller then runs the composite loss, which gives the same values.
pub(crate) fn fused_per_step(y_pred: &Tensor<3>, spec: CrossEntropySpec) -> Option<Tensor<2>> {
    if !ops::applies(&y_pred.device(), y_pred.dtype()) || y_pred.dtype() != DType::F32 {
        return None;
    }
    Some(ops::apply(
        CrossEntropyOp { spec },
        [y_pred.clone().into_dispatch()],
    ))
}

/// The per-step loss of predictions `[batch, time, classes]` as a fused operation of one
/// input, kept for the backward pass.
#[derive(Debug, Clone)]
struct CrossEntropyOp {
    spec: CrossEntropySpec,
}

impl FusedOp<1> for CrossEntropyOp {
    const NAME: &'static str = "the fused categorical cross-entropy";
    const KEEP_INPUTS: [bool; 1] = [true];
    type Saved<T: HostFloat> = ();

    fn forward<T: HostFloat>(&self, [y_pred]: [HostData<T>; 1], keep: bool) -> Forward<T, ()> {
        let [batch, time, _] = self.spec.shape;
        Forward {
            values: forward_host(y_pred.as_slice(), &self.spec),
            shape: Shape::new([batch, time]),
            saved: keep.then_some(()),
        }
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, (), 1>) -> [Option<Vec<T>>; 1] {
        let [Some(y_pred)] = args.inputs else {
            unreachable!("the predictions are kept");
        };
        [Some(backward_host(
            y_pred.as_slice(),
            args.grad.as_slice(),
            &self.spec,
        ))]
    }
}

/// `x` in `T` (every `f32` is one).
fn real<T: Float>(x: f32) -> T {
    T::from(x).expect("an f32 is a value of every float type")
}

/// `x` limited to `[lo, hi]`, as `f32::clamp` (NaN stays NaN).
fn clamp<T: Float>(x: T, lo: T, hi: T) -> T {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// `t'_c` of one valid step: the smoothed target distribution, written into `t`.
fn step_targets<T: Float>(spec: &CrossEntropySpec, step: usize, t: &mut [T]) {
    let classes = t.len();
    let (keep, spread) = (
        real::<T>(1.0 - spec.epsilon),
        real::<T>(spec.epsilon / classes as f32),
    );
    match &spec.targets {
        CrossEntropyTargets::Dense(y) => {
            for (tc, &yc) in t.iter_mut().zip(&y[step * classes..(step + 1) * classes]) {
                *tc = keep * real::<T>(yc) + spread;
            }
        }
        CrossEntropyTargets::Labels(labels) => {
            t.fill(spread);
            let label = labels[step] as usize;
            t[label] = t[label] + keep;
        }
    }
}

/// The log-softmax of one step's logits `z`, written into `log_p`.
fn step_log_softmax<T: Float + std::iter::Sum>(z: &[T], log_p: &mut [T]) {
    let max = z.iter().copied().fold(T::neg_infinity(), T::max);
    let sum: T = z.iter().map(|&v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    for (l, &v) in log_p.iter_mut().zip(z) {
        *l = v - lse;
    }
}

/// The per-step losses `[batch * time]`.
fn forward_host<T: Float + std::iter::Sum>(y_pred: &[T], spec: &CrossEntropySpec) -> Vec<T> {
    let [batch, time, classes] = spec.shape;
    let (mut t, mut log_p) = (vec![T::zero(); classes], vec![T::zero(); classes]);
    let (lo, hi) = (real::<T>(EPSILON), real::<T>(1.0 - EPSILON));
    (0..batch * time)
        .map(|step| {
            if !spec.valid[step] {
                return T::zero();
            }
            step_targets(spec, step, &mut t);
            let z = &y_pred[step * classes..][..classes];
            if spec.from_logits {
                step_log_softmax(z, &mut log_p);
                -t.iter().zip(&log_p).map(|(&a, &b)| a * b).sum::<T>()
            } else {
                // The clipped log is finite, so classes with no target mass add exactly 0:
                // one logarithm per class that has some (one for one-hot targets).
                let total: T = z.iter().copied().sum();
                -t.iter()
                    .zip(z)
                    .filter(|&(&tc, _)| tc != T::zero())
                    .map(|(&tc, &zc)| tc * clamp(zc / total, lo, hi).ln())
                    .sum::<T>()
            }
        })
        .collect()
}

/// The gradient `[batch, time, classes]` of the predictions from that of the per-step losses.
fn backward_host<T: Float + std::iter::Sum>(
    y_pred: &[T],
    d_loss: &[T],
    spec: &CrossEntropySpec,
) -> Vec<T> {
    let [batch, time, classes] = spec.shape;
    let mut d_pred = vec![T::zero(); batch * time * classes];
    let (mut t, mut log_p) = (vec![T::zero(); classes], vec![T::zero(); classes]);
    let (lo, hi) = (real::<T>(EPSILON), real::<T>(1.0 - EPSILON));
    for step in 0..batch * time {
        if !spec.valid[step] {
            continue;
        }
        let g = d_loss[step];
        let z = &y_pred[step * classes..][..classes];
        let d = &mut d_pred[step * classes..][..classes];
        step_targets(spec, step, &mut t);
        if spec.from_logits {
            step_log_softmax(z, &mut log_p);
            // d/dz_k of -Σ t_c (z_c - lse) = p_k Σ_c t_c - t_k.
            let mass: T = t.iter().copied().sum();
            for ((dk, &lk), &tk) in d.iter_mut().zip(&log_p).zip(&t) {
                *dk = g * (lk.exp() * mass - tk);
            }
        } else {
            // With q = y / Σ y and the clip passing the gradient where ε ≤ q ≤ 1 - ε:
            // G_c = -t_c / q_c there (else 0), d/dy_k = (G_k - Σ_c G_c q_c) / Σ y.
            let total: T = z.iter().copied().sum();
            let mut weighted = T::zero();
            for ((dk, &zk), &tk) in d.iter_mut().zip(z).zip(&t) {
                let q = zk / total;
                let passes = (lo..=hi).contains(&q);
                let big_g = if passes { -tk / q } else { T::zero() };
                weighted = weighted + big_g * q;
                *dk = big_g;
            }
            for dk in d.iter_mut() {
                *dk = g * (*dk - weighted) / total;
            }
        }
    }
    d_pred
}
