//! The Transformer's CPU fast path: the encoder and decoder stacks on packed valid tokens.
//!
//! On the flex backend with the fused operations on, [`TransformerEncoder::forward`] and
//! [`TransformerDecoder::forward`] run here. The valid steps of the batch are gathered once
//! into `[n_valid, d_model]` rows (row by row, each row's steps in order; per-row offsets say
//! where each row starts), and every layer works on those rows only: the projections and the
//! feed-forward block as fused dense products on the kernels' thread pair, each LayerNorm as
//! one fused pass per row (with the residual sum and its dropout where the norm follows the
//! block), the feed-forward ReLU and its dropout as one fused pass, and attention through
//! the packed attention kernel, reading the fused projections in place (each row's queries
//! over its own keys, block by block, no `[batch, heads, t_query, t_key]` score tensor). The
//! result is scattered back to `[batch, time, d_model]`, zeros at masked steps, at the
//! stack's output. Masked steps are never read, so neither their values (NaN included) nor
//! their number changes any output or gradient, and padding costs no work past the gather.
//!
//! Dropout (training only) acts where the composite layers apply it; the fused passes and the
//! attention kernel drop elements chosen by a hash of a seed drawn from the device's
//! generator, so the dropped elements differ from the composite path's draw, as two draws do.
//!
//! The stacks run their composite layers instead on other backends and float types, with
//! the fused operations off ([`crate::cpu::with_composite`]), and when there is no valid
//! token (or, for the decoder, no valid memory step) at all. Both paths give the same values
//! and gradients (without dropout); the tests compare them.

use std::cell::Cell;
use std::sync::Arc;

use burn::tensor::{Bool, Device, IndexingUpdateOp, Int, Tensor};
use padless_kernels::AttentionDropout;

use super::attention::TransformerAttention;
use super::layer::{
    LayerNorm, LayerOptions, Linear, TransformerDecoderLayer, TransformerEncoderLayer, check_input,
};
use super::stack::{TransformerDecoder, TransformerEncoder};
use crate::error::{Error, Result};
use crate::layers::ActivationKind;
use crate::layers::{fused_linear, seed_from};
use crate::mask::Mask;
use crate::ops::{
    self, RowOffsets, add_norm_rows, dropout_rows, element_dropout, layer_norm_rows,
    packed_cross_attention, packed_self_attention,
};
use crate::tensor_util::int_tensor_from;

thread_local! {
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// How many encoder and decoder stacks this thread has run on packed valid tokens (lets tests
/// prove that the fast path ran; counted per thread, so tests running beside each other do
/// not count each other's calls).
pub fn packed_calls() -> usize {
    CALLS.with(Cell::get)
}

fn count_call() {
    CALLS.with(|c| c.set(c.get() + 1));
}

/// Whether a stack on `x` under `mask` takes the packed path: the fused operations apply to
/// `x` and some step is valid.
fn applies(x: &Tensor<3>, mask: Option<&Mask>) -> bool {
    ops::applies(&x.device(), x.dtype()) && has_valid_step(x, mask)
}

fn has_valid_step(x: &Tensor<3>, mask: Option<&Mask>) -> bool {
    let [batch, time, _] = x.dims();
    match mask {
        Some(mask) => mask.to_vec().into_iter().any(|v| v),
        None => batch * time > 0,
    }
}

/// Whether `stack` runs on packed tokens for `x` under `mask`.
pub(super) fn takes_encoder(
    stack: &TransformerEncoder,
    x: &Tensor<3>,
    mask: Option<&Mask>,
) -> bool {
    !stack.layers.is_empty() && applies(x, mask)
}

/// Whether `stack` runs on packed tokens for `x` under `target_mask` over `memory` under
/// `memory_mask`.
pub(super) fn takes_decoder(
    stack: &TransformerDecoder,
    x: &Tensor<3>,
    target_mask: Option<&Mask>,
    memory: &Tensor<3>,
    memory_mask: Option<&Mask>,
) -> bool {
    !stack.layers.is_empty()
        && applies(x, target_mask)
        && memory.dtype() == x.dtype()
        && has_valid_step(memory, memory_mask)
}

/// The valid steps of a `[batch, time]` batch, packed row by row.
struct Rows {
    /// Each valid step's place `b * time + t` in the flattened batch, in packed order.
    index: Tensor<1, Int>,
    /// `[batch + 1]`: 0, then the running total of each row's valid steps.
    offsets: Arc<[usize]>,
    batch: usize,
    time: usize,
}

impl Rows {
    fn new(mask: Option<&Mask>, batch: usize, time: usize, device: &Device) -> Rows {
        let valid = mask.map(Mask::to_vec);
        let mut index = Vec::with_capacity(batch * time);
        let mut offsets = Vec::with_capacity(batch + 1);
        offsets.push(0);
        for b in 0..batch {
            for t in 0..time {
                let step = b * time + t;
                if valid.as_ref().is_none_or(|v| v[step]) {
                    index.push(step as i64);
                }
            }
            offsets.push(index.len());
        }
        Rows {
            index: int_tensor_from(&index, [index.len()], device),
            offsets: offsets.into(),
            batch,
            time,
        }
    }

    fn len(&self) -> usize {
        *self.offsets.last().expect("offsets start at 0")
    }

    /// Every step is valid: packing is a reshape.
    fn is_dense(&self) -> bool {
        self.len() == self.batch * self.time
    }

    /// The valid steps of `x [batch, time, d]` as `[n_valid, d]` (masked steps not read).
    fn pack(&self, x: Tensor<3>) -> Tensor<2> {
        let d = x.dims()[2];
        let flat = x.reshape([self.batch * self.time, d]);
        if self.is_dense() {
            flat
        } else {
            flat.select(0, self.index.clone())
        }
    }

    /// Packed rows `y [n_valid, d]` back in their places of `[batch, time, d]`, zeros at the
    /// masked steps.
    fn unpack(&self, y: Tensor<2>) -> Tensor<3> {
        let d = y.dims()[1];
        let shape = [self.batch, self.time, d];
        if self.is_dense() {
            return y.reshape(shape);
        }
        let zeros = Tensor::<2>::zeros([self.batch * self.time, d], (&y.device(), y.dtype()));
        zeros
            .select_assign(0, self.index.clone(), y, IndexingUpdateOp::Add)
            .reshape(shape)
    }

    /// The offsets of queries from `self` over keys from `keys`.
    fn over(&self, keys: &Rows) -> RowOffsets {
        RowOffsets {
            queries: self.offsets.clone(),
            keys: keys.offsets.clone(),
        }
    }
}

/// The encoder stack on packed tokens (see the module docs); the caller checked
/// [`takes_encoder`].
pub(super) fn encoder_forward(
    stack: &TransformerEncoder,
    x: Tensor<3>,
    mask: Option<&Mask>,
) -> Result<Tensor<3>> {
    let d_model = stack.layers[0].d_model();
    check_input("TransformerEncoder", &x, d_model, mask)?;
    let [batch, time, _] = x.dims();
    let rows = Rows::new(mask, batch, time, &x.device());
    let mut h = rows.pack(x);
    for layer in &stack.layers {
        h = encoder_layer(layer, h, &rows);
    }
    if let Some(norm) = &stack.norm {
        h = layer_norm(norm, h);
    }
    count_call();
    Ok(rows.unpack(h))
}

/// The encoder output as the decoder's cross-attention reads it.
struct Memory {
    x: Tensor<2>,
    rows: Rows,
    /// `[n_valid_target, d_model]`, true at the target tokens whose row has no memory step:
    /// their cross-attention output is 0, not the output projection's bias. `None` when every
    /// row with targets has memory.
    blind: Option<Tensor<2, Bool>>,
}

/// The decoder stack on packed tokens (see the module docs); the caller checked
/// [`takes_decoder`].
pub(super) fn decoder_forward(
    stack: &TransformerDecoder,
    x: Tensor<3>,
    target_mask: Option<&Mask>,
    memory: Tensor<3>,
    memory_mask: Option<&Mask>,
) -> Result<Tensor<3>> {
    let d_model = stack.layers[0].d_model();
    check_input("TransformerDecoder", &x, d_model, target_mask)?;
    check_input("TransformerDecoder memory", &memory, d_model, memory_mask)?;
    let [batch, time, _] = x.dims();
    let [memory_batch, memory_time, _] = memory.dims();
    if memory_batch != batch {
        return Err(Error::shape(
            "TransformerDecoder memory",
            format!("[{batch}, t_source, {d_model}]"),
            &memory.dims(),
        ));
    }
    let device = x.device();
    let rows = Rows::new(target_mask, batch, time, &device);
    let memory_rows = Rows::new(memory_mask, batch, memory_time, &device);
    let blind = blind_queries(&rows, &memory_rows, d_model, &device)?;
    let memory = Memory {
        x: memory_rows.pack(memory),
        rows: memory_rows,
        blind,
    };
    let mut h = rows.pack(x);
    for layer in &stack.layers {
        h = decoder_layer(layer, h, &rows, &memory);
    }
    if let Some(norm) = &stack.norm {
        h = layer_norm(norm, h);
    }
    count_call();
    Ok(rows.unpack(h))
}

/// [`Memory::blind`] for queries of `rows` over keys of `keys`.
fn blind_queries(
    rows: &Rows,
    keys: &Rows,
    d_model: usize,
    device: &Device,
) -> Result<Option<Tensor<2, Bool>>> {
    let mut blind = Vec::with_capacity(rows.len());
    for (q, k) in rows.offsets.windows(2).zip(keys.offsets.windows(2)) {
        let no_keys = k[1] == k[0];
        blind.extend(std::iter::repeat_n(no_keys, q[1] - q[0]));
    }
    if !blind.contains(&true) {
        return Ok(None);
    }
    let n = blind.len();
    let flags = Mask::from_bools(&blind, n, 1, device)?.valid();
    Ok(Some(flags.expand([n, d_model])))
}

fn encoder_layer(layer: &TransformerEncoderLayer, x: Tensor<2>, rows: &Rows) -> Tensor<2> {
    let o = &layer.options;
    let x = residual(o, x, &layer.norm1, |x| {
        self_attention(&layer.self_attn, x, rows, false)
    });
    residual(o, x, &layer.norm2, |x| {
        feed_forward(o, &layer.linear1, &layer.linear2, x)
    })
}

fn decoder_layer(
    layer: &TransformerDecoderLayer,
    x: Tensor<2>,
    rows: &Rows,
    memory: &Memory,
) -> Tensor<2> {
    let o = &layer.options;
    let x = residual(o, x, &layer.norm1, |x| {
        self_attention(&layer.self_attn, x, rows, true)
    });
    let x = residual(o, x, &layer.norm2, |x| {
        cross_attention(&layer.multihead_attn, x, rows, memory)
    });
    residual(o, x, &layer.norm3, |x| {
        feed_forward(o, &layer.linear1, &layer.linear2, x)
    })
}

/// One residual block on packed rows: `x + dropout(block(norm(x)))` pre-norm, `norm(x +
/// dropout(block(x)))` post-norm (the sum, dropout and norm one fused pass).
fn residual(
    o: &LayerOptions,
    x: Tensor<2>,
    norm: &LayerNorm,
    block: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Tensor<2> {
    let dropout = element_dropout(o.dropout, &x.device());
    if o.norm_first {
        let y = block(layer_norm(norm, x.clone()));
        x + match dropout {
            Some(dropout) => dropout_rows(y, dropout, false),
            None => y,
        }
    } else {
        let y = block(x.clone());
        let (weight, bias) = (norm.weight.val(), norm.bias.val());
        add_norm_rows(x, y, weight, bias, norm.epsilon, dropout)
    }
}

fn layer_norm(norm: &LayerNorm, x: Tensor<2>) -> Tensor<2> {
    layer_norm_rows(x, norm.weight.val(), norm.bias.val(), norm.epsilon)
}

/// `x weight^T + bias` (PyTorch's layout, read in place) through the fused dense product.
fn affine(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    fused_linear(x, weight, Some(bias))
}

fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    affine(x, layer.weight.val(), layer.bias.val())
}

/// `linear2(dropout(activation(linear1(x))))` (a ReLU and the dropout one fused pass).
fn feed_forward(o: &LayerOptions, linear1: &Linear, linear2: &Linear, x: Tensor<2>) -> Tensor<2> {
    let hidden = linear(linear1, x);
    let hidden = match (element_dropout(o.dropout, &hidden.device()), o.activation) {
        (Some(dropout), ActivationKind::Relu) => dropout_rows(hidden, dropout, true),
        (Some(dropout), activation) => dropout_rows(activation.apply(hidden), dropout, false),
        (None, activation) => activation.apply(hidden),
    };
    linear(linear2, hidden)
}

/// The dropout on `attention`'s weights: on a training device (as
/// [`crate::layers::dropout`]), at its rate, the dropped weights selected by a seed from the
/// device's generator.
fn weight_dropout(attention: &TransformerAttention, device: &Device) -> Option<AttentionDropout> {
    (attention.dropout > 0.0 && device.is_autodiff()).then(|| AttentionDropout {
        rate: attention.dropout,
        seed: seed_from(device),
    })
}

/// Self-attention of packed rows: one product for the three projections, the packed kernel,
/// the output projection.
fn self_attention(
    attention: &TransformerAttention,
    x: Tensor<2>,
    rows: &Rows,
    causal: bool,
) -> Tensor<2> {
    let device = x.device();
    let qkv = affine(
        x,
        attention.in_proj_weight.val(),
        attention.in_proj_bias.val(),
    );
    let context = packed_self_attention(
        qkv,
        attention.heads,
        causal,
        weight_dropout(attention, &device),
        rows.over(rows),
    );
    linear(&attention.out_proj, context)
}

/// Cross-attention of packed target rows over the packed memory: the query projection of the
/// targets, one product for the key and value projections of the memory, the packed kernel,
/// the output projection (0 for targets without memory).
fn cross_attention(
    attention: &TransformerAttention,
    x: Tensor<2>,
    rows: &Rows,
    memory: &Memory,
) -> Tensor<2> {
    let d = attention.d_model();
    let dropout = weight_dropout(attention, &x.device());
    let (w, b) = (attention.in_proj_weight.val(), attention.in_proj_bias.val());
    let q = affine(x, w.clone().narrow(0, 0, d), b.clone().narrow(0, 0, d));
    let kv = affine(
        memory.x.clone(),
        w.narrow(0, d, 2 * d),
        b.narrow(0, d, 2 * d),
    );
    let context = packed_cross_attention(q, kv, attention.heads, dropout, rows.over(&memory.rows));
    let out = linear(&attention.out_proj, context);
    match &memory.blind {
        Some(blind) => out.mask_fill(blind.clone(), 0.0),
        None => out,
    }
}
