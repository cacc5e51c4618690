//! The deterministic train/validation/test split by word.

use crate::cmudict::Entry;
use crate::error::{G2pError, Result};

/// Entries split by word: all pronunciations of a word fall on the same side.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// About 90% of the words.
    pub train: Vec<Entry>,
    /// About 5%.
    pub validation: Vec<Entry>,
    /// About 5%.
    pub test: Vec<Entry>,
}

/// One side of a [`Split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The training words.
    Train,
    /// The validation words.
    Validation,
    /// The test words.
    Test,
}

impl Side {
    /// `train`, `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Train => "train",
            Side::Validation => "validation",
            Side::Test => "test",
        }
    }
}

impl Split {
    /// The entries of `side`.
    pub fn side(&self, side: Side) -> &[Entry] {
        match side {
            Side::Train => &self.train,
            Side::Validation => &self.validation,
            Side::Test => &self.test,
        }
    }

    /// Checks that each of `sides` holds at least one word: a rate over no words would read
    /// as a perfect 0%.
    ///
    /// # Errors
    /// [`G2pError::EmptySplit`] naming the first empty side and the words of the whole split.
    pub fn require(&self, sides: &[Side]) -> Result<()> {
        let words = self.train.len() + self.validation.len() + self.test.len();
        match sides.iter().find(|&&side| self.side(side).is_empty()) {
            Some(&side) => Err(G2pError::EmptySplit {
                side: side.name(),
                words,
            }),
            None => Ok(()),
        }
    }
}

/// Splits `entries` by a seeded hash of each word: `h = FNV-1a-64(seed as 8 little-endian
/// bytes, then the word's UTF-8 bytes)`, then `h % 1000 < 900` goes to train, `< 950` to
/// validation, the rest to test. The side of a word depends only on the seed and the word
/// (not on the file order or the other words), so the split is reproducible anywhere and
/// word-disjoint by construction. Each side keeps the input order.
pub fn split_by_word(entries: &[Entry], seed: u64) -> Split {
    let mut split = Split::default();
    for entry in entries {
        let side = match word_hash(seed, &entry.word) % 1000 {
            0..900 => &mut split.train,
            900..950 => &mut split.validation,
            _ => &mut split.test,
        };
        side.push(entry.clone());
    }
    split
}

/// FNV-1a, 64 bits, over the seed's little-endian bytes then the word's bytes.
pub fn word_hash(seed: u64, word: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in seed.to_le_bytes().iter().chain(word.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(word: &str) -> Entry {
        Entry {
            word: word.to_string(),
            pronunciations: vec![vec!["AH0".to_string()]],
        }
    }

    #[test]
    fn an_empty_side_is_an_error_naming_it_and_the_words() {
        let split = Split {
            train: vec![entry("a"), entry("b")],
            validation: vec![entry("c")],
            test: Vec::new(),
        };
        assert!(split.require(&[Side::Train, Side::Validation]).is_ok());
        let err = split
            .require(&[Side::Train, Side::Test, Side::Validation])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the test split is empty") && err.contains("3 words"),
            "{err}"
        );
        assert_eq!(split.side(Side::Validation)[0].word, "c");
    }
}
