//! Word and phoneme error rates of a [`G2p`] model on dictionary entries.

use std::time::Instant;

use burn::tensor::Device;
use padless::metrics::{error_rate, sequence_error_rate};

use crate::cmudict::Entry;
use crate::error::Result;
use crate::model::{G2p, pronounce_ensemble};

/// What [`evaluate`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Words evaluated.
    pub words: usize,
    /// Word error rate: the fraction of words whose output equals none of their references.
    pub wer: f64,
    /// Phoneme error rate: `Σ edit(output, closest reference) / Σ len(closest reference)`.
    pub per: f64,
    /// Decoding throughput.
    pub words_per_second: f64,
    /// Beam width (1 = greedy).
    pub beam: usize,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} words, {}: WER {:.2}%, PER {:.2}%, {:.0} words/s",
            self.words,
            if self.beam <= 1 {
                "greedy".to_string()
            } else {
                format!("beam {}", self.beam)
            },
            100.0 * self.wer,
            100.0 * self.per,
            self.words_per_second
        )
    }
}

/// Decodes every entry's word and scores it against all its pronunciations.
///
/// # Errors
/// Unknown characters.
pub fn evaluate(
    model: &G2p,
    entries: &[Entry],
    beam: usize,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    evaluate_ensemble(
        std::slice::from_ref(model),
        entries,
        beam,
        batch_size,
        device,
    )
}

/// [`evaluate`] for `models` decoded together ([`pronounce_ensemble`]).
///
/// # Errors
/// No models, models whose vocabularies differ, or unknown characters.
pub fn evaluate_ensemble(
    models: &[G2p],
    entries: &[Entry],
    beam: usize,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    let words: Vec<String> = entries.iter().map(|e| e.word.clone()).collect();
    let start = Instant::now();
    let outputs = pronounce_ensemble(models, &words, beam, batch_size, device)?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let references: Vec<Vec<Vec<String>>> =
        entries.iter().map(|e| e.pronunciations.clone()).collect();
    Ok(EvalReport {
        words: words.len(),
        wer: sequence_error_rate(&outputs, &references)?,
        per: error_rate(&outputs, &references)?,
        words_per_second: words.len() as f64 / seconds,
        beam,
    })
}
