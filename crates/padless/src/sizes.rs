//! Sizes of models worked out from their configs alone, without building them: parameter
//! counts, each layer's output shape, and the checks against the memory budget
//! ([`crate::budget`]) that every config runs before anything of its size is allocated. A
//! config read from a file (a model config, a checkpoint's header, a G2P model's header) may
//! say `units: 1e9`: that must be an error naming the size and the budget, not an aborted
//! allocation.
//!
//! The counts use saturating arithmetic on `u128`, so that no size from a file can overflow
//! them: a saturated count is simply far over any budget.
//!
//! ```
//! use padless::model_config::ModelConfig;
//! let config: ModelConfig = serde_json::from_str(r#"{
//!   "input": {"kind": "sequence", "features": 3},
//!   "layers": [{"type": "lstm", "units": 8}, {"type": "dense", "units": 2}]}"#).unwrap();
//! // LSTM: 4 gates x 8 units x (3 inputs + 8 recurrent + 1 bias); dense: 8 x 2 + 2.
//! assert_eq!(config.n_parameters().unwrap(), 4 * 8 * 12 + 18);
//! let huge: ModelConfig = serde_json::from_str(r#"{
//!   "input": {"kind": "sequence", "features": 3},
//!   "layers": [{"type": "lstm", "units": 1000000000}]}"#).unwrap();
//! let err = huge.build(&padless::default_device()).unwrap_err().to_string();
//! assert!(err.contains("layer 0 (lstm)") && err.contains("more than the memory budget"), "{err}");
//! ```

use crate::budget::{check_elements, check_model_size};
use crate::error::{Error, Result};
use crate::layer::{Spec, SpecRow, kind_error};
use crate::model_config::{InputConfig, LayerConfig, ModelConfig};
use crate::rnn::{AnyRecurrentConfig, MergeMode, RecurrentOptions};
use crate::seq2seq::{AttentionKind, EncoderDecoderConfig};
use crate::transformer::{PositionKind, TransformerConfig};

/// `a * b`, saturating.
fn mul(a: u128, b: u128) -> u128 {
    a.saturating_mul(b)
}

fn n(x: usize) -> u128 {
    x as u128
}

/// One layer of a [`ModelConfig`] as its config describes it: its name in the stack, its
/// type, what it receives and returns, and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSize {
    /// The layer's name in the stack (`lstm_1`), as [`Sequential`](crate::sequential::Sequential) names it.
    pub name: String,
    /// The layer's type as its [`Layer::type_name`](crate::layer::Layer::type_name) says (`Lstm`).
    pub type_name: &'static str,
    /// What the layer receives.
    pub input: Spec,
    /// What the layer returns.
    pub output: Spec,
    /// Its parameters (saturating).
    pub parameters: u128,
    /// Floats one row of a batch holds in its output and, for a recurrent layer, its gates
    /// (a sequence of no fixed length counted as one step).
    pub activations_per_row: u128,
}

/// The gates of a recurrent cell: 4 for an LSTM, 3 for a GRU, 1 for a simple RNN.
fn gates(config: &AnyRecurrentConfig) -> u128 {
    match config {
        AnyRecurrentConfig::Lstm(_) => 4,
        AnyRecurrentConfig::Gru(_) => 3,
        AnyRecurrentConfig::SimpleRnn(_) => 1,
    }
}

/// The type name of a recurrent cell's layer.
fn recurrent_name(config: &AnyRecurrentConfig) -> &'static str {
    match config {
        AnyRecurrentConfig::Lstm(_) => "Lstm",
        AnyRecurrentConfig::Gru(_) => "Gru",
        AnyRecurrentConfig::SimpleRnn(_) => "SimpleRnn",
    }
}

/// Parameters of one recurrent layer from `d_input` features: kernel, recurrent kernel, bias
/// (two rows for a GRU, whose recurrent bias is separate) and learned initial states.
fn recurrent_parameters(config: &AnyRecurrentConfig, d_input: usize) -> u128 {
    let options: RecurrentOptions = config.options();
    let (g, u) = (gates(config), n(options.units));
    let kernels = mul(mul(g, u), n(d_input).saturating_add(u));
    let bias_rows = match config {
        AnyRecurrentConfig::Gru(_) => 2,
        _ => 1,
    };
    let bias = if options.use_bias {
        mul(bias_rows, mul(g, u))
    } else {
        0
    };
    let states = match config {
        AnyRecurrentConfig::Lstm(_) => 2,
        _ => 1,
    };
    let initial = if options.learn_initial_state {
        mul(states, u)
    } else {
        0
    };
    kernels.saturating_add(bias).saturating_add(initial)
}

/// The output of a recurrent layer of `units` over `input`.
fn recurrent_output(
    name: &'static str,
    options: &RecurrentOptions,
    input: &Spec,
    width: usize,
) -> Result<(Spec, usize)> {
    let (time, features, masked) = input.sequence_features(name)?;
    if options.d_input != 0 && options.d_input != features {
        return Err(crate::layer::features_error(
            name,
            options.d_input,
            features,
        ));
    }
    if options.units == 0 {
        return Err(Error::config(name, "units must be at least 1"));
    }
    let output = if options.return_sequences {
        Spec::Sequence {
            time,
            features: width,
            masked,
        }
    } else {
        Spec::Vector { features: width }
    };
    Ok((output, features))
}

/// The features of a sequence or vector spec, as a dense or normalisation layer takes them.
fn features_of(spec: &Spec, layer: &str) -> Result<usize> {
    match *spec {
        Spec::Sequence { features, .. } | Spec::Vector { features } => Ok(features),
        other => Err(kind_error(
            layer,
            "sequence or vector (add an embedding before it)",
            &other,
        )),
    }
}

/// The type name, output spec, parameters and recurrent gate floats per step of the layer
/// `config` describes for inputs of `input`.
fn describe(config: &LayerConfig, input: &Spec) -> Result<(&'static str, Spec, u128, u128)> {
    use LayerConfig as L;
    let same = |name: &'static str| Ok((name, *input, 0, 0));
    match config {
        L::Masking(_) => {
            let (time, features, _) = input.sequence_features("Masking")?;
            if features == 0 {
                return Err(Error::config(
                    "Masking",
                    "expected inputs of at least 1 feature per step, found 0",
                ));
            }
            Ok((
                "Masking",
                Spec::Sequence {
                    time,
                    features,
                    masked: true,
                },
                0,
                0,
            ))
        }
        L::Embedding(c) => match *input {
            Spec::Tokens { time, masked } => {
                if c.n_tokens == 0 || c.d_model == 0 {
                    return Err(Error::config(
                        "Embedding",
                        format!(
                            "expected n_tokens and d_model of at least 1, found {} and {}",
                            c.n_tokens, c.d_model
                        ),
                    ));
                }
                let output = Spec::Sequence {
                    time,
                    features: c.d_model,
                    masked: masked || c.mask_zero,
                };
                Ok(("Embedding", output, mul(n(c.n_tokens), n(c.d_model)), 0))
            }
            other => Err(kind_error("Embedding", "tokens [batch, time]", &other)),
        },
        L::Dense(c) | L::TimeDistributed(crate::layers::TimeDistributedConfig(c)) => {
            let name = if matches!(config, L::Dense(_)) {
                "Dense"
            } else {
                input.sequence_features("TimeDistributed")?;
                "TimeDistributed"
            };
            let features = features_of(input, name)?;
            if c.d_input != 0 && c.d_input != features {
                return Err(crate::layer::features_error(name, c.d_input, features));
            }
            if c.units == 0 {
                return Err(Error::config(name, "expected units of at least 1, found 0"));
            }
            let output = match *input {
                Spec::Sequence { time, masked, .. } => Spec::Sequence {
                    time,
                    features: c.units,
                    masked,
                },
                _ => Spec::Vector { features: c.units },
            };
            let bias = if c.use_bias { n(c.units) } else { 0 };
            let parameters = mul(n(features), n(c.units)).saturating_add(bias);
            Ok((name, output, parameters, 0))
        }
        L::RepeatVector(c) => match *input {
            Spec::Vector { features } => {
                if c.n_steps == 0 {
                    return Err(Error::config(
                        "RepeatVector",
                        "expected n_steps of at least 1, found 0",
                    ));
                }
                let output = Spec::Sequence {
                    time: Some(c.n_steps),
                    features,
                    masked: false,
                };
                Ok(("RepeatVector", output, 0, 0))
            }
            other => Err(kind_error(
                "RepeatVector",
                "vector [batch, features]",
                &other,
            )),
        },
        L::Dropout(_) => same("Dropout"),
        L::Activation(_) => match input {
            Spec::Tokens { .. } => Err(kind_error("Activation", "sequence or vector", input)),
            _ => same("Activation"),
        },
        L::LayerNormalization(c) => {
            if c.epsilon.is_nan() || c.epsilon <= 0.0 {
                return Err(Error::config(
                    "LayerNormalization",
                    format!("expected a positive epsilon, found {}", c.epsilon),
                ));
            }
            let features = features_of(input, "LayerNormalization")?;
            Ok(("LayerNormalization", *input, mul(2, n(features)), 0))
        }
        L::GlobalAveragePooling1D(_) | L::GlobalMaxPooling1D(_) => {
            let name = if matches!(config, L::GlobalAveragePooling1D(_)) {
                "GlobalAveragePooling1D"
            } else {
                "GlobalMaxPooling1D"
            };
            let (_, features, _) = input.sequence_features(name)?;
            Ok((name, Spec::Vector { features }, 0, 0))
        }
        L::DropMask(_) => {
            let output = match *input {
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
            };
            Ok(("DropMask", output, 0, 0))
        }
        L::SimpleRnn(_) | L::Lstm(_) | L::Gru(_) => {
            let recurrent = match *config {
                L::SimpleRnn(c) => AnyRecurrentConfig::SimpleRnn(c),
                L::Lstm(c) => AnyRecurrentConfig::Lstm(c),
                L::Gru(c) => AnyRecurrentConfig::Gru(c),
                _ => unreachable!("matched above"),
            };
            let name = recurrent_name(&recurrent);
            let options = recurrent.options();
            let (output, d_input) = recurrent_output(name, &options, input, options.units)?;
            let floats = mul(gates(&recurrent), n(options.units));
            Ok((
                name,
                output,
                recurrent_parameters(&recurrent, d_input),
                floats,
            ))
        }
        L::Bidirectional(c) => {
            let options = c.layer.options();
            if options.go_backwards {
                return Err(Error::config(
                    "Bidirectional",
                    "expected go_backwards = false in the wrapped layer (the backward half reads \
                     each row's valid steps reversed), found true",
                ));
            }
            let width = match c.merge_mode {
                MergeMode::Concat => options.units.saturating_mul(2),
                _ => options.units,
            };
            let (output, d_input) =
                recurrent_output(recurrent_name(&c.layer), &options, input, width)?;
            let floats = mul(2, mul(gates(&c.layer), n(options.units)));
            Ok((
                "Bidirectional",
                output,
                mul(2, recurrent_parameters(&c.layer, d_input)),
                floats,
            ))
        }
    }
}

/// Floats in one row of a value of `spec` (a sequence of no fixed length counted as one step).
fn floats_per_row(spec: &Spec) -> u128 {
    match *spec {
        Spec::Tokens { time, .. } => n(time.unwrap_or(1)),
        Spec::Sequence { time, features, .. } => mul(n(time.unwrap_or(1)), n(features)),
        Spec::Vector { features } => n(features),
    }
}

/// The steps of one row of a value of `spec` (1 where the length is not fixed).
fn steps(spec: &Spec) -> u128 {
    match *spec {
        Spec::Tokens { time, .. } | Spec::Sequence { time, .. } => n(time.unwrap_or(1)),
        Spec::Vector { .. } => 1,
    }
}

impl ModelConfig {
    /// Each layer's name, type, input and output specs and parameter count, from the config
    /// alone (nothing is built).
    ///
    /// # Errors
    /// A layer that cannot take its input or has an invalid size, named by its index, as
    /// [`ModelConfig::build`] reports it.
    pub fn layer_sizes(&self) -> Result<Vec<LayerSize>> {
        if let InputConfig::Sequence { features: 0, .. } = self.input {
            return Err(Error::config(
                "model input",
                "expected sequences of at least 1 feature per step, found 0",
            ));
        }
        let mut spec = self.input.spec(true);
        let mut described = Vec::with_capacity(self.layers.len());
        for (index, config) in self.layers.iter().enumerate() {
            let (type_name, output, parameters, gate_floats) =
                describe(config, &spec).map_err(|e| match e {
                    Error::Config { layer, message } => Error::Config {
                        layer: format!("layer {index} ({layer})"),
                        message,
                    },
                    other => other,
                })?;
            if matches!(config, LayerConfig::RepeatVector(_)) && spec.masked() {
                return Err(Error::MaskDropped {
                    layer: format!("layer {index} ({type_name})"),
                });
            }
            let activations_per_row =
                floats_per_row(&output).saturating_add(mul(steps(&spec), gate_floats));
            described.push((type_name, spec, output, parameters, activations_per_row));
            spec = output;
        }
        let names = crate::sequential::layer_names(described.iter().map(|d| d.0));
        Ok(described
            .into_iter()
            .zip(names)
            .map(
                |((type_name, input, output, parameters, activations_per_row), name)| LayerSize {
                    name,
                    type_name,
                    input,
                    output,
                    parameters,
                    activations_per_row,
                },
            )
            .collect())
    }

    /// The parameters of the stack this config builds, counted without building it
    /// (saturating at `u128::MAX`).
    ///
    /// # Errors
    /// As [`ModelConfig::layer_sizes`].
    pub fn n_parameters(&self) -> Result<u128> {
        Ok(self
            .layer_sizes()?
            .iter()
            .fold(0u128, |sum, layer| sum.saturating_add(layer.parameters)))
    }

    /// Checks, without building anything, that training the stack fits in the memory budget:
    /// its parameters with their gradients and optimizer moments, then one row's activations
    /// (a batch holds many rows; a step of no fixed number counts once). The error names the
    /// first layer at which the running total passes the budget.
    ///
    /// # Errors
    /// As [`ModelConfig::layer_sizes`], and [`Error::OverBudget`] naming the layer, the size
    /// and the budget.
    pub fn check_size(&self) -> Result<()> {
        let layers = self.layer_sizes()?;
        let (mut parameters, mut floats) = (0u128, 0u128);
        for (index, layer) in layers.iter().enumerate() {
            parameters = parameters.saturating_add(layer.parameters);
            floats = floats.saturating_add(layer.activations_per_row);
            let what = |thing: &str| {
                format!(
                    "model config: {thing} up to layer {index} ({})",
                    self.layers[index].type_name()
                )
            };
            check_model_size(&what("the parameters"), saturate(parameters))?;
            check_elements(&what("one row's activations"), saturate(floats), 4)?;
        }
        Ok(())
    }

    /// The summary table of the stack this config builds ([`Sequential::summary`]'s table:
    /// layer, output shape, parameters, mask in and out), worked out from the config alone,
    /// so that a model too large to build (or slow to initialise) is summarised at once.
    ///
    /// [`Sequential::summary`]: crate::sequential::Sequential::summary
    ///
    /// # Errors
    /// As [`ModelConfig::layer_sizes`].
    pub fn summary(&self) -> Result<String> {
        let layers = self.layer_sizes()?;
        // The built stack's summary takes the unmasked input spec; its rows follow from it.
        let mut spec = self.input.spec(false);
        let mut rows = Vec::with_capacity(layers.len());
        let device = crate::default_device();
        for (index, (config, layer)) in self.layers.iter().zip(&layers).enumerate() {
            let (_, output, _, _) = describe(config, &spec)?;
            // A layer without weights costs nothing to build: building it runs its own
            // checks of its options (a dropout rate, an activation for its input).
            if layer.parameters == 0 {
                config.build(&spec, &device).map_err(|e| match e {
                    Error::Config { layer, message } => Error::Config {
                        layer: format!("layer {index} ({layer})"),
                        message,
                    },
                    other => other,
                })?;
            }
            rows.push((
                SpecRow {
                    name: layer.name.clone(),
                    input: spec,
                    output,
                },
                layer.type_name,
                layer.parameters,
            ));
            spec = output;
        }
        Ok(crate::sequential::summary_table(&rows))
    }
}

/// A count as `u64`, saturating.
fn saturate(count: u128) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// Weights of an LSTM (kernel, recurrent kernel, bias) from `d_input` to `units`.
fn lstm(d_input: u128, units: u128) -> u128 {
    mul(
        mul(4, units),
        d_input.saturating_add(units).saturating_add(1),
    )
}

/// The parameters of the encoder-decoder that `config` builds (the sum of its layers'
/// weights, as [`EncoderDecoder::n_parameters`](crate::seq2seq::EncoderDecoder::n_parameters)
/// counts them), worked out without building it; saturating.
pub fn encoder_decoder_parameters(config: &EncoderDecoderConfig) -> u128 {
    let (e, u) = (n(config.d_embedding), n(config.d_encoder));
    let d = mul(2, u);
    let embeddings = mul(
        n(config.n_source_tokens).saturating_add(n(config.n_target_tokens)),
        e,
    );
    // Each layer a pair of LSTMs; the first reads the embeddings, the others both
    // directions of the layer below.
    let encoder = match config.encoder_layers {
        0 => 0,
        layers => mul(2, lstm(e, u)).saturating_add(mul(n(layers - 1), mul(2, lstm(d, u)))),
    };
    let decoder =
        lstm(e, d).saturating_add(mul(n(config.decoder_layers.saturating_sub(1)), lstm(d, d)));
    let attention = match config.attention {
        AttentionKind::Dot { .. } => 0,
        AttentionKind::General => mul(d, d),
        AttentionKind::Additive { d_attention } => {
            mul(mul(2, d), n(d_attention)).saturating_add(n(d_attention))
        }
    };
    let combine = mul(mul(2, d), d).saturating_add(d);
    let post = mul(n(config.post_attention_layers), lstm(d, d));
    let output = mul(d, n(config.n_target_tokens)).saturating_add(n(config.n_target_tokens));
    [
        embeddings, encoder, decoder, attention, combine, post, output,
    ]
    .into_iter()
    .fold(0u128, u128::saturating_add)
}

/// Checks that training the encoder-decoder of `config` (its parameters with their
/// gradients and optimizer moments) fits in the memory budget, before it is built.
///
/// # Errors
/// [`Error::OverBudget`] naming the config's sizes and the budget.
pub fn check_encoder_decoder(config: &EncoderDecoderConfig) -> Result<()> {
    check_model_size(
        &format!(
            "encoder-decoder config ({} source and {} target tokens, d_embedding {}, d_encoder {}, {} encoder, {} decoder and {} post-attention layers): the parameters",
            config.n_source_tokens,
            config.n_target_tokens,
            config.d_embedding,
            config.d_encoder,
            config.encoder_layers,
            config.decoder_layers,
            config.post_attention_layers
        ),
        saturate(encoder_decoder_parameters(config)),
    )?;
    Ok(())
}

/// The parameters of the [`Transformer`](crate::transformer::Transformer) that `config`
/// builds, counted without building it; saturating.
pub fn transformer_parameters(config: &TransformerConfig) -> u128 {
    let d = n(config.d_model);
    let linear = |d_in: u128, d_out: u128| mul(d_in, d_out).saturating_add(d_out);
    let norm = mul(2, d);
    let attention = mul(mul(4, d), d).saturating_add(mul(4, d));
    let feed_forward = linear(d, n(config.d_ff)).saturating_add(linear(n(config.d_ff), d));
    let encoder_layer = attention
        .saturating_add(feed_forward)
        .saturating_add(mul(2, norm));
    let decoder_layer = mul(2, attention)
        .saturating_add(feed_forward)
        .saturating_add(mul(3, norm));
    let final_norms = if config.norm_first { mul(2, norm) } else { 0 };
    let embeddings = if config.share_embeddings {
        mul(n(config.n_source_tokens), d)
    } else {
        mul(
            n(config.n_source_tokens).saturating_add(n(config.n_target_tokens)),
            d,
        )
    };
    let positions = match config.positions {
        PositionKind::Sinusoidal => 0,
        PositionKind::Learned { max_len } => mul(2, mul(n(max_len), d)),
    };
    [
        embeddings,
        positions,
        mul(n(config.encoder_layers), encoder_layer),
        mul(n(config.decoder_layers), decoder_layer),
        final_norms,
        linear(d, n(config.n_target_tokens)),
    ]
    .into_iter()
    .fold(0u128, u128::saturating_add)
}

/// Checks that training the Transformer of `config` (its parameters with their gradients and
/// optimizer moments) fits in the memory budget, before it is built.
///
/// # Errors
/// [`Error::OverBudget`] naming the config's sizes and the budget.
pub fn check_transformer(config: &TransformerConfig) -> Result<()> {
    check_model_size(
        &format!(
            "Transformer config ({} source and {} target tokens, d_model {}, d_ff {}, {} encoder and {} decoder layers): the parameters",
            config.n_source_tokens,
            config.n_target_tokens,
            config.d_model,
            config.d_ff,
            config.encoder_layers,
            config.decoder_layers
        ),
        saturate(transformer_parameters(config)),
    )?;
    Ok(())
}
