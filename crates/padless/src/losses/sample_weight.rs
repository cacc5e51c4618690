//! [`SampleWeight`]: per sequence, per step or per element.

use burn::tensor::{Device, Int, Tensor};

use crate::error::{Error, Result};
use crate::tensor_util::tensor_from;

/// Sample weights of a sequence loss.
#[derive(Debug, Clone)]
pub enum SampleWeight {
    /// One weight per sequence, `[batch]` (Keras `[B]` or `[B, 1]`), broadcast over time.
    PerSequence(Tensor<1>),
    /// One weight per step, `[batch, time]`.
    PerStep(Tensor<2>),
    /// One weight per element, `[batch, time, features]`, applied before the last-axis
    /// reduction: `L[b,t] = red_c(w[b,t,c] e[b,t,c])`. With sparse labels `y` the one-hot
    /// target's terms are 0 but at the label, so the weight that counts at a step is
    /// `w[b,t,y[b,t]]` (with label smoothing, every class's, as for the dense smoothed target).
    PerElement(Tensor<3>),
}

impl SampleWeight {
    /// Weights from row-major values and a Keras shape: `[B]`, `[B, 1]`, `[B, T]` or
    /// `[B, T, F]`.
    ///
    /// # Errors
    /// When the values do not fill the shape, or the shape has another rank.
    pub fn from_values(values: &[f32], shape: &[usize], device: &Device) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            return Err(Error::shape(
                "sample weight",
                format!("{expected} values for {shape:?}"),
                &[values.len()],
            ));
        }
        Ok(match *shape {
            [b] => SampleWeight::PerSequence(tensor_from(values, [b], device)),
            [b, 1] => SampleWeight::PerSequence(tensor_from(values, [b], device)),
            [b, t] => SampleWeight::PerStep(tensor_from(values, [b, t], device)),
            [b, t, f] => SampleWeight::PerElement(tensor_from(values, [b, t, f], device)),
            _ => {
                return Err(Error::shape(
                    "sample weight",
                    "[batch], [batch, 1], [batch, time] or [batch, time, features]",
                    shape,
                ));
            }
        })
    }

    /// These weights on `device`.
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            SampleWeight::PerSequence(w) => SampleWeight::PerSequence(w.to_device(device)),
            SampleWeight::PerStep(w) => SampleWeight::PerStep(w.to_device(device)),
            SampleWeight::PerElement(w) => SampleWeight::PerElement(w.to_device(device)),
        }
    }

    /// Checks that these weights broadcast to `[batch, time, features]`.
    ///
    /// # Errors
    /// Names the expected and found shapes.
    pub fn check(&self, batch: usize, time: usize, features: usize) -> Result<()> {
        let (found, ok) = match self {
            SampleWeight::PerSequence(w) => (w.dims().to_vec(), w.dims() == [batch]),
            SampleWeight::PerStep(w) => (w.dims().to_vec(), w.dims() == [batch, time]),
            SampleWeight::PerElement(w) => (w.dims().to_vec(), w.dims() == [batch, time, features]),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::shape(
                "sample weight",
                format!(
                    "[{batch}], [{batch}, 1], [{batch}, {time}] or [{batch}, {time}, {features}]"
                ),
                &found,
            ))
        }
    }

    /// The step weights `[batch, time]` that `weighted_mean` divides by. Per-element weights
    /// give their mean over features with dense targets; with sparse `labels` (masked steps
    /// already replaced by a valid class) the weight of the one-hot target, `w[b,t,y]`, or
    /// with label smoothing `epsilon` that of the smoothed target, `Σ_c t_c w_c = (1 - ε)
    /// w[y] + ε mean_c w`: the step's loss weighs its terms by the same target.
    pub(crate) fn per_step(
        &self,
        time: usize,
        labels: Option<&Tensor<2, Int>>,
        epsilon: f32,
    ) -> Tensor<2> {
        match (self, labels) {
            (SampleWeight::PerSequence(w), _) => {
                let batch = w.dims()[0];
                w.clone().unsqueeze_dim::<2>(1).expand([batch, time])
            }
            (SampleWeight::PerStep(w), _) => w.clone(),
            (SampleWeight::PerElement(w), None) => w.clone().mean_dim(2).squeeze_dim(2),
            (SampleWeight::PerElement(w), Some(labels)) => {
                let at_label = w
                    .clone()
                    .gather(2, labels.clone().unsqueeze_dim::<3>(2))
                    .squeeze_dim::<2>(2);
                if epsilon > 0.0 {
                    // `(1 - ε) w[y] + ε mean_c w` written so that weights equal over the classes
                    // give exactly that weight, whatever the rounding of `1 - ε`.
                    let mean = w.clone().mean_dim(2).squeeze_dim::<2>(2);
                    at_label.clone() + (mean - at_label) * epsilon
                } else {
                    at_label
                }
            }
        }
    }
}
