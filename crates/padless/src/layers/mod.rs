//! Layers that create, carry and consume masks (the recurrent layers are in [`crate::rnn`]).

mod activation;
mod dense;
mod dropout;
mod embedding;
mod fused_dense;
mod layer_norm;
mod masking;
mod merge;
mod pooling;
mod repeat_vector;

pub use activation::{Activation, ActivationKind};
pub use dense::{Dense, DenseConfig, TimeDistributed};
pub use dropout::{Dropout, dropout};
pub use embedding::{Embedding, EmbeddingConfig};
pub use layer_norm::{DropMask, LayerNormalization};
pub use masking::Masking;
pub use merge::{Add, Concatenate, merge_masks};
pub use pooling::{GlobalAveragePooling1D, GlobalMaxPooling1D};
pub use repeat_vector::RepeatVector;
