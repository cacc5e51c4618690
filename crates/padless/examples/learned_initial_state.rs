//! A learnable initial state: a SimpleRNN without biases learns its `h0`, and with it a task
//! that a zero initial state cannot solve.
//!
//! The task: per step, predict `y_t = x_t²` from scalar inputs `x_t` in [-1, 1] (rows of 2
//! to 6 steps, post-padded; the batches carry the mask). The data set is symmetric: every
//! row also appears negated. A SimpleRNN without biases starting from `h0 = 0` is an odd
//! function of its inputs (`tanh` is odd, and so is every `h_t` by induction), so the model's
//! output is `b + o(x)` with `o(-x) = -o(x)`. For a row and its negation the targets are
//! equal and the squared errors sum to `2 (y - b)² + 2 o²`, so **no** zero-state model can get
//! below the variance of the targets (the error of predicting their mean). A learned `h0`
//! breaks the symmetry.
//!
//! Claims checked:
//! 1. The learned initial state moves away from zero.
//! 2. The model with it gets well below the variance bound (computed by hand from the data);
//!    the same model with a zero initial state, trained alike, stays at or above it.
//! 3. The mask still holds: padding the batch further with garbage (1e3) changes no valid
//!    output, and a row with no valid step returns the learned state itself.
//!
//! Run: `cargo run -p padless --example learned_initial_state`

use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

fn rows(n_pairs: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut out = Vec::with_capacity(2 * n_pairs);
    for _ in 0..n_pairs {
        let len = 2 + (next() * 5.0) as usize % 5;
        let row: Vec<f32> = (0..len).map(|_| 2.0 * next() - 1.0).collect();
        out.push(row.iter().map(|v| -v).collect());
        out.push(row);
    }
    out
}

fn example(row: &[f32]) -> Example {
    Example::new(
        InputSeq::Features(row.iter().map(|&v| vec![v]).collect()),
        TargetSeq::Dense(row.iter().map(|&v| vec![v * v]).collect()),
    )
}

/// The variance of the targets over every step: the least mean squared error of any
/// zero-state model on symmetric data.
fn variance_bound(rows: &[Vec<f32>]) -> f64 {
    let y: Vec<f64> = rows.iter().flatten().map(|&v| f64::from(v * v)).collect();
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64
}

fn config(learn_initial_state: bool) -> ModelConfig {
    ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: 1,
        },
        layers: vec![
            LayerConfig::SimpleRnn(SimpleRnnConfig {
                units: 16,
                return_sequences: true,
                use_bias: false,
                learn_initial_state,
                ..Default::default()
            }),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 1,
                ..Default::default()
            })),
        ],
    }
}

fn train(learn_initial_state: bool, train: &[Example]) -> padless::Result<Trainer> {
    let device = training_device();
    device.seed(21);
    let mut compile = CompileConfig::new(SequenceLoss::new(LossKind::MeanSquaredError));
    compile.learning_rate = 0.02;
    let mut trainer = Trainer::from_config(&config(learn_initial_state), compile, &device)?;
    let mut batches = BatchOptions::new(32);
    batches.shuffle_seed = Some(4);
    let fit = FitConfig::new(15, batches);
    trainer.fit(train, None, &fit, &mut [])?;
    Ok(trainer)
}

fn main() -> padless::Result<()> {
    let train_rows = rows(200, 1);
    let test_rows = rows(100, 2);
    let train_set: Vec<Example> = train_rows.iter().map(|r| example(r)).collect();
    let test_set: Vec<Example> = test_rows.iter().map(|r| example(r)).collect();
    let bound = variance_bound(&test_rows);

    let learned = train(true, &train_set)?;
    let zero = train(false, &train_set)?;
    let h0 = learned
        .model
        .weights()
        .into_iter()
        .find(|w| w.name.ends_with("initial_h"))
        .expect("a learned initial state")
        .values;
    let h0_norm = h0.iter().map(|v| v * v).sum::<f32>().sqrt();
    // One batch of all 200 test rows: the loss is the mean over every valid step.
    let learned_mse = learned.evaluate(&test_set, 200)?["loss"];
    let zero_mse = zero.evaluate(&test_set, 200)?["loss"];
    println!("learned h0: |h0| = {h0_norm:.4} (starts at 0)");
    println!("held-out MSE, variance bound for a zero initial state: {bound:.4}");
    println!("  learned initial state: {learned_mse:.4}");
    println!("  zero initial state:    {zero_mse:.4}");
    assert!(h0_norm > 0.1, "the learned state moved from zero");
    assert!(
        learned_mse < 0.5 * bound,
        "the learned state solves the task"
    );
    assert!(
        zero_mse >= bound * (1.0 - 1e-4),
        "no zero-state model beats the bound"
    );

    // The mask still holds, on the inference model.
    let device = default_device();
    let mut model = config(true).build(&device)?;
    model.set_weights(&learned.model.weights())?;
    let (x, lengths) = ([0.5, -0.25, 0.75, -0.25, 0.0, 0.0], [3, 1]);
    let mask = Mask::from_lengths(&lengths, 3, Padding::Post, &device)?;
    let short = model.forward(Value::sequence(
        tensor_from(&x, [2, 3, 1], &device),
        Some(mask),
    ))?;
    let long_x = [0.5, -0.25, 0.75, 1e3, 1e3, -0.25, 1e3, 1e3, 1e3, 1e3];
    let long_mask = Mask::from_lengths(&lengths, 5, Padding::Post, &device)?;
    let long = model.forward(Value::sequence(
        tensor_from(&long_x, [2, 5, 1], &device),
        Some(long_mask),
    ))?;
    let (short, long) = (
        f32_vec(short.into_sequence("short")?.0),
        f32_vec(long.into_sequence("long")?.0),
    );
    for (b, &len) in lengths.iter().enumerate() {
        for t in 0..len {
            assert_eq!(short[b * 3 + t], long[b * 5 + t], "row {b} step {t}");
        }
    }
    let AnyLayer::SimpleRnn(rnn) = &model.layers[0] else {
        unreachable!("the first layer is the SimpleRNN")
    };
    let no_valid_step = Mask::from_lengths(&[2, 0], 2, Padding::Post, &device)?;
    let out = rnn.forward(
        tensor_from(&[0.5, 0.5, 1e3, 1e3], [2, 2, 1], &device),
        Some(&no_valid_step),
        None,
    )?;
    assert_eq!(f32_vec(out.last)[16..], h0[..], "an empty row returns h0");
    println!(
        "mask: valid outputs unchanged by 2 more padded steps of 1e3; a row with no valid step returns h0"
    );
    println!(
        "claim checked: the learned initial state moves, solves a task zero cannot, and the mask holds"
    );
    Ok(())
}
