//! Vocabularies: symbols to ids and back, built from the training data and saved beside the
//! checkpoints as `vocab.json`, so `evaluate` and `predict` read data exactly as `train` did.
//!
//! Ids 0, 1 and 2 are reserved ([`RESERVED`]): [`PAD`] (padding; `Embedding` with
//! `mask_zero` masks it), [`END`] (end of sequence: targets of fixed-length decoders end with
//! it and decoding stops there) and [`UNKNOWN`]. The data's symbols follow in order of first
//! appearance; the data may not use the reserved ones (the readers refuse them). A
//! `vocab.json` is checked when read: the reserved symbols first, no symbol twice, vectors at
//! least one number wide.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::data_files::{RawSeq, Record, Tokens};

/// The padding symbol (id 0).
pub const PAD: &str = "<pad>";
/// The end-of-sequence symbol (id 1).
pub const END: &str = "</s>";
/// The unknown symbol (id 2).
pub const UNKNOWN: &str = "<unk>";
/// The reserved symbols, in id order.
pub const RESERVED: [&str; 3] = [PAD, END, UNKNOWN];
/// The id of [`END`].
pub const END_ID: i64 = 1;
/// The checkpoint header entry holding the fingerprint of the vocabularies a run was trained
/// with ([`Vocabs::fingerprint`]).
pub const VOCAB_KEY: &str = "vocabularies";
/// The id of [`UNKNOWN`].
pub const UNKNOWN_ID: i64 = 2;
const FORMAT: &str = "padless-vocab-1";

/// What to do with a symbol that is not in the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownPolicy {
    /// Read it as `<unk>`.
    Map,
    /// Stop with an error naming the symbol and the line.
    Error,
}

/// Symbols and their ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredVocab", into = "Vec<String>")]
pub struct Vocab {
    symbols: Vec<String>,
    ids: HashMap<String, i64>,
}

/// A vocabulary as `vocab.json` stores it, checked before it becomes a [`Vocab`].
#[derive(Deserialize)]
#[serde(transparent)]
struct StoredVocab(Vec<String>);

impl TryFrom<StoredVocab> for Vocab {
    type Error = String;

    fn try_from(StoredVocab(symbols): StoredVocab) -> Result<Self, String> {
        if symbols.len() < RESERVED.len() || symbols[..RESERVED.len()] != RESERVED {
            let shown: Vec<&String> = symbols.iter().take(RESERVED.len()).collect();
            return Err(format!(
                "expected a vocabulary starting with the reserved symbols {RESERVED:?}, found {shown:?}"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (id, symbol) in symbols.iter().enumerate() {
            if symbol.is_empty() {
                return Err(format!(
                    "expected non-empty symbols, found an empty one at id {id}"
                ));
            }
            if !seen.insert(symbol) {
                return Err(format!(
                    "expected each symbol once, found {symbol:?} again at id {id}"
                ));
            }
        }
        Ok(Vocab::from(symbols))
    }
}

impl From<Vec<String>> for Vocab {
    fn from(symbols: Vec<String>) -> Self {
        let ids = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as i64))
            .collect();
        Vocab { symbols, ids }
    }
}

impl From<Vocab> for Vec<String> {
    fn from(vocab: Vocab) -> Self {
        vocab.symbols
    }
}

impl Vocab {
    /// The reserved symbols, then every symbol of `sequences` in order of first appearance.
    pub fn build<'a>(sequences: impl Iterator<Item = &'a [String]>) -> Self {
        let mut symbols: Vec<String> = RESERVED.map(String::from).to_vec();
        let mut seen: std::collections::HashSet<String> = symbols.iter().cloned().collect();
        for symbol in sequences.flatten() {
            if seen.insert(symbol.clone()) {
                symbols.push(symbol.clone());
            }
        }
        Vocab::from(symbols)
    }

    /// Symbols, the reserved ones included: the size of an embedding or a softmax over it.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// The symbol of `id` (`<unk>` for an id outside the vocabulary).
    pub fn symbol(&self, id: i64) -> &str {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.symbols.get(i))
            .map_or(UNKNOWN, String::as_str)
    }

    /// The ids of `symbols`; an unknown one becomes `<unk>` or an error, by `policy`.
    ///
    /// # Errors
    /// With [`UnknownPolicy::Error`], the first unknown symbol.
    pub fn encode(&self, symbols: &[String], policy: UnknownPolicy) -> Result<Vec<i64>> {
        symbols
            .iter()
            .map(|s| match (self.ids.get(s), policy) {
                (Some(&id), _) => Ok(id),
                (None, UnknownPolicy::Map) => Ok(UNKNOWN_ID),
                (None, UnknownPolicy::Error) => bail!(
                    "unknown symbol {s:?}: not in the training vocabulary (pass --unknown map to read it as {UNKNOWN})"
                ),
            })
            .collect()
    }
}

/// How one side (input or target) of the data is coded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Coding {
    /// Symbols through a vocabulary.
    Symbols {
        /// The vocabulary.
        vocab: Vocab,
    },
    /// Numeric vectors of a fixed width.
    Numbers {
        /// Numbers per step.
        features: usize,
    },
}

impl Coding {
    /// The coding of `side` of `records`: a vocabulary for symbols, the width for numbers.
    ///
    /// # Errors
    /// Records that mix symbols and numbers, or vectors of different widths, naming the line.
    pub fn build(records: &[Record], side: Side) -> Result<Self> {
        let seqs = records
            .iter()
            .filter_map(|r| side.of(r).map(|s| (r.line, s)));
        let mut first: Option<(usize, &RawSeq)> = None;
        for (line, seq) in seqs.clone() {
            match (first, seq) {
                (None, _) => first = Some((line, seq)),
                (Some((_, RawSeq::Symbols(_))), RawSeq::Symbols(_)) => {}
                (Some((l0, RawSeq::Numbers(a))), RawSeq::Numbers(b))
                    if a[0].len() != b[0].len() =>
                {
                    bail!(
                        "line {line}: expected {} vectors of {} numbers as on line {l0}, found {}",
                        side.name(),
                        a[0].len(),
                        b[0].len()
                    )
                }
                (Some((_, RawSeq::Numbers(_))), RawSeq::Numbers(_)) => {}
                (Some((l0, _)), _) => bail!(
                    "line {line}: expected {} of the same kind as on line {l0} (symbols or numbers), found the other kind",
                    side.name()
                ),
            }
        }
        Ok(match first {
            Some((_, RawSeq::Numbers(n))) => Coding::Numbers {
                features: n[0].len(),
            },
            _ => Coding::Symbols {
                vocab: Vocab::build(seqs.filter_map(|(_, s)| match s {
                    RawSeq::Symbols(s) => Some(s.as_slice()),
                    RawSeq::Numbers(_) => None,
                })),
            },
        })
    }

    /// The size the model sees: the vocabulary's or the vectors' width.
    pub fn size(&self) -> usize {
        match self {
            Coding::Symbols { vocab } => vocab.len(),
            Coding::Numbers { features } => *features,
        }
    }
}

/// Input or target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The input.
    Input,
    /// The target.
    Target,
}

impl Side {
    fn of(self, record: &Record) -> Option<&RawSeq> {
        match self {
            Side::Input => Some(&record.input),
            Side::Target => record.target.as_ref(),
        }
    }

    /// `"input"` or `"target"`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Input => "input",
            Side::Target => "target",
        }
    }
}

/// What `vocab.json` holds: how strings were split and how each side is coded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocabs {
    /// The file format (`padless-vocab-1`).
    pub format: String,
    /// How strings become symbols.
    pub tokens: Tokens,
    /// The inputs' coding.
    pub input: Coding,
    /// The targets' coding.
    pub target: Coding,
}

impl Vocabs {
    /// The codings of `records`' inputs and targets.
    ///
    /// # Errors
    /// As [`Coding::build`].
    pub fn build(records: &[Record], tokens: Tokens) -> Result<Self> {
        Ok(Vocabs {
            format: FORMAT.to_string(),
            tokens,
            input: Coding::build(records, Side::Input)?,
            target: Coding::build(records, Side::Target)?,
        })
    }

    /// A fingerprint of the vocabularies (FNV-1a, 64 bits, over their JSON), which `train`
    /// writes into every checkpoint's header ([`VOCAB_KEY`]) so that a checkpoint read
    /// beside another run's `vocab.json` is refused.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).expect("plain data serialises");
        let hash = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("fnv1a64:{hash:016x}")
    }

    /// Checks that `checkpoint` was trained with these vocabularies (read from `vocab`): its
    /// header's [`VOCAB_KEY`] must be their fingerprint. A checkpoint without one (written
    /// before checkpoints recorded it) is read with a warning.
    ///
    /// # Errors
    /// An unreadable checkpoint, or one trained with other vocabularies.
    pub fn check_checkpoint(&self, checkpoint: &Path, vocab: &Path) -> Result<()> {
        let header = padless::model::checkpoint_metadata(checkpoint)
            .with_context(|| format!("reading {}", checkpoint.display()))?;
        let mine = self.fingerprint();
        match header.get(VOCAB_KEY) {
            Some(found) if *found == mine => Ok(()),
            Some(found) => bail!(
                "{}: trained with other vocabularies (fingerprint {found}) than {} holds ({mine}); expected the vocab.json of the run that wrote the checkpoint",
                checkpoint.display(),
                vocab.display()
            ),
            None => {
                log::warn!(
                    "{} does not record its vocabularies; {} is taken on trust",
                    checkpoint.display(),
                    vocab.display()
                );
                Ok(())
            }
        }
    }

    /// Writes `path` atomically.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        padless::weights::write_atomically(path, &json)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `path` (a leading byte-order mark skipped).
    ///
    /// # Errors
    /// A missing or unreadable file, or one that [`Vocabs::parse`] refuses.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "reading {}: no such file (train writes it beside the checkpoints)",
                path.display()
            );
        }
        let text = crate::paths::read_text(path, 8)?;
        Vocabs::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The vocabularies in the text of a `vocab.json`.
    ///
    /// # Errors
    /// Invalid JSON, another format, a vocabulary without the reserved symbols first or with
    /// a symbol twice, or vectors of no numbers.
    pub fn parse(text: &str) -> Result<Self> {
        let vocabs: Vocabs = serde_json::from_str(crate::paths::strip_bom(text))?;
        if vocabs.format != FORMAT {
            bail!("expected format {FORMAT}, found {}", vocabs.format);
        }
        for (side, coding) in [("input", &vocabs.input), ("target", &vocabs.target)] {
            if let Coding::Numbers { features: 0 } = coding {
                bail!("{side}: expected vectors of at least 1 number, found \"features\": 0");
            }
        }
        Ok(vocabs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(s: &str) -> Vec<String> {
        s.chars().map(String::from).collect()
    }

    fn vocab_json(input: &str) -> String {
        format!(
            r#"{{"format": "padless-vocab-1", "tokens": "chars", "input": {input}, "target": {{"kind": "numbers", "features": 2}}}}"#
        )
    }

    #[test]
    fn a_stored_vocab_needs_the_reserved_symbols_first_and_each_symbol_once() {
        let good = vocab_json(r#"{"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "a"]}"#);
        let vocabs = Vocabs::parse(&format!("\u{feff}{good}")).unwrap();
        assert_eq!(vocabs.input.size(), 4);
        for (input, expected) in [
            (
                r#"{"kind": "symbols", "vocab": ["</s>", "<pad>", "<unk>", "a"]}"#,
                "starting with the reserved symbols",
            ),
            (
                r#"{"kind": "symbols", "vocab": ["<pad>"]}"#,
                "starting with the reserved symbols",
            ),
            (
                r#"{"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", "a", "b", "a"]}"#,
                "found \"a\" again at id 5",
            ),
            (
                r#"{"kind": "symbols", "vocab": ["<pad>", "</s>", "<unk>", ""]}"#,
                "an empty one at id 3",
            ),
            (
                r#"{"kind": "numbers", "features": 0}"#,
                "input: expected vectors of at least 1 number",
            ),
            (r#"{"kind": "numbers", "features": -1}"#, "invalid value"),
        ] {
            let err = format!("{:#}", Vocabs::parse(&vocab_json(input)).unwrap_err());
            assert!(err.contains(expected), "{input}: {err}");
        }
        let err = Vocabs::parse(&good.replace("padless-vocab-1", "other-2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected format padless-vocab-1, found other-2"),
            "{err}"
        );
    }

    #[test]
    fn a_vocab_reserves_pad_end_unknown_and_maps_or_rejects_unknown_symbols() {
        let vocab = Vocab::build([symbols("abca"), symbols("d")].iter().map(Vec::as_slice));
        assert_eq!(
            Vec::<String>::from(vocab.clone()),
            ["<pad>", "</s>", "<unk>", "a", "b", "c", "d"]
        );
        assert_eq!(
            vocab.encode(&symbols("dxa"), UnknownPolicy::Map).unwrap(),
            [6, 2, 3]
        );
        let err = vocab
            .encode(&symbols("dxa"), UnknownPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown symbol \"x\""), "{err}");
        assert_eq!(vocab.symbol(4), "b");
        assert_eq!(vocab.symbol(99), UNKNOWN);
        let json = serde_json::to_string(&vocab).unwrap();
        assert_eq!(serde_json::from_str::<Vocab>(&json).unwrap(), vocab);
    }
}
