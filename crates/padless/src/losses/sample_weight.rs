//! [`SampleWeight`]: per sequence, per step or per element.

use burn::tensor::{Device, Tensor};

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
    /// reduction: `L[b,t] = red_c(w[b,t,c] e[b,t,c])`. Dense targets only.
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

    /// The step weights `[batch, time]` (per-element weights give their mean over features,
    /// which `weighted_mean` divides by).
    pub(crate) fn per_step(&self, time: usize) -> Tensor<2> {
        match self {
            SampleWeight::PerSequence(w) => {
                let batch = w.dims()[0];
                w.clone().unsqueeze_dim::<2>(1).expand([batch, time])
            }
            SampleWeight::PerStep(w) => w.clone(),
            SampleWeight::PerElement(w) => w.clone().mean_dim(2).squeeze_dim(2),
        }
    }
}
