//! [`Model`] for [`Sequential`]: one input, the stack's output, and the [`ModelConfig`] that
//! rebuilds a stack, also one built in code ([`sequential_config`]).

use burn::tensor::Device;

use super::{Inputs, Model};
use crate::error::{Error, Result};
use crate::layer::Spec;
use crate::layers::{Dense, LayerNormalization};
use crate::model_config::{
    CellConfig, InputConfig, LayerConfig, ModelConfig, RecurrentLayerConfig,
};
use crate::rnn::{Cell, Recurrent};
use crate::sequential::{AnyLayer, Sequential};
use crate::value::Value;
use crate::weights::NamedWeight;

impl Model for Sequential {
    type Config = ModelConfig;
    const KIND: &'static str = "sequential";

    fn build(config: &ModelConfig, device: &Device) -> Result<Self> {
        config.build(device)
    }

    fn config(&self) -> Result<ModelConfig> {
        sequential_config(self)
    }

    fn forward_batch(&self, inputs: &Inputs, read_steps: Option<&[usize]>) -> Result<Value> {
        let [input] = inputs.exactly::<1>("Sequential")?;
        self.forward_reading(input.clone(), read_steps)
    }

    fn weights(&self) -> Vec<NamedWeight> {
        Sequential::weights(self)
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        Sequential::set_weights(self, weights)
    }

    fn reset_states(&self) {
        Sequential::reset_states(self);
    }

    fn output_steps(&self) -> Option<usize> {
        let input = inferred_input(self).ok()?.spec(false);
        output_steps(self, input).ok().flatten()
    }

    fn mask_dropped_by(&self) -> Option<String> {
        let input = inferred_input(self).ok()?.spec(false);
        Sequential::mask_dropped_by(self, input).ok().flatten()
    }
}

/// The fixed number of output steps of `model` on `input`: the output's time axis when the
/// stack fixes it (RepeatVector), 1 for a vector output, `None` when it follows the input.
///
/// # Errors
/// As [`Sequential::check`].
pub(crate) fn output_steps(model: &Sequential, input: Spec) -> Result<Option<usize>> {
    let rows = model.check(input)?;
    Ok(match rows.last().map(|r| r.output) {
        Some(Spec::Sequence { time, .. }) => time,
        _ => Some(1),
    })
}

/// The config that rebuilds `model`: its input inferred from the first layer that fixes it
/// ([`inferred_input`]), then each layer's [`LayerConfig`] read from the layer's public fields.
/// The stack's weights are not part of it.
///
/// # Errors
/// A layer with a setting that [`LayerConfig`] cannot express (a dense layer without bias, a
/// layer normalisation with another epsilon), or an input that cannot be inferred.
pub(crate) fn sequential_config(model: &Sequential) -> Result<ModelConfig> {
    let layers = model
        .names()
        .iter()
        .zip(&model.layers)
        .map(|(name, layer)| {
            layer_config(layer).map_err(|message| {
                Error::config(
                    name,
                    format!("{message}, which a model config cannot describe"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ModelConfig {
        input: inferred_input(model)?,
        layers,
    })
}

/// The input a stack takes: token ids when it starts with an embedding, else sequences of
/// as many features as the first layer that has weights reads (masking, dropout, activation
/// and pooling layers before it keep the feature count). The time axis is left open.
///
/// # Errors
/// A stack whose input width no layer fixes.
pub(crate) fn inferred_input(model: &Sequential) -> Result<InputConfig> {
    for layer in &model.layers {
        let features = match layer {
            AnyLayer::Embedding(_) => return Ok(InputConfig::Tokens { time: None }),
            AnyLayer::Dense(dense) => dense_shape(dense)[0],
            AnyLayer::TimeDistributed(t) => dense_shape(&t.inner)[0],
            AnyLayer::LayerNormalization(norm) => norm.gamma.lazy_shape().dims::<1>()[0],
            AnyLayer::SimpleRnn(r) => r.cell.d_input(),
            AnyLayer::Lstm(r) => r.cell.d_input(),
            AnyLayer::Gru(r) => r.cell.d_input(),
            AnyLayer::BidirectionalSimpleRnn(b) => b.forward.cell.d_input(),
            AnyLayer::BidirectionalLstm(b) => b.forward.cell.d_input(),
            AnyLayer::BidirectionalGru(b) => b.forward.cell.d_input(),
            AnyLayer::RepeatVector(_) => break,
            _ => continue,
        };
        return Ok(InputConfig::Sequence {
            time: None,
            features,
        });
    }
    Err(Error::config(
        "Sequential",
        "cannot infer the input: expected an embedding or a layer with weights before any RepeatVector, found none",
    ))
}

/// `[d_input, units]` of a dense layer, without running a lazy initialiser.
fn dense_shape(dense: &Dense) -> [usize; 2] {
    dense.kernel.lazy_shape().dims()
}

/// A layer's config; `Err` says what it cannot express.
fn layer_config(layer: &AnyLayer) -> std::result::Result<LayerConfig, String> {
    let dense = |d: &Dense| -> std::result::Result<(usize, _), String> {
        if d.bias.is_none() {
            return Err("a dense layer without bias".into());
        }
        Ok((dense_shape(d)[1], d.activation))
    };
    Ok(match layer {
        AnyLayer::Masking(m) => LayerConfig::Masking {
            mask_value: m.mask_value,
        },
        AnyLayer::Embedding(e) => {
            let [n_tokens, d_model] = e.embeddings.lazy_shape().dims();
            LayerConfig::Embedding {
                n_tokens,
                d_model,
                mask_zero: e.mask_zero,
            }
        }
        AnyLayer::Dense(d) => {
            let (units, activation) = dense(d)?;
            LayerConfig::Dense { units, activation }
        }
        AnyLayer::TimeDistributed(t) => {
            let (units, activation) = dense(&t.inner)?;
            LayerConfig::TimeDistributedDense { units, activation }
        }
        AnyLayer::RepeatVector(r) => LayerConfig::RepeatVector { n_steps: r.n_steps },
        AnyLayer::Dropout(d) => LayerConfig::Dropout { rate: d.rate },
        AnyLayer::Activation(a) => LayerConfig::Activation { activation: a.kind },
        AnyLayer::LayerNormalization(norm) => {
            let default = LayerNormalization::new(1, &Device::flex()).epsilon;
            if norm.epsilon != default {
                return Err(format!(
                    "a layer normalisation with epsilon {} (the config's is {default})",
                    norm.epsilon
                ));
            }
            LayerConfig::LayerNormalization
        }
        AnyLayer::GlobalAveragePooling1D(_) => LayerConfig::GlobalAveragePooling1d,
        AnyLayer::GlobalMaxPooling1D(_) => LayerConfig::GlobalMaxPooling1d,
        AnyLayer::DropMask(_) => LayerConfig::DropMask,
        AnyLayer::SimpleRnn(r) => LayerConfig::Recurrent {
            cell: CellConfig::SimpleRnn,
            options: recurrent(r, r.cell.bias.is_some()),
        },
        AnyLayer::Lstm(r) => LayerConfig::Recurrent {
            cell: CellConfig::Lstm,
            options: recurrent(r, r.cell.bias.is_some()),
        },
        AnyLayer::Gru(r) => LayerConfig::Recurrent {
            cell: CellConfig::Gru,
            options: recurrent(r, r.cell.bias.is_some()),
        },
        AnyLayer::BidirectionalSimpleRnn(b) => LayerConfig::Bidirectional {
            cell: CellConfig::SimpleRnn,
            merge_mode: b.merge_mode,
            options: recurrent(&b.forward, b.forward.cell.bias.is_some()),
        },
        AnyLayer::BidirectionalLstm(b) => LayerConfig::Bidirectional {
            cell: CellConfig::Lstm,
            merge_mode: b.merge_mode,
            options: recurrent(&b.forward, b.forward.cell.bias.is_some()),
        },
        AnyLayer::BidirectionalGru(b) => LayerConfig::Bidirectional {
            cell: CellConfig::Gru,
            merge_mode: b.merge_mode,
            options: recurrent(&b.forward, b.forward.cell.bias.is_some()),
        },
    })
}

/// The options of a recurrent layer (`return_state` has no effect in a stack, which passes on
/// one value, so the config does not carry it).
fn recurrent<C: Cell>(layer: &Recurrent<C>, use_bias: bool) -> RecurrentLayerConfig {
    let o = layer.options;
    RecurrentLayerConfig {
        units: layer.d_hidden(),
        return_sequences: o.return_sequences,
        go_backwards: o.go_backwards,
        zero_output_for_mask: o.zero_output_for_mask,
        stateful: o.stateful,
        learn_initial_state: o.learn_initial_state,
        no_bias: !use_bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{
        ActivationKind, DenseConfig, EmbeddingConfig, GlobalAveragePooling1D, Masking,
        RepeatVector, TimeDistributed,
    };
    use crate::rnn::{GruConfig, LstmConfig, MergeMode, SimpleRnnConfig};

    /// A stack built in code describes itself: its config rebuilds a stack of the same layer
    /// names, options and weight shapes, and the config of that stack is the same config.
    #[test]
    fn a_stack_built_in_code_describes_itself_by_its_config() {
        let device = Device::flex();
        let model = Sequential::new(vec![
            AnyLayer::Masking(Masking::new(-1.0)),
            AnyLayer::BidirectionalGru(
                GruConfig::new(3, 4)
                    .with_return_sequences(true)
                    .init_bidirectional(MergeMode::Sum, &device),
            ),
            AnyLayer::Lstm(
                LstmConfig::new(4, 5)
                    .with_learn_initial_state(true)
                    .with_go_backwards(true)
                    .with_use_bias(false)
                    .init(&device),
            ),
            AnyLayer::RepeatVector(RepeatVector::new(6)),
            AnyLayer::SimpleRnn(
                SimpleRnnConfig::new(5, 2)
                    .with_return_sequences(true)
                    .init(&device),
            ),
            AnyLayer::TimeDistributed(TimeDistributed::new(
                DenseConfig::new(2, 7)
                    .with_activation(ActivationKind::Softmax)
                    .init(&device),
            )),
        ]);
        let config = sequential_config(&model).unwrap();
        assert_eq!(
            config.input,
            InputConfig::Sequence {
                time: None,
                features: 3
            }
        );
        assert_eq!(
            config.layers[1],
            LayerConfig::Bidirectional {
                cell: CellConfig::Gru,
                merge_mode: MergeMode::Sum,
                options: RecurrentLayerConfig {
                    units: 4,
                    return_sequences: true,
                    ..Default::default()
                }
            }
        );
        assert_eq!(
            config.layers[2],
            LayerConfig::Recurrent {
                cell: CellConfig::Lstm,
                options: RecurrentLayerConfig {
                    units: 5,
                    learn_initial_state: true,
                    go_backwards: true,
                    no_bias: true,
                    ..Default::default()
                }
            }
        );
        let rebuilt = config.build(&device).unwrap();
        assert_eq!(rebuilt.names(), model.names());
        let shapes = |m: &Sequential| -> Vec<(String, Vec<usize>)> {
            m.weights().into_iter().map(|w| (w.name, w.shape)).collect()
        };
        assert_eq!(shapes(&rebuilt), shapes(&model));
        assert_eq!(sequential_config(&rebuilt).unwrap(), config);
        assert_eq!(Model::output_steps(&model), Some(6));
    }

    #[test]
    fn what_a_config_cannot_describe_is_an_error_naming_the_layer() {
        let device = Device::flex();
        let no_bias = Sequential::new(vec![
            AnyLayer::Embedding(EmbeddingConfig::new(5, 3).init(&device)),
            AnyLayer::Dense(DenseConfig::new(3, 2).with_use_bias(false).init(&device)),
        ]);
        let err = sequential_config(&no_bias).unwrap_err().to_string();
        assert_eq!(
            err,
            "dense: a dense layer without bias, which a model config cannot describe"
        );
        let no_weights = Sequential::new(vec![
            AnyLayer::Masking(Masking::new(0.0)),
            AnyLayer::GlobalAveragePooling1D(GlobalAveragePooling1D),
        ]);
        let err = sequential_config(&no_weights).unwrap_err().to_string();
        assert!(err.contains("cannot infer the input"), "{err}");
    }
}
