//! The Transformer's fast path on packed valid tokens against its composite path in float32
//! (the checks of `transformer_fused.rs`): the kernels' `f32` exponential is a fast
//! approximation and the sums run in other orders, so values and gradients agree within
//! 1e-5 of each tensor's scale (largest difference seen: 9e-7).

use burn::tensor::DType;

mod transformer_common;
mod transformer_fused_common;
use transformer_fused_common as checks;

const TOLERANCE: f64 = 1e-5;

fn device() -> burn::tensor::Device {
    padless::training_device()
}

#[test]
fn packed_encoder_equals_composite_in_f32() {
    checks::check_encoder(&device(), DType::F32, TOLERANCE);
}

#[test]
fn packed_decoder_equals_composite_in_f32() {
    checks::check_decoder(&device(), DType::F32, TOLERANCE);
}

#[test]
fn packed_model_loss_and_gradients_equal_composite_in_f32() {
    checks::check_model(&device(), TOLERANCE);
}

#[test]
fn packed_model_does_not_depend_on_padding_in_f32() {
    checks::check_model_padding_invariance(&device(), TOLERANCE);
}
