//! Parsing `cmudict.dict`: `word PH1 PH2 ...`, `word(2) ...` for alternates, `# comment`.

use std::collections::BTreeMap;

use crate::error::{G2pError, Result};

/// What to do with a line that is not `word PHONEME...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Malformed {
    /// Stop with an error naming the line number (default).
    #[default]
    Error,
    /// Skip the line and count it in [`Dictionary::skipped`].
    Skip,
}

/// A word and all its pronunciations, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The word, lower-case, as spelled in the dictionary (letters, `'`, `-`, `.`, digits).
    pub word: String,
    /// ARPAbet phonemes with stress digits (`AH0`), one list per pronunciation.
    pub pronunciations: Vec<Vec<String>>,
}

/// The parsed dictionary, words in alphabetical order.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    /// One entry per distinct word.
    pub entries: Vec<Entry>,
    /// Skipped malformed lines: `(line number, reason)` (with [`Malformed::Skip`]).
    pub skipped: Vec<(usize, String)>,
}

impl Dictionary {
    /// The number of pronunciations over all words.
    pub fn n_pronunciations(&self) -> usize {
        self.entries.iter().map(|e| e.pronunciations.len()).sum()
    }
}

/// Parses the text of a `cmudict.dict` file. Blank lines and text after `#` are ignored;
/// `word(N)` adds an alternate pronunciation to `word`.
///
/// # Errors
/// With [`Malformed::Error`], the first malformed line: its number, what was expected and
/// what was found.
pub fn parse(text: &str, malformed: Malformed) -> Result<Dictionary> {
    let mut words: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((word, phonemes)) => words.entry(word).or_default().push(phonemes),
            Err(reason) => match malformed {
                Malformed::Error => {
                    return Err(G2pError::Malformed {
                        line: line_number,
                        reason,
                        text: raw.to_string(),
                    });
                }
                Malformed::Skip => skipped.push((line_number, reason)),
            },
        }
    }
    Ok(Dictionary {
        entries: words
            .into_iter()
            .map(|(word, pronunciations)| Entry {
                word,
                pronunciations,
            })
            .collect(),
        skipped,
    })
}

fn parse_line(line: &str) -> std::result::Result<(String, Vec<String>), String> {
    let mut fields = line.split_whitespace();
    let head = fields.next().expect("a non-empty line has a field");
    let word = match head.find('(') {
        Some(open) => {
            let index = &head[open + 1..];
            let valid = index
                .strip_suffix(')')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !valid || open == 0 {
                return Err(format!(
                    "expected `word` or `word(N)` first, found `{head}`"
                ));
            }
            &head[..open]
        }
        None => head,
    };
    let phonemes: Vec<String> = fields.map(str::to_string).collect();
    if phonemes.is_empty() {
        return Err(format!("expected phonemes after `{head}`, found none"));
    }
    if let Some(bad) = phonemes.iter().find(|p| !is_phoneme(p)) {
        return Err(format!(
            "expected ARPAbet phonemes (upper-case letters and an optional stress digit 0-2), found `{bad}`"
        ));
    }
    Ok((word.to_lowercase(), phonemes))
}

fn is_phoneme(p: &str) -> bool {
    let letters = p.trim_end_matches(['0', '1', '2']);
    !letters.is_empty()
        && p.len() - letters.len() <= 1
        && letters.bytes().all(|b| b.is_ascii_uppercase())
}
