//! The deterministic train/validation/test split by word.

use crate::cmudict::Entry;

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
