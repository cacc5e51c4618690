//! # padless
//!
//! Sequence models on variable-length, padded batches where padding never leaks into
//! states, losses, metrics or gradients. Built on [burn](https://burn.dev) tensors.
//!
//! The rules are in `SEMANTICS.md`; in short: a [`Mask`] is `[batch, time]`, true = valid;
//! layers create ([`layers::Masking`], [`layers::Embedding`] with `mask_zero`), pass on
//! (per-step layers) or consume (recurrent layers without `return_sequences`, pooling) masks,
//! and a stack that would drop a mask silently is rejected when it is built.
//!
//! # Example
//! ```
//! use padless::prelude::*;
//!
//! let device = default_device();
//! // Two sequences of 3 features, the first padded with two all-zero steps.
//! let x = tensor_from(
//!     &[1.0, 0.5, 0.0, 0.2, 0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
//!       0.3, 0.3, 0.3, 0.1, 0.0, 0.4, 0.7, 0.7, 0.1, 0.2, 0.2, 0.2],
//!     [2, 4, 3],
//!     &device,
//! );
//! let model = Sequential::new(vec![
//!     AnyLayer::Masking(Masking::new(0.0)),
//!     AnyLayer::Lstm(LstmConfig::new(3, 8).init(&device)),
//!     AnyLayer::Dense(DenseConfig::new(8, 1).init(&device)),
//! ]);
//! let rows = model.check(Spec::Sequence { time: Some(4), features: 3, masked: false }).unwrap();
//! assert_eq!(rows[1].output.shape_string(), "(None, 8)");
//! let y = model.forward(Value::sequence(x, None)).unwrap().into_vector("demo").unwrap();
//! assert_eq!(y.dims(), [2, 1]);
//! ```

#![warn(missing_docs)]

pub mod budget;
pub mod cpu;
pub mod elementwise;
pub mod error;
pub mod files;
pub mod layer;
pub mod layers;
pub mod losses;
pub mod mask;
pub mod metrics;
pub mod model;
pub mod model_config;
mod ops;
pub mod registry;
pub mod rnn;
pub mod seq2seq;
pub mod sequence;
pub mod sequential;
mod strict;
pub mod tensor_util;
pub mod train;
pub mod transformer;
pub mod value;
pub mod weights;

pub use error::{Error, Result};
pub use mask::{Mask, Padding};
pub use model::{AnyModel, Inputs, Model, load, save};
pub use value::Value;

/// The embedded CPU device (burn's `flex` backend), without autodiff: for inference.
pub fn default_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// The CPU device with autodiff: for training and gradients.
pub fn training_device() -> burn::tensor::Device {
    burn::tensor::Device::flex().autodiff()
}

/// The default GPU through wgpu (Vulkan, Metal or DirectX), with autodiff (feature `wgpu`).
#[cfg(feature = "wgpu")]
pub fn wgpu_training_device() -> burn::tensor::Device {
    burn::tensor::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff()
}

/// The first CUDA GPU, with autodiff (feature `cuda`).
#[cfg(feature = "cuda")]
pub fn cuda_training_device() -> burn::tensor::Device {
    burn::tensor::Device::cuda(0).autodiff()
}

/// The README (`README.md`); its library example runs as a test.
#[doc = include_str!("../../../README.md")]
pub mod readme {}

/// The masking guide (`docs/masking.md`); its snippets run as tests.
#[doc = include_str!("../../../docs/masking.md")]
pub mod guide {}

/// The training guide (`docs/training.md`); its snippets run as tests.
#[doc = include_str!("../../../docs/training.md")]
pub mod training_guide {}

/// The encoder-decoder guide (`docs/encoder-decoder.md`); its snippet runs as a test.
#[doc = include_str!("../../../docs/encoder-decoder.md")]
pub mod encoder_decoder_guide {}

/// The names most programs need.
pub mod prelude {
    pub use crate::layer::{Layer, Spec};
    pub use crate::layers::*;
    pub use crate::losses::*;
    pub use crate::model::{AnyModel, Inputs, Model};
    pub use crate::rnn::*;
    pub use crate::sequential::{AnyLayer, Sequential};
    pub use crate::tensor_util::{f32_vec, tensor_from};
    pub use crate::{Mask, Padding, Value, default_device, training_device};
}
