//! Multi-head attention over packed valid tokens as one fused operation:
//! [`packed_attention`].
//!
//! The queries, keys and values of a batch come in packed (`[n_valid, d_model]`, each row's
//! valid tokens one after the other, the rows' starts in per-row offsets), and
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
    AttentionConfig, AttentionDropout, AttentionOutput, PackedQkv, attention_backward,
    attention_forward,
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

/// The attention of packed `q`, `k`, `v` as a fused operation of three inputs, all kept for
/// the backward pass with the output; the log-sum-exp is the saved state.
#[derive(Debug, Clone)]
struct AttentionOp {
    heads: usize,
    causal: bool,
    dropout: Option<AttentionDropout>,
    offsets: RowOffsets,
}

impl AttentionOp {
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

    fn packed<'a, T>(&'a self, [q, k, v]: [&'a HostData<T>; 3]) -> PackedQkv<'a, T>
    where
        T: HostFloat,
    {
        PackedQkv {
            q: q.as_slice(),
            k: k.as_slice(),
            v: v.as_slice(),
            cu_seqlens_q: &self.offsets.queries,
            cu_seqlens_k: &self.offsets.keys,
        }
    }
}

impl FusedOp<3> for AttentionOp {
    const NAME: &'static str = "the packed attention";
    const KEEP_INPUTS: [bool; 3] = [true, true, true];
    const KEEP_OUTPUT: bool = true;
    /// The log-sum-exp `[n_valid_q, heads]`.
    type Saved<T: HostFloat> = Vec<T>;

    fn forward<T: HostFloat>(&self, [q, k, v]: [HostData<T>; 3], keep: bool) -> Forward<T, Vec<T>> {
        let [n_q, width] = [q.shape()[0], q.shape()[1]];
        let result = attention_forward(&self.config(width), &self.packed([&q, &k, &v]));
        Forward {
            values: result.out,
            shape: Shape::new([n_q, width]),
            saved: keep.then_some(result.lse),
        }
    }

    fn backward<T: HostFloat>(&self, args: BackwardInputs<T, Vec<T>, 3>) -> [Option<Vec<T>>; 3] {
        let [Some(q), Some(k), Some(v)] = args.inputs else {
            unreachable!("the queries, keys and values are kept");
        };
        let out = args.output.expect("the output is kept").into_vec();
        let forward = AttentionOutput {
            out,
            lse: args.saved,
        };
        let width = q.shape()[1];
        let g = attention_backward(
            &self.config(width),
            &self.packed([&q, &k, &v]),
            &forward,
            args.grad.as_slice(),
        );
        [Some(g.d_q), Some(g.d_k), Some(g.d_v)]
    }
}

/// `softmax(q k^T / sqrt(d_head)) v` per row and head of packed `q [n_valid_q, d_model]`, `k`,
/// `v [n_valid_k, d_model]` (head `h` is features `h d_head .. (h + 1) d_head`), each row's
/// queries over that row's keys (and, when `causal`, its keys up to the query's own place),
/// as one differentiable operation. A query of a row without keys gets 0. With `dropout`,
/// the weights it selects are dropped and the others scaled by `1 / (1 - rate)`.
///
/// The caller checks [`super::applies`] first (the flex backend, `f32` or `f64`, the fused
/// operations on); `q`, `k` and `v` have one float type, and `d_model` is a multiple of
/// `heads`.
pub(crate) fn packed_attention(
    [q, k, v]: [Tensor<2>; 3],
    heads: usize,
    causal: bool,
    dropout: Option<AttentionDropout>,
    offsets: RowOffsets,
) -> Tensor<2> {
    super::apply(
        AttentionOp {
            heads,
            causal,
            dropout,
            offsets,
        },
        [q.into_dispatch(), k.into_dispatch(), v.into_dispatch()],
    )
}
