//! Encoder-decoder models for sequence pairs whose lengths differ: [`Attention`] over a
//! masked source, the [`EncoderDecoder`] model trained with teacher forcing and a target mask,
//! and batched [`greedy_decode`] and [`beam_decode`].

mod attention;
mod decode;
mod model;

pub use attention::{Attention, AttentionKind, AttentionMasks, AttentionOutput, masked_softmax};
pub use decode::{beam_decode, greedy_decode};
pub use model::{BOS, EOS, Encoded, EncoderDecoder, EncoderDecoderConfig, PAD};
