//! Helpers shared by the float64 test binaries (`gradients.rs`, `loss_gradients.rs`).

use std::sync::OnceLock;

use burn::tensor::{Device, FloatDType, Tensor, TensorData};

/// The flex device with autodiff, switched to f64 once per test binary, before any tensor
/// is made (the setting is per device and per process).
pub fn device() -> Device {
    static CONFIGURED: OnceLock<()> = OnceLock::new();
    CONFIGURED.get_or_init(|| {
        Device::flex()
            .configure(FloatDType::F64)
            .expect("f64 before any tensor");
    });
    Device::flex().autodiff()
}

/// An f64 tensor from row-major values.
pub fn tensor<const D: usize>(v: &[f64], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &device())
}

/// The values of a tensor as f64, row-major.
pub fn f64s<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
}
