//! [`LossKind`]: the element terms of each loss and their reduction over the last axis.

use std::fmt;
use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::targets::Targets;
use crate::error::{Error, Result};

/// Probabilities are clipped to `[EPSILON, 1 - EPSILON]` before a log (Keras' epsilon).
pub const EPSILON: f32 = 1e-7;

/// How a custom per-element loss is reduced over the last axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAxis {
    /// Sum over features (as cross-entropy).
    Sum,
    /// Mean over features (as MSE).
    Mean,
}

/// A user loss: `(y_true, y_pred) -> per-element [batch, time, features]` terms, reduced over
/// the last axis as chosen, or a per-step `[batch, time]` loss. Masking, weights and the
/// reduction are applied by [`SequenceLoss`](super::SequenceLoss). At masked steps the
/// function sees `y_true = 0` and `y_pred = 0.5`, and its result there is discarded.
#[derive(Clone)]
pub enum CustomLoss {
    /// Per-element terms and their last-axis reduction.
    PerElement(
        Arc<dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3> + Send + Sync>,
        LastAxis,
    ),
    /// Per-step loss.
    PerStep(Arc<dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<2> + Send + Sync>),
}

impl fmt::Debug for CustomLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomLoss::PerElement(_, axis) => write!(f, "CustomLoss::PerElement(.., {axis:?})"),
            CustomLoss::PerStep(_) => write!(f, "CustomLoss::PerStep(..)"),
        }
    }
}

/// The element terms `e[b,t,c]` of a loss; the per-step loss is their sum (cross-entropy) or
/// mean (the others) over the last axis.
///
/// In a config a loss is its Keras name, `"sparse_categorical_crossentropy"` (options at
/// their defaults), or a table with the name and options, `{name =
/// "sparse_categorical_crossentropy", from_logits = true}`; it is written as the table. A
/// [`LossKind::Custom`] loss has no config form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "name", rename_all = "snake_case")]
pub enum LossKind {
    /// `-Σ_c y_c log p_c` with `p` normalised over the last axis and clipped to
    /// `[1e-7, 1 - 1e-7]` (`from_logits`: `p = softmax(y_pred)`, through log-softmax).
    CategoricalCrossentropy {
        /// `y_pred` holds logits (default false).
        #[serde(default)]
        from_logits: bool,
    },
    /// `-log p[label]` for integer labels, `p` as for categorical cross-entropy.
    SparseCategoricalCrossentropy {
        /// `y_pred` holds logits (default false).
        #[serde(default)]
        from_logits: bool,
    },
    /// `mean_c -(y log p + (1 - y) log(1 - p))`, `p` clipped (`from_logits`: the stable
    /// `max(x, 0) - x y + log(1 + e^-|x|)`).
    BinaryCrossentropy {
        /// `y_pred` holds logits (default false).
        #[serde(default)]
        from_logits: bool,
    },
    /// `mean_c (y - p)^2`.
    MeanSquaredError,
    /// `mean_c |y - p|`.
    MeanAbsoluteError,
    /// `mean_c` of `a^2 / 2` for `a = |y - p| <= delta`, else `delta (a - delta / 2)`.
    Huber {
        /// The switch point (Keras default 1.0).
        #[serde(default = "huber_delta")]
        delta: f32,
    },
    /// A user function.
    #[serde(skip)]
    Custom(CustomLoss),
}

fn huber_delta() -> f32 {
    1.0
}

impl Serialize for LossKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        // The derived form (`remote = "Self"`): a table tagged by `name`.
        LossKind::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for LossKind {
    /// A loss name alone, or the table the derived form reads.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct NameOrTable;

        impl<'de> Visitor<'de> for NameOrTable {
            type Value = LossKind;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a loss name, or a table with its name and options")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<LossKind, E> {
                LossKind::deserialize(MapDeserializer::<_, E>::new(std::iter::once((
                    "name", name,
                ))))
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<LossKind, A::Error> {
                let table = serde_json::Map::deserialize(MapAccessDeserializer::new(map))?;
                let kind = LossKind::deserialize(serde_json::Value::Object(table.clone()))
                    .map_err(de::Error::custom)?;
                // The derived form ignores unknown keys; the keys the loss writes are the
                // ones it reads, so any other is refused here, with the nearest known one.
                let written = serde_json::to_value(
                    LossKind::serialize(&kind, serde_json::value::Serializer)
                        .map_err(de::Error::custom)?,
                )
                .map_err(de::Error::custom)?;
                // `name` first, then the options.
                let known: Vec<&str> = std::iter::once("name")
                    .chain(
                        written
                            .as_object()
                            .into_iter()
                            .flat_map(|o| o.keys().map(String::as_str))
                            .filter(|&k| k != "name"),
                    )
                    .collect();
                match table.keys().find(|k| !known.contains(&k.as_str())) {
                    Some(key) => Err(de::Error::custom(crate::strict::unknown(
                        "field",
                        key,
                        &format!("the loss {}", known_name(&written)),
                        &known[1..],
                    ))),
                    None => Ok(kind),
                }
            }
        }

        deserializer.deserialize_any(NameOrTable)
    }
}

/// The `name` of a loss in its written form.
fn known_name(written: &serde_json::Value) -> &str {
    written
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

impl LossKind {
    /// `Some(from_logits)` for the categorical cross-entropies (dense or sparse), the kinds
    /// that take label smoothing.
    pub fn categorical_from_logits(&self) -> Option<bool> {
        match self {
            LossKind::CategoricalCrossentropy { from_logits }
            | LossKind::SparseCategoricalCrossentropy { from_logits } => Some(*from_logits),
            _ => None,
        }
    }

    /// Whether the loss takes [`Targets::Labels`].
    pub fn is_sparse(&self) -> bool {
        matches!(self, LossKind::SparseCategoricalCrossentropy { .. })
    }

    /// The value put in `y_pred` at masked steps before the loss sees it: any value whose
    /// loss is finite, so that nothing from a masked step can reach the value or a gradient.
    pub(crate) fn safe_prediction(&self) -> f32 {
        match self {
            LossKind::CategoricalCrossentropy { from_logits: false }
            | LossKind::SparseCategoricalCrossentropy { from_logits: false } => 1.0,
            LossKind::BinaryCrossentropy { from_logits: false } | LossKind::Custom(_) => 0.5,
            _ => 0.0,
        }
    }

    /// The per-step loss `[batch, time]` from targets and predictions `[batch, time, C]`, with
    /// per-element weights `[batch, time, C]` applied before the last-axis reduction and, for
    /// the categorical cross-entropies, label smoothing `epsilon`: `(1 - ε) CE(y) + ε
    /// mean_c(-log p_c)` from the same log-probabilities, the cross-entropy against the
    /// smoothed target `(1 - ε) y + ε / C` (the caller checks `epsilon`). With per-element
    /// weights `w` every element term is weighed, the uniform part's included: `Σ_c w_c t_c
    /// (-log p_c)` for the smoothed target `t`. For sparse labels `y` the one-hot target's
    /// elements are 0 but at the label, so the plain loss is `w[y] (-log p[y])`.
    ///
    /// # Errors
    /// When the targets do not fit the loss.
    pub(crate) fn per_step(
        &self,
        y_true: &Targets,
        y_pred: Tensor<3>,
        element_weight: Option<Tensor<3>>,
        epsilon: f32,
    ) -> Result<Tensor<2>> {
        let weigh = |e: Tensor<3>| match &element_weight {
            Some(w) => e * w.clone(),
            None => e,
        };
        let sum_c = |e: Tensor<3>| weigh(e).sum_dim(2).squeeze_dim::<2>(2);
        let mean_c = |e: Tensor<3>| weigh(e).mean_dim(2).squeeze_dim::<2>(2);
        // The uniform part `ε / C` of the smoothed target weighs every class's term.
        let smoothed = |ce: Tensor<2>, log_p: Tensor<3>| {
            if epsilon > 0.0 {
                ce * (1.0 - epsilon) + mean_c(log_p).neg() * epsilon
            } else {
                ce
            }
        };
        if let (LossKind::SparseCategoricalCrossentropy { from_logits }, Targets::Labels(labels)) =
            (self, y_true)
        {
            let log_p = log_probabilities(y_pred, *from_logits);
            let at_label = |x: Tensor<3>| {
                x.gather(2, labels.clone().unsqueeze_dim::<3>(2))
                    .squeeze_dim::<2>(2)
            };
            let picked = at_label(log_p.clone()).neg();
            // Per-element weights count at the label: the one-hot target is 0 elsewhere.
            let picked = match &element_weight {
                Some(w) => picked * at_label(w.clone()),
                None => picked,
            };
            return Ok(smoothed(picked, log_p));
        }
        let Targets::Dense(y) = y_true else {
            return Err(Error::config(
                "loss",
                format!(
                    "{self:?} needs dense targets [batch, time, features], found integer labels"
                ),
            ));
        };
        let y = y.clone();
        Ok(match self {
            LossKind::CategoricalCrossentropy { from_logits } => {
                let log_p = log_probabilities(y_pred, *from_logits);
                smoothed(sum_c(y * log_p.clone()).neg(), log_p)
            }
            LossKind::SparseCategoricalCrossentropy { .. } => {
                return Err(Error::config(
                    "loss",
                    "sparse categorical cross-entropy needs integer labels [batch, time]",
                ));
            }
            LossKind::BinaryCrossentropy { from_logits: false } => {
                // `1 - p` is clipped on its own: the same as clipping `p` first, without the
                // f32 rounding of `1 - (1 - 1e-7)`.
                let p = y_pred.clone().clamp(EPSILON, 1.0 - EPSILON);
                let one_minus_p = y_pred.neg().add_scalar(1.0).clamp(EPSILON, 1.0 - EPSILON);
                let one_minus_y = y.clone().neg().add_scalar(1.0);
                mean_c((y * p.log() + one_minus_y * one_minus_p.log()).neg())
            }
            LossKind::BinaryCrossentropy { from_logits: true } => {
                let x = y_pred;
                let softplus_neg_abs = x.clone().abs().neg().exp().log1p();
                mean_c(x.clone().clamp_min(0.0) - x * y + softplus_neg_abs)
            }
            LossKind::MeanSquaredError => mean_c((y - y_pred).square()),
            LossKind::MeanAbsoluteError => mean_c((y - y_pred).abs()),
            LossKind::Huber { delta } => {
                let a = (y - y_pred).abs();
                let quadratic = a.clone().square() * 0.5;
                let linear = (a.clone() - delta / 2.0) * *delta;
                mean_c(quadratic.mask_where(a.greater_elem(*delta), linear))
            }
            LossKind::Custom(CustomLoss::PerElement(f, LastAxis::Sum)) => sum_c(f(y, y_pred)),
            LossKind::Custom(CustomLoss::PerElement(f, LastAxis::Mean)) => mean_c(f(y, y_pred)),
            LossKind::Custom(CustomLoss::PerStep(f)) => {
                if element_weight.is_some() {
                    return Err(Error::config(
                        "loss",
                        "a per-step custom loss cannot take per-element weights",
                    ));
                }
                f(y, y_pred)
            }
        })
    }
}

/// `log p` over the last axis: log-softmax of logits, or the log of normalised, clipped
/// probabilities.
fn log_probabilities(y_pred: Tensor<3>, from_logits: bool) -> Tensor<3> {
    if from_logits {
        log_softmax(y_pred, 2)
    } else {
        let total = y_pred.clone().sum_dim(2);
        (y_pred / total).clamp(EPSILON, 1.0 - EPSILON).log()
    }
}
