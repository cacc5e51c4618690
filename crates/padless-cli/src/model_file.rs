//! The model file of `padless train`: a [`ModelConfig`] (JSON or TOML) with an optional
//! `training` section, whose vocabulary-dependent sizes are filled from the data.
//!
//! Filled from the data when left out or written as `"vocab"`:
//! - `input`: token ids for symbol inputs, `{kind = "sequence", features = N}` for vectors;
//!   a `sequence` input's `features`.
//! - An `embedding`'s `n_tokens`: the input vocabulary's size (reserved symbols included).
//! - The last layer's `units` (`dense` or `time_distributed_dense`): the target vocabulary's
//!   size, or the target vectors' width. `"vocab"` as any layer's `units` means the same.
//!
//! The `training` section (all optional): `loss`, the library's [`LossKind`] by name
//! (`"binary_crossentropy"`) or as a table with its options (`{name =
//! "sparse_categorical_crossentropy", from_logits = true}`); left out, the sparse categorical
//! cross-entropy for symbol targets and the mean squared error for vectors, `from_logits`
//! unless the last layer ends in softmax or sigmoid. A cross-entropy's `from_logits` must
//! agree with the last layer: an error names both when probabilities meet a layer with no
//! activation or logits meet a softmax or sigmoid. `optimizer` (`{name = "adam"}`), `learning_rate`
//! (0.001), `clip_norm`, `metrics` (`token_accuracy` and `sequence_accuracy` for symbol
//! targets), `non_finite_inputs` (`error`, `warn` or `ignore` for NaN or inf at valid input
//! steps; `error`), `label_smoothing` (in `[0, 1)`, sparse categorical cross-entropy only;
//! 0) and `weight_average` (an exponential moving average of the weights with this decay per
//! step, in `[0, 1)`, written over the weights at the end of training, as Keras' `use_ema`;
//! none). Inputs are post-padded and carry their mask; where the padding goes changes no
//! result.

use std::path::Path;

use anyhow::{Context, Result, bail};
use padless::layers::{ActivationKind, TimeDistributedConfig};
use padless::losses::{LossKind, SequenceLoss};
use padless::model_config::{LayerConfig, ModelConfig};
use padless::train::{CompileConfig, MetricKind, NonFiniteInputs, OptimizerConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::vocab::{Coding, Vocabs};

/// The `training` section; `None`s are filled by [`TrainingSettings::resolve`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSettings {
    /// The loss (the library's names and options).
    pub loss: Option<LossKind>,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning rate.
    pub learning_rate: f64,
    /// Per-parameter gradient norm clipping.
    pub clip_norm: Option<f32>,
    /// Metrics beside the loss.
    pub metrics: Option<Vec<MetricKind>>,
    /// NaN or inf at valid input steps: `error`, `warn` or `ignore`.
    pub non_finite_inputs: NonFiniteInputs,
    /// Label smoothing of the (sparse) categorical cross-entropy, in `[0, 1)`.
    pub label_smoothing: f32,
    /// The decay of a moving average of the weights ([`CompileConfig::weight_average`]).
    pub weight_average: Option<f64>,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        TrainingSettings {
            loss: None,
            optimizer: OptimizerConfig::default(),
            learning_rate: 1e-3,
            clip_norm: None,
            metrics: None,
            non_finite_inputs: NonFiniteInputs::Error,
            label_smoothing: 0.0,
            weight_average: None,
        }
    }
}

impl TrainingSettings {
    /// Fills the defaults that depend on the targets and the model.
    ///
    /// # Errors
    /// A cross-entropy whose `from_logits` disagrees with the model's last activation.
    pub fn resolve(mut self, target: &Coding, model: &ModelConfig) -> Result<Self> {
        let symbols = matches!(target, Coding::Symbols { .. });
        let last_activation = model.layers.iter().rev().find_map(|l| match l {
            LayerConfig::Dense(c) | LayerConfig::TimeDistributed(TimeDistributedConfig(c)) => {
                Some(c.activation)
            }
            LayerConfig::Activation(c) => Some(c.activation),
            _ => None,
        });
        let probabilities = matches!(
            last_activation,
            Some(ActivationKind::Softmax | ActivationKind::Sigmoid)
        );
        let loss = self.loss.get_or_insert(if symbols {
            LossKind::SparseCategoricalCrossentropy {
                from_logits: !probabilities,
            }
        } else {
            LossKind::MeanSquaredError
        });
        let from_logits = match *loss {
            LossKind::CategoricalCrossentropy { from_logits }
            | LossKind::SparseCategoricalCrossentropy { from_logits }
            | LossKind::BinaryCrossentropy { from_logits } => Some(from_logits),
            _ => None,
        };
        if let (Some(from_logits), Some(activation)) = (from_logits, last_activation) {
            // Logits fed to a softmax or sigmoid again, or an output other than a softmax or
            // sigmoid read as probabilities: either trains on the wrong quantity silently.
            if from_logits == probabilities {
                bail!(
                    "training.loss: expected from_logits = {} for a model whose last activation \
                     is {activation:?}, found from_logits = {from_logits}",
                    !from_logits
                );
            }
        }
        self.metrics.get_or_insert_with(|| {
            if symbols {
                vec![MetricKind::TokenAccuracy, MetricKind::SequenceAccuracy]
            } else {
                Vec::new()
            }
        });
        Ok(self)
    }

    /// The compile settings (after [`TrainingSettings::resolve`]).
    ///
    /// # Errors
    /// Label smoothing outside `[0, 1)` or with a loss other than the sparse categorical
    /// cross-entropy (the weight average's decay is checked when the trainer is built).
    pub fn compile(&self) -> Result<CompileConfig> {
        let loss = self.loss.clone().unwrap_or(LossKind::MeanSquaredError);
        let epsilon = self.label_smoothing;
        if !(0.0..1.0).contains(&epsilon) {
            bail!("training.label_smoothing: expected a value in [0, 1), found {epsilon}");
        }
        if epsilon != 0.0 && loss.categorical_from_logits().is_none() {
            bail!(
                "training.label_smoothing: needs a categorical cross-entropy loss, found {loss:?}"
            );
        }
        let mut compile = CompileConfig::new(SequenceLoss::new(loss).with_label_smoothing(epsilon));
        compile.optimizer = self.optimizer.clone();
        compile.learning_rate = self.learning_rate;
        compile.clip_norm = self.clip_norm;
        compile.metrics = self.metrics.clone().unwrap_or_default();
        compile.non_finite_inputs = self.non_finite_inputs;
        compile.weight_average = self.weight_average;
        Ok(compile)
    }
}

/// A model file as read, before its sizes are filled.
#[derive(Debug, Clone)]
pub struct ModelFile {
    model: Json,
    /// The `training` section.
    pub training: TrainingSettings,
}

impl ModelFile {
    /// Reads a JSON or (by its `.toml` extension) TOML model file.
    ///
    /// # Errors
    /// An unreadable file or a malformed `training` section, naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut model: Json = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        } else {
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        };
        let training = match model.as_object_mut().and_then(|m| m.remove("training")) {
            Some(t) => serde_json::from_value(t)
                .with_context(|| format!("parsing the training section of {}", path.display()))?,
            None => TrainingSettings::default(),
        };
        Ok(ModelFile { model, training })
    }

    /// The model config with its vocabulary-dependent sizes filled from `vocabs`.
    ///
    /// # Errors
    /// A config that does not parse once filled.
    pub fn resolve(&self, vocabs: &Vocabs) -> Result<ModelConfig> {
        let mut model = self.model.clone();
        let Some(object) = model.as_object_mut() else {
            bail!(
                "expected the model config to be an object, found {}",
                self.model
            );
        };
        let input = object
            .entry("input")
            .or_insert_with(|| match &vocabs.input {
                Coding::Symbols { .. } => json!({"kind": "tokens"}),
                Coding::Numbers { features } => json!({"kind": "sequence", "features": features}),
            });
        if let Some(input) = input.as_object_mut()
            && input.get("kind").and_then(Json::as_str) == Some("sequence")
        {
            fill(input, "features", vocabs.input.size(), true);
        }
        if let Some(layers) = object.get_mut("layers").and_then(Json::as_array_mut) {
            let n_layers = layers.len();
            for (index, layer) in layers.iter_mut().enumerate() {
                let Some(layer) = layer.as_object_mut() else {
                    continue;
                };
                let kind = layer
                    .get("type")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string();
                if kind == "embedding" {
                    fill(layer, "n_tokens", vocabs.input.size(), true);
                }
                let last_dense = index + 1 == n_layers
                    && matches!(kind.as_str(), "dense" | "time_distributed_dense");
                fill(layer, "units", vocabs.target.size(), last_dense);
            }
        }
        serde_json::from_value(model).context("parsing the model config once its sizes are filled")
    }
}

/// Sets `key` to `size` when it is `"vocab"`, or missing and `when_missing`.
fn fill(object: &mut serde_json::Map<String, Json>, key: &str, size: usize, when_missing: bool) {
    let vocab = object.get(key).and_then(Json::as_str) == Some("vocab");
    if vocab || (when_missing && !object.contains_key(key)) {
        object.insert(key.to_string(), json!(size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_files::{RawSeq, Record, Tokens};
    use padless::layers::{DenseConfig, EmbeddingConfig};

    #[test]
    fn vocabulary_sizes_fill_the_embedding_and_the_last_layer() {
        let records = vec![Record {
            line: 1,
            input: RawSeq::Symbols(vec!["a".into(), "b".into()]),
            target: Some(RawSeq::Symbols(vec!["x".into()])),
        }];
        let vocabs = Vocabs::build(&records, Tokens::Chars).unwrap();
        let file = ModelFile {
            model: json!({"layers": [
                {"type": "embedding", "d_model": 4, "mask_zero": true},
                {"type": "gru", "units": 3},
                {"type": "dense", "units": "vocab", "activation": "softmax"}]}),
            training: TrainingSettings::default(),
        };
        let config = file.resolve(&vocabs).unwrap();
        // 3 reserved symbols + a, b; 3 reserved + x.
        assert!(matches!(
            config.layers[0],
            LayerConfig::Embedding(EmbeddingConfig { n_tokens: 5, .. })
        ));
        assert!(matches!(
            config.layers[2],
            LayerConfig::Dense(DenseConfig { units: 4, .. })
        ));
        let settings = file.training.resolve(&vocabs.target, &config).unwrap();
        assert!(matches!(
            settings.loss,
            Some(LossKind::SparseCategoricalCrossentropy { from_logits: false })
        ));
    }

    /// The loss is the library's `LossKind` by name or as a table; a cross-entropy whose
    /// `from_logits` contradicts the last activation is an error naming both; misspelt keys
    /// in the model config are errors naming the nearest known key.
    #[test]
    fn losses_are_named_as_the_library_names_them_and_checked_against_the_model() {
        let records = vec![Record {
            line: 1,
            input: RawSeq::Symbols(vec!["a".into()]),
            target: Some(RawSeq::Symbols(vec!["x".into()])),
        }];
        let vocabs = Vocabs::build(&records, Tokens::Chars).unwrap();
        let model = |activation: &str| ModelFile {
            model: json!({"layers": [
                {"type": "embedding", "d_model": 4},
                {"type": "dense", "activation": activation}]}),
            training: TrainingSettings::default(),
        };
        let logits = model("linear").resolve(&vocabs).unwrap();
        let softmax = model("softmax").resolve(&vocabs).unwrap();

        let named: TrainingSettings =
            toml::from_str("loss = \"sparse_categorical_crossentropy\"").unwrap();
        let resolved = named.clone().resolve(&vocabs.target, &softmax).unwrap();
        assert!(matches!(
            resolved.loss,
            Some(LossKind::SparseCategoricalCrossentropy { from_logits: false })
        ));
        let err = named
            .resolve(&vocabs.target, &logits)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "training.loss: expected from_logits = true for a model whose last activation is \
             Linear, found from_logits = false"
        );

        let table: TrainingSettings = toml::from_str(
            "loss = { name = \"sparse_categorical_crossentropy\", from_logits = true }",
        )
        .unwrap();
        let resolved = table.clone().resolve(&vocabs.target, &logits).unwrap();
        assert!(matches!(
            resolved.loss,
            Some(LossKind::SparseCategoricalCrossentropy { from_logits: true })
        ));
        let err = table
            .resolve(&vocabs.target, &softmax)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected from_logits = false"), "{err}");

        let huber: TrainingSettings = serde_json::from_value(json!({"loss": "huber"})).unwrap();
        assert!(matches!(huber.loss, Some(LossKind::Huber { delta: 1.0 })));
        let unknown = toml::from_str::<TrainingSettings>(
            "loss = { name = \"huber\", delta = 2.0, from_logits = true }",
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("unknown field \"from_logits\" in the loss huber"),
            "{unknown}"
        );

        let misspelt = ModelFile {
            model: json!({"layers": [
                {"type": "embedding", "d_model": 4, "mask_zreo": true},
                {"type": "dense"}]}),
            training: TrainingSettings::default(),
        };
        let err = format!("{:#}", misspelt.resolve(&vocabs).unwrap_err());
        assert!(
            err.contains(
                "unknown field \"mask_zreo\" in layer 0 (embedding); did you mean \"mask_zero\"?"
            ),
            "{err}"
        );
    }

    /// `label_smoothing` and `weight_average` reach the compile settings: the loss of logits
    /// [1, 2, 3] for label 2 with smoothing 0.1 is 0.9 * 0.407606 + 0.1 * 1.407606 = 0.507606
    /// (the `losses.rs` hand-worked value); bad values fail naming the key.
    #[test]
    fn label_smoothing_and_weight_average_reach_the_compile_settings() {
        let settings: TrainingSettings = toml::from_str(
            "loss = { name = \"sparse_categorical_crossentropy\", from_logits = true }\n\
             label_smoothing = 0.1\nweight_average = 0.99\n",
        )
        .unwrap();
        let compile = settings.compile().unwrap();
        assert_eq!(compile.weight_average, Some(0.99));
        let device = padless::default_device();
        let logits = padless::tensor_util::tensor_from(&[1.0, 2.0, 3.0], [1, 1, 3], &device);
        let labels = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(vec![2i64], [1, 1]),
            &device,
        );
        let out = compile
            .loss
            .compute(padless::losses::LossInputs::new(
                padless::losses::Targets::Labels(labels),
                logits,
            ))
            .unwrap();
        let value = padless::tensor_util::f32_vec(out.value.unwrap())[0];
        assert!((value - 0.507_606).abs() < 1e-5, "{value}");

        let too_much = TrainingSettings {
            label_smoothing: 1.0,
            ..settings.clone()
        };
        let err = too_much.compile().unwrap_err().to_string();
        assert!(
            err.contains("label_smoothing") && err.contains("found 1"),
            "{err}"
        );
        let mse = TrainingSettings {
            loss: Some(LossKind::MeanSquaredError),
            ..settings
        };
        let err = mse.compile().unwrap_err().to_string();
        assert!(err.contains("MeanSquaredError"), "{err}");
    }
}
