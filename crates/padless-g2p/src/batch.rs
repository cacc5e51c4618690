//! Training pairs and length-bucketed batches.

use burn::tensor::{Device, Int, Tensor};
use padless::Value;
use padless::losses::{TargetMask, Targets};
use padless::seq2seq::{BOS, EOS};
use padless::train::{Batch, Inputs};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::cmudict::Entry;
use crate::error::{G2pError, Result};
use crate::model::{letter_ids, pad_rows};
use crate::vocab::Vocab;

/// One (spelling, pronunciation) pair as ids; a word with alternates gives several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Letter ids.
    pub letters: Vec<i64>,
    /// Phoneme ids, without start or end symbol.
    pub phonemes: Vec<i64>,
}

/// The pairs of `entries`, one per pronunciation.
///
/// # Errors
/// A character or phoneme outside the vocabularies.
pub fn make_pairs(entries: &[Entry], letters: &Vocab, phonemes: &Vocab) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for entry in entries {
        let letter_ids = letter_ids(letters, &entry.word)?;
        for pronunciation in &entry.pronunciations {
            let ids = pronunciation
                .iter()
                .map(|p| {
                    phonemes.id(p).ok_or_else(|| {
                        G2pError::Config(format!(
                            "phoneme `{p}` of `{}` is not in the phoneme vocabulary",
                            entry.word
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            pairs.push(Pair {
                letters: letter_ids.clone(),
                phonemes: ids,
            });
        }
    }
    Ok(pairs)
}

/// A padded batch for teacher forcing.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Letter ids `[batch, t_source]`, 0-padded.
    pub source: Tensor<2, Int>,
    /// `BOS p_1 .. p_n` `[batch, t_target]`, 0-padded.
    pub decoder_input: Tensor<2, Int>,
    /// `p_1 .. p_n EOS` `[batch, t_target]`, 0-padded.
    pub targets: Tensor<2, Int>,
    /// Valid target steps (phonemes + end symbol) in the batch.
    pub n_target_steps: usize,
    /// Each row's valid target steps (its phonemes + end symbol).
    pub target_lengths: Vec<usize>,
}

impl From<PairBatch> for Batch {
    /// The batch as the trainer takes it: inputs `[source, decoder_input]` (token ids, 0 is
    /// padding: the model's embeddings mask it), labels `targets` with their lengths.
    fn from(batch: PairBatch) -> Batch {
        let size = batch.target_lengths.len();
        let tokens = |ids| Value::Tokens { ids, mask: None };
        Batch {
            inputs: Inputs::new(vec![tokens(batch.source), tokens(batch.decoder_input)]),
            targets: Targets::Labels(batch.targets),
            target_mask: TargetMask::Lengths(batch.target_lengths),
            sample_weight: None,
            size,
        }
    }
}

/// Batches of `batch_size` pairs of similar spelling length (bucketing: sorted by length
/// with a seeded shuffle among equal lengths, cut into batches, batch order shuffled), so
/// that little work goes to padding. The same seed gives the same batches.
pub fn bucketed_batches(
    pairs: &[Pair],
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Vec<PairBatch> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(&mut rng);
    order.sort_by_key(|&i| pairs[i].letters.len());
    let mut chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
    chunks.shuffle(&mut rng);
    chunks
        .into_iter()
        .map(|chunk| {
            let selected: Vec<&Pair> = chunk.iter().map(|&i| &pairs[i]).collect();
            make_batch(&selected, device)
        })
        .collect()
}

/// One padded batch of `pairs`.
pub fn make_batch(pairs: &[&Pair], device: &Device) -> PairBatch {
    let source: Vec<Vec<i64>> = pairs.iter().map(|p| p.letters.clone()).collect();
    let input: Vec<Vec<i64>> = pairs
        .iter()
        .map(|p| {
            std::iter::once(BOS)
                .chain(p.phonemes.iter().copied())
                .collect()
        })
        .collect();
    let targets: Vec<Vec<i64>> = pairs
        .iter()
        .map(|p| {
            p.phonemes
                .iter()
                .copied()
                .chain(std::iter::once(EOS))
                .collect()
        })
        .collect();
    let target_lengths: Vec<usize> = targets.iter().map(Vec::len).collect();
    PairBatch {
        source: pad_rows(&source, device),
        decoder_input: pad_rows(&input, device),
        n_target_steps: target_lengths.iter().sum(),
        targets: pad_rows(&targets, device),
        target_lengths,
    }
}
