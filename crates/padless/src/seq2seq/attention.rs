//! [`Attention`] over a masked sequence of keys (dot-product, Luong's general, and additive),
//! with query and causal masks ([`AttentionMasks`]), and the [`masked_softmax`] it rests on.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::weights::{NamedWeight, load_param};

/// How a query is scored against a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionKind {
    /// `q · k` (Luong's dot; `d_query` must equal `d_key`), divided by `sqrt(d_key)` when
    /// `scaled` (Transformer-style).
    Dot {
        /// Divide the scores by `sqrt(d_key)`.
        #[serde(default)]
        scaled: bool,
    },
    /// `q W · k` with a learned `W [d_query, d_key]` (Luong's general).
    General,
    /// `v · tanh(q W_q + k W_k)` with `W_q [d_query, d_attention]`, `W_k [d_key,
    /// d_attention]` and `v [d_attention]` (Bahdanau's additive).
    Additive {
        /// Width of the hidden layer of the score.
        d_attention: usize,
    },
}

/// Attention of each query step over the valid steps of a key sequence.
///
/// # Shapes
/// query `[batch, t_query, d_query]`, keys `[batch, t_key, d_key]`, values `[batch, t_key,
/// d_value]` in; context `[batch, t_query, d_value]` and weights `[batch, t_query, t_key]` out.
///
/// # Masking
/// The key mask `[batch, t_key]` removes masked keys from the softmax: their weights are
/// exactly 0; their keys and values are selected out before they are read, so NaN, inf or
/// huge values there change no output and no gradient (of the query, the keys, the values or
/// a kernel), and they get a gradient of exactly 0. A row whose keys are all masked gets all-zero weights and a zero
/// context, never NaN. With [`Attention::forward_masked`], a query mask `[batch, t_query]`
/// and a causal mask (query step `i` sees key steps `j <= i`) join the key mask by AND over
/// `[batch, t_query, t_key]`; masked query steps get all-zero weights and a context of exactly
/// 0 (selected, so nothing at a masked query step reaches the output or the gradient), and
/// the output mask is the query mask.
#[derive(Module, Debug)]
pub struct Attention {
    /// `[d_query, d_key]` (General) or `[d_query, d_attention]` (Additive).
    pub query_kernel: Option<Param<Tensor<2>>>,
    /// `[d_key, d_attention]` (Additive).
    pub key_kernel: Option<Param<Tensor<2>>>,
    /// `[d_attention]` (Additive).
    pub score_vector: Option<Param<Tensor<1>>>,
    /// The score function.
    #[module(skip)]
    pub kind: AttentionKind,
}

/// What [`Attention::forward`] returns.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// The weighted sum of the values, `[batch, t_query, d_value]`.
    pub context: Tensor<3>,
    /// The attention weights, `[batch, t_query, t_key]`; each row sums to 1 over its valid
    /// keys, or is all 0 when none is valid.
    pub weights: Tensor<3>,
    /// The output mask: the query mask, when one was given.
    pub mask: Option<Mask>,
}

/// The masks of an attention call ([`Attention::forward_masked`]); all optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionMasks<'a> {
    /// `[batch, t_query]`: masked query steps attend to nothing and output 0.
    pub query: Option<&'a Mask>,
    /// `[batch, t_key]`: masked keys receive no weight.
    pub keys: Option<&'a Mask>,
    /// Query step `i` attends only to key steps `j <= i` (Keras' `use_causal_mask`).
    pub causal: bool,
}

impl AttentionMasks<'_> {
    /// Checks the query mask against `[batch, t_query]` and the key mask against
    /// `[batch, t_key]`; `layer` names the caller in the error.
    pub(super) fn check(
        &self,
        batch: usize,
        t_query: usize,
        t_key: usize,
        layer: &str,
    ) -> Result<()> {
        check_mask_for(self.keys, &[batch, t_key], &format!("{layer} key mask"))?;
        check_mask_for(
            self.query,
            &[batch, t_query],
            &format!("{layer} query mask"),
        )
    }
}

impl Attention {
    /// A new attention with Glorot-uniform kernels.
    ///
    /// # Errors
    /// `Dot` with `d_query != d_key`, or `Additive` with `d_attention == 0`.
    pub fn new(kind: AttentionKind, d_query: usize, d_key: usize, device: &Device) -> Result<Self> {
        let glorot = |rows: usize, cols: usize| {
            Initializer::XavierUniform { gain: 1.0 }.init_with(
                [rows, cols],
                Some(rows),
                Some(cols),
                device,
            )
        };
        let mut attention = Attention {
            query_kernel: None,
            key_kernel: None,
            score_vector: None,
            kind,
        };
        match kind {
            AttentionKind::Dot { .. } if d_query != d_key => {
                return Err(Error::config(
                    "Attention",
                    format!(
                        "dot-product attention needs d_query == d_key, found {d_query} and {d_key}"
                    ),
                ));
            }
            AttentionKind::Dot { .. } => {}
            AttentionKind::General => attention.query_kernel = Some(glorot(d_query, d_key)),
            AttentionKind::Additive { d_attention: 0 } => {
                return Err(Error::config("Attention", "d_attention must be at least 1"));
            }
            AttentionKind::Additive { d_attention } => {
                attention.query_kernel = Some(glorot(d_query, d_attention));
                attention.key_kernel = Some(glorot(d_key, d_attention));
                attention.score_vector = Some(
                    Initializer::Uniform {
                        min: -0.05,
                        max: 0.05,
                    }
                    .init([d_attention], device),
                );
            }
        }
        Ok(attention)
    }

    /// The scores `[batch, t_query, t_key]` before the softmax.
    pub fn scores(&self, query: Tensor<3>, keys: Tensor<3>) -> Tensor<3> {
        let [batch, t_query, d_query] = query.dims();
        let [_, t_key, d_key] = keys.dims();
        let flat = |t: Tensor<3>, rows: usize, cols: usize| t.reshape([rows, cols]);
        match self.kind {
            AttentionKind::Dot { scaled } => {
                let scores = query.matmul(keys.swap_dims(1, 2));
                if scaled {
                    scores / (d_key as f64).sqrt()
                } else {
                    scores
                }
            }
            AttentionKind::General => {
                let w = self.query_kernel.as_ref().expect("general kernel").val();
                let projected = flat(query, batch * t_query, d_query)
                    .matmul(w)
                    .reshape([batch, t_query, d_key]);
                projected.matmul(keys.swap_dims(1, 2))
            }
            AttentionKind::Additive { d_attention } => {
                let wq = self.query_kernel.as_ref().expect("query kernel").val();
                let wk = self.key_kernel.as_ref().expect("key kernel").val();
                let v = self.score_vector.as_ref().expect("score vector").val();
                let q = flat(query, batch * t_query, d_query).matmul(wq).reshape([
                    batch,
                    t_query,
                    1,
                    d_attention,
                ]);
                let k = flat(keys, batch * t_key, d_key).matmul(wk).reshape([
                    batch,
                    1,
                    t_key,
                    d_attention,
                ]);
                let hidden =
                    crate::elementwise::tanh(q + k).reshape([batch * t_query * t_key, d_attention]);
                hidden
                    .matmul(v.reshape([d_attention, 1]))
                    .reshape([batch, t_query, t_key])
            }
        }
    }

    /// Attends from every query step over the valid keys (no query mask, not causal: see
    /// [`Attention::forward_masked`]).
    ///
    /// # Errors
    /// Batch or length mismatches between query, keys, values and mask, or feature sizes the
    /// score function does not accept.
    pub fn forward(
        &self,
        query: Tensor<3>,
        keys: Tensor<3>,
        values: Tensor<3>,
        key_mask: Option<&Mask>,
    ) -> Result<AttentionOutput> {
        self.forward_masked(
            query,
            keys,
            values,
            AttentionMasks {
                keys: key_mask,
                ..AttentionMasks::default()
            },
        )
    }

    /// Attends from each valid query step over the keys that the key mask and the causal mask
    /// leave it (see the type's `# Masking`).
    ///
    /// # Errors
    /// Batch or length mismatches between query, keys, values and masks, or feature sizes the
    /// score function does not accept.
    pub fn forward_masked(
        &self,
        query: Tensor<3>,
        keys: Tensor<3>,
        values: Tensor<3>,
        masks: AttentionMasks<'_>,
    ) -> Result<AttentionOutput> {
        self.attend(query, keys, values, masks, false)
    }

    /// [`Attention::forward`] with the values as keys, over values that are already exactly 0
    /// at the masked key steps (an [`Encoded`](super::Encoded)'s keys): the same result
    /// without zeroing all of them again, which a decoding step would otherwise do for the
    /// whole encoder output.
    pub(crate) fn forward_over_zeroed(
        &self,
        query: Tensor<3>,
        values: Tensor<3>,
        key_mask: Option<&Mask>,
    ) -> Result<AttentionOutput> {
        let masks = AttentionMasks {
            keys: key_mask,
            ..AttentionMasks::default()
        };
        self.attend(query, values.clone(), values, masks, true)
    }

    /// The attention; `inputs_zeroed`: the keys and the values are known to be 0 at masked
    /// key steps.
    fn attend(
        &self,
        query: Tensor<3>,
        keys: Tensor<3>,
        values: Tensor<3>,
        masks: AttentionMasks<'_>,
        inputs_zeroed: bool,
    ) -> Result<AttentionOutput> {
        let [batch, t_query, d_query] = query.dims();
        let [kb, t_key, d_key] = keys.dims();
        let [vb, vt, _] = values.dims();
        if kb != batch || vb != batch || vt != t_key {
            return Err(Error::config(
                "Attention",
                format!(
                    "query batch {batch}, keys [{kb}, {t_key}, _] and values [{vb}, {vt}, _] must agree"
                ),
            ));
        }
        self.check_sizes(d_query, d_key)?;
        masks.check(batch, t_query, t_key, "Attention")?;
        let device = query.device();
        // Masked query and key steps are selected out before the scores read them: a masked
        // entry's score gradient is exactly 0, but its product with a NaN or inf input is NaN
        // (0 x NaN), which would reach the other side's gradient and the kernels'.
        let query = zero_masked(query, masks.query);
        let keys = if inputs_zeroed {
            keys
        } else {
            zero_masked(keys, masks.keys)
        };
        let scores = self.scores(query, keys);
        let weights = match combined_valid(batch, t_query, t_key, masks, &device) {
            Some(valid) => softmax_over_valid(scores, valid),
            None => crate::elementwise::softmax(scores),
        };
        // Masked values are selected out, so that NaN or inf there cannot reach the context
        // through 0 * NaN.
        let values = if inputs_zeroed {
            values
        } else {
            zero_masked(values, masks.keys)
        };
        let context = zero_masked(weights.clone().matmul(values), masks.query);
        Ok(AttentionOutput {
            context,
            weights,
            mask: masks.query.cloned(),
        })
    }

    fn check_sizes(&self, d_query: usize, d_key: usize) -> Result<()> {
        let expected = match self.kind {
            AttentionKind::Dot { .. } => (d_key, d_key),
            _ => {
                let q = self
                    .query_kernel
                    .as_ref()
                    .expect("query kernel")
                    .val()
                    .dims();
                let k = match &self.key_kernel {
                    Some(k) => k.val().dims()[0],
                    None => q[1],
                };
                (q[0], k)
            }
        };
        if (d_query, d_key) != expected {
            return Err(Error::config(
                "Attention",
                format!(
                    "expected query features {} and key features {}, found {d_query} and {d_key}",
                    expected.0, expected.1
                ),
            ));
        }
        Ok(())
    }

    /// Weights in a flat list (`query_kernel`, `key_kernel`, `score_vector`, those present).
    pub fn weights(&self) -> Vec<NamedWeight> {
        let mut out = Vec::new();
        out.extend(
            self.query_kernel
                .as_ref()
                .map(|p| NamedWeight::from_param("query_kernel", p)),
        );
        out.extend(
            self.key_kernel
                .as_ref()
                .map(|p| NamedWeight::from_param("key_kernel", p)),
        );
        out.extend(
            self.score_vector
                .as_ref()
                .map(|p| NamedWeight::from_param("score_vector", p)),
        );
        out
    }

    /// Loads what [`Attention::weights`] lists.
    ///
    /// # Errors
    /// A missing weight or a shape mismatch.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        if let Some(p) = self.query_kernel.as_mut() {
            load_param(p, weights, "query_kernel")?;
        }
        if let Some(p) = self.key_kernel.as_mut() {
            load_param(p, weights, "key_kernel")?;
        }
        if let Some(p) = self.score_vector.as_mut() {
            load_param(p, weights, "score_vector")?;
        }
        Ok(())
    }
}

/// A softmax over the last axis of `scores [batch, t_query, t_key]` restricted to the valid
/// keys of `key_mask [batch, t_key]`.
///
/// Masked keys get weight exactly 0 and gradient exactly 0, whatever their score (NaN and inf
/// included); a row with no valid key gets all zeros (a plain softmax over `-inf` scores would
/// give NaN, and one over a large negative fill would spread the weight uniformly over
/// padding).
pub fn masked_softmax(scores: Tensor<3>, key_mask: Option<&Mask>) -> Tensor<3> {
    let [batch, t_query, t_key] = scores.dims();
    let masks = AttentionMasks {
        keys: key_mask,
        ..AttentionMasks::default()
    };
    match combined_valid(batch, t_query, t_key, masks, &scores.device()) {
        Some(valid) => softmax_over_valid(scores, valid),
        None => crate::elementwise::softmax(scores),
    }
}

/// The AND of the key, query and causal masks over `[batch, t_query, t_key]`; `None` when no
/// mask is given (every entry valid).
pub(super) fn combined_valid(
    batch: usize,
    t_query: usize,
    t_key: usize,
    masks: AttentionMasks<'_>,
    device: &Device,
) -> Option<Tensor<3, Bool>> {
    let shape = [batch, t_query, t_key];
    let parts = [
        masks
            .keys
            .map(|m| m.valid().unsqueeze_dim::<3>(1).expand(shape)),
        masks
            .query
            .map(|m| m.valid().unsqueeze_dim::<3>(2).expand(shape)),
        masks.causal.then(|| {
            causal_valid(t_query, t_key, device)
                .unsqueeze_dim::<3>(0)
                .expand(shape)
        }),
    ];
    parts.into_iter().flatten().reduce(Tensor::bool_and)
}

/// `valid[i, j]` iff key step `j <= ` query step `i` (`[t_query, t_key]`).
fn causal_valid(t_query: usize, t_key: usize, device: &Device) -> Tensor<2, Bool> {
    let rows = Tensor::<1, Int>::arange(0..t_query as i64, device)
        .unsqueeze_dim::<2>(1)
        .expand([t_query, t_key]);
    let cols = Tensor::<1, Int>::arange(0..t_key as i64, device)
        .unsqueeze_dim::<2>(0)
        .expand([t_query, t_key]);
    cols.lower_equal(rows)
}

/// The softmax over the last axis restricted to `valid [batch, t_query, t_key]`: invalid
/// entries get weight and gradient exactly 0 whatever their score; a row with no valid entry
/// gets all zeros.
pub(super) fn softmax_over_valid(scores: Tensor<3>, valid: Tensor<3, Bool>) -> Tensor<3> {
    let padding = valid.clone().bool_not();
    let valid = valid.float();
    // Masked scores are replaced (not added to), so NaN there cannot leak; the row maximum
    // over valid scores keeps exp from overflowing.
    let filled = scores.mask_fill(padding, -1e30);
    let shifted = filled.clone() - filled.max_dim(2).detach();
    let exp = shifted.exp() * valid;
    let total = exp.clone().sum_dim(2).clamp_min(1e-30);
    exp / total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_util::{f32_vec, tensor_from};

    /// The encoder-decoder's path, which skips zeroing the keys and values, gives the values
    /// and gradients of `forward` over the same zeroed keys and values, for every kind.
    #[test]
    fn forward_over_zeroed_equals_forward_over_zeroed_inputs() {
        let device = crate::training_device();
        let (b, tq, tk, d) = (2, 3, 4, 3);
        let valid = [true, true, false, true, true, false, false, false];
        let mask = Mask::from_bools(&valid, b, tk, &device).unwrap();
        let seq = |n: usize, k: f32| (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<_>>();
        let mut encoded = seq(b * tk * d, 0.7);
        for (step, _) in valid.iter().enumerate().filter(|(_, ok)| !**ok) {
            encoded[step * d..(step + 1) * d].fill(0.0);
        }
        for kind in [
            AttentionKind::Dot { scaled: true },
            AttentionKind::General,
            AttentionKind::Additive { d_attention: 2 },
        ] {
            let attention = Attention::new(kind, d, d, &device).unwrap();
            let run = |skip: bool| {
                let query = tensor_from(&seq(b * tq * d, 1.3), [b, tq, d], &device).require_grad();
                let values = tensor_from(&encoded, [b, tk, d], &device).require_grad();
                let out = if skip {
                    attention.forward_over_zeroed(query.clone(), values.clone(), Some(&mask))
                } else {
                    attention.forward(query.clone(), values.clone(), values.clone(), Some(&mask))
                }
                .unwrap();
                let context = f32_vec(out.context.clone());
                // A loss that weighs each context entry differently.
                let grads = (out.context.clone() * out.context.detach())
                    .sum()
                    .backward();
                let mut observed = vec![
                    context,
                    f32_vec(out.weights),
                    f32_vec(query.grad(&grads).unwrap()),
                    f32_vec(values.grad(&grads).unwrap()),
                ];
                observed.extend(
                    attention
                        .query_kernel
                        .as_ref()
                        .map(|p| f32_vec(p.val().grad(&grads).unwrap())),
                );
                observed
            };
            assert_eq!(run(true), run(false), "{kind:?}");
        }
    }
}
