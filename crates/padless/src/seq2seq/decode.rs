//! Batched greedy decoding of any [`StepDecoder`] (an [`EncoderDecoder`], a
//! [`Transformer`](crate::transformer::Transformer)), alone or as an ensemble of models
//! decoded together (their next-token probabilities averaged), and the ensemble step and
//! checks that beam search ([`super::beam`]) shares.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};

use super::model::{BOS, EOS, Encoded, EncoderDecoder};
use crate::cpu::{side_by_side, threads};
use crate::error::{Error, Result};
use crate::mask::{Mask, Padding};
use crate::sequence::{Truncating, pad_sequences};
use crate::tensor_util::{f32_vec, i64_vec, int_tensor_from};

/// A model that decodes one token at a time: what [`greedy_decode`] and
/// [`beam_decode`](super::beam_decode) need of it. The source is encoded once
/// ([`StepDecoder::encode_source`], then [`StepDecoder::start`], which splits the result into
/// what every step reads and the decoder's first state); each step feeds one token per row
/// and returns the next token's logits with the state that carries everything the step
/// computed that later steps read (an LSTM's `[h, c]`, a Transformer's key/value cache).
/// Rows are selected from both, so finished rows can be dropped and beams reordered.
///
/// Token ids follow [`PAD`](super::PAD), [`BOS`], [`EOS`]: 0 is padding, 1 starts the
/// decoder, 2 ends an output.
pub trait StepDecoder: Sync {
    /// The encoder's result of a batch of source rows, read by every step.
    type Encoded: Clone + Send + Sync;
    /// What a step passes to the next, one row per sequence being decoded.
    type State: Send + Sync;

    /// The number of source token ids (`0..n`).
    fn n_source_tokens(&self) -> usize;

    /// The number of target token ids (`0..n`), the width of a step's logits.
    fn n_target_tokens(&self) -> usize;

    /// Runs the encoder over `source [batch, t_source]` (id 0 is padding).
    ///
    /// # Errors
    /// Source ids out of range, or rows the model cannot encode.
    fn encode_source(&self, source: Tensor<2, Int>) -> Result<Self::Encoded>;

    /// What every step reads of `encoded` (with anything computed once from it for all
    /// steps) and the decoder's state before the first step.
    ///
    /// # Errors
    /// An encoder result that does not belong to this model.
    fn start(&self, encoded: Self::Encoded) -> Result<(Self::Encoded, Self::State)>;

    /// One step: feeds `previous [rows]` (the start symbol first, then each row's last
    /// output) and returns the logits `[rows, n_target_tokens]` of the next token and the new
    /// state. The logits equal those of teacher forcing at the same step, up to rounding.
    ///
    /// # Errors
    /// Ids out of range or rows that differ from the state's and `encoded`'s.
    fn step_from(
        &self,
        previous: Tensor<1, Int>,
        state: &Self::State,
        encoded: &Self::Encoded,
    ) -> Result<(Tensor<2>, Self::State)>;

    /// The number of rows of `encoded`.
    fn rows(encoded: &Self::Encoded) -> usize;

    /// The device `encoded` lives on.
    fn device(encoded: &Self::Encoded) -> Device;

    /// The rows `index [rows]` of `encoded`, in the order of `index`; a row may repeat.
    fn select_encoded(encoded: &Self::Encoded, index: &Tensor<1, Int>) -> Self::Encoded;

    /// The rows `index [rows]` of `state`, in the order of `index`; a row may repeat.
    fn select_state(state: Self::State, index: &Tensor<1, Int>) -> Self::State;
}

/// The LSTM encoder-decoder decodes from its [`Encoded`] result; its state is each decoder
/// and post-attention layer's `[h, c]` ([`EncoderDecoder::step`]), taken from
/// [`Encoded::states`] by [`StepDecoder::start`].
impl StepDecoder for EncoderDecoder {
    type Encoded = Encoded;
    type State = Vec<Tensor<2>>;

    fn n_source_tokens(&self) -> usize {
        self.config.n_source_tokens
    }

    fn n_target_tokens(&self) -> usize {
        self.config.n_target_tokens
    }

    fn encode_source(&self, source: Tensor<2, Int>) -> Result<Encoded> {
        self.encode(source)
    }

    fn start(&self, mut encoded: Encoded) -> Result<(Encoded, Vec<Tensor<2>>)> {
        // The steps read only the keys and mask of `encoded`; the states move to the state.
        let states = std::mem::take(&mut encoded.states);
        Ok((encoded, states))
    }

    fn step_from(
        &self,
        previous: Tensor<1, Int>,
        state: &Vec<Tensor<2>>,
        encoded: &Encoded,
    ) -> Result<(Tensor<2>, Vec<Tensor<2>>)> {
        self.step(previous, state, encoded)
    }

    fn rows(encoded: &Encoded) -> usize {
        encoded.batch()
    }

    fn device(encoded: &Encoded) -> Device {
        encoded.keys.device()
    }

    fn select_encoded(encoded: &Encoded, index: &Tensor<1, Int>) -> Encoded {
        encoded.select_rows(index)
    }

    fn select_state(state: Vec<Tensor<2>>, index: &Tensor<1, Int>) -> Vec<Tensor<2>> {
        select_states(state, index)
    }
}

/// Decodes each row of `source [batch, t_source]` by taking the most likely token (among
/// [`EOS`] and the output symbols; never padding or the start symbol) at every step, until it emits [`EOS`] or reaches `max_len` tokens. Returns the tokens of each row
/// without the start and end symbols.
///
/// Any [`StepDecoder`] decodes this way: an [`EncoderDecoder`], or a
/// [`Transformer`](crate::transformer::Transformer), whose steps read its key/value cache so
/// that each step runs one token per row through the decoder.
///
/// # Masking
/// Padded source letters are invisible to the encoder and to attention, so a row decodes to
/// the same tokens in any batch, whatever padding it carries.
///
/// # Errors
/// Source ids out of range.
pub fn greedy_decode<M: StepDecoder>(
    model: &M,
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
pub fn greedy_decode_ensemble<M: StepDecoder>(
    models: &[&M],
    source: Tensor<2, Int>,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    check_ensemble(models)?;
    let encoded = per_model(models.len(), |i| models[i].encode_source(source.clone()))?;
    greedy_decode_encoded(models, encoded, max_len)
}

/// [`greedy_decode_ensemble`] from each model's encoder result of the source rows
/// (`encoded[m]` from `models[m]`'s [`StepDecoder::encode_source`], such as
/// [`EncoderDecoder::encode`]): for callers that encode once
/// and then both decode and score the same rows ([`sequence_log_probs_encoded`]).
///
/// # Masking
/// As [`greedy_decode`]: the encoder results carry the source mask, which attention keeps.
///
/// # Errors
/// As [`greedy_decode_ensemble`], and a number of encoder results other than the number of
/// models, or results whose batches differ.
///
/// [`sequence_log_probs_encoded`]: super::sequence_log_probs_encoded
pub fn greedy_decode_encoded<M: StepDecoder>(
    models: &[&M],
    encoded: Vec<M::Encoded>,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    Ok(greedy(models, encoded, max_len, false)?.0)
}

/// [`greedy_decode_encoded`] that also returns what each model gives each row's output:
/// `scores[m][row]` is `models[m]`'s `log p(tokens EOS | row)`, summed over the decoding
/// steps as they run (what [`sequence_log_probs_encoded`] computes by teacher forcing, up to
/// rounding), or `None` for a row that did not end within `max_len` tokens. A rescorer then
/// needs to score only the candidates the models did not propose themselves.
///
/// # Errors
/// As [`greedy_decode_encoded`].
///
/// [`sequence_log_probs_encoded`]: super::sequence_log_probs_encoded
pub fn greedy_decode_scored<M: StepDecoder>(
    models: &[&M],
    encoded: Vec<M::Encoded>,
    max_len: usize,
) -> Result<(Vec<Vec<i64>>, OutputScores)> {
    let (tokens, sums) = greedy(models, encoded, max_len, true)?;
    let scores = sums
        .into_iter()
        .map(|model| model.into_iter().map(|sum| sum.map(|s| s as f32)).collect())
        .collect();
    Ok((tokens, scores))
}

/// Each model's log-probability of each row's output, `scores[model][row]`, from
/// [`greedy_decode_scored`]: `None` for a row that did not end.
pub type OutputScores = Vec<Vec<Option<f32>>>;

/// The greedy loop; with `keep_scores`, each model's summed log-probability of each row's
/// tokens and end symbol (`None` until the row ends).
#[allow(clippy::type_complexity)]
fn greedy<M: StepDecoder>(
    models: &[&M],
    encoded: Vec<M::Encoded>,
    max_len: usize,
    keep_scores: bool,
) -> Result<(Vec<Vec<i64>>, Vec<Vec<Option<f64>>>)> {
    let (batch, _) = check_encoded(models, &encoded)?;
    let device = M::device(&encoded[0]);
    // What each model's steps read, and its running decoder state.
    let (mut encoded, mut states) = start_each(models, encoded)?;
    // The rows still decoding (indices into the batch): a row that has emitted EOS is dropped
    // from the next steps' work once enough rows have ended to make the copy pay.
    let mut rows: Vec<usize> = (0..batch).collect();
    let mut finished = vec![false; batch];
    let mut previous = vec![BOS; batch];
    let mut outputs = vec![Vec::new(); batch];
    let n_scored = if keep_scores { models.len() } else { 0 };
    let mut sums = vec![vec![0.0f64; batch]; n_scored];
    let mut ended = vec![vec![None; batch]; n_scored];
    for _ in 0..max_len {
        let n = rows.len();
        let tokens = int_tensor_from(&previous, [n], &device);
        let (scores, model_log_probs) = if keep_scores {
            let (logits, next) = step_each(models, tokens, &states, &encoded)?;
            states = next;
            let log_probs: Vec<Tensor<2>> = logits.into_iter().map(|l| log_softmax(l, 1)).collect();
            let scores = if models.len() == 1 {
                log_probs[0].clone()
            } else {
                mean_probability(log_probs.clone())
            };
            (scores, log_probs.into_iter().map(f32_vec).collect())
        } else {
            let (scores, next) = ensemble_scores(models, tokens, &states, &encoded)?;
            states = next;
            (scores, Vec::new())
        };
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
        for (i, (&row, &token)) in rows.iter().zip(&previous).enumerate() {
            if finished[row] {
                continue;
            }
            for (m, log_probs) in model_log_probs.iter().enumerate() {
                sums[m][row] += f64::from(log_probs[i * n_tokens + token as usize]);
                if token == EOS {
                    ended[m][row] = Some(sums[m][row]);
                }
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
                .iter()
                .map(|e| M::select_encoded(e, &index))
                .collect();
            states = states
                .into_iter()
                .map(|s| M::select_state(s, &index))
                .collect();
            previous = open.iter().map(|&i| previous[i]).collect();
            rows = open.iter().map(|&i| rows[i]).collect();
        }
    }
    Ok((outputs, ended))
}

/// One decoder step of every model of an ensemble from the previous tokens `[rows]`: the
/// next-token scores `[rows, n_target_tokens]` and each model's new states. With one model the
/// scores are its logits; with `M` models they are the log of the mean probability,
/// `log(Σ_m softmax(logits_m) / M)`, computed as a log-sum-exp of the models' log-softmaxes
/// (finite wherever one model gives a token a finite log-probability).
///
/// # Errors
/// As [`StepDecoder::step_from`].
pub fn ensemble_scores<M: StepDecoder>(
    models: &[&M],
    tokens: Tensor<1, Int>,
    states: &[M::State],
    encoded: &[M::Encoded],
) -> Result<(Tensor<2>, Vec<M::State>)> {
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
    let (mut scores, next_states) = step_each(models, tokens, states, encoded)?;
    if models.len() == 1 {
        let logits = scores.pop().expect("one model");
        return Ok((logits, next_states));
    }
    let log_probs = scores.into_iter().map(|l| log_softmax(l, 1)).collect();
    Ok((mean_probability(log_probs), next_states))
}

/// One decoder step of each model: its logits `[rows, n_target_tokens]` and new states.
fn step_each<M: StepDecoder>(
    models: &[&M],
    tokens: Tensor<1, Int>,
    states: &[M::State],
    encoded: &[M::Encoded],
) -> Result<(Vec<Tensor<2>>, Vec<M::State>)> {
    Ok(per_model(models.len(), |i| {
        models[i].step_from(tokens.clone(), &states[i], &encoded[i])
    })?
    .into_iter()
    .unzip())
}

/// Each model's [`StepDecoder::start`] on its encoder result: what its steps read and its
/// first state.
#[allow(clippy::type_complexity)]
pub(super) fn start_each<M: StepDecoder>(
    models: &[&M],
    encoded: Vec<M::Encoded>,
) -> Result<(Vec<M::Encoded>, Vec<M::State>)> {
    let started = models
        .iter()
        .zip(encoded)
        .map(|(model, encoded)| model.start(encoded))
        .collect::<Result<Vec<_>>>()?;
    Ok(started.into_iter().unzip())
}

/// `log(Σ_m exp(log_probs_m) / M)` for two or more models' log-softmaxes, as a log-sum-exp.
fn mean_probability(log_probs: Vec<Tensor<2>>) -> Tensor<2> {
    let count = log_probs.len();
    let max = log_probs[1..]
        .iter()
        .fold(log_probs[0].clone(), |m, lp| m.max_pair(lp.clone()));
    let sum = log_probs
        .into_iter()
        .map(|lp| (lp - max.clone()).exp())
        .reduce(|a, b| a + b)
        .expect("two or more models");
    sum.log() + max - (count as f32).ln()
}

/// `work(i)` for each of `n` models, in order. When the fused kernels may use two threads
/// here, the models are split over this thread and one more ([`side_by_side`]), each running
/// its kernels on its own thread: two models' steps side by side keep both cores busier than
/// one model after the other with the kernels' thread pair. The results are the same either
/// way.
pub(super) fn per_model<T: Send>(
    n: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    if n < 2 || threads() < 2 {
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
pub(super) fn check_ensemble<M: StepDecoder>(models: &[&M]) -> Result<usize> {
    let Some(first) = models.first() else {
        return Err(Error::config(
            "ensemble decoding",
            "expected at least one model, found none",
        ));
    };
    for (i, model) in models.iter().enumerate().skip(1) {
        for (what, theirs, mine) in [
            ("target", first.n_target_tokens(), model.n_target_tokens()),
            ("source", first.n_source_tokens(), model.n_source_tokens()),
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
    Ok(first.n_target_tokens())
}

/// The ensemble's checks ([`check_ensemble`]) and one encoder result per model, all of the
/// same rows: the batch and the shared target vocabulary size.
pub(super) fn check_encoded<M: StepDecoder>(
    models: &[&M],
    encoded: &[M::Encoded],
) -> Result<(usize, usize)> {
    let n_tokens = check_ensemble(models)?;
    if encoded.len() != models.len() {
        return Err(Error::config(
            "ensemble decoding",
            format!(
                "expected an encoder result for each of the {} models, found {}",
                models.len(),
                encoded.len()
            ),
        ));
    }
    let batch = M::rows(&encoded[0]);
    if let Some((m, e)) = encoded
        .iter()
        .enumerate()
        .find(|(_, e)| M::rows(e) != batch)
    {
        return Err(Error::config(
            "ensemble decoding",
            format!(
                "every encoder result must have the same rows: model 0's has {batch}, model {m}'s has {}",
                M::rows(e)
            ),
        ));
    }
    Ok((batch, n_tokens))
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
