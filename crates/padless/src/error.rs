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
    /// Training met a loss that is NaN or infinite: the run diverged (or a batch holds values
    /// the model cannot take). [`CompileConfig::non_finite_loss`](crate::train::CompileConfig::non_finite_loss)
    /// can skip such batches instead.
    #[error(
        "the loss is {loss} at epoch {epoch}, batch {batch} (after {step} optimizer steps): training diverged; expected a finite loss (lower the learning rate, clip the gradients, or skip such batches with CompileConfig::non_finite_loss)"
    )]
    NonFiniteLoss {
        /// The loss found.
        loss: f64,
        /// The epoch, from 1.
        epoch: usize,
        /// The batch within the epoch, from 1.
        batch: usize,
        /// Optimizer steps taken before it.
        step: usize,
    },
    /// A model whose weights hold NaN or inf was about to be written.
    #[error(
        "{path}: weight {name} holds {value} at element {index}; expected finite weights, so the file is not written (the run diverged)"
    )]
    NonFiniteWeights {
        /// The file that was not written.
        path: PathBuf,
        /// The weight's name.
        name: String,
        /// The value found.
        value: f32,
        /// Its index among the weight's values.
        index: usize,
    },
    /// The memory budget was set to something that is not a size.
    #[error("{message}")]
    Budget {
        /// What was expected and what was found.
        message: String,
    },
    /// Reading or writing a file failed. The message names the file; the I/O error is the
    /// [`std::error::Error::source`], so a printed chain of causes shows it once.
    #[error("{}", path.display())]
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
        let err = Error::Io {
            path: PathBuf::from("runs/model.safetensors"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(err.to_string(), "runs/model.safetensors");
        assert_eq!(chain(&err), "runs/model.safetensors: no such file");
    }
}
