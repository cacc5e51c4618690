//! Mask-aware recurrent layers: [`Lstm`], [`Gru`], [`SimpleRnn`] and [`Bidirectional`].
//!
//! Each is a [`Recurrent`] layer over a [`Cell`]; the masked time loop is written once in
//! [`recurrent`] and follows `SEMANTICS.md`: states carried over masked steps, the last
//! *valid* output for `return_sequences = false`, `go_backwards` reversing the mask with the
//! outputs, and a backward direction that reads each row's valid part reversed.

mod bidirectional;
mod cell;
mod config;
pub mod fused;
mod gru;
mod lstm;
pub mod recurrent;
mod simple_rnn;

pub use bidirectional::{AnyBidirectional, Bidirectional, BidirectionalConfig, MergeMode};
pub use cell::{Cell, CellKind};
pub use config::{
    AnyRecurrentConfig, Gru, GruConfig, Lstm, LstmConfig, RecurrentConfig, RecurrentOptions,
    SimpleRnn, SimpleRnnConfig,
};
pub use gru::GruCell;
pub use lstm::LstmCell;
pub use recurrent::{Recurrent, RecurrentOutput};
pub use simple_rnn::SimpleRnnCell;
