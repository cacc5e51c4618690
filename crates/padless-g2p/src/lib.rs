//! Grapheme-to-phoneme conversion on the CMU Pronouncing Dictionary: letters in, ARPAbet
//! phonemes with stress digits out, with padless's
//! [`EncoderDecoder`](padless::seq2seq::EncoderDecoder): a bidirectional LSTM encoder whose mask makes padded
//! letters invisible, an LSTM decoder with attention over the encoder outputs that respects
//! that mask, teacher forcing, and a loss masked on the decoder's targets.
//!
//! ```
//! use padless_g2p::cmudict::{Malformed, parse};
//! use padless_g2p::split::split_by_word;
//!
//! let text = "# a comment\nread R IY1 D\nread(2) R EH1 D\nred R EH1 D # colour\n";
//! let dict = parse(text, Malformed::Error).unwrap();
//! assert_eq!(dict.entries.len(), 2);
//! assert_eq!(dict.entries[0].pronunciations.len(), 2); // "read" and its alternate
//! let split = split_by_word(&dict.entries, 1);
//! assert_eq!(split.train.len() + split.validation.len() + split.test.len(), 2);
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod cmudict;
pub mod error;
pub mod eval;
pub mod model;
pub mod network;
pub mod rescore;
pub mod split;
pub mod train;
pub mod vocab;

pub use error::{G2pError, Result};
pub use model::G2p;
pub use network::Network;
