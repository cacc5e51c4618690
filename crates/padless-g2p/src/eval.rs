//! Word and phoneme error rates of a [`G2p`] model on dictionary entries.

use std::time::Instant;

use burn::tensor::Device;
use padless::metrics::{error_rate, sequence_error_rate};

use crate::cmudict::Entry;
use crate::error::{G2pError, Result};
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
    /// [`EvalReport::wer`] with stress digits ignored on both sides ([`without_stress`]).
    pub wer_without_stress: f64,
    /// [`EvalReport::per`] with stress digits ignored on both sides ([`without_stress`]).
    pub per_without_stress: f64,
    /// The words whose output equals none of their references (`wer * words` of them), in
    /// the order of the entries.
    pub errors: Vec<WordError>,
}

/// A word that [`evaluate`] got wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct WordError {
    /// The word as spelled in the dictionary.
    pub word: String,
    /// The model's phonemes.
    pub output: Vec<String>,
    /// Every pronunciation the dictionary gives.
    pub references: Vec<Vec<String>>,
}

impl WordError {
    /// Whether the output's phonemes, stress digits aside, equal one of the references': only
    /// a stress digit is wrong (`AH0` against `AH1`, or a vowel's digit moved).
    pub fn stress_only(&self) -> bool {
        let output = without_stress(&self.output);
        self.references.iter().any(|r| without_stress(r) == output)
    }
}

/// The phonemes with their stress digits removed (`AH0` -> `AH`, `K` stays `K`): the
/// 39-phoneme ARPAbet that stress-free G2P results are scored in.
pub fn without_stress(phonemes: &[String]) -> Vec<String> {
    phonemes
        .iter()
        .map(|p| p.trim_end_matches(|c: char| c.is_ascii_digit()).to_string())
        .collect()
}

/// Word and phoneme error rates (`(wer, per)`, as [`EvalReport::wer`] and
/// [`EvalReport::per`]) with stress digits removed from outputs and references alike.
///
/// # Errors
/// When the number of outputs and reference lists differ, or a word has no reference.
pub fn rates_without_stress(
    outputs: &[Vec<String>],
    references: &[Vec<Vec<String>>],
) -> Result<(f64, f64)> {
    let outputs: Vec<Vec<String>> = outputs.iter().map(|o| without_stress(o)).collect();
    let references: Vec<Vec<Vec<String>>> = references
        .iter()
        .map(|refs| refs.iter().map(|r| without_stress(r)).collect())
        .collect();
    Ok((
        sequence_error_rate(&outputs, &references)?,
        error_rate(&outputs, &references)?,
    ))
}

impl EvalReport {
    /// How many of [`EvalReport::errors`] are wrong only in stress ([`WordError::stress_only`]).
    pub fn stress_only_errors(&self) -> usize {
        self.errors.iter().filter(|e| e.stress_only()).count()
    }
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
/// No entries, or unknown characters.
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
/// No entries (rates over no words would read as 0%), no models, models whose vocabularies
/// differ, or unknown characters.
pub fn evaluate_ensemble(
    models: &[G2p],
    entries: &[Entry],
    beam: usize,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    if entries.is_empty() {
        return Err(G2pError::Config(
            "expected at least one word to evaluate, found none".to_string(),
        ));
    }
    let words: Vec<String> = entries.iter().map(|e| e.word.clone()).collect();
    let start = Instant::now();
    let outputs = pronounce_ensemble(models, &words, beam, batch_size, device)?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let references: Vec<Vec<Vec<String>>> =
        entries.iter().map(|e| e.pronunciations.clone()).collect();
    let errors = entries
        .iter()
        .zip(&outputs)
        .filter(|(entry, output)| !entry.pronunciations.contains(output))
        .map(|(entry, output)| WordError {
            word: entry.word.clone(),
            output: output.clone(),
            references: entry.pronunciations.clone(),
        })
        .collect();
    let (wer_without_stress, per_without_stress) = rates_without_stress(&outputs, &references)?;
    Ok(EvalReport {
        words: words.len(),
        wer: sequence_error_rate(&outputs, &references)?,
        per: error_rate(&outputs, &references)?,
        words_per_second: words.len() as f64 / seconds,
        beam,
        wer_without_stress,
        per_without_stress,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phonemes(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn an_error_is_stress_only_when_the_phonemes_without_digits_match_a_reference() {
        let error = |output: &str, references: &[&str]| WordError {
            word: "w".to_string(),
            output: phonemes(output),
            references: references.iter().map(|r| phonemes(r)).collect(),
        };
        // The stress moved from the first vowel to the second.
        assert!(error("P ER0 M IH1 T", &["P ER1 M IH0 T"]).stress_only());
        // The second reference matches without digits.
        assert!(error("R IY0 D", &["R EH1 D", "R IY1 D"]).stress_only());
        // A vowel differs: not only stress.
        assert!(!error("R AE1 D", &["R EH1 D", "R IY1 D"]).stress_only());
        // A phoneme missing, one extra.
        assert!(!error("K AE1", &["K AE1 T"]).stress_only());
        assert!(!error("K AE1 T S", &["K AE1 T"]).stress_only());
    }

    #[test]
    fn rates_without_stress_ignore_the_digits_on_both_sides() {
        let outputs = vec![
            phonemes("P ER0 M IH1 T"), // stress moved: right without digits
            phonemes("R AE1 D"),       // one vowel wrong against either reference
            phonemes("K AE1 T"),       // right with digits
            phonemes("D AO1 G Z"),     // one phoneme extra and a digit wrong
        ];
        let references = vec![
            vec![phonemes("P ER1 M IH0 T")],
            vec![phonemes("R EH1 D"), phonemes("R IY1 D")],
            vec![phonemes("K AE1 T")],
            vec![phonemes("D AO2 G")],
        ];
        let (wer, per) = rates_without_stress(&outputs, &references).unwrap();
        // Two of four words wrong; edits 0 + 1 + 0 + 1 over lengths 5 + 3 + 3 + 3.
        assert_eq!(wer, 0.5);
        assert!((per - 2.0 / 14.0).abs() < 1e-12, "{per}");
        // With the digits, three words are wrong and the first word costs two edits.
        assert_eq!(sequence_error_rate(&outputs, &references).unwrap(), 0.75);
        assert!((error_rate(&outputs, &references).unwrap() - 5.0 / 14.0).abs() < 1e-12);
    }
}
