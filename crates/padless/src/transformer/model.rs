//! [`Transformer`]: an encoder-decoder for sequence pairs whose lengths differ, with token
//! embeddings, positions among valid steps, the encoder and decoder stacks and an output
//! projection, a [`Model`] that the [`Trainer`](crate::train::Trainer) trains;
//! [`TransformerEncoded`], what decoding step by step reads.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::cache::KeyValues;
use super::layer::{Linear, TransformerLayerConfig};
use super::names::{load_named, named_weights};
use super::position::{PositionKind, PositionalEmbedding};
use super::stack::{TransformerDecoder, TransformerEncoder};
use crate::error::{Error, Result};
use crate::layers::{ActivationKind, dropout};
use crate::losses::LossOutput;
use crate::mask::{Mask, zero_masked};
use crate::model::{Inputs, Model};
use crate::seq2seq::{PAD, teacher_forced_loss, token_pair};
use crate::tensor_util::i64_vec;
use crate::value::Value;
use crate::weights::NamedWeight;

fn relu() -> ActivationKind {
    ActivationKind::Relu
}

fn layer_norm_eps() -> f64 {
    1e-5
}

fn yes() -> bool {
    true
}

/// Sizes and options of a [`Transformer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Source token ids `0..n_source_tokens`; 0 is padding.
    pub n_source_tokens: usize,
    /// Target token ids `0..n_target_tokens`; 0 is padding, 1 the start symbol
    /// ([`BOS`](crate::seq2seq::BOS)), 2 the end symbol ([`EOS`](crate::seq2seq::EOS)).
    pub n_target_tokens: usize,
    /// Features of every step.
    pub d_model: usize,
    /// Attention heads; `d_model` is a multiple of it.
    pub heads: usize,
    /// Hidden units of each feed-forward block.
    pub d_ff: usize,
    /// Encoder layers (at least 1).
    pub encoder_layers: usize,
    /// Decoder layers (at least 1).
    pub decoder_layers: usize,
    /// Dropout on the embeddings, in every layer and on the attention weights (default 0;
    /// training only).
    #[serde(default)]
    pub dropout: f64,
    /// The feed-forward activation (default `relu`; `gelu` is exact GELU).
    #[serde(default = "relu")]
    pub activation: ActivationKind,
    /// LayerNorm before each block, and a final LayerNorm after each stack (default false:
    /// after each residual sum).
    #[serde(default)]
    pub norm_first: bool,
    /// Position vectors (default sinusoidal).
    #[serde(default)]
    pub positions: PositionKind,
    /// One embedding table for source and target tokens (the vocabularies must then have the
    /// same size; default false).
    #[serde(default)]
    pub share_embeddings: bool,
    /// Multiply token embeddings by `sqrt(d_model)` before adding positions (default true).
    #[serde(default = "yes")]
    pub scale_embeddings: bool,
    /// Added to the variance in each LayerNorm (default 1e-5).
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
}

impl TransformerConfig {
    /// A configuration with the defaults above.
    pub fn new(
        [n_source_tokens, n_target_tokens]: [usize; 2],
        d_model: usize,
        heads: usize,
        d_ff: usize,
        [encoder_layers, decoder_layers]: [usize; 2],
    ) -> Self {
        TransformerConfig {
            n_source_tokens,
            n_target_tokens,
            d_model,
            heads,
            d_ff,
            encoder_layers,
            decoder_layers,
            dropout: 0.0,
            activation: relu(),
            norm_first: false,
            positions: PositionKind::default(),
            share_embeddings: false,
            scale_embeddings: true,
            layer_norm_eps: layer_norm_eps(),
        }
    }

    /// The configuration of each layer.
    pub fn layer(&self) -> TransformerLayerConfig {
        TransformerLayerConfig::new(self.d_model, self.heads)
            .with_d_ff(self.d_ff)
            .with_dropout(self.dropout)
            .with_activation(self.activation)
            .with_norm_first(self.norm_first)
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// Builds the model: token embeddings drawn from `N(0, 1 / d_model)`, the layers as
    /// PyTorch initialises them.
    ///
    /// # Errors
    /// Fewer than 2 source or 3 target tokens, zero sizes, `d_model` not a multiple of
    /// `heads`, `dropout` outside `[0, 1)`, or shared embeddings over vocabularies of
    /// different sizes.
    pub fn init(&self, device: &Device) -> Result<Transformer> {
        if self.n_source_tokens < 2 || self.n_target_tokens < 3 {
            return Err(Error::config(
                "Transformer",
                format!(
                    "expected at least 2 source tokens (padding and one more) and 3 target tokens \
                     (padding, start, end), found {} and {}",
                    self.n_source_tokens, self.n_target_tokens
                ),
            ));
        }
        if self.share_embeddings && self.n_source_tokens != self.n_target_tokens {
            return Err(Error::config(
                "Transformer",
                format!(
                    "shared embeddings need vocabularies of one size, found {} source and {} target tokens",
                    self.n_source_tokens, self.n_target_tokens
                ),
            ));
        }
        crate::sizes::check_transformer(self)?;
        let layer = self.layer();
        let position = || PositionalEmbedding::new(self.positions, self.d_model, device);
        Ok(Transformer {
            source_embedding: TokenEmbedding::new(self.n_source_tokens, self.d_model, device),
            target_embedding: (!self.share_embeddings)
                .then(|| TokenEmbedding::new(self.n_target_tokens, self.d_model, device)),
            source_position: position()?,
            target_position: position()?,
            encoder: layer.init_encoder(self.encoder_layers, device)?,
            decoder: layer.init_decoder(self.decoder_layers, device)?,
            output: Linear::new(self.d_model, self.n_target_tokens, device),
            config: self.clone(),
        })
    }
}

/// A table of token vectors (`weight [n_tokens, d_model]`, as PyTorch's `nn.Embedding`).
#[derive(Module, Debug)]
pub struct TokenEmbedding {
    /// `[n_tokens, d_model]`.
    pub weight: Param<Tensor<2>>,
}

impl TokenEmbedding {
    /// Vectors drawn from `N(0, 1 / d_model)`.
    pub fn new(n_tokens: usize, d_model: usize, device: &Device) -> Self {
        TokenEmbedding {
            weight: Initializer::Normal {
                mean: 0.0,
                std: 1.0 / (d_model as f64).sqrt(),
            }
            .init([n_tokens, d_model], device),
        }
    }

    /// The vectors of `ids [batch, time]`, `[batch, time, d_model]`.
    ///
    /// # Errors
    /// An id outside `0..n_tokens`, naming it.
    pub fn forward(&self, ids: Tensor<2, Int>, what: &str) -> Result<Tensor<3>> {
        let [batch, time] = ids.dims();
        let [n_tokens, d_model] = self.weight.lazy_shape().dims();
        if let Some(bad) = i64_vec(ids.clone())
            .into_iter()
            .find(|&id| id < 0 || id as usize >= n_tokens)
        {
            return Err(Error::config(
                what,
                format!("token ids must be in 0..{n_tokens}, found {bad}"),
            ));
        }
        Ok(self
            .weight
            .val()
            .select(0, ids.reshape([batch * time]))
            .reshape([batch, time, d_model]))
    }
}

/// A Transformer encoder-decoder (Vaswani et al.) for sequence pairs whose lengths differ.
///
/// # Shapes
/// Source ids `[batch, t_source]` and decoder input ids `[batch, t_target]` (teacher forcing:
/// `BOS y_1 .. y_n`, then padding) in; logits `[batch, t_target, n_target_tokens]` out.
///
/// # Masking
/// Id 0 is padding on both sides. Each valid token's position is its index among its row's
/// valid tokens, so a row's logits do not depend on the padding around it (before, after,
/// how much). The encoder attends under the source mask; the decoder under the target mask
/// AND causal (a step's logits never depend on later target tokens), and over the encoder
/// output under the source mask. Logits at padded target steps are exactly 0, and the
/// returned mask is the target mask.
///
/// # Weights
/// PyTorch's names, from the module paths: `source_embedding.weight`,
/// `target_embedding.weight` (absent with shared embeddings), `source_position.weight` and
/// `target_position.weight` (learned positions), `encoder.layers.{i}.*`, `encoder.norm.*`
/// (pre-norm), `decoder.layers.{i}.*`, `decoder.norm.*`, `output.weight [n_target_tokens,
/// d_model]`, `output.bias`. The layer weights are those of `nn.TransformerEncoderLayer` and
/// `nn.TransformerDecoderLayer`.
#[derive(Module, Debug)]
pub struct Transformer {
    /// Source token vectors (also the target's with shared embeddings).
    pub source_embedding: TokenEmbedding,
    /// Target token vectors; `None` with shared embeddings.
    pub target_embedding: Option<TokenEmbedding>,
    /// Source positions.
    pub source_position: PositionalEmbedding,
    /// Target positions.
    pub target_position: PositionalEmbedding,
    /// The encoder stack.
    pub encoder: TransformerEncoder,
    /// The decoder stack.
    pub decoder: TransformerDecoder,
    /// Logits over the target tokens.
    pub output: Linear,
    /// The configuration it was built from.
    #[module(skip)]
    pub config: TransformerConfig,
}

/// The encoder's result, what every decoding step reads.
#[derive(Debug, Clone)]
pub struct TransformerEncoded {
    /// Encoder outputs `[batch, t_source, d_model]` (exactly 0 at padded steps).
    pub memory: Tensor<3>,
    /// The source mask `[batch, t_source]`.
    pub mask: Mask,
    /// Each decoder layer's cross-attention keys and values over `memory`, projected once
    /// for decoding ([`Transformer::prepare_decoding`]); `None` from
    /// [`Transformer::encode`].
    pub cross: Option<Vec<KeyValues>>,
}

impl TransformerEncoded {
    /// The rows `index [rows]` of this result, in the order of `index`; a row may repeat.
    pub fn select_rows(&self, index: &Tensor<1, Int>) -> TransformerEncoded {
        TransformerEncoded {
            memory: self.memory.clone().select(0, index.clone()),
            mask: Mask::from_valid(
                self.mask
                    .valid()
                    .int()
                    .select(0, index.clone())
                    .equal_elem(1),
            ),
            cross: self
                .cross
                .as_ref()
                .map(|layers| layers.iter().map(|kv| kv.select_rows(index)).collect()),
        }
    }

    /// The number of rows.
    pub fn batch(&self) -> usize {
        self.memory.dims()[0]
    }
}

impl Transformer {
    pub(super) fn target_table(&self) -> &TokenEmbedding {
        self.target_embedding
            .as_ref()
            .unwrap_or(&self.source_embedding)
    }

    /// Token vectors (scaled by `sqrt(d_model)` when configured) plus positions among the
    /// valid steps of `mask`, 0 at masked steps, then dropout.
    fn embed(
        &self,
        table: &TokenEmbedding,
        position: &PositionalEmbedding,
        ids: Tensor<2, Int>,
        mask: &Mask,
        what: &str,
    ) -> Result<Tensor<3>> {
        let mut x = table.forward(ids, what)?;
        if self.config.scale_embeddings {
            x = x * (self.config.d_model as f64).sqrt();
        }
        let x = position.forward(x, Some(mask))?;
        Ok(dropout(x, self.config.dropout))
    }

    /// Runs the encoder over `source [batch, t_source]` (id 0 is padding).
    ///
    /// # Errors
    /// Ids out of range, or rows longer than the learned positions.
    pub fn encode(&self, source: Tensor<2, Int>) -> Result<TransformerEncoded> {
        let mask = Mask::from_padding_id(&source, PAD);
        let x = self.embed(
            &self.source_embedding,
            &self.source_position,
            source,
            &mask,
            "Transformer source",
        )?;
        let memory = self.encoder.forward(x, Some(&mask))?;
        Ok(TransformerEncoded {
            memory,
            mask,
            cross: None,
        })
    }

    /// Teacher-forced logits `[batch, t_target, n_target_tokens]` and the decoder input's
    /// mask (id 0 is padding).
    ///
    /// # Errors
    /// Ids out of range, batch sizes that differ, or rows longer than the learned positions.
    pub fn forward(
        &self,
        source: Tensor<2, Int>,
        decoder_input: Tensor<2, Int>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        self.check_batch(source.dims()[0], &decoder_input)?;
        let encoded = self.encode(source)?;
        self.forward_encoded(&encoded, decoder_input)
    }

    /// [`Transformer::forward`] from the encoder's result of the source rows.
    ///
    /// # Errors
    /// As [`Transformer::forward`].
    pub fn forward_encoded(
        &self,
        encoded: &TransformerEncoded,
        decoder_input: Tensor<2, Int>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        self.check_batch(encoded.batch(), &decoder_input)?;
        let mask = Mask::from_padding_id(&decoder_input, PAD);
        let logits = self.decode(encoded, decoder_input, &mask)?;
        Ok((zero_masked(logits, Some(&mask)), Some(mask)))
    }

    fn check_batch(&self, batch: usize, decoder_input: &Tensor<2, Int>) -> Result<()> {
        if decoder_input.dims()[0] != batch {
            return Err(Error::shape(
                "Transformer decoder input",
                format!("[{batch}, t_target]"),
                &decoder_input.dims(),
            ));
        }
        Ok(())
    }

    /// The logits of the decoder over `ids` under `mask`.
    fn decode(
        &self,
        encoded: &TransformerEncoded,
        ids: Tensor<2, Int>,
        mask: &Mask,
    ) -> Result<Tensor<3>> {
        let y = self.embed(
            self.target_table(),
            &self.target_position,
            ids,
            mask,
            "Transformer target",
        )?;
        let h = self
            .decoder
            .forward(y, Some(mask), encoded.memory.clone(), Some(&encoded.mask))?;
        Ok(self.output.forward_steps(h))
    }

    /// The masked sparse cross-entropy (mean over valid target steps) of `targets [batch,
    /// t_target]` (`y_1 .. y_n EOS`, then padding 0) under teacher forcing with
    /// `decoder_input`.
    ///
    /// # Errors
    /// As [`Transformer::forward`] and the loss.
    pub fn loss(
        &self,
        source: Tensor<2, Int>,
        decoder_input: Tensor<2, Int>,
        targets: Tensor<2, Int>,
    ) -> Result<LossOutput> {
        self.smoothed_loss(source, decoder_input, targets, 0.0)
    }

    /// [`Transformer::loss`] with label smoothing `epsilon` in `[0, 1)`.
    ///
    /// # Errors
    /// As [`Transformer::loss`], and `epsilon` outside `[0, 1)`.
    pub fn smoothed_loss(
        &self,
        source: Tensor<2, Int>,
        decoder_input: Tensor<2, Int>,
        targets: Tensor<2, Int>,
        epsilon: f32,
    ) -> Result<LossOutput> {
        let (logits, mask) = self.forward(source, decoder_input)?;
        teacher_forced_loss(logits, mask, targets, epsilon)
    }

    /// All weights under PyTorch's names (see the type's `# Weights`).
    pub fn weights(&self) -> Vec<NamedWeight> {
        named_weights(self)
    }

    /// Loads what [`Transformer::weights`] lists.
    ///
    /// # Errors
    /// A missing, unknown or misshapen weight, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_named(self, weights, "Transformer")
    }

    /// The number of scalar parameters.
    pub fn n_parameters(&self) -> usize {
        self.weights().iter().map(|w| w.values.len()).sum()
    }
}

/// A [`Transformer`] trains through the [`Trainer`](crate::train::Trainer) on batches of two
/// inputs: source ids `[batch, t_source]` and decoder input ids `[batch, t_target]` (`BOS y_1
/// .. y_n`, then padding), both as [`Value::Tokens`] (padding id 0; a mask given with them is
/// not read, the ids make it). The output is the teacher-forced logits with the decoder
/// input's mask; the trainer's loss ANDs in the batch's target mask, and its label smoothing
/// is the loss's ([`SequenceLoss::with_label_smoothing`](crate::losses::SequenceLoss::with_label_smoothing)).
impl Model for Transformer {
    type Config = TransformerConfig;
    const KIND: &'static str = "transformer";

    fn build(config: &TransformerConfig, device: &Device) -> Result<Self> {
        config.init(device)
    }

    fn config(&self) -> Result<TransformerConfig> {
        Ok(self.config.clone())
    }

    fn forward_batch(&self, inputs: &Inputs, _read_steps: Option<&[usize]>) -> Result<Value> {
        let (source, decoder_input) = token_pair(inputs, "Transformer")?;
        let (logits, mask) = self.forward(source, decoder_input)?;
        Ok(Value::sequence(logits, mask))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        Transformer::weights(self)
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        Transformer::set_weights(self, weights)
    }
}
