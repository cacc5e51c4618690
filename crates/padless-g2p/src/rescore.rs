//! Models of both reading directions pronounced together: a model trained right to left
//! ([`crate::train::TrainConfig::right_to_left`]) cannot share a decoding step with a
//! left-to-right one (their steps write different phonemes), so each direction proposes
//! candidates and every model scores every candidate ([`rescore_both_directions`]).

use burn::tensor::{Int, Tensor};
use padless::rnn::fused::side_by_side;
use padless::seq2seq::{
    EncoderDecoder, beam_decode_n_best, greedy_decode_ensemble, sequence_log_probs,
};
use padless::tensor_util::int_tensor_from;

use crate::error::Result;
use crate::model::G2p;

/// Pronounces each row of `source [batch, t_source]` with `models` of both directions. Each
/// direction's models, decoded together, propose their `width` best pronunciations (beam
/// search; greedy, one each, for `width` 1), taken in reading order. A word with one distinct
/// candidate (the directions agree) gets it; otherwise each model scores each candidate by its
/// log-probability (teacher forced, in the model's own direction: [`sequence_log_probs`]),
/// and the candidate with the highest sum over the models wins.
/// Returns phoneme ids in reading order.
///
/// # Masking
/// Padded letters are invisible to every proposal and score, so a word is pronounced the
/// same in any batch.
///
/// # Errors
/// As decoding: ids out of range, models whose vocabularies differ in size.
pub fn rescore_both_directions(
    models: &[G2p],
    source: Tensor<2, Int>,
    width: usize,
    max_len: usize,
) -> Result<Vec<Vec<i64>>> {
    let [batch, _] = source.dims();
    let device = source.device();
    let mut candidates: Vec<Vec<Vec<i64>>> = vec![Vec::new(); batch];
    // Each direction's proposals: its models decoded together.
    let propose = |right_to_left: bool| -> Result<Vec<Vec<Vec<i64>>>> {
        let group: Vec<&EncoderDecoder> = models
            .iter()
            .filter(|m| m.right_to_left == right_to_left)
            .map(|m| &m.network)
            .collect();
        if group.is_empty() {
            return Ok(Vec::new());
        }
        Ok(if width <= 1 {
            greedy_decode_ensemble(&group, source.clone(), max_len)?
                .into_iter()
                .map(|ids| vec![ids])
                .collect()
        } else {
            beam_decode_n_best(&group, source.clone(), width, max_len)?
                .into_iter()
                .map(|list| list.into_iter().map(|(_, ids)| ids).collect())
                .collect()
        })
    };
    // The two directions side by side, each on one core.
    let (forward, backward) = side_by_side(|| propose(false), || propose(true));
    for (right_to_left, proposals) in [(false, forward?), (true, backward?)] {
        for (row, list) in candidates.iter_mut().zip(proposals) {
            for mut ids in list {
                if right_to_left {
                    ids.reverse();
                }
                if !row.contains(&ids) {
                    row.push(ids);
                }
            }
        }
    }
    // One row per candidate of a word with two or more (where the directions agree there is
    // nothing to choose), each with its word's letters.
    let contested = |list: &Vec<Vec<i64>>| list.len() > 1;
    let owners: Vec<i64> = candidates
        .iter()
        .enumerate()
        .filter(|(_, list)| contested(list))
        .flat_map(|(b, list)| std::iter::repeat_n(b as i64, list.len()))
        .collect();
    if owners.is_empty() {
        return Ok(candidates
            .into_iter()
            .map(|mut list| list.remove(0))
            .collect());
    }
    let flat: Vec<Vec<i64>> = candidates
        .iter()
        .filter(|list| contested(list))
        .flatten()
        .cloned()
        .collect();
    let reversed: Vec<Vec<i64>> = flat
        .iter()
        .map(|ids| ids.iter().rev().copied().collect())
        .collect();
    let rows = source.select(0, int_tensor_from(&owners, [owners.len()], &device));
    // Each model's scores of all candidates, half of the models beside the other half.
    let score = |part: &[G2p]| -> Result<Vec<Vec<f32>>> {
        part.iter()
            .map(|model| {
                let sequences = if model.right_to_left {
                    &reversed
                } else {
                    &flat
                };
                Ok(sequence_log_probs(&model.network, rows.clone(), sequences)?)
            })
            .collect()
    };
    let (early, late) = models.split_at(models.len() / 2);
    let (early, late) = side_by_side(|| score(early), || score(late));
    let mut total = vec![0.0f64; flat.len()];
    for scores in early?.into_iter().chain(late?) {
        for (sum, score) in total.iter_mut().zip(scores) {
            *sum += f64::from(score);
        }
    }
    let mut at = 0;
    Ok(candidates
        .into_iter()
        .map(|mut list| {
            if !contested(&list) {
                return list.remove(0);
            }
            let scores = &total[at..at + list.len()];
            at += list.len();
            let best = (0..list.len())
                .max_by(|&x, &y| scores[x].total_cmp(&scores[y]))
                .unwrap_or(0);
            list.swap_remove(best)
        })
        .collect())
}
