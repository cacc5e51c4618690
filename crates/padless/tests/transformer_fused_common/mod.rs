//! The checks of the Transformer's fast path on packed tokens against its composite path,
//! shared by the float64 (`transformer_fused.rs`) and float32 (`transformer_fused_f32.rs`)
//! test binaries, each on a device of its float type: values and every gradient equal within
//! a tolerance relative to each tensor's largest magnitude, the packed path taken (its call
//! counter) or not (under `with_composite`).
#![allow(dead_code)]

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use padless::Mask;
use padless::cpu::with_composite;
use padless::layers::ActivationKind;
use padless::transformer::{
    PositionKind, Transformer, TransformerConfig, TransformerLayerConfig, packed_calls,
};

use crate::transformer_common::gradients_by_name;

/// Where each row's valid steps go in a padded batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// Steps first, then `extra` padded steps more than the longest row needs.
    Post { extra: usize },
    /// Padding first: each row ends at the last step.
    Pre { extra: usize },
    /// A padded step before every valid one.
    Holes,
}

pub const LAYOUTS: [Layout; 3] = [
    Layout::Post { extra: 2 },
    Layout::Pre { extra: 1 },
    Layout::Holes,
];

impl Layout {
    /// Each row's steps for rows of `lengths`, and the batch's time.
    pub fn steps(self, lengths: &[usize]) -> (Vec<Vec<usize>>, usize) {
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let time = match self {
            Layout::Post { extra } | Layout::Pre { extra } => longest + extra,
            Layout::Holes => 2 * longest,
        }
        .max(1);
        let steps = lengths
            .iter()
            .map(|&n| match self {
                Layout::Post { .. } => (0..n).collect(),
                Layout::Pre { .. } => (time - n..time).collect(),
                Layout::Holes => (0..n).map(|i| 2 * i + 1).collect(),
            })
            .collect();
        (steps, time)
    }
}

/// `n` values in `[-1, 1]` from a fixed linear congruential stream of `seed`.
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// A float tensor of `dtype` from row-major values.
pub fn tensor<const D: usize>(
    v: Vec<f64>,
    shape: [usize; D],
    dtype: DType,
    device: &Device,
) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v, shape), device).cast(dtype)
}

/// The values of a float tensor as `f64`.
pub fn f64s<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
}

/// A batch `[rows, time, d]` with rows of `lengths` valid steps placed by `layout`: seeded
/// values at the valid steps, `fill` at the masked ones, and its mask.
pub fn batch(
    lengths: &[usize],
    d: usize,
    layout: Layout,
    seed: u64,
    fill: f64,
    dtype: DType,
    device: &Device,
) -> (Tensor<3>, Mask) {
    let (steps, time) = layout.steps(lengths);
    let mut x = vec![fill; lengths.len() * time * d];
    let mut valid = vec![false; lengths.len() * time];
    for (r, steps) in steps.iter().enumerate() {
        for (i, &t) in steps.iter().enumerate() {
            let row = values(d, seed * 1000 + 10 * r as u64 + i as u64);
            x[(r * time + t) * d..][..d].copy_from_slice(&row);
            valid[r * time + t] = true;
        }
    }
    (
        tensor(x, [lengths.len(), time, d], dtype, device),
        Mask::from_bools(&valid, lengths.len(), time, device).unwrap(),
    )
}

/// Loss weights `[rows, time, d]` for rows of `lengths` placed by `layout`: the same values for
/// the `i`-th valid step of row `r` wherever it is placed, 0 at masked steps.
pub fn loss_weights(
    lengths: &[usize],
    d: usize,
    layout: Layout,
    dtype: DType,
    device: &Device,
) -> Tensor<3> {
    let (steps, time) = layout.steps(lengths);
    let mut w = vec![0.0; lengths.len() * time * d];
    for (r, steps) in steps.iter().enumerate() {
        for (i, &t) in steps.iter().enumerate() {
            w[(r * time + t) * d..][..d]
                .copy_from_slice(&values(d, 5000 + 37 * r as u64 + i as u64));
        }
    }
    tensor(w, [lengths.len(), time, d], dtype, device)
}

/// Named results of a run: outputs, input gradients, weight gradients.
pub type Observed = Vec<(String, Vec<f64>)>;

/// `run` once on the packed path (which must be taken: the call counter grows) and once
/// under `with_composite` (which must not take it), and compares every result within
/// `tolerance` of each tensor's largest magnitude (at least 1).
pub fn fused_equals_composite(tolerance: f64, what: &str, run: impl Fn() -> Observed) {
    let before = packed_calls();
    let fused = run();
    assert!(packed_calls() > before, "{what}: the packed path ran");
    let before = packed_calls();
    let composite = with_composite(&run);
    assert_eq!(packed_calls(), before, "{what}: the composite path ran");
    assert_close(&fused, &composite, tolerance, what);
}

/// Every named result of `a` equals `b`'s within `tolerance` of `b`'s largest magnitude.
pub fn assert_close(a: &Observed, b: &Observed, tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: results");
    let mut worst = 0.0f64;
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!(name, other, "{what}: results in one order");
        assert_eq!(x.len(), y.len(), "{what}: {name} lengths");
        let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            let error = (p - q).abs() / scale;
            assert!(
                error <= tolerance,
                "{what}: {name}[{i}] {p} vs {q} (error {error:e} of the scale {scale})"
            );
            worst = worst.max(error);
        }
    }
    // A comparison of nothing, or of all zeros, proves nothing.
    assert!(
        a.iter().any(|(_, x)| x.iter().any(|&v| v != 0.0)),
        "{what}: some result is nonzero"
    );
    eprintln!("{what}: largest error {worst:e} of the scale");
}

/// Weight gradients by name, sorted, after the named outputs.
fn with_weight_grads<M: Module>(
    mut observed: Observed,
    module: &M,
    grads: &burn::tensor::Gradients,
) -> Observed {
    let mut weights: Vec<_> = gradients_by_name(module, grads).into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    observed.extend(weights.into_iter().map(|(n, g)| (format!("d {n}"), g)));
    observed
}

/// The layer configurations compared: post-norm with ReLU, pre-norm with GELU; no dropout.
pub fn layer_configs(d_model: usize, heads: usize) -> Vec<TransformerLayerConfig> {
    [(false, ActivationKind::Relu), (true, ActivationKind::Gelu)]
        .into_iter()
        .map(|(norm_first, activation)| {
            TransformerLayerConfig::new(d_model, heads)
                .with_d_ff(2 * d_model)
                .with_dropout(0.0)
                .with_norm_first(norm_first)
                .with_activation(activation)
        })
        .collect()
}

/// Encoder stacks of 2 layers over rows longer than a kernel block (70), short, and empty, in
/// every layout and without a mask: outputs, input gradients and weight gradients.
pub fn check_encoder(device: &Device, dtype: DType, tolerance: f64) {
    let (d, heads) = (16, 2);
    let lengths = [70, 0, 5, 33];
    for config in layer_configs(d, heads) {
        let stack = config.init_encoder(2, device).unwrap();
        let layouts = LAYOUTS.iter().map(|&l| Some(l)).chain([None]);
        for layout in layouts {
            let (x, mask) = match layout {
                Some(layout) => batch(&lengths, d, layout, 1, 7.0, dtype, device),
                None => batch(
                    &[9, 9, 9],
                    d,
                    Layout::Post { extra: 0 },
                    1,
                    0.0,
                    dtype,
                    device,
                ),
            };
            let mask = layout.map(|_| mask);
            let dims = x.dims();
            let weights = tensor(values(dims.iter().product(), 2), dims, dtype, device);
            let what = format!("encoder, norm_first {}, {layout:?}", config.norm_first);
            fused_equals_composite(tolerance, &what, || {
                let x = x.clone().require_grad();
                let y = stack.forward(x.clone(), mask.as_ref()).unwrap();
                let grads = (y.clone() * weights.clone()).sum().backward();
                let observed = vec![
                    ("output".to_string(), f64s(y)),
                    ("d input".to_string(), f64s(x.grad(&grads).unwrap())),
                ];
                with_weight_grads(observed, &stack, &grads)
            });
        }
    }
}

/// Decoder stacks of 2 layers: targets longer than a kernel block, a row without targets, a
/// row whose memory is empty (its targets' cross-attention gives 0), target and memory padded
/// differently: outputs, target and memory gradients, weight gradients.
pub fn check_decoder(device: &Device, dtype: DType, tolerance: f64) {
    let (d, heads) = (16, 2);
    let (target_lengths, memory_lengths) = ([3, 66, 0, 4], [5, 40, 7, 0]);
    for config in layer_configs(d, heads) {
        let stack = config.init_decoder(2, device).unwrap();
        for (i, &layout) in LAYOUTS.iter().enumerate() {
            let memory_layout = LAYOUTS[(i + 1) % LAYOUTS.len()];
            let (x, mask) = batch(&target_lengths, d, layout, 3, -5.0, dtype, device);
            let (memory, memory_mask) =
                batch(&memory_lengths, d, memory_layout, 4, 11.0, dtype, device);
            let dims = x.dims();
            let weights = tensor(values(dims.iter().product(), 5), dims, dtype, device);
            let what = format!(
                "decoder, norm_first {}, targets {layout:?}, memory {memory_layout:?}",
                config.norm_first
            );
            fused_equals_composite(tolerance, &what, || {
                let x = x.clone().require_grad();
                let memory = memory.clone().require_grad();
                let y = stack
                    .forward(x.clone(), Some(&mask), memory.clone(), Some(&memory_mask))
                    .unwrap();
                let grads = (y.clone() * weights.clone()).sum().backward();
                let observed = vec![
                    ("output".to_string(), f64s(y)),
                    ("d target".to_string(), f64s(x.grad(&grads).unwrap())),
                    ("d memory".to_string(), f64s(memory.grad(&grads).unwrap())),
                ];
                with_weight_grads(observed, &stack, &grads)
            });
        }
    }
}

/// Token id rows placed by `layout` (0 = padding), `[rows, time]`.
pub fn ids(rows: &[Vec<i64>], layout: Layout, device: &Device) -> Tensor<2, Int> {
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let (steps, time) = layout.steps(&lengths);
    let mut ids = vec![0i64; rows.len() * time];
    for (r, (row, steps)) in rows.iter().zip(&steps).enumerate() {
        for (&t, &id) in steps.iter().zip(row) {
            ids[r * time + t] = id;
        }
    }
    Tensor::from_data(TensorData::new(ids, [rows.len(), time]), device)
}

/// A small model: 2 + 2 layers, `d_model` 16, 2 heads.
pub fn small_model(device: &Device, positions: PositionKind, norm_first: bool) -> Transformer {
    let mut config = TransformerConfig::new([11, 9], 16, 2, 32, [2, 2]);
    config.positions = positions;
    config.norm_first = norm_first;
    config.activation = ActivationKind::Gelu;
    config.init(device).unwrap()
}

/// Source rows (one of padding only, one longer than a kernel block) and teacher-forcing
/// rows: decoder input and targets.
pub fn model_rows() -> [Vec<Vec<i64>>; 3] {
    let long: Vec<i64> = (0..67).map(|i| 3 + i % 8).collect();
    let sources = vec![vec![3, 4, 5, 6, 7, 8], vec![], long, vec![9, 10]];
    let decoder_input = vec![vec![1, 3, 4], vec![1, 8, 7], vec![1, 5, 5, 6, 7], vec![1]];
    let targets = vec![vec![3, 4, 2], vec![8, 7, 2], vec![5, 5, 6, 7, 2], vec![2]];
    [sources, decoder_input, targets]
}

/// The model's masked cross-entropy and every weight gradient on the rows of
/// [`model_rows`] placed by `layout`.
pub fn model_loss_and_gradients(model: &Transformer, layout: Layout, device: &Device) -> Observed {
    let [sources, decoder_input, targets] = model_rows();
    let loss = model
        .loss(
            ids(&sources, layout, device),
            ids(&decoder_input, layout, device),
            ids(&targets, layout, device),
        )
        .unwrap()
        .value
        .unwrap();
    let grads = loss.backward();
    with_weight_grads(vec![("loss".to_string(), f64s(loss))], model, &grads)
}

/// The model's loss and gradients, packed against composite, in every layout.
pub fn check_model(device: &Device, tolerance: f64) {
    for (positions, norm_first) in [
        (PositionKind::Sinusoidal, false),
        (PositionKind::Learned { max_len: 80 }, true),
    ] {
        let model = small_model(device, positions, norm_first);
        for layout in LAYOUTS {
            let what = format!("model, {positions:?}, norm_first {norm_first}, {layout:?}");
            fused_equals_composite(tolerance, &what, || {
                model_loss_and_gradients(&model, layout, device)
            });
        }
    }
}

/// On the packed path, the same rows padded another way give the same loss and gradients.
pub fn check_model_padding_invariance(device: &Device, tolerance: f64) {
    let model = small_model(device, PositionKind::Sinusoidal, false);
    let before = packed_calls();
    let reference = model_loss_and_gradients(&model, Layout::Post { extra: 0 }, device);
    for layout in LAYOUTS {
        let run = model_loss_and_gradients(&model, layout, device);
        assert_close(
            &run,
            &reference,
            tolerance,
            &format!("packed model, {layout:?}"),
        );
    }
    assert_eq!(
        packed_calls() - before,
        2 * (LAYOUTS.len() + 1),
        "an encoder and a decoder stack on packed tokens per run"
    );
}
