//! The Transformer's fast path on packed valid tokens (`transformer/packed.rs`) against its
//! composite path in float64: the encoder and decoder stacks and the model, values and every
//! gradient within 1e-12 of each tensor's scale, over post- and pre-padding, holes, empty
//! rows, a decoder row without memory and rows longer than a kernel block; the packed path
//! is taken (its call counter) and gives the same loss and gradients however the rows are
//! padded.

use burn::tensor::DType;

mod common;
mod transformer_common;
mod transformer_fused_common;
use transformer_fused_common as checks;

/// f64 runs differ only in the order of their sums (largest difference seen: 2e-15).
const TOLERANCE: f64 = 1e-12;

#[test]
fn packed_encoder_equals_composite_in_f64() {
    checks::check_encoder(&common::device(), DType::F64, TOLERANCE);
}

#[test]
fn packed_decoder_equals_composite_in_f64() {
    checks::check_decoder(&common::device(), DType::F64, TOLERANCE);
}

#[test]
fn packed_model_loss_and_gradients_equal_composite_in_f64() {
    checks::check_model(&common::device(), TOLERANCE);
}

#[test]
fn packed_model_does_not_depend_on_padding_in_f64() {
    checks::check_model_padding_invariance(&common::device(), TOLERANCE);
}
