//! [`TransformerAttention`]: the multi-head attention of the Transformer layers, in
//! PyTorch's `nn.MultiheadAttention` layout, with [`AttentionMasks`] (true = valid).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Bool, Device, Int, Tensor};

use super::layer::Linear;
use super::names::{load_named, named_weights};
use crate::error::{Error, Result};
use crate::layers::dropout;
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::seq2seq::AttentionMasks;
use crate::weights::NamedWeight;

/// Multi-head scaled dot-product attention over learned projections (PyTorch's
/// `nn.MultiheadAttention` with `batch_first`, the same weights and names).
///
/// # Shapes
/// query `[batch, t_query, d_model]` and keys/values `[batch, t_key, d_model]` in, `[batch,
/// t_query, d_model]` out. Weights: `in_proj_weight [3 d_model, d_model]` (the query, key
/// and value projections stacked, each `[out, in]`), `in_proj_bias [3 d_model]`,
/// `out_proj.weight [d_model, d_model]`, `out_proj.bias [d_model]`; head `h` is features
/// `h d_head .. (h + 1) d_head` of each projection.
///
/// # Masking
/// The key mask, the query mask and the causal mask (query step `i` sees key steps `j <=
/// i`) combine by AND. Masked query and key steps are selected out (set to 0) before the
/// projections, so NaN or inf there reaches neither an output nor a gradient; masked scores
/// get weight exactly 0; a query step that sees no key (a masked one, or one whose keys are
/// all masked) outputs exactly 0, not the output bias, never NaN.
#[derive(Module, Debug)]
pub struct TransformerAttention {
    /// `[3 d_model, d_model]`: query, key and value projections, `[out, in]` each.
    pub in_proj_weight: Param<Tensor<2>>,
    /// `[3 d_model]`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// The output projection.
    pub out_proj: Linear,
    /// Heads (`d_model` is a multiple of it).
    #[module(skip)]
    pub heads: usize,
    /// Dropout on the attention weights (training only).
    #[module(skip)]
    pub dropout: f64,
}

impl TransformerAttention {
    /// PyTorch's initialisation: Xavier-uniform `in_proj_weight`, zero biases, the output
    /// projection uniform in `±1 / sqrt(d_model)`.
    ///
    /// # Errors
    /// `d_model` or `heads` zero, `d_model` not a multiple of `heads`, or `dropout` outside
    /// `[0, 1)`.
    pub fn new(d_model: usize, heads: usize, dropout: f64, device: &Device) -> Result<Self> {
        if d_model == 0 || heads == 0 || !d_model.is_multiple_of(heads) {
            return Err(Error::config(
                "TransformerAttention",
                format!(
                    "d_model must be a positive multiple of heads, found d_model {d_model} and heads {heads}"
                ),
            ));
        }
        check_rate("TransformerAttention", dropout)?;
        let mut out_proj = Linear::new(d_model, d_model, device);
        out_proj.bias = Initializer::Zeros.init([d_model], device);
        Ok(TransformerAttention {
            in_proj_weight: Initializer::XavierUniform { gain: 1.0 }.init_with(
                [3 * d_model, d_model],
                Some(d_model),
                Some(3 * d_model),
                device,
            ),
            in_proj_bias: Initializer::Zeros.init([3 * d_model], device),
            out_proj,
            heads,
            dropout,
        })
    }

    /// `d_model`.
    pub fn d_model(&self) -> usize {
        self.in_proj_weight.lazy_shape().dims::<2>()[1]
    }

    /// Self-attention of `x [batch, time, d_model]` under `mask` (for queries and keys) and,
    /// when `causal`, the causal mask.
    ///
    /// # Errors
    /// A feature size other than `d_model`, or a mask of the wrong shape.
    pub fn forward_self(
        &self,
        x: Tensor<3>,
        mask: Option<&Mask>,
        causal: bool,
    ) -> Result<Tensor<3>> {
        let [batch, time, d] = x.dims();
        self.check_features("input", d)?;
        let masks = AttentionMasks {
            query: mask,
            keys: mask,
            causal,
        };
        check_masks(masks, batch, time, time)?;
        // One product for the three projections.
        let x = zero_masked(x, mask).reshape([batch * time, d]);
        let qkv = x.matmul(self.in_proj_weight.val().transpose())
            + self.in_proj_bias.val().unsqueeze_dim::<2>(0);
        let [q, k, v] = [0, 1, 2].map(|i| qkv.clone().narrow(1, i * d, d));
        Ok(self.attend([q, k, v], [batch, time, time], masks))
    }

    /// Attention of `query [batch, t_query, d_model]` over `keys_values [batch, t_key,
    /// d_model]` (cross-attention: the keys and values are both projected from it).
    ///
    /// # Errors
    /// Batch sizes that differ, a feature size other than `d_model`, or masks of the wrong
    /// shape.
    pub fn forward(
        &self,
        query: Tensor<3>,
        keys_values: Tensor<3>,
        masks: AttentionMasks<'_>,
    ) -> Result<Tensor<3>> {
        let [batch, t_query, d] = query.dims();
        let [kb, t_key, dk] = keys_values.dims();
        self.check_features("query", d)?;
        self.check_features("keys", dk)?;
        if kb != batch {
            return Err(Error::shape(
                "TransformerAttention keys",
                format!("[{batch}, t_key, {d}]"),
                &[kb, t_key, dk],
            ));
        }
        check_masks(masks, batch, t_query, t_key)?;
        let w = self.in_proj_weight.val();
        let b = self.in_proj_bias.val();
        let q = zero_masked(query, masks.query).reshape([batch * t_query, d]);
        let q = q.matmul(w.clone().narrow(0, 0, d).transpose())
            + b.clone().narrow(0, 0, d).unsqueeze_dim::<2>(0);
        let kv = zero_masked(keys_values, masks.keys).reshape([batch * t_key, d]);
        let kv = kv.matmul(w.narrow(0, d, 2 * d).transpose())
            + b.narrow(0, d, 2 * d).unsqueeze_dim::<2>(0);
        let k = kv.clone().narrow(1, 0, d);
        let v = kv.narrow(1, d, d);
        Ok(self.attend([q, k, v], [batch, t_query, t_key], masks))
    }

    /// The weights under PyTorch's names (`in_proj_weight`, `in_proj_bias`,
    /// `out_proj.weight`, `out_proj.bias`).
    pub fn weights(&self) -> Vec<NamedWeight> {
        named_weights(self)
    }

    /// Loads what [`TransformerAttention::weights`] lists.
    ///
    /// # Errors
    /// A missing, unknown or misshapen weight, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_named(self, weights, "TransformerAttention")
    }

    fn check_features(&self, what: &str, found: usize) -> Result<()> {
        let d_model = self.d_model();
        if found != d_model {
            return Err(Error::config(
                "TransformerAttention",
                format!("{what} features must be d_model = {d_model}, found {found}"),
            ));
        }
        Ok(())
    }

    /// The attention of projected `q [batch t_query, d]`, `k`, `v [batch t_key, d]`.
    pub(super) fn attend(
        &self,
        [q, k, v]: [Tensor<2>; 3],
        [batch, t_query, t_key]: [usize; 3],
        masks: AttentionMasks<'_>,
    ) -> Tensor<3> {
        let d = self.d_model();
        let (h, d_head) = (self.heads, d / self.heads);
        let heads = |x: Tensor<2>, time: usize| {
            x.reshape([batch, time, h, d_head])
                .swap_dims(1, 2)
                .reshape([batch * h, time, d_head])
        };
        let (q, k, v) = (heads(q, t_query), heads(k, t_key), heads(v, t_key));
        // PyTorch scales the queries before the product.
        let scores = (q * (1.0 / (d_head as f64).sqrt())).matmul(k.swap_dims(1, 2));
        let valid = combined_valid(batch, t_query, t_key, masks, &scores.device());
        let weights = match &valid {
            Some(valid) => {
                let per_head = valid
                    .clone()
                    .unsqueeze_dim::<4>(1)
                    .expand([batch, h, t_query, t_key])
                    .reshape([batch * h, t_query, t_key]);
                softmax_over_valid(scores, per_head)
            }
            None => crate::elementwise::softmax(scores),
        };
        let context = dropout(weights, self.dropout)
            .matmul(v)
            .reshape([batch, h, t_query, d_head])
            .swap_dims(1, 2)
            .reshape([batch * t_query, d]);
        let out = self.out_proj.forward(context).reshape([batch, t_query, d]);
        match valid {
            // Query steps that see no key output 0, not the output bias.
            Some(valid) => {
                let sees_nothing = valid
                    .int()
                    .sum_dim(2)
                    .equal_elem(0)
                    .expand([batch, t_query, d]);
                out.mask_fill(sees_nothing, 0.0)
            }
            None => out,
        }
    }
}

/// An error unless `rate` is in `[0, 1)`.
pub(super) fn check_rate(layer: &str, rate: f64) -> Result<()> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::config(
            layer,
            format!("dropout must be in [0, 1), found {rate}"),
        ));
    }
    Ok(())
}

/// Checks the query mask against `[batch, t_query]` and the key mask against `[batch,
/// t_key]`.
fn check_masks(
    masks: AttentionMasks<'_>,
    batch: usize,
    t_query: usize,
    t_key: usize,
) -> Result<()> {
    check_mask_for(
        masks.query,
        &[batch, t_query],
        "TransformerAttention query mask",
    )?;
    check_mask_for(masks.keys, &[batch, t_key], "TransformerAttention key mask")
}

/// The AND of the key, query and causal masks over `[batch, t_query, t_key]`; `None` when
/// there is none.
fn combined_valid(
    batch: usize,
    t_query: usize,
    t_key: usize,
    masks: AttentionMasks<'_>,
    device: &Device,
) -> Option<Tensor<3, Bool>> {
    let shape = [batch, t_query, t_key];
    let causal = || {
        let rows = Tensor::<1, Int>::arange(0..t_query as i64, device)
            .unsqueeze_dim::<2>(1)
            .expand([t_query, t_key]);
        let cols = Tensor::<1, Int>::arange(0..t_key as i64, device)
            .unsqueeze_dim::<2>(0)
            .expand([t_query, t_key]);
        cols.lower_equal(rows).unsqueeze_dim::<3>(0).expand(shape)
    };
    [
        masks
            .keys
            .map(|m| m.valid().unsqueeze_dim::<3>(1).expand(shape)),
        masks
            .query
            .map(|m| m.valid().unsqueeze_dim::<3>(2).expand(shape)),
        masks.causal.then(causal),
    ]
    .into_iter()
    .flatten()
    .reduce(Tensor::bool_and)
}

/// The softmax over the last axis restricted to `valid`: masked scores are replaced before
/// any arithmetic and their weights selected to exactly 0 (so their gradient is exactly 0,
/// whatever they held); a row with no valid entry gets all zeros.
pub(super) fn softmax_over_valid(scores: Tensor<3>, valid: Tensor<3, Bool>) -> Tensor<3> {
    let padding = valid.bool_not();
    let filled = scores.mask_fill(padding.clone(), -1e30);
    let shifted = filled.clone() - filled.max_dim(2).detach();
    let exp = shifted.exp().mask_fill(padding, 0.0);
    let total = exp.clone().sum_dim(2);
    // A row without valid entries sums to 0: divide it by 1 instead.
    let total = total.clone().mask_fill(total.equal_elem(0.0), 1.0);
    exp / total
}
