//! Helpers shared by test binaries: the float64 device (`gradients.rs`, `loss_gradients.rs`),
//! a seeded value stream with a scaled comparison (`fused.rs`, `decoder_skip.rs`,
//! `attention.rs`, `bidirectional_pair.rs`) and a loss that reads every output of a recurrent
//! layer (`fused.rs`, `bidirectional_pair.rs`), and post-padded token ids (`attention.rs`,
//! `ensemble.rs`). Each binary uses a part, so unused items are allowed.
#![allow(dead_code)]

use std::sync::OnceLock;

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use padless::tensor_util::{f32_vec, int_tensor_from};

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

/// `n` values in `[-scale, scale]` from a fixed linear congruential stream of `seed`.
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A loss that reads every output of a recurrent layer, `sum(sequence * W) + sum_s
/// sum(state_s * V_s)` with fixed seeded weights (`W` seed 2, `V_s` seed `3 + s`), so every
/// output gets a distinct gradient; returned with the outputs themselves, named "sequence"
/// and "state s", for comparing two runs.
pub fn read_every_output(
    sequence: Tensor<3>,
    states: Vec<Tensor<2>>,
) -> (Tensor<1>, Vec<(String, Vec<f32>)>) {
    fn seeded<const D: usize>(like: &Tensor<D>, seed: u64) -> Tensor<D> {
        let dims = like.dims();
        let n = dims.iter().product();
        Tensor::from_data(TensorData::new(values(n, seed, 1.0), dims), &like.device())
    }
    let mut loss = (sequence.clone() * seeded(&sequence, 2)).sum();
    for (s, state) in states.iter().enumerate() {
        loss = loss + (state.clone() * seeded(state, 3 + s as u64)).sum();
    }
    let mut observed = vec![("sequence".to_string(), f32_vec(sequence))];
    for (s, state) in states.into_iter().enumerate() {
        observed.push((format!("state {s}"), f32_vec(state)));
    }
    (loss, observed)
}

/// Asserts `got` and `want` agree within `tolerance` times `want`'s largest magnitude (at
/// least 1).
pub fn assert_close_to_scale(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    // A NaN difference must win the fold (`f32::max` would drop it) and then fails the bound.
    let worst = got.iter().zip(want).fold(0.0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() || d > m { d } else { m }
    });
    assert!(worst <= tolerance * scale, "{what}: differ by {worst}");
}

/// Rows of token ids post-padded with 0 to `time` steps: `[rows, time]` on the default device.
pub fn ids(rows: &[&[i64]], time: usize) -> Tensor<2, Int> {
    let mut values = Vec::new();
    for row in rows {
        values.extend_from_slice(row);
        values.extend(std::iter::repeat_n(0, time - row.len()));
    }
    int_tensor_from(&values, [rows.len(), time], &padless::default_device())
}
