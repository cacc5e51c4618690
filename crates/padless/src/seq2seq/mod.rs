//! Encoder-decoder models for sequence pairs whose lengths differ: [`Attention`] and
//! [`MultiHeadAttention`] with key, query and causal masks, the [`EncoderDecoder`] model trained with teacher forcing and a target mask,
//! and batched [`greedy_decode`] and [`beam_decode`], also for ensembles of models decoded
//! together ([`greedy_decode_ensemble`], [`beam_decode_ensemble`]).

mod attention;
mod decode;
mod model;
mod multi_head;

pub use attention::{Attention, AttentionKind, AttentionMasks, AttentionOutput, masked_softmax};
pub use decode::{
    beam_decode, beam_decode_ensemble, ensemble_scores, greedy_decode, greedy_decode_ensemble,
    pad_decoded,
};
pub use model::{BOS, EOS, Encoded, EncoderDecoder, EncoderDecoderConfig, PAD};
pub use multi_head::{MultiHeadAttention, MultiHeadOutput};
