//! Batched greedy and beam-search decoding for an [`EncoderDecoder`], alone or as an
//! ensemble of models decoded together (their next-token probabilities averaged).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use super::model::{BOS, EOS, Encoded, EncoderDecoder};
use crate::error::{Error, Result};
use crate::mask::{Mask, Padding};
use crate::rnn::fused::{kernel_threads, side_by_side};
use crate::sequence::{Truncating, pad_sequences};
use crate::tensor_util::{f32_vec, i64_vec, int_tensor_from};

/// Decodes each row of `source [batch, t_source]` by taking the most likely token (among
/// [`EOS`] and the output symbols; never padding or the start symbol) at every step, until it emits [`EOS`] or reaches `max_len` tokens. Returns the tokens of each row
/// without the start and end symbols.
///
/// # Masking
/// Padded source letters are invisible to the encoder and to attention, so a row decodes to
/// the same tokens in any batch, whatever padding it carries.
///
/// # Errors
/// Source ids out of range.
pub fn greedy_decode(
    model: &EncoderDecoder,
    source: Tensor<2, Int>,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    greedy_decode_ensemble(&[model], source, max_len)
}

/// [`greedy_decode`] for an ensemble: every step takes the token with the highest mean
/// probability over `models` (the log of that mean is [`ensemble_scores`]); each model keeps
/// its own encoder result and decoder states. One model decodes exactly as
/// [`greedy_decode`]. The models may differ in size and attention but must share the source
/// and target tokens.
///
/// # Masking
/// As [`greedy_decode`]: each model hides padded source letters from its encoder and
/// attention, so a row decodes the same in any batch.
///
/// # Errors
/// No models, models whose `n_source_tokens` or `n_target_tokens` differ, or source ids out
/// of range.
pub fn greedy_decode_ensemble(
    models: &[&EncoderDecoder],
    source: Tensor<2, Int>,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    check_ensemble(models)?;
    let [batch, _] = source.dims();
    let device = source.device();
    let mut encoded = per_model(models.len(), |i| models[i].encode(source.clone()))?;
    // Each model's running decoder states; the steps read only the keys and mask of `encoded`.
    let mut states: Vec<Vec<Tensor<2>>> = encoded
        .iter_mut()
        .map(|e| std::mem::take(&mut e.states))
        .collect();
    // The rows still decoding (indices into the batch): a row that has emitted EOS is dropped
    // from the next steps' work once enough rows have ended to make the copy pay.
    let mut rows: Vec<usize> = (0..batch).collect();
    let mut finished = vec![false; batch];
    let mut previous = vec![BOS; batch];
    let mut outputs = vec![Vec::new(); batch];
    for _ in 0..max_len {
        let n = rows.len();
        let tokens = int_tensor_from(&previous, [n], &device);
        let (scores, next) = ensemble_scores(models, tokens, &states, &encoded)?;
        states = next;
        // Padding and the start symbol are never outputs: the choice is among EOS and up.
        let n_tokens = scores.dims()[1];
        previous = i64_vec(
            scores
                .slice([0..n, EOS as usize..n_tokens])
                .argmax(1)
                .reshape([n]),
        )
        .into_iter()
        .map(|t| t + EOS)
        .collect();
        for (&row, &token) in rows.iter().zip(&previous) {
            if finished[row] {
                continue;
            }
            if token == EOS {
                finished[row] = true;
            } else {
                outputs[row].push(token);
            }
        }
        let open: Vec<usize> = (0..n).filter(|&i| !finished[rows[i]]).collect();
        if open.is_empty() {
            break;
        }
        if 8 * (n - open.len()) >= n {
            let index: Vec<i64> = open.iter().map(|&i| i as i64).collect();
            let index = int_tensor_from(&index, [open.len()], &device);
            encoded = encoded
                .into_iter()
                .map(|e| select_rows(e, &index))
                .collect();
            states = states
                .into_iter()
                .map(|s| select_states(s, &index))
                .collect();
            previous = open.iter().map(|&i| previous[i]).collect();
            rows = open.iter().map(|&i| rows[i]).collect();
        }
    }
    Ok(outputs)
}

/// One row's candidates from [`beam_decode_n_best`]: `(score, tokens)`, best first; the
/// tokens without start or end symbol.
pub type Candidates = Vec<(f32, Vec<i64>)>;

/// Beam search with `width` hypotheses per row, batched over rows and beams. A hypothesis
/// ends when it emits [`EOS`]; a row stops when it holds `width` ended hypotheses or when its
/// best ended hypothesis beats every open one (scores only fall). The score is the sum of
/// log-probabilities; a row with no ended hypothesis after `max_len` steps returns its best
/// open one. Width 1 equals [`greedy_decode`].
///
/// # Errors
/// `width == 0`, or source ids out of range.
pub fn beam_decode(
    model: &EncoderDecoder,
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
pub fn beam_decode_ensemble(
    models: &[&EncoderDecoder],
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
/// candidates with other models ([`sequence_log_probs`]).
///
/// # Masking
/// As [`greedy_decode`]: padded source letters are invisible, so a row's candidates do not
/// depend on the batch.
///
/// # Errors
/// As [`beam_decode_ensemble`].
pub fn beam_decode_n_best(
    models: &[&EncoderDecoder],
    source: Tensor<2, Int>,
    width: usize,
    max_len: usize,
) -> Result<Vec<Candidates>> {
    let n_tokens = check_ensemble(models)?;
    if width == 0 {
        return Err(Error::config(
            "beam_decode",
            "the beam width must be at least 1",
        ));
    }
    let [batch, _] = source.dims();
    let device = source.device();
    let encoded = per_model(models.len(), |i| {
        Ok(expand(models[i].encode(source.clone())?, width))
    })?;
    let rows = batch * width;
    let mut states: Vec<Vec<Tensor<2>>> = encoded.iter().map(|e| e.states.clone()).collect();
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
        states = next.into_iter().map(|s| select_states(s, &order)).collect();
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

/// One decoder step of every model of an ensemble from the previous tokens `[rows]`: the
/// next-token scores `[rows, n_target_tokens]` and each model's new states. With one model the
/// scores are its logits; with `M` models they are the log of the mean probability,
/// `log(Σ_m softmax(logits_m) / M)`, computed as a log-sum-exp of the models' log-softmaxes
/// (finite wherever one model gives a token a finite log-probability).
///
/// # Errors
/// As [`EncoderDecoder::step`].
pub fn ensemble_scores(
    models: &[&EncoderDecoder],
    tokens: Tensor<1, Int>,
    states: &[Vec<Tensor<2>>],
    encoded: &[Encoded],
) -> Result<(Tensor<2>, Vec<Vec<Tensor<2>>>)> {
    check_ensemble(models)?;
    if states.len() != models.len() || encoded.len() != models.len() {
        return Err(Error::config(
            "ensemble decoding",
            format!(
                "expected decoder states and an encoder result for each of the {} models, found {} and {}",
                models.len(),
                states.len(),
                encoded.len()
            ),
        ));
    }
    let (mut scores, next_states): (Vec<_>, Vec<_>) = per_model(models.len(), |i| {
        models[i].step(tokens.clone(), &states[i], &encoded[i])
    })?
    .into_iter()
    .unzip();
    if models.len() == 1 {
        let logits = scores.pop().expect("one model");
        return Ok((logits, next_states));
    }
    let log_probs: Vec<Tensor<2>> = scores.into_iter().map(|l| log_softmax(l, 1)).collect();
    let max = log_probs[1..]
        .iter()
        .fold(log_probs[0].clone(), |m, lp| m.max_pair(lp.clone()));
    let sum = log_probs
        .into_iter()
        .map(|lp| (lp - max.clone()).exp())
        .reduce(|a, b| a + b)
        .expect("two or more models");
    let mean = sum.log() + max - (models.len() as f32).ln();
    Ok((mean, next_states))
}

/// `work(i)` for each of `n` models, in order. When the fused kernels may use two threads
/// here, the models are split over this thread and one more ([`side_by_side`]), each running
/// its kernels on its own thread: two models' steps side by side keep both cores busier than
/// one model after the other with the kernels' thread pair. The results are the same either
/// way.
fn per_model<T: Send>(n: usize, work: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    if n < 2 || kernel_threads() < 2 {
        return (0..n).map(work).collect();
    }
    let half = n.div_ceil(2);
    let run = |range: std::ops::Range<usize>| range.map(&work).collect::<Vec<_>>();
    let (mine, theirs) = side_by_side(|| run(0..half), || run(half..n));
    mine.into_iter().chain(theirs).collect()
}

/// The target vocabulary size shared by `models`, once they are known to share their source
/// and target vocabulary sizes (ids the same models read and write must mean the same symbols,
/// which only the caller can know; the sizes are what can be checked here).
fn check_ensemble(models: &[&EncoderDecoder]) -> Result<usize> {
    let Some(first) = models.first() else {
        return Err(Error::config(
            "ensemble decoding",
            "expected at least one model, found none",
        ));
    };
    for (i, model) in models.iter().enumerate().skip(1) {
        for (what, theirs, mine) in [
            (
                "target",
                first.config.n_target_tokens,
                model.config.n_target_tokens,
            ),
            (
                "source",
                first.config.n_source_tokens,
                model.config.n_source_tokens,
            ),
        ] {
            if mine != theirs {
                return Err(Error::config(
                    "ensemble decoding",
                    format!(
                        "every model must have the same {what} tokens: model 0 has {theirs}, model {i} has {mine}"
                    ),
                ));
            }
        }
    }
    Ok(first.config.n_target_tokens)
}

/// Decoder states `[h, c, ..]` at the rows `index [rows]`.
fn select_states(states: Vec<Tensor<2>>, index: &Tensor<1, Int>) -> Vec<Tensor<2>> {
    states
        .into_iter()
        .map(|s| s.select(0, index.clone()))
        .collect()
}

/// Decoded sequences as a post-padded batch `[batch, t]` (`t` the longest, at least 1; id
/// [`PAD`](super::PAD) after each row's end) with the mask of their predicted lengths, so
/// they can be scored or fed on like any masked sequence: steps after a row's end are
/// padding.
///
/// # Errors
/// None for well-formed input; the `Result` carries tensor construction errors.
pub fn pad_decoded(
    sequences: &[Vec<i64>],
    device: &burn::tensor::Device,
) -> Result<(Tensor<2, Int>, Mask)> {
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let padded = pad_sequences(
        sequences,
        Some(longest.max(1)),
        super::PAD,
        Padding::Post,
        Truncating::Post,
    );
    let ids = int_tensor_from(&padded.values, [padded.batch, padded.time], device);
    Ok((ids, padded.mask(device)?))
}

/// Repeats each row of the encoder's result `width` times (row `b` becomes rows `b * width ..
/// (b + 1) * width`).
fn expand(encoded: Encoded, width: usize) -> Encoded {
    let [batch, _, _] = encoded.keys.dims();
    let device = encoded.keys.device();
    let index: Vec<i64> = (0..batch * width).map(|r| (r / width) as i64).collect();
    select_rows(encoded, &int_tensor_from(&index, [batch * width], &device))
}

/// The rows `index [rows]` of the encoder's result (keys, mask and states).
fn select_rows(encoded: Encoded, index: &Tensor<1, Int>) -> Encoded {
    Encoded {
        keys: encoded.keys.select(0, index.clone()),
        mask: encoded
            .mask
            .map(|m| Mask::from_valid(m.valid().int().select(0, index.clone()).equal_elem(1))),
        states: select_states(encoded.states, index),
    }
}
