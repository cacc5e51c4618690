//! [`Embedding`]: token ids to vectors, with `mask_zero`.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::{BuildLayer, Layer, Spec, kind_error};
use crate::mask::{Mask, check_mask_for};
use crate::registry::LayerConfig;
use crate::tensor_util::i64_vec;
use crate::value::Value;
use crate::weights::{NamedWeight, load_param};

/// Configuration of an [`Embedding`]: `{"type": "embedding", "n_tokens": 100, "d_model":
/// 16, "mask_zero": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Number of token ids (`input_dim` in Keras), ids are `0..n_tokens`.
    pub n_tokens: usize,
    /// Size of each vector (`output_dim` in Keras).
    pub d_model: usize,
    /// Reserve id 0 for padding and mask it (default false).
    #[serde(default)]
    pub mask_zero: bool,
}

impl EmbeddingConfig {
    /// `n_tokens` ids embedded in `d_model` features, without `mask_zero`.
    pub fn new(n_tokens: usize, d_model: usize) -> Self {
        EmbeddingConfig {
            n_tokens,
            d_model,
            mask_zero: false,
        }
    }

    /// Sets [`EmbeddingConfig::mask_zero`].
    pub fn with_mask_zero(mut self, mask_zero: bool) -> Self {
        self.mask_zero = mask_zero;
        self
    }

    /// Builds the layer; `embeddings` are drawn from U(-0.05, 0.05) as in Keras.
    pub fn init(&self, device: &Device) -> Embedding {
        let embeddings = Initializer::Uniform {
            min: -0.05,
            max: 0.05,
        }
        .init([self.n_tokens, self.d_model], device);
        Embedding {
            embeddings,
            mask_zero: self.mask_zero,
        }
    }
}

impl BuildLayer for EmbeddingConfig {
    type Layer = Embedding;

    /// Builds the layer; its input must be token ids, which the stack check verifies.
    fn build(&self, _input: &Spec, device: &Device) -> Result<Embedding> {
        if self.n_tokens == 0 || self.d_model == 0 {
            return Err(Error::config(
                "Embedding",
                format!(
                    "expected n_tokens and d_model of at least 1, found {} and {}",
                    self.n_tokens, self.d_model
                ),
            ));
        }
        Ok(self.init(device))
    }
}

/// Looks up a vector per token id.
///
/// # Shapes
/// ids `[batch, time]` in, `[batch, time, d_model]` out.
///
/// # Masking
/// With `mask_zero`, creates the mask `ids != 0` (combined with AND with an incoming mask);
/// without it, passes an incoming mask on.
///
/// # Errors
/// An id outside `0..n_tokens` is an error naming it.
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[n_tokens, d_model]` (Keras `embeddings`).
    pub embeddings: Param<Tensor<2>>,
    /// Whether id 0 is padding.
    pub mask_zero: bool,
}

impl Embedding {
    /// Embeds `ids` and returns the vectors and the mask.
    ///
    /// # Errors
    /// For ids out of range or a mask of the wrong shape.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<&Mask>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        let [batch, time] = ids.dims();
        check_mask_for(mask, &[batch, time], "Embedding")?;
        let [n_tokens, d_model] = self.embeddings.val().dims();
        if let Some(bad) = i64_vec(ids.clone())
            .into_iter()
            .find(|&id| id < 0 || id as usize >= n_tokens)
        {
            return Err(Error::config(
                "Embedding",
                format!("token id {bad} is outside 0..{n_tokens}"),
            ));
        }
        let mut out_mask = mask.cloned();
        if self.mask_zero {
            let created = Mask::from_padding_id(&ids, 0);
            out_mask = Some(match mask {
                Some(m) => created.and(m)?,
                None => created,
            });
        }
        let flat = ids.reshape([batch * time]);
        let vectors = self
            .embeddings
            .val()
            .select(0, flat)
            .reshape([batch, time, d_model]);
        Ok((vectors, out_mask))
    }
}

impl Layer for Embedding {
    fn type_name(&self) -> &'static str {
        "Embedding"
    }

    fn forward_value(&self, input: Value) -> Result<Value> {
        match input {
            Value::Tokens { ids, mask } => {
                let (values, mask) = self.forward(ids, mask.as_ref())?;
                Ok(Value::sequence(values, mask))
            }
            other => Err(Error::InputKind {
                layer: "Embedding".into(),
                expected: "tokens [batch, time]".into(),
                found: other.kind().into(),
            }),
        }
    }

    fn output_spec(&self, input: &Spec) -> Result<Spec> {
        match *input {
            Spec::Tokens { time, masked } => Ok(Spec::Sequence {
                time,
                features: self.embeddings.val().dims()[1],
                masked: masked || self.mask_zero,
            }),
            other => Err(kind_error("Embedding", "tokens [batch, time]", &other)),
        }
    }

    fn supports_mask(&self) -> bool {
        true
    }

    fn config(&self) -> Option<LayerConfig> {
        let [n_tokens, d_model] = self.embeddings.val().dims();
        Some(LayerConfig::Embedding(EmbeddingConfig {
            n_tokens,
            d_model,
            mask_zero: self.mask_zero,
        }))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        vec![NamedWeight::from_param("embeddings", &self.embeddings)]
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_param(&mut self.embeddings, weights, "embeddings")
    }
}
