//! Decoding a [`Transformer`] one token at a time with a key/value cache: each decoder layer
//! keeps its self-attention keys and values of the tokens fed so far ([`DecoderState`]), and
//! the cross-attention keys and values of the encoder output are projected once
//! ([`Transformer::prepare_decoding`]), so a step runs one token per row through the decoder.
//! The [`StepDecoder`] implementation is what greedy and beam search
//! ([`greedy_decode`](crate::seq2seq::greedy_decode), [`beam_decode`](crate::seq2seq::beam_decode))
//! run.

use burn::tensor::{Device, Int, Tensor};

use super::attention::TransformerAttention;
use super::attention::softmax_over_valid;
use super::layer::TransformerDecoderLayer;
use super::model::{Transformer, TransformerEncoded};
use crate::error::{Error, Result};
use crate::layers::{dropout, fused_linear};
use crate::mask::{Mask, zero_masked};
use crate::ops;
use crate::seq2seq::StepDecoder;

/// One attention's projected keys and values with the heads split, `[batch · heads, time,
/// d_head]` each (row `b` of the batch is rows `b · heads .. (b + 1) · heads`), so that a
/// decoding step multiplies by them as they are, without splitting the heads of the whole
/// cache again.
#[derive(Debug, Clone)]
pub struct KeyValues {
    /// The keys `[batch · heads, time, d_head]`.
    pub keys: Tensor<3>,
    /// The values `[batch · heads, time, d_head]`.
    pub values: Tensor<3>,
    /// The number of heads.
    pub heads: usize,
}

impl KeyValues {
    /// The rows `index [rows]` of the batch (each with all its heads), in the order of
    /// `index`; a row may repeat.
    pub fn select_rows(&self, index: &Tensor<1, Int>) -> KeyValues {
        let h = self.heads;
        let [rows] = index.dims();
        let device = index.device();
        let first = index
            .clone()
            .mul_scalar(h as i64)
            .unsqueeze_dim::<2>(1)
            .expand([rows, h]);
        let head = Tensor::<1, Int>::arange(0..h as i64, &device)
            .unsqueeze_dim::<2>(0)
            .expand([rows, h]);
        let index = (first + head).reshape([rows * h]);
        KeyValues {
            keys: self.keys.clone().select(0, index.clone()),
            values: self.values.clone().select(0, index),
            heads: h,
        }
    }

    /// The number of rows of the batch.
    pub fn batch(&self) -> usize {
        self.keys.dims()[0] / self.heads
    }

    /// The number of steps (keys per row).
    pub fn steps(&self) -> usize {
        self.keys.dims()[1]
    }
}

/// What the decoder has been fed so far, one row per sequence being decoded: each decoder
/// layer's self-attention keys and values of the fed tokens (the key/value cache). A step
/// reads them instead of running the prefix again; the tokens fed before never change, and
/// under the causal mask neither do their keys and values.
#[derive(Debug, Clone, Default)]
pub struct DecoderState {
    /// Each decoder layer's self-attention keys and values (`[batch · heads, steps, d_head]`,
    /// [`KeyValues`]), first layer first; empty before the first step.
    pub layers: Vec<KeyValues>,
    /// The number of tokens fed so far (the position of the next one).
    pub n_steps: usize,
}

impl DecoderState {
    /// The state before the first step.
    pub fn new() -> Self {
        DecoderState::default()
    }

    /// The number of steps taken.
    pub fn steps(&self) -> usize {
        self.n_steps
    }

    /// The rows `index [rows]` of this state, in the order of `index`; a row may repeat.
    pub fn select_rows(&self, index: &Tensor<1, Int>) -> DecoderState {
        DecoderState {
            layers: self.layers.iter().map(|kv| kv.select_rows(index)).collect(),
            n_steps: self.n_steps,
        }
    }
}

impl TransformerAttention {
    /// `x [rows, d_model]` through the projection rows `part * d .. (part + n) * d` of
    /// `in_proj_weight` (0: query, 1: key, 2: value), `[rows, n d_model]`.
    fn project(&self, x: Tensor<2>, part: usize, n: usize) -> Tensor<2> {
        let d = self.d_model();
        let w = self.in_proj_weight.val().narrow(0, part * d, n * d);
        let b = self.in_proj_bias.val().narrow(0, part * d, n * d);
        fused_linear(x, w, Some(b))
    }

    /// The keys and values projected from `x [batch, time, d_model]`, whose masked steps are
    /// already 0, with the heads split.
    fn project_keys_values(&self, x: Tensor<3>) -> KeyValues {
        let [batch, time, d] = x.dims();
        let (h, d_head) = (self.heads, d / self.heads);
        let kv = self.project(x.reshape([batch * time, d]), 1, 2);
        let split = |x: Tensor<2>| {
            x.reshape([batch, time, h, d_head])
                .swap_dims(1, 2)
                .reshape([batch * h, time, d_head])
        };
        KeyValues {
            keys: split(kv.clone().narrow(1, 0, d)),
            values: split(kv.narrow(1, d, d)),
            heads: h,
        }
    }

    /// Attention of one query step `query [batch, d_model]` (already projected) over `kv`,
    /// whose keys `key_mask [batch, time]` masks: `[batch, 1, d_model]`, 0 for a row that sees
    /// no key. The same arithmetic as the layers' attention, on the cache's head-split layout.
    fn attend_over(&self, query: Tensor<2>, kv: &KeyValues, key_mask: Option<&Mask>) -> Tensor<3> {
        let [batch, d] = query.dims();
        let (h, d_head, t_key) = (self.heads, d / self.heads, kv.steps());
        let device = query.device();
        if ops::applies(&device, query.dtype()) && !device.is_autodiff() {
            // Inference on the CPU backend: the cached-step kernel, no score tensors.
            let valid = key_mask.map(|mask| mask.valid().float().cast(query.dtype()));
            let context =
                ops::cached_attention_step(query, kv.keys.clone(), kv.values.clone(), valid, h);
            return self.project_out(context, key_mask);
        }
        // PyTorch scales the queries before the product.
        let q = query.reshape([batch * h, 1, d_head]) * (1.0 / (d_head as f64).sqrt());
        let scores = q.matmul(kv.keys.clone().swap_dims(1, 2));
        let weights = match key_mask {
            Some(mask) => {
                let valid = mask
                    .valid()
                    .unsqueeze_dim::<3>(1)
                    .expand([batch, h, t_key])
                    .reshape([batch * h, 1, t_key]);
                softmax_over_valid(scores, valid)
            }
            None => crate::elementwise::softmax(scores),
        };
        let context = dropout(weights, self.dropout)
            .matmul(kv.values.clone())
            .reshape([batch, d]);
        self.project_out(context, key_mask)
    }

    /// The output projection of one step's attention `context [batch, d_model]`: `[batch, 1,
    /// d_model]`, 0 for a row whose keys `key_mask` masks entirely.
    fn project_out(&self, context: Tensor<2>, key_mask: Option<&Mask>) -> Tensor<3> {
        let [batch, d] = context.dims();
        let out = self.out_proj.forward(context).reshape([batch, 1, d]);
        match key_mask {
            // A row that sees no key outputs 0, not the output bias.
            Some(mask) => {
                let sees_nothing = mask
                    .valid()
                    .int()
                    .sum_dim(1)
                    .equal_elem(0)
                    .unsqueeze_dim::<3>(2)
                    .expand([batch, 1, d]);
                out.mask_fill(sees_nothing, 0.0)
            }
            None => out,
        }
    }

    /// Causal self-attention of the newest step `x [batch, 1, d_model]` over the steps before
    /// it (`past`) and itself: the output and the keys and values with this step appended.
    fn self_attention_step(
        &self,
        x: Tensor<3>,
        past: Option<&KeyValues>,
    ) -> (Tensor<3>, KeyValues) {
        let [batch, _, d] = x.dims();
        let h = self.heads;
        let qkv = self.project(x.reshape([batch, d]), 0, 3);
        // One step's `[batch, d_model]` is `[batch · heads, 1, d_head]` as it lies in memory.
        let new = |i: usize| {
            qkv.clone()
                .narrow(1, i * d, d)
                .reshape([batch * h, 1, d / h])
        };
        let (keys, values) = (new(1), new(2));
        let kv = match past {
            Some(past) => KeyValues {
                keys: Tensor::cat(vec![past.keys.clone(), keys], 1),
                values: Tensor::cat(vec![past.values.clone(), values], 1),
                heads: h,
            },
            None => KeyValues {
                keys,
                values,
                heads: h,
            },
        };
        // Every cached step is valid and precedes this one: no mask is needed.
        let out = self.attend_over(qkv.narrow(1, 0, d), &kv, None);
        (out, kv)
    }

    /// Cross-attention of one step `x [batch, 1, d_model]` over keys and values projected
    /// once from the encoder output, whose padded steps `memory_mask` masks.
    fn cross_attention_step(&self, x: Tensor<3>, kv: &KeyValues, memory_mask: &Mask) -> Tensor<3> {
        let [batch, _, d] = x.dims();
        let query = self.project(x.reshape([batch, d]), 0, 1);
        self.attend_over(query, kv, Some(memory_mask))
    }
}

impl TransformerDecoderLayer {
    /// The layer on the newest step `x [batch, 1, d_model]` (a valid step), its
    /// self-attention reading `past` (the keys and values of the earlier steps) and its
    /// cross-attention `cross` (projected from the encoder output): the output and the
    /// self-attention keys and values with this step appended. Equals the layer's
    /// [`forward`](TransformerDecoderLayer::forward) at the last step of the whole prefix,
    /// up to rounding.
    fn step(
        &self,
        x: Tensor<3>,
        past: Option<&KeyValues>,
        cross: &KeyValues,
        memory_mask: &Mask,
    ) -> Result<(Tensor<3>, KeyValues)> {
        let o = self.options;
        let mut cache = None;
        let x = o.residual(x, &self.norm1, |x| {
            let (out, kv) = self.self_attn.self_attention_step(x, past);
            cache = Some(kv);
            Ok(out)
        })?;
        let x = o.residual(x, &self.norm2, |x| {
            Ok(self
                .multihead_attn
                .cross_attention_step(x, cross, memory_mask))
        })?;
        let x = o.residual(x, &self.norm3, |x| {
            Ok(o.feed_forward(&self.linear1, &self.linear2, x))
        })?;
        Ok((x, cache.expect("the self-attention block ran")))
    }
}

impl Transformer {
    /// Projects each decoder layer's cross-attention keys and values over the encoder output
    /// once, for every decoding step to read ([`TransformerEncoded::cross`]).
    pub fn prepare_decoding(&self, encoded: TransformerEncoded) -> TransformerEncoded {
        let cross = self.cross_keys_values(&encoded);
        TransformerEncoded {
            cross: Some(cross),
            ..encoded
        }
    }

    fn cross_keys_values(&self, encoded: &TransformerEncoded) -> Vec<KeyValues> {
        // Padded source steps are 0 before the projection, as the layers' forward has them.
        let memory = zero_masked(encoded.memory.clone(), Some(&encoded.mask));
        self.decoder
            .layers
            .iter()
            .map(|layer| layer.multihead_attn.project_keys_values(memory.clone()))
            .collect()
    }

    /// One decoding step: feeds `previous [batch]` after the tokens of `state` and returns
    /// the logits `[batch, n_target_tokens]` of the next token and the state with `previous`
    /// appended. Every fed token is a valid step, so the logits equal those of
    /// [`Transformer::forward`] at the same step of the same tokens, up to rounding.
    ///
    /// Only the new token runs through the decoder: each layer's self-attention reads the
    /// keys and values of the earlier tokens from `state` (the key/value cache), and its
    /// cross-attention those of the encoder output from `encoded` when
    /// [`Transformer::prepare_decoding`] has projected them (else they are projected for
    /// this step).
    ///
    /// # Errors
    /// Ids out of range, a batch other than `encoded`'s or the state's, a state or encoder
    /// result of another number of decoder layers, or more steps than the learned
    /// positions.
    pub fn step(
        &self,
        previous: Tensor<1, Int>,
        state: &DecoderState,
        encoded: &TransformerEncoded,
    ) -> Result<(Tensor<2>, DecoderState)> {
        let [batch] = previous.dims();
        let n_layers = self.decoder.layers.len();
        let rows = |what: &str, found: usize| {
            if found == batch {
                return Ok(());
            }
            Err(Error::config(
                "Transformer step",
                format!("{what} must have the {batch} rows of the fed tokens, found {found}"),
            ))
        };
        rows("the encoder result", encoded.batch())?;
        if let Some(first) = state.layers.first() {
            rows("the decoder state", first.batch())?;
        }
        let layers_of = |what: &str, found: usize| {
            if found == n_layers {
                return Ok(());
            }
            Err(Error::config(
                "Transformer step",
                format!(
                    "{what} must hold keys and values for each of the {n_layers} decoder layers, found {found}"
                ),
            ))
        };
        if state.n_steps > 0 {
            layers_of("the decoder state", state.layers.len())?;
        }
        let projected;
        let cross = match &encoded.cross {
            Some(cross) => {
                layers_of("the encoder result", cross.len())?;
                cross
            }
            None => {
                projected = self.cross_keys_values(encoded);
                &projected
            }
        };
        let device = previous.device();
        let d = self.config.d_model;
        let mut x = self
            .target_table()
            .forward(previous.reshape([batch, 1]), "Transformer target")?;
        if self.config.scale_embeddings {
            x = x * (d as f64).sqrt();
        }
        let positions = self
            .target_position
            .encodings(&vec![state.n_steps; batch], &device)?;
        x = dropout(x + positions.reshape([batch, 1, d]), self.config.dropout);
        let mut caches = Vec::with_capacity(n_layers);
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            let (y, kv) = layer.step(x, state.layers.get(i), &cross[i], &encoded.mask)?;
            x = y;
            caches.push(kv);
        }
        if let Some(norm) = &self.decoder.norm {
            x = norm.forward(x);
        }
        let logits = self
            .output
            .forward_steps(x)
            .reshape([batch, self.config.n_target_tokens]);
        Ok((
            logits,
            DecoderState {
                layers: caches,
                n_steps: state.n_steps + 1,
            },
        ))
    }
}

/// A Transformer decodes from its [`TransformerEncoded`] result with the cross-attention keys
/// and values projected once ([`Transformer::prepare_decoding`]), its state the key/value
/// cache ([`DecoderState`]).
impl StepDecoder for Transformer {
    type Encoded = TransformerEncoded;
    type State = DecoderState;

    fn n_source_tokens(&self) -> usize {
        self.config.n_source_tokens
    }

    fn n_target_tokens(&self) -> usize {
        self.config.n_target_tokens
    }

    fn encode_source(&self, source: Tensor<2, Int>) -> Result<TransformerEncoded> {
        self.encode(source)
    }

    fn start(&self, encoded: TransformerEncoded) -> Result<(TransformerEncoded, DecoderState)> {
        Ok((self.prepare_decoding(encoded), DecoderState::new()))
    }

    fn step_from(
        &self,
        previous: Tensor<1, Int>,
        state: &DecoderState,
        encoded: &TransformerEncoded,
    ) -> Result<(Tensor<2>, DecoderState)> {
        self.step(previous, state, encoded)
    }

    fn rows(encoded: &TransformerEncoded) -> usize {
        encoded.batch()
    }

    fn device(encoded: &TransformerEncoded) -> Device {
        encoded.memory.device()
    }

    fn select_encoded(encoded: &TransformerEncoded, index: &Tensor<1, Int>) -> TransformerEncoded {
        encoded.select_rows(index)
    }

    fn select_state(state: DecoderState, index: &Tensor<1, Int>) -> DecoderState {
        state.select_rows(index)
    }
}
