//! The categorical cross-entropies' per-step loss as one operation on the CPU backend, with
//! its own backward pass: [`fused_per_step`].
//!
//! The composite loss ([`LossKind::per_step`](super::LossKind)) is a chain of a dozen burn
//! operations over `[batch, time, classes]` (mask fills, normalisation, clip, log, products,
//! sums) and as many again in backward; on the SPEC benchmark they took about as long as the
//! dense layer. Here one pass per step computes the same value:
//! `-Σ_c t'_c log p_c` with `t' = (1 - ε) t + ε / C` (`t` the dense target or the label's
//! one-hot), `log p` the log-softmax of logits or `log clip(y / Σ y, ε_clip, 1 - ε_clip)` of
//! probabilities; and one pass its gradient. Masked steps give 0 and get a gradient of 0,
//! without reading their predictions or targets.

use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};

use super::kind::EPSILON;
use crate::cpu::{fused_enabled, on_flex};
use crate::rnn::fused::HostData;

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

/// The per-step categorical cross-entropy as one operation with its own backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait FusedCrossEntropyBackend: Backend {
    /// The per-step loss `[batch, time]` of predictions `[batch, time, classes]` (f32).
    fn fused_cross_entropy(y_pred: FloatTensor<Self>, spec: CrossEntropySpec) -> FloatTensor<Self>;
}

/// The per-step loss `[batch, time]` (0 at masked steps) through the fused operation, or
/// `None` where it does not apply (another backend or float type, or the fused path switched
/// off): the caller then runs the composite loss, which gives the same values.
pub(crate) fn fused_per_step(y_pred: &Tensor<3>, spec: CrossEntropySpec) -> Option<Tensor<2>> {
    if !fused_enabled() || !on_flex(&y_pred.device()) || y_pred.dtype() != DType::F32 {
        return None;
    }
    let out = <Dispatch as FusedCrossEntropyBackend>::fused_cross_entropy(
        y_pred.clone().into_dispatch(),
        spec,
    );
    Some(Tensor::from_dispatch(out))
}

/// `t'_c` of one valid step: the smoothed target distribution, written into `t`.
fn step_targets(spec: &CrossEntropySpec, step: usize, t: &mut [f32]) {
    let classes = t.len();
    let (keep, spread) = (1.0 - spec.epsilon, spec.epsilon / classes as f32);
    match &spec.targets {
        CrossEntropyTargets::Dense(y) => {
            for (tc, &yc) in t.iter_mut().zip(&y[step * classes..(step + 1) * classes]) {
                *tc = keep * yc + spread;
            }
        }
        CrossEntropyTargets::Labels(labels) => {
            t.fill(spread);
            t[labels[step] as usize] += keep;
        }
    }
}

/// The log-softmax of one step's logits `z`, written into `log_p`.
fn step_log_softmax(z: &[f32], log_p: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    for (l, &v) in log_p.iter_mut().zip(z) {
        *l = v - lse;
    }
}

/// The per-step losses `[batch * time]`.
fn forward_host(y_pred: &[f32], spec: &CrossEntropySpec) -> Vec<f32> {
    let [batch, time, classes] = spec.shape;
    let (mut t, mut log_p) = (vec![0.0f32; classes], vec![0.0f32; classes]);
    (0..batch * time)
        .map(|step| {
            if !spec.valid[step] {
                return 0.0;
            }
            step_targets(spec, step, &mut t);
            let z = &y_pred[step * classes..][..classes];
            if spec.from_logits {
                step_log_softmax(z, &mut log_p);
                -t.iter().zip(&log_p).map(|(a, b)| a * b).sum::<f32>()
            } else {
                // The clipped log is finite, so classes with no target mass add exactly 0:
                // one logarithm per class that has some (one for one-hot targets).
                let total: f32 = z.iter().sum();
                -t.iter()
                    .zip(z)
                    .filter(|&(&tc, _)| tc != 0.0)
                    .map(|(&tc, &zc)| tc * (zc / total).clamp(EPSILON, 1.0 - EPSILON).ln())
                    .sum::<f32>()
            }
        })
        .collect()
}

/// The gradient `[batch, time, classes]` of the predictions from that of the per-step losses.
fn backward_host(y_pred: &[f32], d_loss: &[f32], spec: &CrossEntropySpec) -> Vec<f32> {
    let [batch, time, classes] = spec.shape;
    let mut d_pred = vec![0.0f32; batch * time * classes];
    let (mut t, mut log_p) = (vec![0.0f32; classes], vec![0.0f32; classes]);
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
            let mass: f32 = t.iter().sum();
            for ((dk, &lk), &tk) in d.iter_mut().zip(&log_p).zip(&t) {
                *dk = g * (lk.exp() * mass - tk);
            }
        } else {
            // With q = y / Σ y and the clip passing the gradient where ε ≤ q ≤ 1 - ε:
            // G_c = -t_c / q_c there (else 0), d/dy_k = (G_k - Σ_c G_c q_c) / Σ y.
            let total: f32 = z.iter().sum();
            let mut weighted = 0.0f32;
            for ((dk, &zk), &tk) in d.iter_mut().zip(z).zip(&t) {
                let q = zk / total;
                let passes = (EPSILON..=1.0 - EPSILON).contains(&q);
                let big_g = if passes { -tk / q } else { 0.0 };
                weighted += big_g * q;
                *dk = big_g;
            }
            for dk in d.iter_mut() {
                *dk = g * (*dk - weighted) / total;
            }
        }
    }
    d_pred
}

fn forward_primitive<B: Backend>(
    y_pred: FloatTensor<B>,
    spec: &CrossEntropySpec,
) -> FloatTensor<B> {
    let device = y_pred.device();
    let values = HostData::<f32>::read::<B>(y_pred);
    let losses = forward_host(values.as_slice(), spec);
    let [batch, time, _] = spec.shape;
    B::float_from_data(TensorData::new(losses, [batch, time]), &device)
}

impl FusedCrossEntropyBackend for Flex {
    fn fused_cross_entropy(y_pred: FloatTensor<Self>, spec: CrossEntropySpec) -> FloatTensor<Self> {
        forward_primitive::<Flex>(y_pred, &spec)
    }
}

#[derive(Debug)]
struct FusedCrossEntropyBackward;

impl<B: Backend> Backward<B, 1> for FusedCrossEntropyBackward {
    /// The predictions and the spec.
    type State = (FloatTensor<B>, CrossEntropySpec);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d_loss = grads.consume::<B>(&ops.node);
        let (y_pred, spec) = ops.state;
        let [parent] = ops.parents;
        let Some(node) = parent else {
            return;
        };
        let device = y_pred.device();
        let d_loss = HostData::<f32>::read::<B>(d_loss);
        let values = HostData::<f32>::read::<B>(y_pred);
        let d_pred = backward_host(values.as_slice(), d_loss.as_slice(), &spec);
        let grad = B::float_from_data(TensorData::new(d_pred, spec.shape), &device);
        grads.register::<B>(node.id, grad);
    }
}

impl<B: Backend, C: CheckpointStrategy> FusedCrossEntropyBackend for Autodiff<B, C> {
    fn fused_cross_entropy(y_pred: FloatTensor<Self>, spec: CrossEntropySpec) -> FloatTensor<Self> {
        let guards = [y_pred.node()];
        let y_pred = y_pred.into_primitive();
        match FusedCrossEntropyBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = forward_primitive::<B>(y_pred.clone(), &spec);
                prep.finish((y_pred, spec), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_primitive::<B>(y_pred, &spec)),
        }
    }
}
