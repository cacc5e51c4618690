//! [`MultiHeadAttention`]: scaled dot-product attention in several heads over learned
//! projections (Keras `MultiHeadAttention`, Transformer-style), with the masks of
//! [`AttentionMasks`].

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use super::attention::{AttentionMasks, combined_valid, softmax_over_valid};
use crate::error::{Error, Result};
use crate::mask::{Mask, zero_masked};
use crate::weights::{NamedWeight, load_param};

/// Multi-head attention: `n_heads` heads of width `d_head`, each a scaled dot-product
/// attention of the projected query over the projected keys and values, concatenated and
/// projected to `d_output`.
///
/// # Shapes
/// query `[batch, t_query, d_query]`, keys `[batch, t_key, d_key]`, values `[batch, t_key,
/// d_value]` in; output `[batch, t_query, d_output]` and weights `[batch, n_heads, t_query,
/// t_key]` out. Weights in Keras' layout, flattened over heads: `query_kernel [d_query,
/// n_heads * d_head]` (head `h` in columns `h * d_head ..`), likewise `key_kernel` and
/// `value_kernel`, `output_kernel [n_heads * d_head, d_output]`, and a bias for each.
///
/// # Masking
/// As [`Attention::forward_masked`](super::Attention::forward_masked), in every head: the
/// key, query and causal masks combine by AND; masked keys, values and queries are selected
/// out before any arithmetic (NaN or inf there reaches neither the output nor a gradient); a
/// query step with no key to see (a masked query step, or one whose keys are all masked) gets
/// zero weights and outputs exactly 0, not the output bias; the output mask is the query
/// mask.
#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    /// `[d_query, n_heads * d_head]`.
    pub query_kernel: Param<Tensor<2>>,
    /// `[n_heads * d_head]`.
    pub query_bias: Param<Tensor<1>>,
    /// `[d_key, n_heads * d_head]`.
    pub key_kernel: Param<Tensor<2>>,
    /// `[n_heads * d_head]`.
    pub key_bias: Param<Tensor<1>>,
    /// `[d_value, n_heads * d_head]`.
    pub value_kernel: Param<Tensor<2>>,
    /// `[n_heads * d_head]`.
    pub value_bias: Param<Tensor<1>>,
    /// `[n_heads * d_head, d_output]`.
    pub output_kernel: Param<Tensor<2>>,
    /// `[d_output]`.
    pub output_bias: Param<Tensor<1>>,
    /// Heads.
    #[module(skip)]
    pub n_heads: usize,
    /// Width of each head.
    #[module(skip)]
    pub d_head: usize,
}

/// What [`MultiHeadAttention::forward_masked`] returns.
#[derive(Debug, Clone)]
pub struct MultiHeadOutput {
    /// `[batch, t_query, d_output]`, exactly 0 at query steps that see no key.
    pub output: Tensor<3>,
    /// `[batch, n_heads, t_query, t_key]`.
    pub weights: Tensor<4>,
    /// The query mask, when one was given.
    pub mask: Option<Mask>,
}

impl MultiHeadAttention {
    /// Glorot-uniform kernels and zero biases.
    ///
    /// # Errors
    /// A zero size.
    pub fn new(
        n_heads: usize,
        d_head: usize,
        [d_query, d_key, d_value, d_output]: [usize; 4],
        device: &Device,
    ) -> Result<Self> {
        if [n_heads, d_head, d_query, d_key, d_value, d_output].contains(&0) {
            return Err(Error::config(
                "MultiHeadAttention",
                format!(
                    "every size must be at least 1, found n_heads {n_heads}, d_head {d_head}, \
                     d_query {d_query}, d_key {d_key}, d_value {d_value}, d_output {d_output}"
                ),
            ));
        }
        let inner = n_heads * d_head;
        let glorot = |rows: usize, cols: usize| {
            Initializer::XavierUniform { gain: 1.0 }.init_with(
                [rows, cols],
                Some(rows),
                Some(cols),
                device,
            )
        };
        let zeros = |n: usize| Initializer::Zeros.init([n], device);
        Ok(MultiHeadAttention {
            query_kernel: glorot(d_query, inner),
            query_bias: zeros(inner),
            key_kernel: glorot(d_key, inner),
            key_bias: zeros(inner),
            value_kernel: glorot(d_value, inner),
            value_bias: zeros(inner),
            output_kernel: glorot(inner, d_output),
            output_bias: zeros(d_output),
            n_heads,
            d_head,
        })
    }

    /// Splits `x [batch, time, d]` projected by `kernel`, `bias` into heads:
    /// `[batch * n_heads, time, d_head]`, with the steps `mask` marks as padding zeroed before
    /// the projection.
    fn heads(
        &self,
        x: Tensor<3>,
        mask: Option<&Mask>,
        kernel: &Param<Tensor<2>>,
        bias: &Param<Tensor<1>>,
    ) -> Tensor<3> {
        let [batch, time, d] = x.dims();
        let x = zero_masked(x, mask);
        let projected =
            x.reshape([batch * time, d]).matmul(kernel.val()) + bias.val().unsqueeze_dim::<2>(0);
        projected
            .reshape([batch, time, self.n_heads, self.d_head])
            .swap_dims(1, 2)
            .reshape([batch * self.n_heads, time, self.d_head])
    }

    /// Attends in every head (see the type's `# Masking`).
    ///
    /// # Errors
    /// Batch or length mismatches, feature sizes other than the kernels', masks of the wrong
    /// shape.
    pub fn forward_masked(
        &self,
        query: Tensor<3>,
        keys: Tensor<3>,
        values: Tensor<3>,
        masks: AttentionMasks<'_>,
    ) -> Result<MultiHeadOutput> {
        let [batch, t_query, d_query] = query.dims();
        let [kb, t_key, d_key] = keys.dims();
        let [vb, vt, d_value] = values.dims();
        let expected = [
            self.query_kernel.val().dims()[0],
            self.key_kernel.val().dims()[0],
            self.value_kernel.val().dims()[0],
        ];
        if kb != batch || vb != batch || vt != t_key || [d_query, d_key, d_value] != expected {
            return Err(Error::config(
                "MultiHeadAttention",
                format!(
                    "expected query [{batch}, _, {}], keys [{batch}, T, {}], values [{batch}, T, {}]; \
                     found [{batch}, {t_query}, {d_query}], [{kb}, {t_key}, {d_key}], [{vb}, {vt}, {d_value}]",
                    expected[0], expected[1], expected[2]
                ),
            ));
        }
        masks.check(batch, t_query, t_key, "MultiHeadAttention")?;
        let device = query.device();
        let q = self.heads(query, masks.query, &self.query_kernel, &self.query_bias);
        let k = self.heads(keys, masks.keys, &self.key_kernel, &self.key_bias);
        let v = self.heads(values, masks.keys, &self.value_kernel, &self.value_bias);
        let (h, dh) = (self.n_heads, self.d_head);
        let scores = q.matmul(k.swap_dims(1, 2)) / (dh as f64).sqrt();
        let d_output = self.output_bias.val().dims()[0];
        let (weights, sees_nothing) = match combined_valid(batch, t_query, t_key, masks, &device) {
            Some(valid) => {
                // Query steps that see no key (masked ones included) output 0, not the
                // output bias.
                let sees_nothing = valid
                    .clone()
                    .int()
                    .sum_dim(2)
                    .equal_elem(0)
                    .expand([batch, t_query, d_output]);
                let valid = valid
                    .unsqueeze_dim::<4>(1)
                    .expand([batch, h, t_query, t_key])
                    .reshape([batch * h, t_query, t_key]);
                (softmax_over_valid(scores, valid), Some(sees_nothing))
            }
            None => (crate::elementwise::softmax(scores), None),
        };
        // Masked keys' projected values hold only the value bias; their weight is exactly 0.
        let context = weights
            .clone()
            .matmul(v)
            .reshape([batch, h, t_query, dh])
            .swap_dims(1, 2)
            .reshape([batch * t_query, h * dh]);
        let mut output = (context.matmul(self.output_kernel.val())
            + self.output_bias.val().unsqueeze_dim::<2>(0))
        .reshape([batch, t_query, d_output]);
        if let Some(sees_nothing) = sees_nothing {
            output = output.mask_fill(sees_nothing, 0.0);
        }
        Ok(MultiHeadOutput {
            output,
            weights: weights.reshape([batch, h, t_query, t_key]),
            mask: masks.query.cloned(),
        })
    }

    /// The weights by name (`query_kernel`, `query_bias`, `key_kernel`, `key_bias`,
    /// `value_kernel`, `value_bias`, `output_kernel`, `output_bias`).
    pub fn weights(&self) -> Vec<NamedWeight> {
        vec![
            NamedWeight::from_param("query_kernel", &self.query_kernel),
            NamedWeight::from_param("query_bias", &self.query_bias),
            NamedWeight::from_param("key_kernel", &self.key_kernel),
            NamedWeight::from_param("key_bias", &self.key_bias),
            NamedWeight::from_param("value_kernel", &self.value_kernel),
            NamedWeight::from_param("value_bias", &self.value_bias),
            NamedWeight::from_param("output_kernel", &self.output_kernel),
            NamedWeight::from_param("output_bias", &self.output_bias),
        ]
    }

    /// Loads what [`MultiHeadAttention::weights`] lists.
    ///
    /// # Errors
    /// A missing weight or a shape mismatch.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_param(&mut self.query_kernel, weights, "query_kernel")?;
        load_param(&mut self.query_bias, weights, "query_bias")?;
        load_param(&mut self.key_kernel, weights, "key_kernel")?;
        load_param(&mut self.key_bias, weights, "key_bias")?;
        load_param(&mut self.value_kernel, weights, "value_kernel")?;
        load_param(&mut self.value_bias, weights, "value_bias")?;
        load_param(&mut self.output_kernel, weights, "output_kernel")?;
        load_param(&mut self.output_bias, weights, "output_bias")
    }
}
