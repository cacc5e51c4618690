//! A sparse autoencoder: Masking, TimeDistributed Dense(tanh) bottleneck, TimeDistributed
//! Dense back to the input, trained with MSE and **per-element sample weights** `[B, T, F]`
//! that are 1 on the non-zero features of each step and 0 elsewhere.
//!
//! Claims checked:
//! 1. With per-element weights and the `weighted_mean` reduction, the loss equals the mean
//!    squared error over the non-zero features of the valid steps only, computed by hand
//!    (padding steps and zero features count nowhere); with `mean` it is that sum divided by
//!    `F` times the number of valid steps.
//! 2. Trained for the same epochs from the same initial weights, the weighted model
//!    reconstructs the non-zero features of held-out data better than a model trained on the
//!    unweighted MSE, which spends its capacity on the zeros.
//!
//! Run: `cargo run -p padless --example sparse_autoencoder`

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::OptimizerConfig;

/// Features per step.
const F: usize = 24;
/// Steps per padded batch.
const T: usize = 4;

/// Each step is one of 8 sparse patterns (3 features each) times an amplitude in
/// [0.5, 1.5]; rows have 1 to 4 steps, post-padded with all-zero steps.
fn batch(rows: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut x = vec![0.0; rows * T * F];
    let mut lengths = Vec::with_capacity(rows);
    for b in 0..rows {
        let len = 1 + (next() * T as f32) as usize % T;
        lengths.push(len);
        for t in 0..len {
            let pattern = (next() * 8.0) as usize % 8;
            let amplitude = 0.5 + next();
            for (k, scale) in [1.0, -0.6, 0.3].iter().enumerate() {
                let feature = (pattern * 3 + k * 7) % F;
                x[(b * T + t) * F + feature] = amplitude * scale;
            }
        }
    }
    (x, lengths)
}

/// 1 where the input is non-zero, 0 elsewhere.
fn non_zero_weights(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| if v != 0.0 { 1.0 } else { 0.0 })
        .collect()
}

fn model_config() -> ModelConfig {
    ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: F,
        },
        layers: vec![
            LayerConfig::Masking(MaskingConfig { mask_value: 0.0 }),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 4,
                activation: ActivationKind::Tanh,
                ..Default::default()
            })),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: F,
                ..Default::default()
            })),
        ],
    }
}

/// The model's reconstruction of `x` and the mask Masking made.
fn reconstruct(model: &Sequential, x: Tensor<3>) -> padless::Result<(Tensor<3>, Option<Mask>)> {
    model
        .forward(Value::sequence(x, None))?
        .into_sequence("autoencoder")
}

/// Trains from the weights `device.seed(seed)` gives, with or without the non-zero weights.
fn train(weighted: bool, seed: u64) -> padless::Result<Sequential> {
    let device = training_device();
    device.seed(seed);
    let mut model = model_config().build(&device)?;
    let mut optimizer = OptimizerConfig::default().init(None);
    let loss = SequenceLoss::new(LossKind::MeanSquaredError).with_reduction(if weighted {
        Reduction::WeightedMean
    } else {
        Reduction::Mean
    });
    for epoch in 0..150 {
        let (x, _) = batch(64, 1000 + epoch);
        let weights = non_zero_weights(&x);
        let x = tensor_from(&x, [64, T, F], &device);
        let (y_pred, mask) = reconstruct(&model, x.clone())?;
        let mut inputs = LossInputs::new(Targets::Dense(x), y_pred).with_output_mask(mask);
        if weighted {
            let w = tensor_from(&weights, [64, T, F], &device);
            inputs = inputs.with_sample_weight(SampleWeight::PerElement(w));
        }
        let value = loss.compute(inputs)?.value.expect("reduced");
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optimizer.step(0.02, model, grads);
    }
    Ok(model)
}

/// Mean squared error of `model` on `x` over (non-zero features, zero features) of valid
/// steps, by hand.
fn errors(model: &Sequential, x: &[f32], lengths: &[usize]) -> padless::Result<(f32, f32)> {
    let device = default_device();
    let rows = lengths.len();
    let (y, _) = reconstruct(model, tensor_from(x, [rows, T, F], &device))?;
    let y = f32_vec(y);
    let (mut non_zero, mut zero) = ((0.0, 0usize), (0.0, 0usize));
    for (b, &len) in lengths.iter().enumerate() {
        for i in (b * T * F)..((b * T + len) * F) {
            let e = (x[i] - y[i]).powi(2);
            let sum = if x[i] != 0.0 {
                &mut non_zero
            } else {
                &mut zero
            };
            sum.0 += e;
            sum.1 += 1;
        }
    }
    Ok((non_zero.0 / non_zero.1 as f32, zero.0 / zero.1 as f32))
}

fn main() -> padless::Result<()> {
    let device = default_device();
    device.seed(7);
    let model = model_config().build(&device)?;
    print!("{}", model.summary(model_config().input.spec(false))?);

    // Claim 1: the weighted loss of a fresh model on a padded batch, against the hand sums.
    let (x, lengths) = batch(8, 42);
    let w = non_zero_weights(&x);
    let (y_pred, mask) = reconstruct(&model, tensor_from(&x, [8, T, F], &device))?;
    assert_eq!(mask.as_ref().map(Mask::lengths), Some(lengths.clone()));
    let y = f32_vec(y_pred.clone());
    let (mut sum, mut n_non_zero) = (0.0f32, 0usize);
    for (b, &len) in lengths.iter().enumerate() {
        for i in (b * T * F)..((b * T + len) * F) {
            if x[i] != 0.0 {
                sum += (x[i] - y[i]).powi(2);
                n_non_zero += 1;
            }
        }
    }
    let n_valid: usize = lengths.iter().sum();
    let loss_with = |reduction| -> padless::Result<f32> {
        let out = SequenceLoss::new(LossKind::MeanSquaredError)
            .with_reduction(reduction)
            .compute(
                LossInputs::new(
                    Targets::Dense(tensor_from(&x, [8, T, F], &device)),
                    y_pred.clone(),
                )
                .with_output_mask(mask.clone())
                .with_sample_weight(SampleWeight::PerElement(tensor_from(
                    &w,
                    [8, T, F],
                    &device,
                ))),
            )?;
        Ok(f32_vec(out.value.expect("reduced"))[0])
    };
    let weighted_mean = loss_with(Reduction::WeightedMean)?;
    let mean = loss_with(Reduction::Mean)?;
    let by_hand = sum / n_non_zero as f32;
    let mean_by_hand = sum / (F * n_valid) as f32;
    println!(
        "\nweighted_mean loss {weighted_mean:.6}, by hand over the {n_non_zero} non-zero features of {n_valid} valid steps: {by_hand:.6}"
    );
    println!("mean loss          {mean:.6}, by hand (sum / ({F} x {n_valid})): {mean_by_hand:.6}");
    assert!((weighted_mean - by_hand).abs() < 1e-5 * by_hand.max(1.0));
    assert!((mean - mean_by_hand).abs() < 1e-5 * mean_by_hand.max(1.0));

    // Claim 2: the weighted model reconstructs the non-zero features better.
    let weighted = train(true, 3)?;
    let unweighted = train(false, 3)?;
    let (x, lengths) = batch(256, 99);
    let (w_non_zero, w_zero) = errors(&weighted.valid(), &x, &lengths)?;
    let (u_non_zero, u_zero) = errors(&unweighted.valid(), &x, &lengths)?;
    println!("\nheld-out MSE         non-zero features   zero features");
    println!("weighted (non-zero)  {w_non_zero:>17.4}   {w_zero:>13.4}");
    println!("unweighted           {u_non_zero:>17.4}   {u_zero:>13.4}");
    assert!(
        w_non_zero < 0.5 * u_non_zero,
        "the weighted model reconstructs non-zero features better: {w_non_zero} vs {u_non_zero}"
    );
    println!(
        "claim checked: per-element weights count only the non-zero features, and training on them reconstructs those features better"
    );
    Ok(())
}
