//! Encoder-decoder models for sequence pairs whose lengths differ: [`Attention`] and
//! [`MultiHeadAttention`] with key, query and causal masks, the [`EncoderDecoder`] model trained with teacher forcing and a target mask,
//! and batched [`greedy_decode`] and [`beam_decode`], also for ensembles of models decoded
//! together ([`greedy_decode_ensemble`], [`beam_decode_ensemble`]), with a beam's candidates
//! ([`beam_decode_n_best`]) and teacher-forced scores of given sequences
//! ([`sequence_log_probs`]) for rescoring; the `_encoded` variants start from an encoder
//! result computed once ([`EncoderDecoder::encode`]). The decoders run any [`StepDecoder`]:
//! the [`EncoderDecoder`] and the [`Transformer`](crate::transformer::Transformer).

mod attention;
mod beam;
mod decode;
mod model;
mod multi_head;
mod score;

pub use attention::{Attention, AttentionKind, AttentionMasks, AttentionOutput, masked_softmax};
pub use beam::{
    Candidates, beam_decode, beam_decode_ensemble, beam_decode_n_best, beam_decode_n_best_encoded,
};
pub use decode::{
    OutputScores, StepDecoder, ensemble_scores, greedy_decode, greedy_decode_encoded,
    greedy_decode_ensemble, greedy_decode_scored, pad_decoded,
};
pub use model::{BOS, EOS, Encoded, EncoderDecoder, EncoderDecoderConfig, PAD};
pub(crate) use model::{teacher_forced_loss, token_pair};
pub use multi_head::{MultiHeadAttention, MultiHeadOutput};
pub use score::{sequence_log_probs, sequence_log_probs_encoded};
