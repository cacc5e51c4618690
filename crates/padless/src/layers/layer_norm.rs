//! [`LayerNormalization`] over the feature axis.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::{BuildLayer, Layer, Spec, features_error, input_features};
use crate::registry::LayerConfig;
use crate::value::Value;
use crate::weights::{NamedWeight, load_param};

/// Configuration of a [`LayerNormalization`]: `{"type": "layer_normalization", "epsilon":
/// 0.001}`; the features are the previous layer's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNormalizationConfig {
    /// Added to the variance before the square root (default 1e-3, as Keras).
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

fn default_epsilon() -> f64 {
    1e-3
}

impl Default for LayerNormalizationConfig {
    fn default() -> Self {
        LayerNormalizationConfig {
            epsilon: default_epsilon(),
        }
    }
}

impl BuildLayer for LayerNormalizationConfig {
    type Layer = LayerNormalization;

    fn build(&self, input: &Spec, device: &Device) -> Result<LayerNormalization> {
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(Error::config(
                "LayerNormalization",
                format!("expected a positive epsilon, found {}", self.epsilon),
            ));
        }
        let features = input_features(input, "LayerNormalization")?;
        let mut layer = LayerNormalization::new(features, device);
        layer.epsilon = self.epsilon;
        Ok(layer)
    }
}

/// Normalises each step's features: `gamma * (x - mean) / sqrt(var + epsilon) + beta`.
///
/// # Shapes
/// `[batch, time, features]` or `[batch, features]`; the output has the input's shape.
///
/// # Masking
/// Works per step, so the mask passes unchanged.
#[derive(Module, Debug)]
pub struct LayerNormalization {
    /// `[features]` scale (Keras `gamma`), ones at start.
    pub gamma: Param<Tensor<1>>,
    /// `[features]` offset (Keras `beta`), zeros at start.
    pub beta: Param<Tensor<1>>,
    /// Added to the variance (Keras default 1e-3).
    pub epsilon: f64,
}

impl LayerNormalization {
    /// A layer for `features` with Keras' epsilon 1e-3.
    pub fn new(features: usize, device: &Device) -> Self {
        LayerNormalization {
            gamma: Initializer::Ones.init([features], device),
            beta: Initializer::Zeros.init([features], device),
            epsilon: 1e-3,
        }
    }

    fn features(&self) -> usize {
        self.gamma.val().dims()[0]
    }

    /// Normalises over the last axis.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let normed = (x - mean) / (var + self.epsilon).sqrt();
        let mut shape = [1usize; D];
        shape[D - 1] = self.features();
        normed * self.gamma.val().reshape(shape) + self.beta.val().reshape(shape)
    }
}

impl Layer for LayerNormalization {
    fn type_name(&self) -> &'static str {
        "LayerNormalization"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        let spec_features = *input.dims().last().unwrap_or(&0);
        if spec_features != self.features() {
            return Err(features_error(
                "LayerNormalization",
                self.features(),
                spec_features,
            ));
        }
        Ok(match input {
            Value::Sequence { values, mask } => Value::sequence(self.forward(values), mask),
            Value::Vector(values) => Value::Vector(self.forward(values)),
            tokens => {
                return Err(crate::error::Error::InputKind {
                    layer: "LayerNormalization".into(),
                    expected: "sequence or vector".into(),
                    found: tokens.kind().into(),
                });
            }
        })
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        let features = match *input {
            Spec::Sequence { features, .. } | Spec::Vector { features } => features,
            other => {
                return Err(crate::layer::kind_error(
                    "LayerNormalization",
                    "sequence or vector",
                    &other,
                ));
            }
        };
        if features != self.features() {
            return Err(features_error(
                "LayerNormalization",
                self.features(),
                features,
            ));
        }
        Ok(*input)
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn is_per_step(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::LayerNormalization(LayerNormalizationConfig {
            epsilon: self.epsilon,
        }))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        vec![
            NamedWeight::from_param("gamma", &self.gamma),
            NamedWeight::from_param("beta", &self.beta),
        ]
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_param(&mut self.gamma, weights, "gamma")?;
        load_param(&mut self.beta, weights, "beta")
    }
}

/// Configuration of a [`DropMask`] (no options): `{"type": "drop_mask"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropMaskConfig {}

impl BuildLayer for DropMaskConfig {
    type Layer = DropMask;

    fn build(&self, _input: &Spec, _device: &Device) -> Result<DropMask> {
        Ok(DropMask)
    }
}

/// Drops the mask on purpose, so a layer that cannot honour one can follow.
///
/// # Masking
/// Removes the mask; the values pass unchanged.
#[derive(Module, Debug, Default)]
pub struct DropMask;

impl Layer for DropMask {
    fn type_name(&self) -> &'static str {
        "DropMask"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        Ok(match input {
            Value::Sequence { values, .. } => Value::sequence(values, None),
            Value::Tokens { ids, .. } => Value::Tokens { ids, mask: None },
            vector => vector,
        })
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        Ok(match *input {
            Spec::Sequence { time, features, .. } => Spec::Sequence {
                time,
                features,
                masked: false,
            },
            Spec::Tokens { time, .. } => Spec::Tokens {
                time,
                masked: false,
            },
            vector => vector,
        })
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        Some(LayerConfig::DropMask(DropMaskConfig {}))
    }
}
