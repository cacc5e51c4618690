//! A stateful LSTM over long streams cut into consecutive batches, with the `StatefulReset`
//! callback resetting the states at document boundaries.
//!
//! Two streams (the two rows of every batch) each hold two documents: steps 0-29 are the
//! first document, then the second (30 steps in row 0, 25 in row 1, so the last batch of
//! row 1 is post-padded). The streams are cut into chunks of 10 steps; batch `k` holds chunk
//! `k` of both rows. The task is the running mean of the inputs within the document, which
//! needs the state carried across chunks.
//!
//! Claims checked:
//! 1. Trained with `fit` (no shuffling, so batches stay consecutive) and `StatefulReset` at
//!    the boundary: the callback resets once per epoch at the boundary (and, as always, at
//!    the end of the epoch), and the loss falls.
//! 2. Predicting chunk by chunk with the stateful model, the callback resetting at the
//!    boundary, gives the same outputs at every valid step as running each whole document
//!    at once (padded, masked) through a non-stateful copy with the same weights.
//! 3. Without the reset, the second documents' outputs differ (the first documents' states
//!    leak in), so the reset is what makes claim 2 hold.
//!
//! Run: `cargo run -p padless --example stateful_stream`

use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

const CHUNK: usize = 10;
/// Chunks per document; the reset goes after batch `BOUNDARY - 1`.
const BOUNDARY: usize = 3;
/// Document lengths per row: (first, second).
const DOCS: [(usize, usize); 2] = [(30, 30), (30, 25)];

fn stream(row: usize) -> Vec<f32> {
    let (a, b) = DOCS[row];
    (0..a + b)
        .map(|t| (((t * 7 + row * 3) % 11) as f32 - 5.0) / 5.0)
        .collect()
}

/// The running mean within each document.
fn targets(row: usize) -> Vec<f32> {
    let x = stream(row);
    let first = DOCS[row].0;
    let mut out = Vec::with_capacity(x.len());
    let mut sum = 0.0;
    for (t, v) in x.iter().enumerate() {
        if t == first {
            sum = 0.0;
        }
        sum += v;
        let start = if t >= first { first } else { 0 };
        out.push(sum / (t - start + 1) as f32);
    }
    out
}

/// Chunk `k` of both rows, as examples in row order.
fn chunk_examples(k: usize) -> Vec<Example> {
    (0..2)
        .map(|row| {
            let (x, y) = (stream(row), targets(row));
            let range = k * CHUNK..((k + 1) * CHUNK).min(x.len());
            Example::new(
                InputSeq::Features(x[range.clone()].iter().map(|&v| vec![v]).collect()),
                TargetSeq::Dense(y[range].iter().map(|&v| vec![v]).collect()),
            )
        })
        .collect()
}

fn config(stateful: bool) -> ModelConfig {
    ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: 1,
        },
        layers: vec![
            LayerConfig::Lstm(LstmConfig {
                units: 12,
                return_sequences: true,
                stateful,
                ..Default::default()
            }),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 1,
                ..Default::default()
            })),
        ],
    }
}

fn compile() -> CompileConfig {
    let mut compile = CompileConfig::new(SequenceLoss::new(LossKind::MeanSquaredError));
    compile.learning_rate = 0.01;
    compile
}

/// Predicts chunk by chunk; with `reset`, the callback runs after each batch as in `fit`.
/// Returns the outputs of each row, in stream order, at its valid steps.
fn predict_in_chunks(
    trainer: &mut Trainer,
    reset: Option<&mut StatefulReset>,
) -> padless::Result<Vec<Vec<f32>>> {
    let n_chunks = stream(0).len().div_ceil(CHUNK);
    let mut rows = vec![Vec::new(), Vec::new()];
    let mut reset = reset;
    trainer.model.reset_states();
    for k in 0..n_chunks {
        let batch = &make_batches(&chunk_examples(k), &BatchOptions::new(2), trainer.device())?[0];
        let lengths = batch.inputs.mask().expect("input mask").lengths();
        let (y, _) = trainer
            .predict(batch.inputs.clone())?
            .into_sequence("stream")?;
        let time = y.dims()[1];
        let y = f32_vec(y);
        for (row, out) in rows.iter_mut().enumerate() {
            out.extend_from_slice(&y[row * time..row * time + lengths[row]]);
        }
        if let Some(reset) = reset.as_deref_mut() {
            reset.on_batch_end(0, k, &Logs::new(), trainer)?;
        }
    }
    Ok(rows)
}

/// Each document run whole through a non-stateful copy: the outputs per row, in stream order.
fn whole_documents(model: &Sequential) -> padless::Result<Vec<Vec<f32>>> {
    let device = default_device();
    let mut rows = vec![Vec::new(), Vec::new()];
    for doc in 0..2 {
        let docs: Vec<Vec<f32>> = (0..2)
            .map(|row| {
                let (a, _) = DOCS[row];
                let x = stream(row);
                if doc == 0 {
                    x[..a].to_vec()
                } else {
                    x[a..].to_vec()
                }
            })
            .collect();
        let lengths: Vec<usize> = docs.iter().map(Vec::len).collect();
        let time = lengths.iter().copied().max().unwrap_or(1);
        let mut x = vec![0.0; 2 * time];
        for (row, d) in docs.iter().enumerate() {
            x[row * time..row * time + d.len()].copy_from_slice(d);
        }
        let mask = Mask::from_lengths(&lengths, time, Padding::Post, &device)?;
        let input = Value::sequence(tensor_from(&x, [2, time, 1], &device), Some(mask));
        let (y, _) = model.forward(input)?.into_sequence("stream")?;
        let y = f32_vec(y);
        for (row, out) in rows.iter_mut().enumerate() {
            out.extend_from_slice(&y[row * time..row * time + lengths[row]]);
        }
    }
    Ok(rows)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() -> padless::Result<()> {
    let device = training_device();
    device.seed(11);
    let mut trainer = Trainer::from_config(&config(true), compile(), &device)?;
    let n_chunks = stream(0).len().div_ceil(CHUNK);
    let examples: Vec<Example> = (0..n_chunks).flat_map(chunk_examples).collect();
    let epochs = 30;
    let fit = FitConfig::new(epochs, BatchOptions::new(2));
    let mut reset = StatefulReset::new(|_, batch| batch + 1 == BOUNDARY);
    let history = trainer.fit(&examples, None, &fit, &mut [&mut reset])?;
    let (first, last) = (history[0]["loss"], history[epochs - 1]["loss"]);
    println!(
        "trained {epochs} epochs of {n_chunks} consecutive batches: loss {first:.4} -> {last:.4}, {} boundary resets",
        reset.resets
    );
    assert_eq!(reset.resets, epochs, "one reset per epoch at the boundary");
    assert!(
        last < 0.5 * first,
        "the stateful model learns the running mean"
    );

    let mut copy = config(false).build(&default_device())?;
    copy.set_weights(&trainer.model.weights())?;
    let whole = whole_documents(&copy)?;
    let mut reset = StatefulReset::new(|_, batch| batch + 1 == BOUNDARY);
    let chunked = predict_in_chunks(&mut trainer, Some(&mut reset))?;
    let leaked = predict_in_chunks(&mut trainer, None)?;
    for row in 0..2 {
        let first_doc = DOCS[row].0;
        let same = max_difference(&chunked[row], &whole[row]);
        let leak = max_difference(&leaked[row][first_doc..], &whole[row][first_doc..]);
        println!(
            "row {row}: chunked with resets vs whole documents: max |diff| {same:.2e}; second document without the reset: max |diff| {leak:.2e}"
        );
        assert!(
            same < 1e-5,
            "chunked outputs equal the whole-document outputs"
        );
        assert!(
            leak > 1e-3,
            "without the reset the first document's state leaks into the second"
        );
    }
    println!(
        "claim checked: states carry across consecutive batches exactly, and StatefulReset cuts them at document boundaries"
    );
    Ok(())
}
