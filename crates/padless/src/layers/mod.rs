//! Layers that create, carry and consume masks (the recurrent layers are in [`crate::rnn`]),
//! each file a layer and its config; the list of layers a stack can hold is
//! [`crate::registry`].

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

pub use activation::{Activation, ActivationConfig, ActivationKind};
pub use dense::{Dense, DenseConfig, TimeDistributed, TimeDistributedConfig};
pub(crate) use dropout::seed_from;
pub use dropout::{Dropout, DropoutConfig, dropout};
pub use embedding::{Embedding, EmbeddingConfig};
pub(crate) use fused_dense::fused_linear;
pub use layer_norm::{DropMask, DropMaskConfig, LayerNormalization, LayerNormalizationConfig};
pub use masking::{Masking, MaskingConfig};
pub use merge::{Add, Concatenate, merge_masks};
pub use pooling::{
    GlobalAveragePooling1D, GlobalAveragePooling1DConfig, GlobalMaxPooling1D,
    GlobalMaxPooling1DConfig,
};
pub use repeat_vector::{RepeatVector, RepeatVectorConfig};
