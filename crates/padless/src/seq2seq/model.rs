//! [`EncoderDecoder`]: a bidirectional LSTM encoder, an LSTM decoder started from the
//! encoder's final states, and attention over the encoder outputs that respects the source
//! mask (Luong-style: the decoder output attends, then `tanh(W [h; context])` predicts).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::attention::{Attention, AttentionKind};
use crate::error::{Error, Result};
use crate::layer::Layer;
use crate::layers::{ActivationKind, Dense, DenseConfig, Embedding, EmbeddingConfig, dropout};
use crate::losses::{LossInputs, LossKind, LossOutput, SequenceLoss, TargetMask, Targets};
use crate::mask::Mask;
use crate::model::{Inputs, Model};
use crate::rnn::{Bidirectional, Lstm, LstmCell, LstmConfig, MergeMode};
use crate::value::Value;
use crate::weights::{NamedWeight, strip_prefix};

/// The padding id of both vocabularies.
pub const PAD: i64 = 0;
/// The start symbol fed to the decoder's first step.
pub const BOS: i64 = 1;
/// The end symbol the decoder emits last.
pub const EOS: i64 = 2;

/// Sizes and options of an [`EncoderDecoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderDecoderConfig {
    /// Source token ids `0..n_source_tokens`; 0 is padding.
    pub n_source_tokens: usize,
    /// Target token ids `0..n_target_tokens`; 0 is padding, 1 [`BOS`], 2 [`EOS`].
    pub n_target_tokens: usize,
    /// Embedding width of both vocabularies.
    pub d_embedding: usize,
    /// Hidden units of each encoder direction; the decoder has twice as many.
    pub d_encoder: usize,
    /// Stacked bidirectional encoder layers (at least 1).
    #[serde(default = "one")]
    pub encoder_layers: usize,
    /// Stacked decoder LSTM layers (at least 1; the attention reads the last one's outputs).
    #[serde(default = "one")]
    pub decoder_layers: usize,
    /// LSTM layers over the attentional vectors `tanh(W [h; context])`, each added to its
    /// input (residual), before the output layer: they see every earlier step's attention,
    /// which the decoder layers below the attention do not (0: none, as models saved before
    /// the option).
    #[serde(default)]
    pub post_attention_layers: usize,
    /// The attention score.
    pub attention: AttentionKind,
    /// Dropout on embeddings and on the layer before the output (training only).
    #[serde(default)]
    pub dropout: f64,
}

fn one() -> usize {
    1
}

impl EncoderDecoderConfig {
    /// The decoder's hidden units (`2 d_encoder`).
    pub fn d_decoder(&self) -> usize {
        2 * self.d_encoder
    }

    /// Builds the model with Keras-style initialisation.
    ///
    /// # Errors
    /// Zero sizes, fewer than 3 target tokens, or an attention that does not fit.
    pub fn init(&self, device: &Device) -> Result<EncoderDecoder> {
        if self.n_source_tokens < 2
            || self.n_target_tokens < 3
            || self.d_embedding == 0
            || self.d_encoder == 0
            || self.encoder_layers == 0
            || self.decoder_layers == 0
            || !(0.0..1.0).contains(&self.dropout)
        {
            return Err(Error::config(
                "EncoderDecoder",
                format!(
                    "sizes must be positive (with at least 2 source and 3 target tokens) and dropout in [0, 1), found {self:?}"
                ),
            ));
        }
        crate::sizes::check_encoder_decoder(self)?;
        let d = self.d_decoder();
        let encoder = (0..self.encoder_layers)
            .map(|layer| {
                let d_input = if layer == 0 { self.d_embedding } else { d };
                LstmConfig::new(d_input, self.d_encoder)
                    .with_return_sequences(true)
                    .init_bidirectional(MergeMode::Concat, device)
            })
            .collect();
        let embedding = |n| {
            EmbeddingConfig::new(n, self.d_embedding)
                .with_mask_zero(true)
                .init(device)
        };
        // `d -> d` LSTMs returning every step: the decoder's upper layers and the post-attention
        // layers (built in field order, which fixes what a seed draws).
        let square_stack = |layers: usize| -> Vec<Lstm> {
            (0..layers)
                .map(|_| {
                    LstmConfig::new(d, d)
                        .with_return_sequences(true)
                        .init(device)
                })
                .collect()
        };
        Ok(EncoderDecoder {
            source_embedding: embedding(self.n_source_tokens),
            encoder,
            target_embedding: embedding(self.n_target_tokens),
            decoder: LstmConfig::new(self.d_embedding, d)
                .with_return_sequences(true)
                .init(device),
            decoder_stack: square_stack(self.decoder_layers - 1),
            attention: Attention::new(self.attention, d, d, device)?,
            combine: DenseConfig::new(2 * d, d)
                .with_activation(ActivationKind::Tanh)
                .init(device),
            post_attention: square_stack(self.post_attention_layers),
            output: DenseConfig::new(d, self.n_target_tokens).init(device),
            config: self.clone(),
        })
    }
}

/// An encoder-decoder for sequence pairs whose lengths differ (grapheme to phoneme,
/// translation). The decoder is `decoder_layers` stacked LSTMs, each started from the
/// encoder's final states; `post_attention_layers` further LSTMs (also started from them) run
/// over the attentional vectors before the output layer.
///
/// # Shapes
/// Source ids `[batch, t_source]` and decoder input ids `[batch, t_target]` (teacher forcing:
/// `BOS y_1 .. y_n`, then padding) in; logits `[batch, t_target, n_target_tokens]` out.
///
/// # Masking
/// Source id 0 is padding: padded letters never reach the encoder's states (the
/// bidirectional encoder reads each row's valid part in both directions), and attention gives
/// them weight exactly 0. Target id 0 is padding: the decoder carries its state over it and
/// the loss counts only the target mask's steps.
#[derive(Module, Debug)]
pub struct EncoderDecoder {
    /// Source embedding (mask_zero).
    pub source_embedding: Embedding,
    /// Bidirectional LSTM layers, outputs concatenated.
    pub encoder: Vec<Bidirectional<LstmCell>>,
    /// Target embedding (mask_zero).
    pub target_embedding: Embedding,
    /// The decoder, `2 d_encoder` units.
    pub decoder: Lstm,
    /// Further decoder layers on the decoder's outputs (`decoder_layers - 1`), `2 d_encoder`
    /// units each.
    pub decoder_stack: Vec<Lstm>,
    /// Attention from decoder outputs over encoder outputs.
    pub attention: Attention,
    /// `tanh(W [h; context] + b)`.
    pub combine: Dense,
    /// LSTMs over the attentional vectors (`post_attention_layers`), `2 d_encoder` units
    /// each, residual.
    pub post_attention: Vec<Lstm>,
    /// Logits over the target tokens.
    pub output: Dense,
    /// The configuration it was built from.
    #[module(skip)]
    pub config: EncoderDecoderConfig,
}

/// The encoder's result, what every decoder step reads.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Encoder outputs `[batch, t_source, d_decoder]` (0 at padded steps).
    pub keys: Tensor<3>,
    /// The source mask `[batch, t_source]`.
    pub mask: Option<Mask>,
    /// The decoder's initial states `[h, c]` per decoder layer, then per post-attention layer
    /// (`[h_1, c_1, h_2, c_2, ..]`), `[batch, d_decoder]` each: every layer starts from both
    /// encoder directions' final states concatenated.
    pub states: Vec<Tensor<2>>,
}

impl Encoded {
    /// The rows `index [rows]` of this result (keys, mask and states), in the order of
    /// `index`; a row may repeat. Decoding from the selected rows equals decoding those rows'
    /// sources.
    pub fn select_rows(&self, index: &Tensor<1, Int>) -> Encoded {
        Encoded {
            keys: self.keys.clone().select(0, index.clone()),
            mask: self
                .mask
                .as_ref()
                .map(|m| Mask::from_valid(m.valid().int().select(0, index.clone()).equal_elem(1))),
            states: self
                .states
                .iter()
                .map(|s| s.clone().select(0, index.clone()))
                .collect(),
        }
    }

    /// The number of rows.
    pub fn batch(&self) -> usize {
        self.keys.dims()[0]
    }
}

impl EncoderDecoder {
    /// Runs the encoder over `source [batch, t_source]`.
    ///
    /// # Errors
    /// Ids out of range.
    pub fn encode(&self, source: Tensor<2, Int>) -> Result<Encoded> {
        let (mut x, mask) = self.source_embedding.forward(source, None)?;
        x = self.dropout(x);
        let mut states = Vec::new();
        for layer in &self.encoder {
            let out = layer.forward(x, mask.as_ref())?;
            x = out.sequence;
            states = out.states;
        }
        // states = [h_forward, c_forward, h_backward, c_backward]
        let h = Tensor::cat(vec![states[0].clone(), states[2].clone()], 1);
        let c = Tensor::cat(vec![states[1].clone(), states[3].clone()], 1);
        let layers = 1 + self.decoder_stack.len() + self.post_attention.len();
        Ok(Encoded {
            keys: x,
            mask,
            states: (0..layers).flat_map(|_| [h.clone(), c.clone()]).collect(),
        })
    }

    /// Teacher-forced logits `[batch, t_target, n_target_tokens]` and the decoder input's
    /// mask.
    ///
    /// # Errors
    /// Ids out of range or batch sizes that differ.
    pub fn forward(
        &self,
        source: Tensor<2, Int>,
        decoder_input: Tensor<2, Int>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        let [batch, _] = source.dims();
        if decoder_input.dims()[0] != batch {
            return Err(Error::shape(
                "EncoderDecoder decoder input",
                format!("[{batch}, t_target]"),
                &decoder_input.dims(),
            ));
        }
        let encoded = self.encode(source)?;
        self.forward_encoded(&encoded, decoder_input)
    }

    /// [`EncoderDecoder::forward`] from the encoder's result of the source rows (computed
    /// once by [`EncoderDecoder::encode`], for decoding and then scoring the same rows).
    ///
    /// # Errors
    /// Ids out of range, or a decoder input whose batch differs from `encoded`'s.
    pub fn forward_encoded(
        &self,
        encoded: &Encoded,
        decoder_input: Tensor<2, Int>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        let batch = encoded.batch();
        if decoder_input.dims()[0] != batch {
            return Err(Error::shape(
                "EncoderDecoder decoder input",
                format!("[{batch}, t_target]"),
                &decoder_input.dims(),
            ));
        }
        let (y, mask) = self.target_embedding.forward(decoder_input, None)?;
        let (h, _) = self.run_decoder(self.dropout(y), mask.as_ref(), &encoded.states)?;
        let (logits, _) =
            self.predict_from(h, encoded, mask.as_ref(), self.post_states(&encoded.states))?;
        Ok((logits, mask))
    }

    /// The post-attention layers' part of `states` (after the decoder layers' `[h, c]`).
    fn post_states<'a>(&self, states: &'a [Tensor<2>]) -> &'a [Tensor<2>] {
        &states[(2 * (1 + self.decoder_stack.len())).min(states.len())..]
    }

    /// The decoder layers over `y [batch, t, d_embedding]` from `states` (`[h, c]` per decoder
    /// layer, then per post-attention layer): the last decoder layer's outputs and the decoder
    /// layers' final states, in the order of `states`.
    fn run_decoder(
        &self,
        y: Tensor<3>,
        mask: Option<&Mask>,
        states: &[Tensor<2>],
    ) -> Result<(Tensor<3>, Vec<Tensor<2>>)> {
        let layers = 1 + self.decoder_stack.len() + self.post_attention.len();
        if states.len() != 2 * layers {
            return Err(Error::config(
                "EncoderDecoder decoder states",
                format!(
                    "expected [h, c] for each of the {layers} decoder and post-attention layers ({} tensors), found {}",
                    2 * layers,
                    states.len()
                ),
            ));
        }
        let mut chunks = states[..2 * (1 + self.decoder_stack.len())].chunks(2);
        let first = chunks.next().expect("at least one layer").to_vec();
        let out = self.decoder.forward(y, mask, Some(first))?;
        let (mut x, mut finals) = (out.sequence, out.states);
        for (layer, initial) in self.decoder_stack.iter().zip(chunks) {
            let out = layer.forward(x, mask, Some(initial.to_vec()))?;
            x = out.sequence;
            finals.extend(out.states);
        }
        Ok((x, finals))
    }

    /// Attention, combination, post-attention layers (from `post_states`, `[h, c]` each, over
    /// the target steps of `target_mask`) and output layer for decoder outputs `[batch, t,
    /// d_decoder]`: the logits and the post-attention layers' final states.
    fn predict_from(
        &self,
        h: Tensor<3>,
        encoded: &Encoded,
        target_mask: Option<&Mask>,
        post_states: &[Tensor<2>],
    ) -> Result<(Tensor<3>, Vec<Tensor<2>>)> {
        let [batch, time, d] = h.dims();
        // The keys are 0 at padded source steps (see `Encoded`).
        let attended = self.attention.forward_over_zeroed(
            h.clone(),
            encoded.keys.clone(),
            encoded.mask.as_ref(),
        )?;
        let joined = Tensor::cat(vec![h, attended.context], 2).reshape([batch * time, 2 * d]);
        let mut combined = self.dropout(self.combine.forward(joined));
        let mut finals = Vec::new();
        for (layer, initial) in self.post_attention.iter().zip(post_states.chunks(2)) {
            let x = combined.reshape([batch, time, d]);
            let out = layer.forward(x.clone(), target_mask, Some(initial.to_vec()))?;
            finals.extend(out.states);
            combined = (x + self.dropout(out.sequence)).reshape([batch * time, d]);
        }
        let logits =
            self.output
                .forward(combined)
                .reshape([batch, time, self.config.n_target_tokens]);
        Ok((logits, finals))
    }

    /// The masked sparse cross-entropy (mean over valid target steps) of `targets [batch,
    /// t_target]` (`y_1 .. y_n EOS`, then padding 0) under teacher forcing with
    /// `decoder_input`.
    ///
    /// # Errors
    /// As [`EncoderDecoder::forward`] and the loss.
    pub fn loss(
        &self,
        source: Tensor<2, Int>,
        decoder_input: Tensor<2, Int>,
        targets: Tensor<2, Int>,
    ) -> Result<LossOutput> {
        self.smoothed_loss(source, decoder_input, targets, 0.0)
    }

    /// [`EncoderDecoder::loss`] with label smoothing `epsilon` in `[0, 1)`: the target
    /// distribution at each valid step is `(1 - ε) one_hot + ε / n_target_tokens`.
    ///
    /// # Errors
    /// As [`EncoderDecoder::loss`], and `epsilon` outside `[0, 1)`.
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

    /// One decoder step from the previous tokens `[batch]` and states: the logits `[batch,
    /// n_target_tokens]` and the new states.
    ///
    /// # Errors
    /// As [`Attention::forward`].
    pub fn step(
        &self,
        previous: Tensor<1, Int>,
        states: &[Tensor<2>],
        encoded: &Encoded,
    ) -> Result<(Tensor<2>, Vec<Tensor<2>>)> {
        let [batch] = previous.dims();
        let y = self
            .target_embedding
            .embeddings
            .val()
            .select(0, previous)
            .unsqueeze_dim::<3>(1);
        // One step of each decoder layer (the fused kernel where there is one).
        let (h, mut next) = self.run_decoder(y, None, states)?;
        let (logits, post) = self.predict_from(h, encoded, None, self.post_states(states))?;
        next.extend(post);
        Ok((logits.reshape([batch, self.config.n_target_tokens]), next))
    }

    /// Dropout at the configured rate (training devices only).
    fn dropout<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        dropout(x, self.config.dropout)
    }

    /// All weights, named `{part}/{weight}`.
    pub fn weights(&self) -> Vec<NamedWeight> {
        let mut out = Vec::new();
        let mut add = |prefix: &str, weights: Vec<NamedWeight>| {
            out.extend(weights.into_iter().map(|w| w.prefixed(prefix)));
        };
        add("source_embedding", self.source_embedding.weights());
        for (i, layer) in self.encoder.iter().enumerate() {
            add(&format!("encoder_{i}"), layer.weights());
        }
        add("target_embedding", self.target_embedding.weights());
        add("decoder", self.decoder.weights());
        for (i, layer) in self.decoder_stack.iter().enumerate() {
            add(&format!("decoder_{}", i + 1), layer.weights());
        }
        add("attention", self.attention.weights());
        add("combine", self.combine.weights());
        for (i, layer) in self.post_attention.iter().enumerate() {
            add(&format!("post_attention_{i}"), layer.weights());
        }
        add("output", self.output.weights());
        out
    }

    /// Loads what [`EncoderDecoder::weights`] lists.
    ///
    /// # Errors
    /// A missing weight or a shape mismatch, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        self.source_embedding
            .set_weights(&strip_prefix(weights, "source_embedding"))?;
        for (i, layer) in self.encoder.iter_mut().enumerate() {
            layer.set_weights(&strip_prefix(weights, &format!("encoder_{i}")))?;
        }
        self.target_embedding
            .set_weights(&strip_prefix(weights, "target_embedding"))?;
        self.decoder
            .set_weights(&strip_prefix(weights, "decoder"))?;
        for (i, layer) in self.decoder_stack.iter_mut().enumerate() {
            layer.set_weights(&strip_prefix(weights, &format!("decoder_{}", i + 1)))?;
        }
        self.attention
            .set_weights(&strip_prefix(weights, "attention"))?;
        self.combine
            .set_weights(&strip_prefix(weights, "combine"))?;
        for (i, layer) in self.post_attention.iter_mut().enumerate() {
            layer.set_weights(&strip_prefix(weights, &format!("post_attention_{i}")))?;
        }
        self.output.set_weights(&strip_prefix(weights, "output"))
    }

    /// The number of scalar parameters.
    pub fn n_parameters(&self) -> usize {
        self.weights().iter().map(|w| w.values.len()).sum()
    }
}

/// An [`EncoderDecoder`] trains through the [`Trainer`](crate::train::Trainer) on batches of
/// two inputs: source ids `[batch, t_source]` and decoder input ids `[batch, t_target]`
/// (`BOS y_1 .. y_n`, then padding), both as [`Value::Tokens`] (padding id 0; a mask given
/// with them is not read, the embeddings' `mask_zero` makes it). The output is the
/// teacher-forced logits with the decoder input's mask; the trainer's loss ANDs in the
/// batch's target mask.
impl Model for EncoderDecoder {
    type Config = EncoderDecoderConfig;
    const KIND: &'static str = "encoder_decoder";

    fn build(config: &EncoderDecoderConfig, device: &Device) -> Result<Self> {
        config.init(device)
    }

    fn config(&self) -> Result<EncoderDecoderConfig> {
        Ok(self.config.clone())
    }

    fn forward_batch(&self, inputs: &Inputs, _read_steps: Option<&[usize]>) -> Result<Value> {
        let (source, decoder_input) = token_pair(inputs, "EncoderDecoder")?;
        let (logits, mask) = self.forward(source, decoder_input)?;
        Ok(Value::sequence(logits, mask))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        EncoderDecoder::weights(self)
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        EncoderDecoder::set_weights(self, weights)
    }
}

/// The sparse cross-entropy of teacher-forced `logits` against `targets [batch, t_target]`
/// (padding label [`PAD`]), masked by the logits' `mask` AND the targets' own padding, with
/// label smoothing `epsilon`: the loss of every sequence-to-sequence model.
pub(crate) fn teacher_forced_loss(
    logits: Tensor<3>,
    mask: Option<Mask>,
    targets: Tensor<2, Int>,
    epsilon: f32,
) -> Result<LossOutput> {
    SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: true })
        .with_label_smoothing(epsilon)
        .compute(
            LossInputs::new(Targets::Labels(targets), logits)
                .with_output_mask(mask)
                .with_target_mask(TargetMask::PaddingLabel(PAD)),
        )
}

/// The two token inputs of a sequence-to-sequence `model`'s batch: source ids and decoder
/// input ids, each `[batch, time]` ([`Value::Tokens`]).
pub(crate) fn token_pair(inputs: &Inputs, model: &str) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
    let [source, decoder_input] = inputs.exactly::<2>(model)?;
    let ids = |value: &Value, which: &str| match value {
        Value::Tokens { ids, .. } => Ok(ids.clone()),
        other => Err(Error::InputKind {
            layer: format!("{model} {which}"),
            expected: "tokens [batch, time]".into(),
            found: other.kind().into(),
        }),
    };
    Ok((ids(source, "source")?, ids(decoder_input, "decoder input")?))
}
