//! [`SequenceLoss`]: a loss with masks, weights and a reduction that never counts padding.

use std::sync::Arc;

use burn::tensor::Tensor;

use super::fused_cross_entropy::{CrossEntropySpec, CrossEntropyTargets, fused_per_step};
use super::kind::LossKind;
use super::sample_weight::SampleWeight;
use super::targets::{TargetMask, Targets, check_finite_targets};
use crate::error::{Error, Result};
use crate::mask::{Mask, and_masks, zero_masked};
use crate::tensor_util::{f32_vec, i64_vec, tensor_from};

/// How per-step losses become one number. Masked steps are **selected out**, never multiplied
/// by 0, so NaN, inf or huge values there cannot leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// `Σ_valid w L`.
    Sum,
    /// `Σ_valid w L / (number of valid steps)`; 0 for an all-masked batch (Keras
    /// `sum_over_batch_size`, without counting padding).
    #[default]
    Mean,
    /// `Σ_valid w L / Σ_valid w`; 0 when the weights sum to 0. A step's `w` from per-element
    /// weights is their mean over features with dense targets, and the weight at the label
    /// with sparse labels (of the smoothed target with label smoothing).
    WeightedMean,
    /// No reduction: [`LossOutput::per_step`] with its mask.
    None,
}

/// What a loss is computed from.
#[derive(Debug, Clone)]
pub struct LossInputs {
    /// The targets.
    pub y_true: Targets,
    /// The predictions `[batch, time, C]`.
    pub y_pred: Tensor<3>,
    /// The mask carried on the model output, if any.
    pub output_mask: Option<Mask>,
    /// The mask given with the targets, if any; ANDed with `output_mask`.
    pub target_mask: Option<TargetMask>,
    /// Sample weights, if any.
    pub sample_weight: Option<SampleWeight>,
    /// The layer that consumed the inputs' mask on the way to this output, if known: a loss
    /// computed with no mask then warns, naming it.
    pub mask_dropped_by: Option<String>,
}

impl LossInputs {
    /// Targets and predictions, with no mask and no weights.
    pub fn new(y_true: Targets, y_pred: Tensor<3>) -> Self {
        LossInputs {
            y_true,
            y_pred,
            output_mask: None,
            target_mask: None,
            sample_weight: None,
            mask_dropped_by: None,
        }
    }

    /// With the mask carried on the model output.
    pub fn with_output_mask(mut self, mask: Option<Mask>) -> Self {
        self.output_mask = mask;
        self
    }

    /// With a target mask.
    pub fn with_target_mask(mut self, mask: TargetMask) -> Self {
        self.target_mask = Some(mask);
        self
    }

    /// With sample weights.
    pub fn with_sample_weight(mut self, weight: SampleWeight) -> Self {
        self.sample_weight = Some(weight);
        self
    }

    /// Records the layer that consumed the inputs' mask.
    pub fn with_mask_dropped_by(mut self, layer: impl Into<String>) -> Self {
        self.mask_dropped_by = Some(layer.into());
        self
    }
}

/// The result of a loss.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The reduced loss (a one-element tensor), `None` for [`Reduction::None`].
    pub value: Option<Tensor<1>>,
    /// `w L` per step `[batch, time]`, 0 at masked steps.
    pub per_step: Tensor<2>,
    /// The mask the loss used (output mask AND target mask; all-valid when neither).
    pub mask: Mask,
    /// Warnings, also printed to stderr (a lost mask).
    pub warnings: Vec<String>,
}

/// A sequence loss: element terms ([`LossKind`]), class weights and a [`Reduction`].
///
/// # Shapes
/// `y_pred [batch, time, C]`; targets `[batch, time, C]` or labels `[batch, time]`; sample
/// weights `[batch]`, `[batch, time]` or `[batch, time, C]`; class weights `[C]`.
///
/// # Masking
/// The mask is the model output's AND the target mask. Masked steps are selected out before
/// the loss sees them: their predictions, targets, labels and weights are never read, and
/// their gradient is exactly 0. A loss computed without any mask while the inputs had one
/// (`mask_dropped_by` set) warns, naming the layer.
///
/// # Example
/// ```
/// use padless::losses::{LossInputs, LossKind, Reduction, SequenceLoss, TargetMask, Targets};
/// use padless::{default_device, tensor_util::{tensor_from, f32_vec}};
/// let device = default_device();
/// // One row, 3 steps; the last step is the padding one-hot [0, 1].
/// let y_true = tensor_from(&[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], [1, 3, 2], &device);
/// let y_pred = tensor_from(&[0.5, 0.5, 0.25, 0.75, 0.9, 0.1], [1, 3, 2], &device);
/// let loss = SequenceLoss::new(LossKind::CategoricalCrossentropy { from_logits: false });
/// let out = loss
///     .compute(LossInputs::new(Targets::Dense(y_true), y_pred)
///         .with_target_mask(TargetMask::PaddingVector(vec![0.0, 1.0])))
///     .unwrap();
/// let want = -(0.5f32.ln() + 0.25f32.ln()) / 2.0;
/// assert!((f32_vec(out.value.unwrap())[0] - want).abs() < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct SequenceLoss {
    /// The element terms.
    pub kind: LossKind,
    /// The reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
    /// Weights per target class, applied per step.
    pub class_weight: Option<Vec<f32>>,
    /// Reject NaN or inf in the targets at valid steps (default true).
    pub check_targets: bool,
    /// Label smoothing `ε` of the categorical cross-entropies (default 0): the target
    /// distribution becomes `(1 - ε) y + ε / C` (Keras' `label_smoothing`).
    pub label_smoothing: f32,
}

impl SequenceLoss {
    /// A loss with the mean reduction and no class weights.
    pub fn new(kind: LossKind) -> Self {
        SequenceLoss {
            kind,
            reduction: Reduction::Mean,
            class_weight: None,
            check_targets: true,
            label_smoothing: 0.0,
        }
    }

    /// With label smoothing `epsilon` in `[0, 1)` (categorical cross-entropies only): each
    /// valid step's loss becomes `(1 - ε) CE(y) + ε mean_c(-log p_c)`, the cross-entropy
    /// against `(1 - ε) y + ε / C`. Class and sample weights multiply it as they multiply the
    /// plain loss; per-element weights `w` weigh each class's term of the smoothed target,
    /// `Σ_c w_c t_c (-log p_c)`, for dense targets and sparse labels alike.
    pub fn with_label_smoothing(mut self, epsilon: f32) -> Self {
        self.label_smoothing = epsilon;
        self
    }

    /// With a reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// With class weights `[C]`.
    pub fn with_class_weight(mut self, class_weight: Vec<f32>) -> Self {
        self.class_weight = Some(class_weight);
        self
    }

    /// Computes the loss.
    ///
    /// # Errors
    /// Mismatched shapes (both named), weights that do not broadcast, labels out of range at
    /// valid steps, non-finite targets at valid steps, or targets of the wrong kind.
    pub fn compute(&self, inputs: LossInputs) -> Result<LossOutput> {
        let [batch, time, classes] = inputs.y_pred.dims();
        self.check_shapes(&inputs, batch, time, classes)?;
        let device = inputs.y_pred.device();
        let target_mask = inputs
            .target_mask
            .as_ref()
            .map(|m| m.resolve(&inputs.y_true))
            .transpose()?;
        let mut warnings = Vec::new();
        let mask = match and_masks(inputs.output_mask.as_ref(), target_mask.as_ref())? {
            Some(mask) => mask,
            None => {
                if let Some(layer) = &inputs.mask_dropped_by {
                    let warning = format!(
                        "loss computed over every step, padding included: the inputs' mask was consumed by {layer} and no target mask was given (pass one with the targets)"
                    );
                    log::warn!("{warning}");
                    warnings.push(warning);
                }
                Mask::all_valid(batch, time, &device)
            }
        };
        // Host copies, each read once: the mask, and the dense targets where the finiteness
        // check or the fused loss reads them.
        let valid: Arc<[bool]> = mask.to_vec().into();
        let fusable = self.kind.categorical_from_logits().is_some();
        let dense_host: Option<Arc<[f32]>> = match &inputs.y_true {
            Targets::Dense(y) if self.check_targets || fusable => Some(f32_vec(y.clone()).into()),
            _ => None,
        };
        if self.check_targets
            && let Some(values) = &dense_host
        {
            check_finite_targets(values, [batch, time, classes], &valid)?;
        }
        let padding = mask.padding();
        self.check_labels(&inputs.y_true, &valid, classes)?;
        // The categorical cross-entropies run as one fused operation on the CPU backend (the
        // same values; see `fused_cross_entropy`), the other losses and backends compose.
        let fused = self
            .fused_spec(&inputs, valid, dense_host, [batch, time, classes])
            .and_then(|spec| fused_per_step(&inputs.y_pred, spec));
        // Targets with masked steps replaced, for the composite loss and the class weights.
        let y_true = (fused.is_none() || self.class_weight.is_some())
            .then(|| select_targets(inputs.y_true, &mask));
        let losses = match (fused, &y_true) {
            (Some(losses), _) => losses,
            (None, Some(y_true)) => {
                let y_pred = inputs
                    .y_pred
                    .mask_fill(mask.padding_expanded(classes), self.kind.safe_prediction());
                let element_weight = match &inputs.sample_weight {
                    Some(SampleWeight::PerElement(w)) => Some(zero_masked(w.clone(), Some(&mask))),
                    _ => None,
                };
                self.kind
                    .per_step(y_true, y_pred, element_weight, self.label_smoothing)?
                    .mask_fill(padding.clone(), 0.0)
            }
            (None, None) => unreachable!("the targets are selected when the loss is composite"),
        };
        let class_weight = y_true
            .as_ref()
            .and_then(|y_true| self.step_class_weight(y_true, &device));
        // Per-element weights with sparse labels count at the label (`SampleWeight::per_step`);
        // they make the loss composite, so the selected labels are at hand.
        let labels = match &y_true {
            Some(Targets::Labels(labels)) => Some(labels),
            _ => None,
        };
        let step_weight = |w: &SampleWeight| w.per_step(time, labels, self.label_smoothing);
        let denominator_weight = match (&inputs.sample_weight, &class_weight) {
            (Some(w), Some(c)) => step_weight(w) * c.clone(),
            (Some(w), None) => step_weight(w),
            (None, Some(c)) => c.clone(),
            (None, None) => Tensor::ones([batch, time], &device),
        }
        .mask_fill(padding.clone(), 0.0);
        let numerator_weight = match &inputs.sample_weight {
            Some(SampleWeight::PerElement(_)) => {
                class_weight.unwrap_or_else(|| Tensor::ones([batch, time], &device))
            }
            _ => denominator_weight.clone(),
        }
        .mask_fill(padding, 0.0);
        let per_step = losses * numerator_weight;
        let total = per_step.clone().sum();
        let value = match self.reduction {
            Reduction::Sum => Some(total),
            Reduction::Mean => Some(total / mask.to_float().sum().clamp_min(1.0)),
            Reduction::WeightedMean => {
                let denominator = denominator_weight.sum();
                let zero = denominator.clone().equal_elem(0.0);
                Some(total / denominator.mask_fill(zero, 1.0))
            }
            Reduction::None => None,
        };
        Ok(LossOutput {
            value,
            per_step,
            mask,
            warnings,
        })
    }

    fn check_shapes(
        &self,
        inputs: &LossInputs,
        batch: usize,
        time: usize,
        classes: usize,
    ) -> Result<()> {
        match &inputs.y_true {
            Targets::Dense(y) if y.dims() != [batch, time, classes] => {
                return Err(Error::shape(
                    "y_true",
                    format!("{:?} as y_pred", [batch, time, classes]),
                    &y.dims(),
                ));
            }
            Targets::Labels(y) if y.dims() != [batch, time] => {
                return Err(Error::shape(
                    "labels",
                    format!("[{batch}, {time}] of y_pred {:?}", [batch, time, classes]),
                    &y.dims(),
                ));
            }
            _ => {}
        }
        if self.kind.is_sparse() != matches!(inputs.y_true, Targets::Labels(_)) {
            return Err(Error::config(
                "loss",
                format!("{:?} does not take {}", self.kind, inputs.y_true.kind()),
            ));
        }
        if let Some(w) = &inputs.sample_weight {
            w.check(batch, time, classes)?;
        }
        let epsilon = self.label_smoothing;
        if epsilon != 0.0 {
            if !(0.0..1.0).contains(&epsilon) {
                return Err(Error::config(
                    "loss",
                    format!("label smoothing must be in [0, 1), found {epsilon}"),
                ));
            }
            if self.kind.categorical_from_logits().is_none() {
                return Err(Error::config(
                    "loss",
                    format!(
                        "label smoothing needs a categorical cross-entropy, found {:?}",
                        self.kind
                    ),
                ));
            }
        }
        if let Some(c) = &self.class_weight
            && c.len() != classes
        {
            return Err(Error::shape(
                "class weights",
                format!("[{classes}]"),
                &[c.len()],
            ));
        }
        Ok(())
    }

    /// The fused call's spec for a categorical cross-entropy without per-element weights (its
    /// targets read to the host), else `None`: per-element weights, dense or sparse, take the
    /// composite loss. `dense` is the dense targets' host copy (read by the caller).
    fn fused_spec(
        &self,
        inputs: &LossInputs,
        valid: Arc<[bool]>,
        dense: Option<Arc<[f32]>>,
        shape: [usize; 3],
    ) -> Option<CrossEntropySpec> {
        let from_logits = self.kind.categorical_from_logits()?;
        if matches!(inputs.sample_weight, Some(SampleWeight::PerElement(_))) {
            return None;
        }
        let targets = match &inputs.y_true {
            Targets::Dense(y) => {
                CrossEntropyTargets::Dense(dense.unwrap_or_else(|| f32_vec(y.clone()).into()))
            }
            Targets::Labels(labels) => CrossEntropyTargets::Labels(i64_vec(labels.clone()).into()),
        };
        Some(CrossEntropySpec {
            shape,
            from_logits,
            epsilon: self.label_smoothing,
            targets,
            valid,
        })
    }

    /// Labels at valid steps must be classes; labels at masked steps are not read.
    fn check_labels(&self, y_true: &Targets, valid: &[bool], classes: usize) -> Result<()> {
        if let Targets::Labels(labels) = y_true {
            let [_, time] = labels.dims();
            if let Some((i, label)) = i64_vec(labels.clone())
                .into_iter()
                .enumerate()
                .find(|&(i, l)| valid[i] && (l < 0 || l as usize >= classes))
            {
                return Err(Error::config(
                    "loss",
                    format!(
                        "label {label} at [row {}, step {}] is outside 0..{classes}",
                        i / time,
                        i % time
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The class weight of each step's target class, `[batch, time]`.
    fn step_class_weight(
        &self,
        y_true: &Targets,
        device: &burn::tensor::Device,
    ) -> Option<Tensor<2>> {
        let weights = self.class_weight.as_ref()?;
        let classes = match y_true {
            Targets::Labels(labels) => labels.clone(),
            Targets::Dense(y) => y.clone().argmax(2).squeeze_dim(2),
        };
        let [batch, time] = classes.dims();
        let table = tensor_from(weights, [weights.len()], device);
        Some(
            table
                .select(0, classes.reshape([batch * time]))
                .reshape([batch, time]),
        )
    }
}

/// Targets with masked steps replaced (labels by 0, dense targets by 0), so they are never
/// read.
fn select_targets(y_true: Targets, mask: &Mask) -> Targets {
    match y_true {
        Targets::Labels(labels) => Targets::Labels(labels.mask_fill(mask.padding(), 0)),
        Targets::Dense(y) => Targets::Dense(zero_masked(y, Some(mask))),
    }
}
