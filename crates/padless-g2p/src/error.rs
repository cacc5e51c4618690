//! [`G2pError`].

use std::path::PathBuf;

/// What can go wrong in G2P data, training and use.
#[derive(Debug, thiserror::Error)]
pub enum G2pError {
    /// A dictionary line that is not `word PHONEME...`.
    #[error("line {line}: {reason} (line: `{text}`)")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        reason: String,
        /// The line.
        text: String,
    },
    /// A word with characters the model has never seen.
    #[error("cannot pronounce `{word}`: {found} not in the model's alphabet ({alphabet})")]
    UnknownCharacters {
        /// The word.
        word: String,
        /// The unknown characters, quoted.
        found: String,
        /// The characters the model knows.
        alphabet: String,
    },
    /// A file that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A model file that does not hold what a G2P model needs.
    #[error("{}: {reason}", path.display())]
    BadModel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A side of the train/validation/test split without words.
    #[error(
        "the {side} split is empty: none of the dictionary's {words} words fell on it (the split by word is about 90/5/5); use more words"
    )]
    EmptySplit {
        /// `train`, `validation` or `test`.
        side: &'static str,
        /// Words over all three sides.
        words: usize,
    },
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// An error from the padless library.
    #[error(transparent)]
    Padless(#[from] padless::Error),
}

/// `Result` with [`G2pError`].
pub type Result<T, E = G2pError> = std::result::Result<T, E>;
