//! Transformer layers whose masks never see padding: [`PositionalEmbedding`] (positions
//! counted among a row's valid steps), [`TransformerEncoderLayer`] and
//! [`TransformerDecoderLayer`] (PyTorch's layers, weights and names), their stacks
//! [`TransformerEncoder`] and [`TransformerDecoder`], and the [`Transformer`]
//! encoder-decoder, a [`Model`](crate::Model) decoded one token at a time with a key/value
//! cache ([`DecoderState`]) by the decoders of [`seq2seq`](crate::seq2seq).
//!
//! Masks are [`Mask`](crate::Mask)s (true = valid) everywhere. A row's outputs do not depend
//! on the padding around it; masked output steps are exactly 0; a query that sees no key gets
//! 0 from its attention, never NaN; NaN or inf at masked input steps changes no output and no
//! gradient; the output mask is the query mask (`docs/SEMANTICS.md`, "Transformer layers").
//!
//! These layers run on burn tensors on any backend. On the flex CPU backend the stacks run
//! on packed valid tokens instead (`packed.rs`, [`packed_calls`]): every linear layer,
//! LayerNorm, residual and feed-forward block on the `[n_valid, d_model]` rows only, and
//! attention through the kernel of [`padless_kernels::attention`]; same values and gradients.

mod attention;
mod cache;
mod layer;
mod model;
mod names;
mod packed;
mod position;
mod stack;

pub use attention::TransformerAttention;
pub use cache::{DecoderState, KeyValues};
pub use layer::{
    LayerNorm, LayerOptions, Linear, TransformerDecoderLayer, TransformerEncoderLayer,
    TransformerLayerConfig,
};
pub use model::{TokenEmbedding, Transformer, TransformerConfig, TransformerEncoded};
pub use packed::packed_calls;
pub use position::{PositionKind, PositionalEmbedding};
pub use stack::{TransformerDecoder, TransformerEncoder};
