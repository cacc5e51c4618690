//! Multi-head attention over packed valid tokens as one fused operation:
//! [`packed_self_attention`] and [`packed_cross_attention`]; and a decoding step's attention
//! over a key/value cache, forward only: [`cached_attention_step`].
//!
//! The queries, keys and values of a batch come in packed (each row's valid tokens one after
//! the other, the rows' starts in per-row offsets), read in place from the projections'
//! outputs (no copy of each third of a fused projection), and
//! [`padless_kernels::attention_forward`] computes each row's attention over that row's keys
//! only, block by block with an online softmax: no `[batch, heads, t_query, t_key]` score
//! tensor exists, and padding costs nothing. The forward pass keeps the per-query
//! log-sum-exp; the backward pass, [`padless_kernels::attention_backward`], recomputes the
//! probabilities block by block from it. A query whose row has no key gets 0 and zero
//! gradients. Dropout on the attention weights, when asked, drops weights chosen by a hash
//! of a seed and their indices, the same in both passes.

use std::sync::Arc;

use burn::tensor::{Shape, Tensor};
use padless_kernels::attention::{
    AttentionConfig, AttentionDropout, AttentionGradients, AttentionOutput, PackedQkv,
    attention_backward, attention_forward,
};

use super::{BackwardInputs, Forward, FusedOp, HostFloat};
use crate::cpu::{self, HostData};

/// Where each row's tokens start in the packed buffers.
#[derive(Debug, Clone)]
pub(crate) struct RowOffsets {
    /// `[batch + 1]`: 0, then the running total of each row's valid queries.
    pub queries: Arc<[usize]>,
    /// `[batch + 1]`: 0, then the running total of each row's valid keys.
    pub keys: Arc<[usize]>,
}

/// The attention of packed queries, keys and values read in place from the projections'
/// outputs: [`SelfAttentionOp`] from one `[n, 3 d_model]` tensor, [`CrossAttentionOp`] from
/// the queries `[n_q, d_model]` and one `[n_k, 2 d_model]` tensor of keys and values. The
/// inputs and the output are kept for the backward pass; the log-sum-exp is the saved state.
#[derive(Debug, Clone)]
struct Attention {
    heads: usize,
    causal: bool,
    dropout: Option<AttentionDropout>,
    offsets: RowOffsets,
}

impl Attention {
    /// The kernel's configuration for tokens of `width = heads * d_head` values.
    fn config(&self, width: usize) -> AttentionConfig {
        let config = AttentionConfig::new(self.heads, width / self.heads)
            .with_causal(self.causal)
            .with_threads(cpu::threads());
        match self.dropout {
            Some(drop) => config.with_dropout(drop.rate, drop.seed),
            None => config,
        }
    }

    /// `q` (tokens `q_stride` apart) and `k`, `v` (`kv_stride` apart), from slices that start
    /// at each one's first value.
    fn packed<'a, T>(
        &'a self,
        [q, k, v]: [&'a [T]; 3],
        q_stride: usize,
        kv_stride: usize,
    ) -> PackedQkv<'a, T> {
        PackedQkv {
            q_stride,
            kv_stride,
            ..PackedQkv::new(q, k, v, &self.offsets.queries, &self.offsets.keys)
        }
    }

    fn forward<T: HostFloat>(
        &self,
        inputs: &PackedQkv<'_, T>,
        width: usize,
        keep: bool,
    ) -> Forward<T, Vec<T>> {
        let n_q = *self.offsets.queries.last().expect("offsets start at 0");
        let result = attention_forward(&self.config(width), inputs);
        Forward {
            values: result.out,
            shape: Shape::new([n_q, width]),
            saved: keep.then_some(result.lse),
        }
    }

    fn backward<T: HostFloat>(
        &self,
        inputs: &PackedQkv<'_, T>,
        width: usize,
        output: Option<HostData<T>>,
        lse: Vec<T>,
        grad: &HostData<T>,
    ) -> AttentionGradients<T> {
        let out = output.expect("the output is kept").into_vec();
        let forward = AttentionOutput { out, lse };
        attention_backward(&self.config(width), inputs, &forward, grad.as_slice())
    }
}

/// `parts` (each `[n, width]`) side by side: `[n, parts.len() width]`.
fn interleave_tokens<T: HostFloat>(parts: &[&[T]], width: usize) -> Vec<T> {
    let n = parts.first().map_or(0, |p| p.len() / width.max(1));
    let mut out = Vec::with_capacity(n * parts.len() * width);
    for t in 0..n {
        for part in parts {
            out.extend_from_slice(&part[t * width..(t + 1) * width]);
        }
    }
    out
}

/// Self-attention of the queries, keys and values in one `[n, 3 d_model]` tensor.
#[derive(Debug, Clone)]
struct SelfAttentionOp(Attention);

impl SelfAttentionOp {
    fn packed<'a, T: HostFloat>(&'a self, qkv: &'a [T], width: usize) -> PackedQkv<'a, T> {
        let at = |i: usize| &qkv[(i * width).min(qkv.len())..];
        self.0.packed([at(0), at(1), at(2)], 3 * width, 3 * width)
    }
}

impl FusedOp<1> for SelfAttentionOp {
    const NAME: &'static str = "the packed self-attention";
    const KEEP_INPUTS: [bool; 1] = [true];
    const KEEP_OUTPUT: bool = true;
    /// The log-sum-exp `[n_valid, heads]`.
    type Saved<T: HostFloat> = Vec<T>;

    fn forward<T: HostFloat>(&self, [qkv]: [HostData<T>; 1], keep: bool) -> Forward<T, Vec<T>> {
        let width = qkv.shape()[1] / 3;
        self.0
            .forward(&self.packed(qkv.as_slice(), width), width, keep)
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, Vec<T>, 1>) -> [Option<Vec<T>>; 1] {
        let [Some(qkv)] = args.inputs else {
            unreachable!("the projections are kept");
        };
        let width = qkv.shape()[1] / 3;
        let inputs = self.packed(qkv.as_slice(), width);
        let g = self
            .0
            .backward(&inputs, width, args.output, args.saved, &args.grad);
        [Some(interleave_tokens(&[&g.d_q, &g.d_k, &g.d_v], width))]
    }
}

/// Attention of queries `[n_q, d_model]` over keys and values in one `[n_k, 2 d_model]`
/// tensor.
#[derive(Debug, Clone)]
struct CrossAttentionOp(Attention);

impl CrossAttentionOp {
    fn packed<'a, T: HostFloat>(
        &'a self,
        q: &'a [T],
        kv: &'a [T],
        width: usize,
    ) -> PackedQkv<'a, T> {
        let v = &kv[width.min(kv.len())..];
        self.0.packed([q, kv, v], width, 2 * width)
    }
}

impl FusedOp<2> for CrossAttentionOp {
    const NAME: &'static str = "the packed cross-attention";
    const KEEP_INPUTS: [bool; 2] = [true, true];
    const KEEP_OUTPUT: bool = true;
    /// The log-sum-exp `[n_valid_q, heads]`.
    type Saved<T: HostFloat> = Vec<T>;

    fn forward<T: HostFloat>(&self, [q, kv]: [HostData<T>; 2], keep: bool) -> Forward<T, Vec<T>> {
        let width = q.shape()[1];
        self.0.forward(
            &self.packed(q.as_slice(), kv.as_slice(), width),
            width,
            keep,
        )
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, Vec<T>, 2>) -> [Option<Vec<T>>; 2] {
        let [Some(q), Some(kv)] = args.inputs else {
            unreachable!("the queries and the key-value projection are kept");
        };
        let width = q.shape()[1];
        let inputs = self.packed(q.as_slice(), kv.as_slice(), width);
        let g = self
            .0
            .backward(&inputs, width, args.output, args.saved, &args.grad);
        [
            Some(g.d_q),
            Some(interleave_tokens(&[&g.d_k, &g.d_v], width)),
        ]
    }
}

/// `softmax(q k^T / sqrt(d_head)) v` per row and head of packed queries over the same row's
/// keys (head `h` is features `h d_head .. (h + 1) d_head`; when `causal`, each query sees
/// its row's keys up to its own place), as one differentiable operation; a query of a row
/// without keys gets 0. With `dropout`, the weights it selects are dropped and the others
/// scaled by `1 / (1 - rate)`.
///
/// Here `q`, `k`, `v` are the three `d_model`-wide parts of each row of `qkv [n, 3 d_model]`
/// (one fused projection), read in place; the gradient comes back in the same layout.
///
/// The caller checks [`super::applies`] first (the flex backend, `f32` or `f64`, the fused
/// operations on); `d_model` is a multiple of `heads`.
pub(crate) fn packed_self_attention(
    qkv: Tensor<2>,
    heads: usize,
    causal: bool,
    dropout: Option<AttentionDropout>,
    offsets: RowOffsets,
) -> Tensor<2> {
    let attention = Attention {
        heads,
        causal,
        dropout,
        offsets,
    };
    super::apply(SelfAttentionOp(attention), [qkv.into_dispatch()])
}

/// As [`packed_self_attention`], for queries `q [n_q, d_model]` over keys and values that
/// are the two parts of each row of `kv [n_k, 2 d_model]`, not causal.
pub(crate) fn packed_cross_attention(
    q: Tensor<2>,
    kv: Tensor<2>,
    heads: usize,
    dropout: Option<AttentionDropout>,
    offsets: RowOffsets,
) -> Tensor<2> {
    let attention = Attention {
        heads,
        causal: false,
        dropout,
        offsets,
    };
    super::apply(
        CrossAttentionOp(attention),
        [q.into_dispatch(), kv.into_dispatch()],
    )
}

/// One decoding step's attention over a key/value cache
/// ([`padless_kernels::attention::cached_attention_step`]): inputs the queries `[batch,
/// d_model]`, the keys and values `[batch · heads, t_key, d_head]` and the keys' validity
/// `[batch, t_key]` as 1 or 0 (a stand-in of one value when every key is valid).
#[derive(Debug, Clone, Copy)]
struct CachedStepOp {
    heads: usize,
    masked: bool,
}

impl FusedOp<4> for CachedStepOp {
    const NAME: &'static str = "the cached attention step";
    type Saved<T: HostFloat> = ();

    fn forward<T: HostFloat>(
        &self,
        [q, keys, values, valid]: [HostData<T>; 4],
        _keep: bool,
    ) -> Forward<T, ()> {
        let [batch, width] = [q.shape()[0], q.shape()[1]];
        let valid: Option<Vec<bool>> = self
            .masked
            .then(|| valid.as_slice().iter().map(|&v| v != T::ZERO).collect());
        let d_head = width / self.heads;
        let values = padless_kernels::attention::cached_attention_step(
            q.as_slice(),
            keys.as_slice(),
            values.as_slice(),
            valid.as_deref(),
            (self.heads, d_head),
            1.0 / (d_head as f64).sqrt(),
            cpu::threads(),
        );
        Forward {
            values,
            shape: Shape::new([batch, width]),
            saved: None,
        }
    }

    fn backward<T: HostFloat>(&self, _args: BackwardInputs<T, (), 4>) -> [Option<Vec<T>>; 4] {
        unreachable!("{} runs only on devices without autodiff", Self::NAME)
    }
}

/// `softmax(q k^T / sqrt(d_head)) v` of one query step `q [batch, d_model]` per row and head
/// over that row's cached `keys`, `values [batch · heads, t_key, d_head]` (the keys `valid
/// [batch, t_key]`, 1 or 0, marks; all when `None`): `[batch, d_model]`, 0 for a row without
/// a valid key. Forward only.
///
/// The caller checks [`super::applies`] first and that the device has no autodiff; all
/// inputs have one float type.
pub(crate) fn cached_attention_step(
    q: Tensor<2>,
    keys: Tensor<3>,
    values: Tensor<3>,
    valid: Option<Tensor<2>>,
    heads: usize,
) -> Tensor<2> {
    let masked = valid.is_some();
    let valid = valid.unwrap_or_else(|| Tensor::zeros([1, 1], (&q.device(), q.dtype())));
    super::apply(
        CachedStepOp { heads, masked },
        [
            q.into_dispatch(),
            keys.into_dispatch(),
            values.into_dispatch(),
            valid.into_dispatch(),
        ],
    )
}
