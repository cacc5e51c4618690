//! Masked global pooling over time: [`GlobalAveragePooling1D`], [`GlobalMaxPooling1D`].

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::layer::{BuildLayer, Layer, Spec};
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::registry::LayerConfig;
use crate::value::Value;

/// The mean over valid steps.
///
/// # Shapes
/// `[batch, time, features] -> [batch, features]`.
///
/// # Masking
/// Consumes the mask: only valid steps are averaged (selected, so NaN or inf at masked steps
/// cannot leak); a row with no valid step gives 0. Returns no mask.
#[derive(Module, Debug, Default)]
pub struct GlobalAveragePooling1D;

impl GlobalAveragePooling1D {
    /// Pools `x` over its valid steps.
    ///
    /// # Errors
    /// When the mask does not fit.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Mask>) -> Result<Tensor<2>> {
        let [batch, time, _] = x.dims();
        check_mask_for(mask, &[batch, time], "GlobalAveragePooling1D")?;
        let Some(mask) = mask else {
            return Ok(x.mean_dim(1).squeeze_dim(1));
        };
        let kept = zero_masked(x, Some(mask));
        let counts = mask.to_float().sum_dim(1).clamp_min(1.0);
        Ok(kept.sum_dim(1).squeeze_dim::<2>(1) / counts)
    }
}

/// The maximum over valid steps.
///
/// # Shapes
/// `[batch, time, features] -> [batch, features]`.
///
/// # Masking
/// Consumes the mask: masked steps never win; a row with no valid step gives 0. Returns no
/// mask.
#[derive(Module, Debug, Default)]
pub struct GlobalMaxPooling1D;

impl GlobalMaxPooling1D {
    /// Pools `x` over its valid steps.
    ///
    /// # Errors
    /// When the mask does not fit.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Mask>) -> Result<Tensor<2>> {
        let [batch, time, features] = x.dims();
        check_mask_for(mask, &[batch, time], "GlobalMaxPooling1D")?;
        let Some(mask) = mask else {
            return Ok(x.max_dim(1).squeeze_dim(1));
        };
        let kept = x.mask_fill(mask.padding_expanded(features), f32::NEG_INFINITY);
        let max = kept.max_dim(1).squeeze_dim::<2>(1);
        let empty_rows = mask
            .valid()
            .int()
            .sum_dim(1)
            .equal_elem(0)
            .expand([batch, features]);
        Ok(max.mask_fill(empty_rows, 0.0))
    }
}

macro_rules! pooling_layer {
    ($ty:ident, $config:ident, $tag:literal) => {
        #[doc = concat!("Configuration of a [`", stringify!($ty), "`] (no options): `{\"type\": \"", $tag, "\"}`.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $config {}

        impl BuildLayer for $config {
            type Layer = $ty;

            fn build(&self, _input: &Spec, _device: &Device) -> Result<$ty> {
                Ok($ty)
            }
        }

        impl Layer for $ty {
            fn type_name(&self) -> &'static str {
                stringify!($ty)
            }

            fn forward_value(&self, input: Value) -> Result<Value> {
                let (x, mask) = input.into_sequence(stringify!($ty))?;
                Ok(Value::Vector(self.forward(x, mask.as_ref())?))
            }

            fn output_spec(&self, input: &Spec) -> Result<Spec> {
                let (_, features, _) = input.sequence_features(stringify!($ty))?;
                Ok(Spec::Vector { features })
            }

            fn supports_mask(&self) -> bool {
                true
            }

            fn config(&self) -> Option<LayerConfig> {
                Some(LayerConfig::$ty($config {}))
            }
        }
    };
}

pooling_layer!(
    GlobalAveragePooling1D,
    GlobalAveragePooling1DConfig,
    "global_average_pooling1d"
);
pooling_layer!(
    GlobalMaxPooling1D,
    GlobalMaxPooling1DConfig,
    "global_max_pooling1d"
);
