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
    /// A file that cannot be read or written. The message names the file; the I/O error is
    /// the [`std::error::Error::source`], so a printed chain of causes shows it once.
    #[error("{}", path.display())]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `err` and its causes, joined as `main`'s `{:#}` prints an error chain.
    fn chain(err: &dyn std::error::Error) -> String {
        let mut parts = vec![err.to_string()];
        let mut source = err.source();
        while let Some(cause) = source {
            parts.push(cause.to_string());
            source = cause.source();
        }
        parts.join(": ")
    }

    #[test]
    fn an_io_error_names_its_file_and_its_cause_once() {
        let err = G2pError::Io {
            path: PathBuf::from("g2p-model.safetensors"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(chain(&err), "g2p-model.safetensors: no such file");
        // A library error inside keeps its one mention of the cause too.
        let err = G2pError::from(padless::Error::Io {
            path: PathBuf::from("m.safetensors"),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        });
        assert_eq!(chain(&err), "m.safetensors: denied");
    }
}
