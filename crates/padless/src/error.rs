//! The library's error type: every variant names what was expected and what was found.

use std::path::PathBuf;

/// Errors raised by padless layers, masks and weight files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor had the wrong shape.
    #[error("{what}: expected shape {expected}, found {found:?}")]
    Shape {
        /// What was being checked (a layer and argument name).
        what: String,
        /// The expected shape, written out (`[batch, time, 3]`).
        expected: String,
        /// The shape that was found.
        found: Vec<usize>,
    },
    /// A mask did not match the tensor it belongs to.
    #[error("{what}: mask has shape {found:?}, expected [batch, time] = {expected:?}")]
    MaskShape {
        /// What was being checked.
        what: String,
        /// `[batch, time]` of the input.
        expected: [usize; 2],
        /// The mask's shape.
        found: [usize; 2],
    },
    /// A sequence length was larger than the time axis.
    #[error("length {length} of row {row} does not fit in {max_time} time steps")]
    Length {
        /// The row index.
        row: usize,
        /// The length given for it.
        length: usize,
        /// The size of the time axis.
        max_time: usize,
    },
    /// A layer got the wrong kind of input (tokens, sequence or vector).
    #[error("{layer}: expected {expected} input, found {found}")]
    InputKind {
        /// The layer.
        layer: String,
        /// The kind it takes.
        expected: String,
        /// The kind it got.
        found: String,
    },
    /// A mask reached a layer that cannot honour it.
    #[error(
        "{layer} cannot honour the mask it receives; add DropMask before it to drop the mask on purpose"
    )]
    MaskDropped {
        /// The layer that would drop the mask.
        layer: String,
    },
    /// A layer was configured or called inconsistently.
    #[error("{layer}: {message}")]
    Config {
        /// The layer.
        layer: String,
        /// What is wrong.
        message: String,
    },
    /// A weight was missing, unexpected, or of the wrong shape.
    #[error("weight {name}: {message}")]
    Weight {
        /// The full weight name (`lstm/kernel`).
        name: String,
        /// What is wrong, with expected and found shapes.
        message: String,
    },
    /// A weight file could not be parsed.
    #[error("weight file {path}: {message}")]
    WeightFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A size from input needs more memory than the memory budget allows
    /// ([`crate::budget`]).
    #[error(
        "{what}: {count} need {needed}, more than the memory budget of {budget} (set PADLESS_MEMORY_BUDGET to change it)"
    )]
    OverBudget {
        /// What the size is for (a flag, a layer, a file).
        what: String,
        /// How many elements of how many bytes.
        count: String,
        /// The bytes they need, written out.
        needed: String,
        /// The budget, written out.
        budget: String,
    },
    /// The memory budget was set to something that is not a size.
    #[error("{message}")]
    Budget {
        /// What was expected and what was found.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for padless.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: &[usize],
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            found: found.to_vec(),
        }
    }

    pub(crate) fn config(layer: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            layer: layer.into(),
            message: message.into(),
        }
    }
}
