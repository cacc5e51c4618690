//! Parsing `cmudict.dict`: `word PH1 PH2 ...`, `word(2) ...` for alternates, `# comment`.
//!
//! Every phoneme must belong to a [`PhonemeSet`]: by default ARPAbet with stress digits
//! (the 84 symbols of `data/cmudict/cmudict.symbols`), or a set read from a file
//! ([`PhonemeSet::parse`]) for another dictionary. A UTF-8 byte-order mark at the start of the
//! text is not part of the first word.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{G2pError, Result};
use crate::vocab::TARGET_SPECIALS;

/// The ARPAbet vowels; each also comes with a stress digit 0, 1 or 2.
const VOWELS: [&str; 15] = [
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
];
/// The ARPAbet consonants (no stress digit).
const CONSONANTS: [&str; 24] = [
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
    "TH", "V", "W", "Y", "Z", "ZH",
];

/// The name of [`PhonemeSet::arpabet`] in errors.
const ARPABET: &str = "ARPAbet with stress digits";

/// The symbols a dictionary's pronunciations may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemeSet {
    symbols: BTreeSet<String>,
    /// Where the set came from, for errors (`ARPAbet with stress digits`, a file name).
    name: String,
}

impl PhonemeSet {
    /// ARPAbet with stress digits: 15 vowels, bare and with the digits 0, 1 and 2, and 24
    /// consonants (84 symbols, those of CMUdict's `cmudict.symbols`).
    pub fn arpabet() -> Self {
        let symbols = VOWELS
            .iter()
            .flat_map(|v| ["", "0", "1", "2"].map(|digit| format!("{v}{digit}")))
            .chain(CONSONANTS.iter().map(|c| c.to_string()))
            .collect();
        PhonemeSet {
            symbols,
            name: ARPABET.to_string(),
        }
    }

    /// A set from the text of a file: symbols separated by whitespace (one per line, as in
    /// `cmudict.symbols`), `#` starting a comment; `name` names it in errors.
    ///
    /// # Errors
    /// [`G2pError::Malformed`] for a symbol the target vocabulary reserves (`<pad>`, `<s>`,
    /// `</s>`), naming it and its line; [`G2pError::Config`] for a set without symbols.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut symbols = BTreeSet::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            for symbol in line.split_whitespace() {
                if TARGET_SPECIALS.contains(&symbol) {
                    return Err(G2pError::Malformed {
                        line: index + 1,
                        reason: format!(
                            "expected phoneme symbols, found `{symbol}`, which the phoneme vocabulary reserves ({})",
                            TARGET_SPECIALS.join(", ")
                        ),
                        text: raw.to_string(),
                    });
                }
                symbols.insert(symbol.to_string());
            }
        }
        if symbols.is_empty() {
            return Err(G2pError::Config(format!(
                "{name}: expected phoneme symbols separated by whitespace, found none"
            )));
        }
        Ok(PhonemeSet {
            symbols,
            name: name.to_string(),
        })
    }

    /// Whether `symbol` belongs to the set.
    pub fn contains(&self, symbol: &str) -> bool {
        self.symbols.contains(symbol)
    }

    /// The number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the set has no symbols (never true for a set built here).
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbols, in sorted order.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.symbols.iter().map(String::as_str)
    }
}

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

/// Parses the text of a `cmudict.dict` file with ARPAbet phonemes ([`parse_with`] and
/// [`PhonemeSet::arpabet`]).
///
/// # Errors
/// As [`parse_with`].
pub fn parse(text: &str, malformed: Malformed) -> Result<Dictionary> {
    parse_with(text, malformed, &PhonemeSet::arpabet())
}

/// Parses the text of a dictionary whose phonemes belong to `phonemes`. Blank lines and text
/// after `#` are ignored; `word(N)` adds an alternate pronunciation to `word`; a byte-order
/// mark at the start is skipped.
///
/// # Errors
/// With [`Malformed::Error`], the first malformed line: its number, what was expected and
/// what was found (a phoneme outside the set is named with its word).
pub fn parse_with(text: &str, malformed: Malformed, phonemes: &PhonemeSet) -> Result<Dictionary> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut words: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, phonemes) {
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

fn parse_line(line: &str, set: &PhonemeSet) -> std::result::Result<(String, Vec<String>), String> {
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
    if let Some(bad) = phonemes.iter().find(|p| !set.contains(p)) {
        let hint = if set.name == ARPABET {
            " (upper-case letters and a stress digit 0-2 on vowels)"
        } else {
            ""
        };
        return Err(format!(
            "expected phonemes of {}{hint}, found `{bad}` in the pronunciation of `{word}`",
            set.name
        ));
    }
    Ok((word.to_lowercase(), phonemes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arpabet_set_is_the_symbols_file_of_cmudict() {
        let file = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/cmudict/cmudict.symbols"
        ))
        .unwrap();
        let from_file = PhonemeSet::parse(&file, "cmudict.symbols").unwrap();
        let arpabet = PhonemeSet::arpabet();
        assert_eq!(arpabet.len(), 84);
        assert!(arpabet.symbols().eq(from_file.symbols()));
        assert!(arpabet.contains("AH0") && arpabet.contains("AH") && arpabet.contains("NG"));
        assert!(!arpabet.contains("NG1") && !arpabet.contains("AH3") && !arpabet.contains("ah0"));
    }

    #[test]
    fn an_unknown_phoneme_names_the_symbol_the_word_and_the_line() {
        let err = parse("cat K AE1 T\ndog D AO7 G\n", Malformed::Error).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("line 2: "), "{text}");
        assert!(
            text.contains("found `AO7` in the pronunciation of `dog`"),
            "{text}"
        );
        assert!(text.contains("ARPAbet with stress digits"), "{text}");
        // A consonant takes no stress digit.
        let err = parse("cat K1 AE1 T\n", Malformed::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`K1`"), "{err}");
    }

    #[test]
    fn a_custom_set_replaces_arpabet_and_may_not_hold_reserved_symbols() {
        let set = PhonemeSet::parse("\u{feff}k a t # a comment\nd o g\n", "ipa.txt").unwrap();
        assert_eq!(set.len(), 6);
        let dict = parse_with("cat k a t\ndog d o g\n", Malformed::Error, &set).unwrap();
        assert_eq!(dict.entries[0].pronunciations[0], ["k", "a", "t"]);
        let err = parse_with("cow k a w\n", Malformed::Error, &set)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected phonemes of ipa.txt, found `w` in the pronunciation of `cow`"),
            "{err}"
        );
        let err = PhonemeSet::parse("a b\nc </s>\n", "mine")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("line 2: ") && err.contains("`</s>`"),
            "{err}"
        );
        let err = PhonemeSet::parse("# nothing\n\n", "empty.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty.txt: expected phoneme symbols"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_word() {
        let dict = parse("\u{feff}cat K AE1 T\n", Malformed::Error).unwrap();
        assert_eq!(dict.entries[0].word, "cat");
    }
}
