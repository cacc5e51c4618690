//! [`Masking`]: creates a mask from a padding value.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layer::{BuildLayer, Layer, Spec};
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::registry::LayerConfig;
use crate::value::Value;

/// Configuration of a [`Masking`] layer: `{"type": "masking", "mask_value": 0.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// The padding value (default 0.0, as Keras).
    #[serde(default)]
    pub mask_value: f32,
}

impl BuildLayer for MaskingConfig {
    type Layer = Masking;

    fn build(&self, input: &Spec, _device: &Device) -> Result<Masking> {
        if let Spec::Sequence { features: 0, .. } = input {
            return Err(no_features());
        }
        Ok(Masking::new(self.mask_value))
    }
}

/// The error of an input whose steps have no features.
fn no_features() -> crate::error::Error {
    crate::error::Error::config(
        "Masking",
        "expected inputs of at least 1 feature per step, found 0",
    )
}

/// Masks the steps whose features **all** equal `mask_value` (Keras `Masking`).
///
/// # Shapes
/// `[batch, time, features]` in and out.
///
/// # Masking
/// Creates the mask: a step is padding iff every feature equals `mask_value` (`-0.0 == 0.0`);
/// a step where only some features equal it is valid and passes unchanged. Masked steps come
/// out as **0** (not `mask_value`). An incoming mask is combined with AND.
///
/// # Example
/// ```
/// use padless::{default_device, layers::Masking, tensor_util::{tensor_from, f32_vec}};
/// let device = default_device();
/// let x = tensor_from(&[-1.0, -1.0, 2.0, -1.0], [1, 2, 2], &device);
/// let (y, mask) = Masking::new(-1.0).forward(x, None).unwrap();
/// assert_eq!(mask.to_vec(), vec![false, true]);
/// assert_eq!(f32_vec(y), vec![0.0, 0.0, 2.0, -1.0]);
/// ```
#[derive(Module, Debug)]
pub struct Masking {
    /// The padding value.
    pub mask_value: f32,
}

impl Masking {
    /// A masking layer for `mask_value`.
    pub fn new(mask_value: f32) -> Self {
        Masking { mask_value }
    }

    /// Masks `x`; returns the input with masked steps zeroed, and the mask.
    ///
    /// # Errors
    /// When `mask` is not `[batch, time]` of `x`.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Mask>) -> Result<(Tensor<3>, Mask)> {
        check_mask_for(mask, &x.dims(), "Masking")?;
        // A step of no features has no value to compare, and burn's comparison over an empty
        // axis does not broadcast.
        if x.dims()[2] == 0 {
            return Err(no_features());
        }
        let mut created = Mask::from_padding_value(&x, self.mask_value);
        if let Some(mask) = mask {
            created = created.and(mask)?;
        }
        let zeroed = zero_masked(x, Some(&created));
        Ok((zeroed, created))
    }
}

impl Layer for Masking {
    fn type_name(&self) -> &'static str {
        "Masking"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        let (x, mask) = input.into_sequence("Masking")?;
        let (values, mask) = self.forward(x, mask.as_ref())?;
        Ok(Value::sequence(values, Some(mask)))
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        let (time, features, _) = input.sequence_features("Masking")?;
        Ok(Spec::Sequence {
            time,
            features,
            masked: true,
        })
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::Masking(MaskingConfig {
            mask_value: self.mask_value,
        }))
    }
}
