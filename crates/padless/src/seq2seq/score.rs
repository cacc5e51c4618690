//! Teacher-forced scores of given output sequences ([`sequence_log_probs`]), for rescoring
//! candidates that other models proposed: a model trained to write right to left scores the
//! reversed candidates of a left-to-right model's beam, and the other way round.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use super::model::{BOS, EOS, Encoded, EncoderDecoder, PAD};
use crate::error::{Error, Result};
use crate::tensor_util::{f32_vec, int_tensor_from};

/// The log-probability `log p(y_1 .. y_n EOS | source)` that `model` gives each row's
/// sequence `sequences[r] = [y_1 .. y_n]` (output tokens, without start or end symbol): the
/// sum over the `n + 1` steps of the log-softmax of the teacher-forced logits at the next
/// token. `source [batch, t_source]` holds one row per sequence. The same sum is what a beam
/// of this model alone scores the hypothesis ([`super::beam_decode_n_best`]), up to rounding.
///
/// # Masking
/// Padded source letters are invisible (as in decoding) and the decoder input is padded
/// after each sequence's end, where nothing is summed: a row's score does not depend on the
/// batch it is in.
///
/// # Errors
/// A number of sequences other than `batch`, a token that is not an output symbol (`EOS +
/// 1 .. n_target_tokens`), or source ids out of range.
pub fn sequence_log_probs(
    model: &EncoderDecoder,
    source: Tensor<2, Int>,
    sequences: &[Vec<i64>],
) -> Result<Vec<f32>> {
    let [batch, _] = source.dims();
    check_sequences(model, batch, sequences)?;
    if batch == 0 {
        return Ok(Vec::new());
    }
    sequence_log_probs_encoded(model, &model.encode(source)?, sequences)
}

/// [`sequence_log_probs`] from the model's encoder result of the source rows (one row per
/// sequence; [`Encoded::select_rows`] picks them from a decoded batch's result, so
/// candidates a model proposed are scored without encoding their words again).
///
/// # Masking
/// As [`sequence_log_probs`].
///
/// # Errors
/// As [`sequence_log_probs`], with `encoded`'s rows in place of the source rows.
pub fn sequence_log_probs_encoded(
    model: &EncoderDecoder,
    encoded: &Encoded,
    sequences: &[Vec<i64>],
) -> Result<Vec<f32>> {
    let batch = encoded.batch();
    check_sequences(model, batch, sequences)?;
    if batch == 0 {
        return Ok(Vec::new());
    }
    let steps = 1 + sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut input = vec![PAD; batch * steps];
    for (row, sequence) in input.chunks_mut(steps).zip(sequences) {
        row[0] = BOS;
        row[1..=sequence.len()].copy_from_slice(sequence);
    }
    let input = int_tensor_from(&input, [batch, steps], &encoded.keys.device());
    let (logits, _) = model.forward_encoded(encoded, input)?;
    let n_tokens = model.config.n_target_tokens;
    let log_p = f32_vec(log_softmax(logits, 2));
    Ok(sequences
        .iter()
        .enumerate()
        .map(|(r, sequence)| {
            let at =
                |step: usize, token: i64| log_p[(r * steps + step) * n_tokens + token as usize];
            let body: f64 = sequence
                .iter()
                .enumerate()
                .map(|(step, &token)| f64::from(at(step, token)))
                .sum();
            (body + f64::from(at(sequence.len(), EOS))) as f32
        })
        .collect())
}

/// One sequence per row, each of output tokens only.
fn check_sequences(model: &EncoderDecoder, batch: usize, sequences: &[Vec<i64>]) -> Result<()> {
    if sequences.len() != batch {
        return Err(Error::config(
            "sequence_log_probs",
            format!(
                "expected one sequence per source row ({batch}), found {}",
                sequences.len()
            ),
        ));
    }
    let n_tokens = model.config.n_target_tokens;
    for (r, sequence) in sequences.iter().enumerate() {
        if let Some(&bad) = sequence.iter().find(|&&t| t <= EOS || t >= n_tokens as i64) {
            return Err(Error::config(
                "sequence_log_probs",
                format!(
                    "sequence {r}: expected output tokens in {}..{n_tokens}, found {bad}",
                    EOS + 1
                ),
            ));
        }
    }
    Ok(())
}
