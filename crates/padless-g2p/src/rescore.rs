//! Models of both reading directions pronounced together: a model trained right to left
//! ([`crate::train::TrainConfig::right_to_left`]) cannot share a decoding step with a
//! left-to-right one (their steps write different phonemes), so each direction proposes
//! candidates and every model scores every candidate ([`rescore_both_directions`]), each from
//! its encoder result computed once, and its own direction's proposals by the sums its
//! decoding steps gave them where they did.

use burn::tensor::{Int, Tensor};
use padless::cpu::side_by_side;
use padless::seq2seq::{
    Encoded, EncoderDecoder, beam_decode_n_best_encoded, greedy_decode_scored,
    sequence_log_probs_encoded,
};
use padless::tensor_util::int_tensor_from;

use crate::error::{G2pError, Result};
use crate::model::G2p;

/// Pronounces each row of `source [batch, t_source]` with `models` of both directions. Each
/// direction's models, decoded together, propose their `width` best pronunciations (beam
/// search; greedy, one each, for `width` 1), taken in reading order. A word with one distinct
/// candidate (the directions agree) gets it; otherwise each model scores each candidate by its
/// log-probability (in the model's own direction: [`sequence_log_probs_encoded`] from the
/// encoder result its proposals used, or, for its own direction's proposals where its
/// decoding steps already summed it, that sum: greedy ([`greedy_decode_scored`]) and a
/// one-model beam's ended candidates), and the candidate with the highest sum over the
/// models wins.
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
    let group = |right_to_left: bool| -> Vec<usize> {
        (0..models.len())
            .filter(|&m| models[m].right_to_left == right_to_left)
            .collect()
    };
    let (forward_models, backward_models) = (group(false), group(true));
    // The two directions side by side, each on one core; each model's encoder result serves
    // both its direction's proposals and its scores.
    let (forward, backward) = side_by_side(
        || propose(models, &forward_models, &source, width, max_len),
        || propose(models, &backward_models, &source, width, max_len),
    );
    let (forward, backward) = (forward?, backward?);
    // Each word's distinct candidates in reading order, with the scores already known.
    let mut candidates: Vec<Vec<Candidate>> = vec![Vec::new(); batch];
    for (members, proposals) in [(&forward_models, &forward), (&backward_models, &backward)] {
        for (row, list) in proposals.lists.iter().enumerate() {
            for (k, ids) in list.iter().enumerate() {
                let mut ids = ids.clone();
                if proposals.right_to_left {
                    ids.reverse();
                }
                let at = match candidates[row].iter().position(|c| c.ids == ids) {
                    Some(at) => at,
                    None => {
                        candidates[row].push(Candidate {
                            ids,
                            known: vec![None; models.len()],
                        });
                        candidates[row].len() - 1
                    }
                };
                for (slot, &m) in members.iter().enumerate() {
                    let own = proposals.own_scores.get(slot);
                    if let Some(score) = own.and_then(|s| s[row].get(k).copied().flatten()) {
                        candidates[row][at].known[m] = Some(score);
                    }
                }
            }
        }
    }
    // Each model scores the candidates of contested words (two or more candidates; where the
    // directions agree there is nothing to choose) whose score it does not know, from its
    // encoder result at their words' rows; half of the models beside the other half.
    let encoded_of = |m: usize| -> &Encoded {
        let (members, proposals) = if models[m].right_to_left {
            (&backward_models, &backward)
        } else {
            (&forward_models, &forward)
        };
        let slot = members.iter().position(|&x| x == m).expect("a member");
        &proposals.encoded[slot]
    };
    let score = |part: &[usize]| -> Result<Vec<Vec<f32>>> {
        part.iter()
            .map(|&m| {
                let (owners, sequences): (Vec<i64>, Vec<Vec<i64>>) = candidates
                    .iter()
                    .enumerate()
                    .filter(|(_, list)| list.len() > 1)
                    .flat_map(|(row, list)| {
                        list.iter()
                            .filter(|c| c.known[m].is_none())
                            .map(move |c| (row as i64, c.ids.clone()))
                    })
                    .map(|(row, mut ids)| {
                        if models[m].right_to_left {
                            ids.reverse();
                        }
                        (row, ids)
                    })
                    .unzip();
                if owners.is_empty() {
                    return Ok(Vec::new());
                }
                let index = int_tensor_from(&owners, [owners.len()], &device);
                let rows = encoded_of(m).select_rows(&index);
                Ok(sequence_log_probs_encoded(
                    lstm_of(&models[m])?,
                    &rows,
                    &sequences,
                )?)
            })
            .collect()
    };
    let all: Vec<usize> = (0..models.len()).collect();
    let (early, late) = all.split_at(models.len() / 2);
    let (early, late) = side_by_side(|| score(early), || score(late));
    let computed: Vec<Vec<f32>> = early?.into_iter().chain(late?).collect();
    // Fill in the computed scores in the order they were listed.
    for (m, scores) in computed.into_iter().enumerate() {
        let mut scores = scores.into_iter();
        for list in candidates.iter_mut().filter(|list| list.len() > 1) {
            for candidate in list.iter_mut().filter(|c| c.known[m].is_none()) {
                candidate.known[m] = scores.next();
            }
        }
    }
    Ok(candidates
        .into_iter()
        .map(|mut list| {
            if list.len() == 1 {
                return list.remove(0).ids;
            }
            let total = |c: &Candidate| -> f64 {
                c.known
                    .iter()
                    .map(|s| f64::from(s.expect("every score known")))
                    .sum()
            };
            let best = (0..list.len())
                .max_by(|&x, &y| total(&list[x]).total_cmp(&total(&list[y])))
                .unwrap_or(0);
            list.swap_remove(best).ids
        })
        .collect())
}

/// One candidate pronunciation of a word (reading order) with each model's score of it where
/// known.
#[derive(Clone)]
struct Candidate {
    ids: Vec<i64>,
    known: Vec<Option<f32>>,
}

/// One direction's proposals: its models' encoder results, each row's candidates (in the
/// direction's own order), and the scores the decoding already gave them:
/// `own_scores[slot][row][k]` is the direction's model `slot`'s log-probability of the
/// row's candidate `k` where known (greedy: every model's of its one candidate; a beam of one
/// model: its ended candidates'; a beam of several models scores by their mean, so none).
struct Proposals {
    right_to_left: bool,
    encoded: Vec<Encoded>,
    lists: Vec<Vec<Vec<i64>>>,
    own_scores: Vec<Vec<Vec<Option<f32>>>>,
}

/// The proposals of the models `members` (of one direction) decoded together.
fn propose(
    models: &[G2p],
    members: &[usize],
    source: &Tensor<2, Int>,
    width: usize,
    max_len: usize,
) -> Result<Proposals> {
    let right_to_left = members.first().is_some_and(|&m| models[m].right_to_left);
    if members.is_empty() {
        return Ok(Proposals {
            right_to_left,
            encoded: Vec::new(),
            lists: Vec::new(),
            own_scores: Vec::new(),
        });
    }
    let networks: Vec<&EncoderDecoder> = members
        .iter()
        .map(|&m| lstm_of(&models[m]))
        .collect::<Result<_>>()?;
    let encoded = networks
        .iter()
        .map(|network| network.encode(source.clone()))
        .collect::<padless::Result<Vec<_>>>()?;
    let (lists, own_scores) = if width <= 1 {
        let (tokens, scores) = greedy_decode_scored(&networks, encoded.clone(), max_len)?;
        let scores = scores
            .into_iter()
            .map(|model| model.into_iter().map(|score| vec![score]).collect())
            .collect();
        (tokens.into_iter().map(|ids| vec![ids]).collect(), scores)
    } else {
        let n_best = beam_decode_n_best_encoded(&networks, encoded.clone(), width, max_len)?;
        // One model's beam scores are its own log-probabilities; a hypothesis of `max_len`
        // tokens has not ended and lacks the end symbol's term.
        let scores = if networks.len() == 1 {
            let ended = |(score, ids): &(f32, Vec<i64>)| (ids.len() < max_len).then_some(*score);
            vec![
                n_best
                    .iter()
                    .map(|list| list.iter().map(ended).collect())
                    .collect(),
            ]
        } else {
            Vec::new()
        };
        let lists = n_best
            .into_iter()
            .map(|list| list.into_iter().map(|(_, ids)| ids).collect())
            .collect();
        (lists, scores)
    };
    Ok(Proposals {
        right_to_left,
        encoded,
        lists,
        own_scores,
    })
}

/// The LSTM network of `model`: rescoring candidates by teacher forcing reads an
/// [`EncoderDecoder`]'s encoder results.
///
/// # Errors
/// A model of another family.
fn lstm_of(model: &G2p) -> Result<&EncoderDecoder> {
    model.network.lstm().ok_or_else(|| {
        G2pError::Config(format!(
            "rescoring both directions takes LSTM models, found a {} model",
            model.network.family()
        ))
    })
}
