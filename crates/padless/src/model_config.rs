//! [`ModelConfig`]: a [`Sequential`] stack described as data (JSON or TOML), so that models
//! can be written in config files and checkpoints can rebuild what they saved.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::Spec;
use crate::layers::{
    Activation, ActivationKind, DenseConfig, DropMask, Dropout, EmbeddingConfig,
    GlobalAveragePooling1D, GlobalMaxPooling1D, LayerNormalization, Masking, RepeatVector,
    TimeDistributed,
};
use crate::rnn::{GruConfig, LstmConfig, MergeMode, SimpleRnnConfig};
use crate::sequential::{AnyLayer, Sequential};

/// What a model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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

/// Options of a recurrent layer in a config (Keras names; defaults as Keras).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RecurrentLayerConfig {
    /// Hidden units.
    pub units: usize,
    /// Return every step.
    pub return_sequences: bool,
    /// Process steps from last to first.
    pub go_backwards: bool,
    /// Output 0 at masked steps.
    pub zero_output_for_mask: bool,
    /// Carry states between batches.
    pub stateful: bool,
    /// Learn the initial states.
    pub learn_initial_state: bool,
    /// Disable the biases.
    pub no_bias: bool,
}

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellConfig {
    /// `SimpleRnn`.
    SimpleRnn,
    /// `Lstm`.
    Lstm,
    /// `Gru`.
    Gru,
}

/// One layer of a [`ModelConfig`]; input sizes are inferred from the previous layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum LayerConfig {
    Masking {
        mask_value: f32,
    },
    Embedding {
        n_tokens: usize,
        d_model: usize,
        #[serde(default)]
        mask_zero: bool,
    },
    Dense {
        units: usize,
        #[serde(default)]
        activation: ActivationKind,
    },
    TimeDistributedDense {
        units: usize,
        #[serde(default)]
        activation: ActivationKind,
    },
    RepeatVector {
        n_steps: usize,
    },
    Dropout {
        rate: f64,
    },
    Activation {
        activation: ActivationKind,
    },
    LayerNormalization,
    GlobalAveragePooling1d,
    GlobalMaxPooling1d,
    DropMask,
    Recurrent {
        cell: CellConfig,
        #[serde(flatten)]
        options: RecurrentLayerConfig,
    },
    Bidirectional {
        cell: CellConfig,
        #[serde(default)]
        merge_mode: MergeMode,
        #[serde(flatten)]
        options: RecurrentLayerConfig,
    },
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
///     {"type": "recurrent", "cell": "lstm", "units": 8},
///     {"type": "dense", "units": 2, "activation": "softmax"}
///   ]}"#).unwrap();
/// let model = config.build(&padless::default_device()).unwrap();
/// assert_eq!(model.names(), ["masking", "lstm", "dense"]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The input.
    pub input: InputConfig,
    /// The layers, in order.
    pub layers: Vec<LayerConfig>,
}

impl ModelConfig {
    /// Builds the stack (fresh weights), inferring each layer's input size, and checks it.
    ///
    /// # Errors
    /// A layer that does not fit its input, naming both, or a dropped mask.
    pub fn build(&self, device: &Device) -> Result<Sequential> {
        let mut spec = self.input.spec(true);
        let mut layers = Vec::with_capacity(self.layers.len());
        for (index, config) in self.layers.iter().enumerate() {
            let layer = build_layer(config, &spec, device).map_err(|e| match e {
                Error::Config { layer, message } => Error::Config {
                    layer: format!("layer {index} ({layer})"),
                    message,
                },
                other => other,
            })?;
            spec = layer.as_layer().output_spec(&spec)?;
            layers.push(layer);
        }
        let model = Sequential::new(layers);
        model.check(self.input.spec(true))?;
        Ok(model)
    }
}

fn features(spec: &Spec, layer: &str) -> Result<usize> {
    match *spec {
        Spec::Sequence { features, .. } | Spec::Vector { features } => Ok(features),
        Spec::Tokens { .. } => Err(Error::config(
            layer,
            "expected features, found token ids (add an embedding first)",
        )),
    }
}

fn build_layer(config: &LayerConfig, spec: &Spec, device: &Device) -> Result<AnyLayer> {
    Ok(match config {
        LayerConfig::Masking { mask_value } => AnyLayer::Masking(Masking::new(*mask_value)),
        LayerConfig::Embedding {
            n_tokens,
            d_model,
            mask_zero,
        } => AnyLayer::Embedding(
            EmbeddingConfig::new(*n_tokens, *d_model)
                .with_mask_zero(*mask_zero)
                .init(device),
        ),
        LayerConfig::Dense { units, activation } => AnyLayer::Dense(
            DenseConfig::new(features(spec, "dense")?, *units)
                .with_activation(*activation)
                .init(device),
        ),
        LayerConfig::TimeDistributedDense { units, activation } => {
            AnyLayer::TimeDistributed(TimeDistributed::new(
                DenseConfig::new(features(spec, "time_distributed")?, *units)
                    .with_activation(*activation)
                    .init(device),
            ))
        }
        LayerConfig::RepeatVector { n_steps } => {
            AnyLayer::RepeatVector(RepeatVector::new(*n_steps))
        }
        LayerConfig::Dropout { rate } => {
            if !(0.0..1.0).contains(rate) {
                return Err(Error::config(
                    "dropout",
                    format!("rate {rate} is outside [0, 1)"),
                ));
            }
            AnyLayer::Dropout(Dropout::new(*rate))
        }
        LayerConfig::Activation { activation } => {
            AnyLayer::Activation(Activation::new(*activation))
        }
        LayerConfig::LayerNormalization => AnyLayer::LayerNormalization(LayerNormalization::new(
            features(spec, "layer_normalization")?,
            device,
        )),
        LayerConfig::GlobalAveragePooling1d => {
            AnyLayer::GlobalAveragePooling1D(GlobalAveragePooling1D)
        }
        LayerConfig::GlobalMaxPooling1d => AnyLayer::GlobalMaxPooling1D(GlobalMaxPooling1D),
        LayerConfig::DropMask => AnyLayer::DropMask(DropMask),
        LayerConfig::Recurrent { cell, options } => recurrent(*cell, options, None, spec, device)?,
        LayerConfig::Bidirectional {
            cell,
            merge_mode,
            options,
        } => recurrent(*cell, options, Some(*merge_mode), spec, device)?,
    })
}

fn recurrent(
    cell: CellConfig,
    o: &RecurrentLayerConfig,
    merge: Option<MergeMode>,
    spec: &Spec,
    device: &Device,
) -> Result<AnyLayer> {
    let d_input = features(spec, "recurrent")?;
    if o.units == 0 {
        return Err(Error::config("recurrent", "units must be at least 1"));
    }
    macro_rules! configure {
        ($config:ident) => {
            $config::new(d_input, o.units)
                .with_return_sequences(o.return_sequences)
                .with_go_backwards(o.go_backwards)
                .with_zero_output_for_mask(o.zero_output_for_mask)
                .with_stateful(o.stateful)
                .with_learn_initial_state(o.learn_initial_state)
                .with_use_bias(!o.no_bias)
        };
    }
    Ok(match (cell, merge) {
        (CellConfig::SimpleRnn, None) => {
            AnyLayer::SimpleRnn(configure!(SimpleRnnConfig).init(device))
        }
        (CellConfig::Lstm, None) => AnyLayer::Lstm(configure!(LstmConfig).init(device)),
        (CellConfig::Gru, None) => AnyLayer::Gru(configure!(GruConfig).init(device)),
        (CellConfig::SimpleRnn, Some(m)) => AnyLayer::BidirectionalSimpleRnn(
            configure!(SimpleRnnConfig).init_bidirectional(m, device),
        ),
        (CellConfig::Lstm, Some(m)) => {
            AnyLayer::BidirectionalLstm(configure!(LstmConfig).init_bidirectional(m, device))
        }
        (CellConfig::Gru, Some(m)) => {
            AnyLayer::BidirectionalGru(configure!(GruConfig).init_bidirectional(m, device))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_builds_infers_sizes_and_round_trips_through_json() {
        let config = ModelConfig {
            input: InputConfig::Tokens { time: None },
            layers: vec![
                LayerConfig::Embedding {
                    n_tokens: 10,
                    d_model: 4,
                    mask_zero: true,
                },
                LayerConfig::Bidirectional {
                    cell: CellConfig::Gru,
                    merge_mode: MergeMode::Concat,
                    options: RecurrentLayerConfig {
                        units: 3,
                        return_sequences: true,
                        ..Default::default()
                    },
                },
                LayerConfig::TimeDistributedDense {
                    units: 2,
                    activation: ActivationKind::Softmax,
                },
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
            layers: vec![LayerConfig::Embedding {
                n_tokens: 5,
                d_model: 2,
                mask_zero: false,
            }],
        };
        let err = config
            .build(&crate::default_device())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Embedding: expected tokens"), "{err}");
    }
}
