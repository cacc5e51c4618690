//! Metrics reported beside the loss: the built-in [`MetricKind`]s and user-defined
//! [`Metric`]s, each computed on a batch's predictions at the steps the loss counts (the
//! output mask AND the target mask), averaged over an epoch's batches by their rows.

use std::sync::Arc;

use burn::tensor::{Int, Tensor};

use crate::error::Result;
use crate::losses::Targets;
use crate::mask::Mask;
use crate::metrics::{
    error_rate, predicted_classes, sequence_accuracy, token_accuracy, valid_steps,
};

/// A built-in metric, named in the logs as its `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Correct valid steps over valid steps (`accuracy`).
    TokenAccuracy,
    /// Rows whose valid steps are all correct (`sequence_accuracy`).
    SequenceAccuracy,
    /// The edit distance between each row's predicted classes and its labels at the valid
    /// steps, summed over the batch, over the labels' valid steps (`symbol_error_rate`,
    /// [`error_rate`]): lower is better, so it can be monitored as a loss is.
    SymbolErrorRate,
}

impl MetricKind {
    /// The name in the logs.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::TokenAccuracy => "accuracy",
            MetricKind::SequenceAccuracy => "sequence_accuracy",
            MetricKind::SymbolErrorRate => "symbol_error_rate",
        }
    }
}

/// A metric of one's own, reported beside the loss and the built-in metrics under
/// [`Metric::name`] (with `val_` before it on validation data), and usable as a callback's
/// monitor. A name containing `acc` improves upwards for the callbacks, any other downwards.
///
/// ```
/// use burn::tensor::Tensor;
/// use padless::losses::Targets;
/// use padless::train::Metric;
/// use padless::Mask;
///
/// /// The fraction of valid steps whose largest output exceeds 0.9.
/// struct Confident;
///
/// impl Metric for Confident {
///     fn name(&self) -> String {
///         "confident".into()
///     }
///     fn value(&self, y_pred: &Tensor<3>, _: &Targets, mask: &Mask) -> padless::Result<f64> {
///         let top = y_pred.clone().max_dim(2).squeeze_dim::<2>(2).greater_elem(0.9);
///         let valid = mask.valid();
///         let hits = top.bool_and(valid.clone()).int().sum().into_scalar::<i64>();
///         let total = valid.int().sum().into_scalar::<i64>();
///         Ok(if total == 0 { 0.0 } else { hits as f64 / total as f64 })
///     }
/// }
/// ```
pub trait Metric: Send + Sync {
    /// The name in the logs.
    fn name(&self) -> String;
    /// The value on one batch: `y_pred [batch, time, features]` (a vector output has one
    /// step), the batch's targets, and `mask`, the steps the loss counts.
    ///
    /// # Errors
    /// Whatever the metric cannot compute.
    fn value(&self, y_pred: &Tensor<3>, targets: &Targets, mask: &Mask) -> Result<f64>;
}

impl std::fmt::Debug for dyn Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metric({})", self.name())
    }
}

/// The built-in `metrics` and the `custom` ones of one batch, by name.
///
/// # Errors
/// As the metrics.
pub(crate) fn batch_metrics(
    metrics: &[MetricKind],
    custom: &[Arc<dyn Metric>],
    y_pred: Tensor<3>,
    targets: &Targets,
    mask: &Mask,
) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::with_capacity(metrics.len() + custom.len());
    for metric in custom {
        out.push((metric.name(), metric.value(&y_pred, targets, mask)?));
    }
    if metrics.is_empty() {
        return Ok(out);
    }
    let predicted = predicted_classes(y_pred);
    let labels: Tensor<2, Int> = match targets {
        Targets::Labels(l) => l.clone(),
        Targets::Dense(y) => predicted_classes(y.clone()),
    };
    for &metric in metrics {
        let value = match metric {
            MetricKind::TokenAccuracy => token_accuracy(&predicted, &labels, Some(mask), None)?,
            MetricKind::SequenceAccuracy => sequence_accuracy(&predicted, &labels, Some(mask))?,
            MetricKind::SymbolErrorRate => {
                let references: Vec<Vec<Vec<i64>>> = valid_steps(&labels, Some(mask))?
                    .into_iter()
                    .map(|r| vec![r])
                    .collect();
                error_rate(&valid_steps(&predicted, Some(mask))?, &references)?
            }
        };
        out.push((metric.name().to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Padding;
    use crate::tensor_util::{int_tensor_from, tensor_from};

    /// Row 0 predicts [1, 2, 0 | pad] for labels [1, 1, 0]; row 1 predicts [2 | pad, pad] for
    /// [2]. Symbol error rate: edit([1, 2, 0], [1, 1, 0]) = 1 and edit([2], [2]) = 0 over 3 + 1
    /// label steps = 1/4; accuracy 3/4; sequence accuracy 1/2. The padded steps hold wrong
    /// predictions that would count if they were read.
    #[test]
    fn built_in_metrics_by_hand_read_only_the_mask() {
        let device = crate::default_device();
        let one_hot = |c: usize| {
            let mut v = [0.0f32; 3];
            v[c] = 1.0;
            v
        };
        let rows = [[1, 2, 0, 2], [2, 0, 1, 1]];
        let values: Vec<f32> = rows.iter().flatten().flat_map(|&c| one_hot(c)).collect();
        let y_pred = tensor_from(&values, [2, 4, 3], &device);
        let labels = int_tensor_from(&[1, 1, 0, 0, 2, 0, 0, 0], [2, 4], &device);
        let mask = Mask::from_lengths(&[3, 1], 4, Padding::Post, &device).unwrap();
        let all = [
            MetricKind::TokenAccuracy,
            MetricKind::SequenceAccuracy,
            MetricKind::SymbolErrorRate,
        ];
        let got = batch_metrics(&all, &[], y_pred, &Targets::Labels(labels), &mask).unwrap();
        assert_eq!(
            got,
            [
                ("accuracy".to_string(), 0.75),
                ("sequence_accuracy".to_string(), 0.5),
                ("symbol_error_rate".to_string(), 0.25)
            ]
        );
    }
}
