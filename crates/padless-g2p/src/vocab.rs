//! [`Vocab`]: symbols to ids with the padding, start and end symbols in front.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A symbol table. Source vocabularies hold `<pad>` (0) then the characters; target
/// vocabularies hold `<pad>` (0), `<s>` (1, [`padless::seq2seq::BOS`]), `</s>` (2,
/// [`padless::seq2seq::EOS`]) then the phonemes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredVocab")]
pub struct Vocab {
    /// Symbol of each id.
    pub symbols: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, i64>,
}

/// A vocabulary as stored: its symbols; the index is rebuilt from them when read.
#[derive(Deserialize)]
struct StoredVocab {
    symbols: Vec<String>,
}

impl From<StoredVocab> for Vocab {
    fn from(stored: StoredVocab) -> Self {
        Vocab::from_symbols(stored.symbols)
    }
}

impl Vocab {
    /// A vocabulary of `specials` followed by `symbols` sorted and deduplicated.
    pub fn new(specials: &[&str], symbols: impl IntoIterator<Item = String>) -> Self {
        let mut sorted: Vec<String> = symbols.into_iter().collect();
        sorted.sort();
        sorted.dedup();
        let all = specials
            .iter()
            .map(|s| s.to_string())
            .chain(
                sorted
                    .into_iter()
                    .filter(|s| !specials.contains(&s.as_str())),
            )
            .collect();
        Vocab::from_symbols(all)
    }

    /// A vocabulary with exactly these symbols, id = position.
    pub fn from_symbols(symbols: Vec<String>) -> Self {
        let index = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as i64))
            .collect();
        Vocab { symbols, index }
    }

    /// The number of ids.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether there are no symbols.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The id of `symbol`.
    pub fn id(&self, symbol: &str) -> Option<i64> {
        self.index.get(symbol).copied()
    }

    /// The symbol of `id`.
    pub fn symbol(&self, id: i64) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.symbols.get(i))
            .map(String::as_str)
    }
}

/// The source vocabulary's specials.
pub const SOURCE_SPECIALS: [&str; 1] = ["<pad>"];
/// The target vocabulary's specials.
pub const TARGET_SPECIALS: [&str; 3] = ["<pad>", "<s>", "</s>"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vocabulary_read_back_finds_its_symbols() {
        let vocab = Vocab::new(&TARGET_SPECIALS, ["K", "AE1", "T"].map(String::from));
        let json = serde_json::to_string(&vocab).unwrap();
        assert_eq!(json, r#"{"symbols":["<pad>","<s>","</s>","AE1","K","T"]}"#);
        let read: Vocab = serde_json::from_str(&json).unwrap();
        assert_eq!(read, vocab);
        assert_eq!(read.id("K"), Some(4));
        assert_eq!(read.symbol(5), Some("T"));
    }
}
