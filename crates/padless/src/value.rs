//! [`Value`]: what flows between layers of a stack, with its mask.

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};
use crate::mask::Mask;

/// The input or output of a layer in a stack.
#[derive(Debug, Clone)]
pub enum Value {
    /// Token ids `[batch, time]` (input of [`Embedding`](crate::layers::Embedding)).
    Tokens {
        /// `[batch, time]` ids.
        ids: Tensor<2, Int>,
        /// Which steps are valid, if known.
        mask: Option<Mask>,
    },
    /// A sequence `[batch, time, features]`.
    Sequence {
        /// `[batch, time, features]` values.
        values: Tensor<3>,
        /// Which steps are valid; `None` means every step is.
        mask: Option<Mask>,
    },
    /// One vector per row, `[batch, features]` (no time axis, so no mask).
    Vector(Tensor<2>),
}

impl Value {
    /// A sequence with an optional mask.
    pub fn sequence(values: Tensor<3>, mask: Option<Mask>) -> Self {
        Value::Sequence { values, mask }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Tokens { .. } => "tokens [batch, time]",
            Value::Sequence { .. } => "sequence [batch, time, features]",
            Value::Vector(_) => "vector [batch, features]",
        }
    }

    /// The mask carried with this value (`None` for vectors and unmasked sequences).
    pub fn mask(&self) -> Option<&Mask> {
        match self {
            Value::Tokens { mask, .. } | Value::Sequence { mask, .. } => mask.as_ref(),
            Value::Vector(_) => None,
        }
    }

    /// The sequence and its mask.
    ///
    /// # Errors
    /// [`Error::InputKind`] when this is not a sequence.
    pub fn into_sequence(self, layer: &str) -> Result<(Tensor<3>, Option<Mask>)> {
        match self {
            Value::Sequence { values, mask } => Ok((values, mask)),
            other => Err(Error::InputKind {
                layer: layer.to_string(),
                expected: "sequence [batch, time, features]".into(),
                found: other.kind().into(),
            }),
        }
    }

    /// The vector.
    ///
    /// # Errors
    /// [`Error::InputKind`] when this is not a vector.
    pub fn into_vector(self, layer: &str) -> Result<Tensor<2>> {
        match self {
            Value::Vector(values) => Ok(values),
            other => Err(Error::InputKind {
                layer: layer.to_string(),
                expected: "vector [batch, features]".into(),
                found: other.kind().into(),
            }),
        }
    }

    /// This value on `device` (detached from any graph).
    pub fn to_device(self, device: &burn::tensor::Device) -> Self {
        match self {
            Value::Tokens { ids, mask } => Value::Tokens {
                ids: ids.to_device(device),
                mask: mask.map(|m| m.to_device(device)),
            },
            Value::Sequence { values, mask } => Value::Sequence {
                values: values.detach().to_device(device),
                mask: mask.map(|m| m.to_device(device)),
            },
            Value::Vector(values) => Value::Vector(values.detach().to_device(device)),
        }
    }

    /// The dims of the underlying tensor.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::Tokens { ids, .. } => ids.dims().to_vec(),
            Value::Sequence { values, .. } => values.dims().to_vec(),
            Value::Vector(values) => values.dims().to_vec(),
        }
    }

    /// Checks that no valid step holds NaN or inf (token ids always pass; a sequence without a
    /// mask and a vector are checked everywhere). Masked steps are not read.
    ///
    /// # Errors
    /// [`Error::Config`] naming `what` and the first offending `[row, step]` and value.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        let (values, mask) = match self {
            Value::Tokens { .. } => return Ok(()),
            Value::Sequence { values, mask } => (values.clone(), mask.as_ref()),
            Value::Vector(values) => (values.clone().unsqueeze_dim::<3>(1), None),
        };
        let [_, time, features] = values.dims();
        let valid = mask.map(Mask::to_vec);
        let flat = crate::tensor_util::f32_vec(values);
        match flat
            .iter()
            .enumerate()
            .find(|&(i, v)| !v.is_finite() && valid.as_ref().is_none_or(|m| m[i / features]))
        {
            Some((i, v)) => Err(Error::Config {
                layer: what.to_string(),
                message: format!(
                    "input at [row {}, step {}] is {v}, expected a finite value at a valid step",
                    i / features / time,
                    i / features % time
                ),
            }),
            None => Ok(()),
        }
    }
}
