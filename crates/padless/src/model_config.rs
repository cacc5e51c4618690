//! [`ModelConfig`]: a [`Sequential`] stack described as data (JSON or TOML), so that models
//! can be written in config files and checkpoints can rebuild what they saved. Each layer is
//! a [`LayerConfig`] of the layer registry; unknown fields are errors naming the nearest
//! known one.

use burn::tensor::Device;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::layer::Spec;
pub use crate::registry::LayerConfig;
use crate::sequential::Sequential;

/// What a model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputConfig {
    /// Token ids `[batch, time]`.
    Tokens {
        /// Steps, if fixed.
        #[serde(default)]
        time: Option<usize>,
    },
    /// Feature vectors `[batch, time, features]`.
    Sequence {
        /// Steps, if fixed.
        #[serde(default)]
        time: Option<usize>,
        /// Features per step.
        features: usize,
    },
}

impl InputConfig {
    /// The spec of a batch of such inputs, with a mask when `masked`.
    pub fn spec(&self, masked: bool) -> Spec {
        match *self {
            InputConfig::Tokens { time } => Spec::Tokens { time, masked },
            InputConfig::Sequence { time, features } => Spec::Sequence {
                time,
                features,
                masked,
            },
        }
    }
}

/// A stack of layers as data.
///
/// # Example
/// ```
/// use padless::model_config::ModelConfig;
/// let config: ModelConfig = serde_json::from_str(r#"{
///   "input": {"kind": "sequence", "features": 3},
///   "layers": [
///     {"type": "masking", "mask_value": 0.0},
///     {"type": "lstm", "units": 8},
///     {"type": "dense", "units": 2, "activation": "softmax"}
///   ]}"#).unwrap();
/// let model = config.build(&padless::default_device()).unwrap();
/// assert_eq!(model.names(), ["masking", "lstm", "dense"]);
///
/// let misspelt = r#"{"input": {"kind": "tokens"}, "layers": [
///     {"type": "embedding", "n_tokens": 10, "d_model": 4},
///     {"type": "lstm", "units": 8, "retrun_sequences": true}]}"#;
/// let err = serde_json::from_str::<ModelConfig>(misspelt).unwrap_err().to_string();
/// assert!(err.starts_with(
///     r#"unknown field "retrun_sequences" in layer 1 (lstm); did you mean "return_sequences"?"#
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The input.
    pub input: InputConfig,
    /// The layers, in order.
    #[serde(deserialize_with = "layers_by_index")]
    pub layers: Vec<LayerConfig>,
}

/// The layers of a model config, each read strictly; errors name the layer by its index.
fn layers_by_index<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<LayerConfig>, D::Error> {
    Vec::<Json>::deserialize(deserializer)?
        .into_iter()
        .enumerate()
        .map(|(index, json)| LayerConfig::from_json(json, &format!("layer {index}")))
        .collect::<std::result::Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

impl ModelConfig {
    /// Builds the stack (fresh weights), inferring each layer's input size, and checks it.
    /// Its sizes are checked against the memory budget first ([`ModelConfig::check_size`]),
    /// so a config from a file never chooses an allocation the budget does not allow.
    ///
    /// # Errors
    /// A layer that does not fit its input, naming both, a dropped mask, or sizes over the
    /// memory budget.
    pub fn build(&self, device: &Device) -> Result<Sequential> {
        // A layer that does not fit its input is reported by its own build below, in the
        // words of the layer; the size check stops at it, so every layer built is checked.
        if let Err(e @ (Error::OverBudget { .. } | Error::Budget { .. })) = self.check_size() {
            return Err(e);
        }
        let mut spec = self.input.spec(true);
        let mut layers = Vec::with_capacity(self.layers.len());
        for (index, config) in self.layers.iter().enumerate() {
            let layer = config.build(&spec, device).map_err(|e| match e {
                Error::Config { layer, message } => Error::Config {
                    layer: format!("layer {index} ({layer})"),
                    message,
                },
                other => other,
            })?;
            spec = layer.as_layer().output_spec(&spec)?;
            layers.push(layer);
        }
        let model = Sequential::new(layers).with_input(self.input);
        model.check(self.input.spec(true))?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{ActivationKind, DenseConfig, EmbeddingConfig, TimeDistributedConfig};
    use crate::rnn::{AnyRecurrentConfig, BidirectionalConfig, GruConfig, MergeMode};

    #[test]
    fn a_config_builds_infers_sizes_and_round_trips_through_json() {
        let config = ModelConfig {
            input: InputConfig::Tokens { time: None },
            layers: vec![
                LayerConfig::Embedding(EmbeddingConfig::new(10, 4).with_mask_zero(true)),
                LayerConfig::Bidirectional(BidirectionalConfig {
                    layer: AnyRecurrentConfig::Gru(
                        GruConfig::new(0, 3).with_return_sequences(true),
                    ),
                    merge_mode: MergeMode::Concat,
                }),
                LayerConfig::TimeDistributed(TimeDistributedConfig(
                    DenseConfig::new(0, 2).with_activation(ActivationKind::Softmax),
                )),
            ],
        };
        let model = config.build(&crate::default_device()).unwrap();
        let summary = model.summary(config.input.spec(false)).unwrap();
        assert!(summary.contains("(None, None, 6)"), "{summary}");
        let json = serde_json::to_string(&config).unwrap();
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn a_config_that_does_not_fit_names_the_layer() {
        let config = ModelConfig {
            input: InputConfig::Sequence {
                time: None,
                features: 3,
            },
            layers: vec![LayerConfig::Embedding(EmbeddingConfig::new(5, 2))],
        };
        let err = config
            .build(&crate::default_device())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Embedding: expected tokens"), "{err}");
    }

    #[test]
    fn a_size_held_by_a_layer_config_must_match_the_inferred_one() {
        let config = ModelConfig {
            input: InputConfig::Sequence {
                time: None,
                features: 3,
            },
            layers: vec![LayerConfig::Dense(DenseConfig::new(4, 2))],
        };
        let err = config
            .build(&crate::default_device())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layer 0 (Dense)") && err.contains("expected 4 input features, found 3"),
            "{err}"
        );
    }
}
