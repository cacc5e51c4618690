//! Batched beam search for any [`StepDecoder`] (an [`EncoderDecoder`](super::EncoderDecoder),
//! a [`Transformer`](crate::transformer::Transformer)), alone or as an ensemble, with each
//! row's candidates and their scores ([`beam_decode_n_best`]) for rescoring.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use super::decode::{
    StepDecoder, check_encoded, check_ensemble, ensemble_scores, per_model, start_each,
};
use super::model::{BOS, EOS};
use crate::error::{Error, Result};
use crate::tensor_util::{f32_vec, int_tensor_from};

/// One row's candidates from [`beam_decode_n_best`]: `(score, tokens)`, best first; the
/// tokens without start or end symbol.
pub type Candidates = Vec<(f32, Vec<i64>)>;

/// Beam search with `width` hypotheses per row, batched over rows and beams. A hypothesis
/// ends when it emits [`EOS`]; a row stops when it holds `width` ended hypotheses or when its
/// best ended hypothesis beats every open one (scores only fall). The score is the sum of
/// log-probabilities; a row with no ended hypothesis after `max_len` steps returns its best
/// open one. Width 1 equals [`greedy_decode`](super::greedy_decode). Each hypothesis
/// carries its own decoder state (a Transformer's key/value cache), reordered with the beams.
///
/// # Errors
/// `width == 0`, or source ids out of range.
pub fn beam_decode<M: StepDecoder>(
    model: &M,
    source: Tensor<2, Int>,
    width: usize,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    beam_decode_ensemble(&[model], source, width, max_len)
}

/// [`beam_decode`] for an ensemble: a hypothesis scores the sum over its steps of the log of
/// the mean probability over `models` ([`ensemble_scores`]); each model keeps its own encoder
/// result and decoder states, reordered with the beams. One model decodes exactly as
/// [`beam_decode`].
///
/// # Errors
/// `width == 0`, no models, models whose `n_source_tokens` or `n_target_tokens` differ, or
/// source ids out of range.
pub fn beam_decode_ensemble<M: StepDecoder>(
    models: &[&M],
    source: Tensor<2, Int>,
    width: usize,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    Ok(beam_decode_n_best(models, source, width, max_len)?
        .into_iter()
        .map(|list| list.into_iter().next().map(|h| h.1).unwrap_or_default())
        .collect())
}

/// [`beam_decode_ensemble`]'s candidates: for each row, up to `width` hypotheses with their
/// scores (the sum of the steps' log mean probabilities, [`ensemble_scores`]), best first:
/// the ended ones, or the open ones of highest score where none ended within `max_len`
/// steps. The first of each row is what [`beam_decode_ensemble`] returns. For rescoring the
/// candidates with other models ([`sequence_log_probs`](super::sequence_log_probs)).
///
/// # Masking
/// As [`greedy_decode`](super::greedy_decode): padded source letters are invisible, so a row's candidates do not
/// depend on the batch.
///
/// # Errors
/// As [`beam_decode_ensemble`].
pub fn beam_decode_n_best<M: StepDecoder>(
    models: &[&M],
    source: Tensor<2, Int>,
    width: usize,
    max_len: usize,
) -> Result<Vec<Candidates>> {
    check_ensemble(models)?;
    check_width(width)?;
    let encoded = per_model(models.len(), |i| models[i].encode_source(source.clone()))?;
    beam_decode_n_best_encoded(models, encoded, width, max_len)
}

/// [`beam_decode_n_best`] from each model's encoder result of the source rows (`encoded[m]`
/// from `models[m]`'s [`StepDecoder::encode_source`]), as
/// [`greedy_decode_encoded`](super::greedy_decode_encoded).
///
/// # Errors
/// As [`beam_decode_n_best`], and a number of encoder results other than the number of
/// models, or results whose batches differ.
pub fn beam_decode_n_best_encoded<M: StepDecoder>(
    models: &[&M],
    encoded: Vec<M::Encoded>,
    width: usize,
    max_len: usize,
) -> Result<Vec<Candidates>> {
    let (batch, n_tokens) = check_encoded(models, &encoded)?;
    check_width(width)?;
    let device = M::device(&encoded[0]);
    // Start from each source row once (a Transformer projects its cross-attention keys and
    // values here), then repeat row `b` as rows `b * width .. (b + 1) * width`.
    let (encoded, states) = start_each(models, encoded)?;
    let rows = batch * width;
    let index: Vec<i64> = (0..rows).map(|r| (r / width) as i64).collect();
    let index = int_tensor_from(&index, [rows], &device);
    let encoded: Vec<M::Encoded> = encoded
        .iter()
        .map(|e| M::select_encoded(e, &index))
        .collect();
    let mut states: Vec<M::State> = states
        .into_iter()
        .map(|s| M::select_state(s, &index))
        .collect();
    let mut scores: Vec<f32> = (0..rows)
        .map(|r| {
            if r % width == 0 {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let mut hypotheses: Vec<Vec<i64>> = vec![Vec::new(); rows];
    let mut previous = vec![BOS; rows];
    let mut ended: Vec<Vec<(f32, Vec<i64>)>> = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    for _ in 0..max_len {
        let tokens = int_tensor_from(&previous, [rows], &device);
        let (step_scores, next) = ensemble_scores(models, tokens, &states, &encoded)?;
        let log_probs = f32_vec(if models.len() == 1 {
            log_softmax(step_scores, 1)
        } else {
            step_scores
        });
        let mut origin: Vec<i64> = (0..rows as i64).collect();
        for b in 0..batch {
            if done[b] {
                continue;
            }
            let mut candidates: Vec<(f32, usize, i64)> = Vec::with_capacity(width * n_tokens);
            for k in 0..width {
                let r = b * width + k;
                if scores[r].is_finite() {
                    for token in (EOS as usize)..n_tokens {
                        let lp = log_probs[r * n_tokens + token];
                        candidates.push((scores[r] + lp, r, token as i64));
                    }
                }
            }
            candidates.sort_by(|a, c| c.0.total_cmp(&a.0));
            let mut open = Vec::with_capacity(width);
            for (score, r, token) in candidates {
                if open.len() == width {
                    break;
                }
                if token == EOS {
                    if ended[b].len() < width {
                        ended[b].push((score, hypotheses[r].clone()));
                    }
                } else {
                    open.push((score, r, token));
                }
            }
            let best_open = open.first().map_or(f32::NEG_INFINITY, |o| o.0);
            let best_ended = ended[b]
                .iter()
                .map(|e| e.0)
                .fold(f32::NEG_INFINITY, f32::max);
            done[b] = ended[b].len() >= width || best_ended >= best_open;
            let old: Vec<Vec<i64>> = (0..width)
                .map(|k| hypotheses[b * width + k].clone())
                .collect();
            for k in 0..width {
                let r = b * width + k;
                match open.get(k) {
                    Some(&(score, from, token)) => {
                        let mut h = old[from - b * width].clone();
                        h.push(token);
                        hypotheses[r] = h;
                        scores[r] = score;
                        origin[r] = from as i64;
                        previous[r] = token;
                    }
                    None => {
                        scores[r] = f32::NEG_INFINITY;
                        previous[r] = EOS;
                    }
                }
            }
        }
        let order = int_tensor_from(&origin, [rows], &device);
        states = next
            .into_iter()
            .map(|s| M::select_state(s, &order))
            .collect();
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(ended
        .into_iter()
        .enumerate()
        .map(|(b, mut list)| {
            if list.is_empty() {
                list = (0..width)
                    .map(|k| b * width + k)
                    .filter(|&r| scores[r].is_finite())
                    .map(|r| (scores[r], hypotheses[r].clone()))
                    .collect();
            }
            // Among equal scores the one found last comes first (a stable sort of the
            // reversed list), as the single best pick always did.
            list.reverse();
            list.sort_by(|x, y| y.0.total_cmp(&x.0));
            list
        })
        .collect())
}

fn check_width(width: usize) -> Result<()> {
    if width == 0 {
        return Err(Error::config(
            "beam_decode",
            "the beam width must be at least 1",
        ));
    }
    Ok(())
}
