//! [`TransformerEncoder`] and [`TransformerDecoder`]: stacks of layers, with a final
//! LayerNorm when the layers normalise first.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::layer::{
    LayerNorm, TransformerDecoderLayer, TransformerEncoderLayer, TransformerLayerConfig,
};
use super::names::{load_named, named_weights};
use super::packed;
use crate::error::{Error, Result};
use crate::mask::{Mask, zero_masked};
use crate::weights::NamedWeight;

impl TransformerLayerConfig {
    /// `n_layers` encoder layers, with a final LayerNorm when `norm_first` (pre-norm layers
    /// leave their sum unnormalised).
    ///
    /// # Errors
    /// `n_layers` zero, or as [`TransformerLayerConfig::init_encoder_layer`].
    pub fn init_encoder(&self, n_layers: usize, device: &Device) -> Result<TransformerEncoder> {
        check_layers("TransformerEncoder", n_layers)?;
        Ok(TransformerEncoder {
            layers: (0..n_layers)
                .map(|_| self.init_encoder_layer(device))
                .collect::<Result<_>>()?,
            norm: self
                .norm_first
                .then(|| LayerNorm::new(self.d_model, self.layer_norm_eps, device)),
        })
    }

    /// `n_layers` decoder layers, with a final LayerNorm when `norm_first`.
    ///
    /// # Errors
    /// `n_layers` zero, or as [`TransformerLayerConfig::init_decoder_layer`].
    pub fn init_decoder(&self, n_layers: usize, device: &Device) -> Result<TransformerDecoder> {
        check_layers("TransformerDecoder", n_layers)?;
        Ok(TransformerDecoder {
            layers: (0..n_layers)
                .map(|_| self.init_decoder_layer(device))
                .collect::<Result<_>>()?,
            norm: self
                .norm_first
                .then(|| LayerNorm::new(self.d_model, self.layer_norm_eps, device)),
        })
    }
}

fn check_layers(stack: &str, n_layers: usize) -> Result<()> {
    if n_layers == 0 {
        return Err(Error::config(stack, "n_layers must be at least 1, found 0"));
    }
    Ok(())
}

/// Encoder layers one after the other (PyTorch's `nn.TransformerEncoder`: weights
/// `layers.{i}.*`, and `norm.*` for the final LayerNorm).
///
/// # Shapes
/// `[batch, time, d_model]` in and out.
///
/// # Masking
/// As [`TransformerEncoderLayer`]: every layer sees the same sequence mask; masked output
/// steps are exactly 0.
#[derive(Module, Debug)]
pub struct TransformerEncoder {
    /// The layers, first to last.
    pub layers: Vec<TransformerEncoderLayer>,
    /// The final LayerNorm (pre-norm stacks).
    pub norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// Runs every layer over `x [batch, time, d_model]` under `mask`.
    ///
    /// # Errors
    /// As [`TransformerEncoderLayer::forward`].
    pub fn forward(&self, mut x: Tensor<3>, mask: Option<&Mask>) -> Result<Tensor<3>> {
        if packed::takes_encoder(self, &x, mask) {
            return packed::encoder_forward(self, x, mask);
        }
        for layer in &self.layers {
            x = layer.forward(x, mask)?;
        }
        Ok(match &self.norm {
            Some(norm) => zero_masked(norm.forward(x), mask),
            None => x,
        })
    }

    /// The weights under PyTorch's names (`layers.0.self_attn.in_proj_weight`, ...,
    /// `norm.weight`).
    pub fn weights(&self) -> Vec<NamedWeight> {
        named_weights(self)
    }

    /// Loads what [`TransformerEncoder::weights`] lists.
    ///
    /// # Errors
    /// A missing, unknown or misshapen weight, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_named(self, weights, "TransformerEncoder")
    }
}

/// Decoder layers one after the other, each attending over the same encoder output
/// (PyTorch's `nn.TransformerDecoder`: weights `layers.{i}.*`, and `norm.*`).
///
/// # Shapes
/// `x [batch, t_target, d_model]` and `memory [batch, t_source, d_model]` in, `[batch,
/// t_target, d_model]` out.
///
/// # Masking
/// As [`TransformerDecoderLayer`]: the target mask AND causal for self-attention, the source
/// mask for the keys of cross-attention; masked output steps are exactly 0.
#[derive(Module, Debug)]
pub struct TransformerDecoder {
    /// The layers, first to last.
    pub layers: Vec<TransformerDecoderLayer>,
    /// The final LayerNorm (pre-norm stacks).
    pub norm: Option<LayerNorm>,
}

impl TransformerDecoder {
    /// Runs every layer over `x` under `target_mask`, attending over `memory` under
    /// `memory_mask`.
    ///
    /// # Errors
    /// As [`TransformerDecoderLayer::forward`].
    pub fn forward(
        &self,
        mut x: Tensor<3>,
        target_mask: Option<&Mask>,
        memory: Tensor<3>,
        memory_mask: Option<&Mask>,
    ) -> Result<Tensor<3>> {
        if packed::takes_decoder(self, &x, target_mask, &memory, memory_mask) {
            return packed::decoder_forward(self, x, target_mask, memory, memory_mask);
        }
        for layer in &self.layers {
            x = layer.forward(x, target_mask, memory.clone(), memory_mask)?;
        }
        Ok(match &self.norm {
            Some(norm) => zero_masked(norm.forward(x), target_mask),
            None => x,
        })
    }

    /// The weights under PyTorch's names (`layers.0.multihead_attn.in_proj_weight`, ...,
    /// `norm.weight`).
    pub fn weights(&self) -> Vec<NamedWeight> {
        named_weights(self)
    }

    /// Loads what [`TransformerDecoder::weights`] lists.
    ///
    /// # Errors
    /// A missing, unknown or misshapen weight, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_named(self, weights, "TransformerDecoder")
    }
}
