//! Small conversions between burn tensors and plain vectors.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// The values of a float tensor as `f32`, row-major.
pub fn f32_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

/// The values of a bool tensor, row-major.
pub fn bool_vec<const D: usize>(tensor: Tensor<D, Bool>) -> Vec<bool> {
    tensor
        .int()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("converted to i64")
        .into_iter()
        .map(|v| v != 0)
        .collect()
}

/// The values of an int tensor as `i64`, row-major.
pub fn i64_vec<const D: usize>(tensor: Tensor<D, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("converted to i64")
}

/// A float tensor from row-major `f32` values.
///
/// # Panics
/// When `values.len()` is not the product of `shape`.
pub fn tensor_from<const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// An int tensor from row-major `i64` values.
///
/// # Panics
/// When `values.len()` is not the product of `shape`.
pub fn int_tensor_from<const D: usize>(
    values: &[i64],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}
