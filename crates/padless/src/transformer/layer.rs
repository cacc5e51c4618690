//! [`TransformerEncoderLayer`] and [`TransformerDecoderLayer`] (PyTorch's layers, with
//! masks that never see padding), their [`TransformerLayerConfig`], and the [`Linear`] and
//! [`LayerNorm`] parts they are built from.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use super::attention::{TransformerAttention, check_rate};
use super::names::{load_named, named_weights};
use crate::error::{Error, Result};
use crate::layers::{ActivationKind, dropout, fused_linear};
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::ops::{self, layer_norm_rows};
use crate::seq2seq::AttentionMasks;
use crate::weights::NamedWeight;

/// `y = x W^T + b` with PyTorch's layout (`weight [d_out, d_in]`, `bias [d_out]`).
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_out, d_in]`.
    pub weight: Param<Tensor<2>>,
    /// `[d_out]`.
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    /// PyTorch's initialisation: weight and bias uniform in `±1 / sqrt(d_in)`.
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        let bound = 1.0 / (d_in.max(1) as f64).sqrt();
        let uniform = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        Linear {
            weight: uniform.init([d_out, d_in], device),
            bias: uniform.init([d_out], device),
        }
    }

    /// `x [rows, d_in]` to `[rows, d_out]` (one fused product on the CPU backend, the weight
    /// read in place; burn's `matmul` and `add` elsewhere).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        fused_linear(x, self.weight.val(), Some(self.bias.val()))
    }

    /// `x [batch, time, d_in]` to `[batch, time, d_out]`.
    pub fn forward_steps(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, time, d_in] = x.dims();
        let d_out = self.bias.lazy_shape().dims::<1>()[0];
        self.forward(x.reshape([batch * time, d_in]))
            .reshape([batch, time, d_out])
    }
}

/// Layer normalisation over the last axis with PyTorch's names (`weight`, `bias`) and its
/// biased variance: `(x - mean) / sqrt(var + epsilon) * weight + bias`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[d_model]`, ones at start.
    pub weight: Param<Tensor<1>>,
    /// `[d_model]`, zeros at start.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    #[module(skip)]
    pub epsilon: f64,
}

impl LayerNorm {
    /// Ones and zeros.
    pub fn new(d_model: usize, epsilon: f64, device: &Device) -> Self {
        LayerNorm {
            weight: Initializer::Ones.init([d_model], device),
            bias: Initializer::Zeros.init([d_model], device),
            epsilon,
        }
    }

    /// Normalises each step of `x [batch, time, d_model]` (one fused pass per step on the CPU
    /// backend, burn's operations elsewhere).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, time, d] = x.dims();
        if ops::applies(&x.device(), x.dtype()) && batch * time > 0 {
            let rows = x.reshape([batch * time, d]);
            let (weight, bias) = (self.weight.val(), self.bias.val());
            return layer_norm_rows(rows, weight, bias, self.epsilon).reshape([batch, time, d]);
        }
        let (var, mean) = x.clone().var_mean_bias(2);
        let normed = (x - mean) / (var + self.epsilon).sqrt();
        normed * self.weight.val().reshape([1, 1, d]) + self.bias.val().reshape([1, 1, d])
    }
}

/// Sizes and options of a [`TransformerEncoderLayer`] or [`TransformerDecoderLayer`]
/// (PyTorch's arguments and defaults).
#[derive(Config, Debug)]
pub struct TransformerLayerConfig {
    /// Features of every step (`d_model`).
    pub d_model: usize,
    /// Attention heads (`nhead`); `d_model` is a multiple of it.
    pub heads: usize,
    /// Hidden units of the feed-forward block (`dim_feedforward`, default 2048).
    #[config(default = 2048)]
    pub d_ff: usize,
    /// Dropout after each block, inside the feed-forward block and on the attention weights
    /// (default 0.1; training only).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The feed-forward activation (default ReLU; PyTorch's other choice is exact GELU).
    #[config(default = "ActivationKind::Relu")]
    pub activation: ActivationKind,
    /// LayerNorm before each block (pre-norm) instead of after each residual sum (default
    /// false, as PyTorch).
    #[config(default = false)]
    pub norm_first: bool,
    /// Added to the variance in each LayerNorm (default 1e-5).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl TransformerLayerConfig {
    fn check(&self) -> Result<()> {
        if self.d_ff == 0 {
            return Err(Error::config(
                "TransformerLayerConfig",
                "d_ff must be at least 1, found 0",
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(Error::config(
                "TransformerLayerConfig",
                format!(
                    "layer_norm_eps must be positive, found {}",
                    self.layer_norm_eps
                ),
            ));
        }
        check_rate("TransformerLayerConfig", self.dropout)
    }

    fn block(&self, device: &Device) -> Result<FeedForward> {
        self.check()?;
        Ok(FeedForward {
            linear1: Linear::new(self.d_model, self.d_ff, device),
            linear2: Linear::new(self.d_ff, self.d_model, device),
        })
    }

    fn norm(&self, device: &Device) -> LayerNorm {
        LayerNorm::new(self.d_model, self.layer_norm_eps, device)
    }

    fn options(&self) -> LayerOptions {
        LayerOptions {
            dropout: self.dropout,
            activation: self.activation,
            norm_first: self.norm_first,
        }
    }

    /// An encoder layer.
    ///
    /// # Errors
    /// Zero sizes, `d_model` not a multiple of `heads`, `dropout` outside `[0, 1)`.
    pub fn init_encoder_layer(&self, device: &Device) -> Result<TransformerEncoderLayer> {
        let FeedForward { linear1, linear2 } = self.block(device)?;
        Ok(TransformerEncoderLayer {
            self_attn: TransformerAttention::new(self.d_model, self.heads, self.dropout, device)?,
            linear1,
            linear2,
            norm1: self.norm(device),
            norm2: self.norm(device),
            options: self.options(),
        })
    }

    /// A decoder layer.
    ///
    /// # Errors
    /// As [`TransformerLayerConfig::init_encoder_layer`].
    pub fn init_decoder_layer(&self, device: &Device) -> Result<TransformerDecoderLayer> {
        let self_attn = TransformerAttention::new(self.d_model, self.heads, self.dropout, device)?;
        let multihead_attn =
            TransformerAttention::new(self.d_model, self.heads, self.dropout, device)?;
        let FeedForward { linear1, linear2 } = self.block(device)?;
        Ok(TransformerDecoderLayer {
            self_attn,
            multihead_attn,
            linear1,
            linear2,
            norm1: self.norm(device),
            norm2: self.norm(device),
            norm3: self.norm(device),
            options: self.options(),
        })
    }
}

/// The two linear layers of a feed-forward block, while a layer is built.
struct FeedForward {
    linear1: Linear,
    linear2: Linear,
}

/// A layer's options that are not weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerOptions {
    /// Dropout rate (training only).
    pub dropout: f64,
    /// The feed-forward activation.
    pub activation: ActivationKind,
    /// Pre-norm (LayerNorm before each block) instead of post-norm.
    pub norm_first: bool,
}

impl LayerOptions {
    fn dropout<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        dropout(x, self.dropout)
    }

    /// `linear2(dropout(activation(linear1(x))))` per step (the block's own dropout follows
    /// in [`LayerOptions::residual`]).
    pub(super) fn feed_forward(
        &self,
        linear1: &Linear,
        linear2: &Linear,
        x: Tensor<3>,
    ) -> Tensor<3> {
        let hidden = self.activation.apply(linear1.forward_steps(x));
        linear2.forward_steps(self.dropout(hidden))
    }

    /// One residual block: `x + block(norm(x))` pre-norm, `norm(x + block(x))` post-norm.
    pub(super) fn residual(
        &self,
        x: Tensor<3>,
        norm: &LayerNorm,
        block: impl FnOnce(Tensor<3>) -> Result<Tensor<3>>,
    ) -> Result<Tensor<3>> {
        if self.norm_first {
            Ok(x.clone() + self.dropout(block(norm.forward(x))?))
        } else {
            Ok(norm.forward(x.clone() + self.dropout(block(x)?)))
        }
    }
}

/// Checks that `x` is `[batch, time, d_model]` and `mask` `[batch, time]`.
pub(super) fn check_input(
    layer: &str,
    x: &Tensor<3>,
    d_model: usize,
    mask: Option<&Mask>,
) -> Result<()> {
    let dims = x.dims();
    if dims[2] != d_model {
        return Err(Error::shape(
            format!("{layer} input"),
            format!("[batch, time, {d_model}]"),
            &dims,
        ));
    }
    check_mask_for(mask, &dims, layer)
}

/// A Transformer encoder layer: self-attention, then a feed-forward block, each with a
/// residual connection and a LayerNorm (PyTorch's `nn.TransformerEncoderLayer`, `batch_first`,
/// with the same weight names).
///
/// # Shapes
/// `[batch, time, d_model]` in and out.
///
/// # Masking
/// The sequence mask is both the query and the key mask of the self-attention, so a valid
/// step attends to the valid steps of its row only; LayerNorm, the feed-forward block and
/// the residuals act per step. Masked input steps are selected out on entry (NaN or inf there
/// changes no output and no gradient), masked output steps are exactly 0, and the output mask
/// is the input mask.
///
/// # Example
/// ```
/// use padless::transformer::TransformerLayerConfig;
/// use padless::{Mask, Padding, default_device};
/// use burn::tensor::{Distribution, Tensor};
///
/// let device = default_device();
/// let layer = TransformerLayerConfig::new(8, 2).with_d_ff(16).init_encoder_layer(&device).unwrap();
/// let x = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
/// let mask = Mask::from_lengths(&[5, 3], 5, Padding::Post, &device).unwrap();
/// let y = layer.forward(x, Some(&mask)).unwrap();
/// assert_eq!(y.dims(), [2, 5, 8]);
/// ```
#[derive(Module, Debug)]
pub struct TransformerEncoderLayer {
    /// Self-attention.
    pub self_attn: TransformerAttention,
    /// Feed-forward, first layer `[d_ff, d_model]`.
    pub linear1: Linear,
    /// Feed-forward, second layer `[d_model, d_ff]`.
    pub linear2: Linear,
    /// LayerNorm of the self-attention block.
    pub norm1: LayerNorm,
    /// LayerNorm of the feed-forward block.
    pub norm2: LayerNorm,
    /// Dropout, activation and norm placement.
    #[module(skip)]
    pub options: LayerOptions,
}

impl TransformerEncoderLayer {
    /// `d_model`.
    pub fn d_model(&self) -> usize {
        self.self_attn.d_model()
    }

    /// Runs the layer over `x [batch, time, d_model]` under the sequence `mask`.
    ///
    /// # Errors
    /// A feature size other than `d_model` or a mask of the wrong shape.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Mask>) -> Result<Tensor<3>> {
        check_input("TransformerEncoderLayer", &x, self.d_model(), mask)?;
        let o = self.options;
        let x = zero_masked(x, mask);
        let x = o.residual(x, &self.norm1, |x| {
            self.self_attn.forward_self(x, mask, false)
        })?;
        let x = o.residual(x, &self.norm2, |x| {
            Ok(o.feed_forward(&self.linear1, &self.linear2, x))
        })?;
        Ok(zero_masked(x, mask))
    }

    /// The weights under PyTorch's names (`self_attn.in_proj_weight`, `linear1.weight`,
    /// `norm1.bias`, ...).
    pub fn weights(&self) -> Vec<NamedWeight> {
        named_weights(self)
    }

    /// Loads what [`TransformerEncoderLayer::weights`] lists.
    ///
    /// # Errors
    /// A missing, unknown or misshapen weight, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_named(self, weights, "TransformerEncoderLayer")
    }
}

/// A Transformer decoder layer: causal self-attention, cross-attention over the encoder
/// output, then a feed-forward block, each with a residual connection and a LayerNorm
/// (PyTorch's `nn.TransformerDecoderLayer`, `batch_first`, with the same weight names).
///
/// # Shapes
/// `x [batch, t_target, d_model]` and `memory [batch, t_source, d_model]` in, `[batch,
/// t_target, d_model]` out.
///
/// # Masking
/// Self-attention: the target mask AND causal (a step sees the valid steps of its row up to
/// itself, so it never depends on later targets). Cross-attention: the target mask for the
/// queries and the source mask for the keys; a target step whose source row has no valid step
/// gets 0 from it. Masked steps of `x` and `memory` are selected out before they are read;
/// masked output steps are exactly 0; the output mask is the target mask.
#[derive(Module, Debug)]
pub struct TransformerDecoderLayer {
    /// Causal self-attention.
    pub self_attn: TransformerAttention,
    /// Cross-attention over the encoder output.
    pub multihead_attn: TransformerAttention,
    /// Feed-forward, first layer `[d_ff, d_model]`.
    pub linear1: Linear,
    /// Feed-forward, second layer `[d_model, d_ff]`.
    pub linear2: Linear,
    /// LayerNorm of the self-attention block.
    pub norm1: LayerNorm,
    /// LayerNorm of the cross-attention block.
    pub norm2: LayerNorm,
    /// LayerNorm of the feed-forward block.
    pub norm3: LayerNorm,
    /// Dropout, activation and norm placement.
    #[module(skip)]
    pub options: LayerOptions,
}

impl TransformerDecoderLayer {
    /// `d_model`.
    pub fn d_model(&self) -> usize {
        self.self_attn.d_model()
    }

    /// Runs the layer over `x [batch, t_target, d_model]` under `target_mask`, attending over
    /// `memory [batch, t_source, d_model]` under `memory_mask`.
    ///
    /// # Errors
    /// Feature sizes other than `d_model`, batch sizes that differ, or masks of the wrong
    /// shape.
    pub fn forward(
        &self,
        x: Tensor<3>,
        target_mask: Option<&Mask>,
        memory: Tensor<3>,
        memory_mask: Option<&Mask>,
    ) -> Result<Tensor<3>> {
        check_input("TransformerDecoderLayer", &x, self.d_model(), target_mask)?;
        check_input(
            "TransformerDecoderLayer memory",
            &memory,
            self.d_model(),
            memory_mask,
        )?;
        let o = self.options;
        let x = zero_masked(x, target_mask);
        let x = o.residual(x, &self.norm1, |x| {
            self.self_attn.forward_self(x, target_mask, true)
        })?;
        let cross = AttentionMasks {
            query: target_mask,
            keys: memory_mask,
            causal: false,
        };
        let x = o.residual(x, &self.norm2, |x| {
            self.multihead_attn.forward(x, memory, cross)
        })?;
        let x = o.residual(x, &self.norm3, |x| {
            Ok(o.feed_forward(&self.linear1, &self.linear2, x))
        })?;
        Ok(zero_masked(x, target_mask))
    }

    /// The weights under PyTorch's names (`self_attn.*`, `multihead_attn.*`, `linear1.*`,
    /// `norm3.*`, ...).
    pub fn weights(&self) -> Vec<NamedWeight> {
        named_weights(self)
    }

    /// Loads what [`TransformerDecoderLayer::weights`] lists.
    ///
    /// # Errors
    /// A missing, unknown or misshapen weight, naming it.
    pub fn set_weights(&mut self, weights: &[NamedWeight]) -> Result<()> {
        load_named(self, weights, "TransformerDecoderLayer")
    }
}
