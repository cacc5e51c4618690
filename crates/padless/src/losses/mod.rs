//! Sequence losses that never count padding.
//!
//! A [`SequenceLoss`] turns predictions and [`Targets`] into per-step losses `L[b,t]` (the
//! element terms of its [`LossKind`] reduced over the last axis: a sum for cross-entropy, a
//! mean for the others), weighs them ([`SampleWeight`], class weights) and reduces them
//! ([`Reduction`]) over the valid steps only. The mask is the model output's AND the
//! [`TargetMask`] given with the targets.

mod fused_cross_entropy;
mod kind;
mod sample_weight;
mod sequence_loss;
mod targets;

pub use kind::{CustomLoss, EPSILON, LastAxis, LossKind};
pub use sample_weight::SampleWeight;
pub use sequence_loss::{LossInputs, LossOutput, Reduction, SequenceLoss};
pub use targets::{TargetMask, Targets};
