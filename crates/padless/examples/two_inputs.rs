//! A model of one's own with two input sequences, trained by the same `Trainer` as the
//! built-in models.
//!
//! Each example holds two sequences `a` and `b` of their own lengths; the target is their dot
//! product over the steps both have, `Σ a_t · b_t` for `t < min(len_a, len_b)`. The model
//! (`DotProduct`) lines the two batches up on one time axis, combines their masks (a step is
//! valid when it is valid in both: `and_masks`), runs an LSTM over the concatenated steps and
//! a dense layer on its last valid output.
//! Implementing [`Model`] is what the trainer needs: `forward_batch` on the batch's
//! [`Inputs`], named weights, and a serialisable config that rebuilds the model.
//!
//! Claims checked: the loss falls; a row's outputs do not depend on the padding of the batch
//! it is in; a checkpoint resumes the run and loads the model from the file alone.
//!
//! Run: `cargo run -p padless --example two_inputs`

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use padless::mask::and_masks;
use padless::model::{Inputs, Model};
use padless::prelude::*;
use padless::train::*;
use padless::weights::{NamedWeight, strip_prefix};
use serde::{Deserialize, Serialize};

/// The config that rebuilds a [`DotProduct`] (stored in its checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PairConfig {
    /// LSTM units.
    units: usize,
}

/// `dense(lstm([a_t; b_t]))` over the steps where both inputs are valid: one output per row.
#[derive(Module, Debug)]
struct DotProduct {
    lstm: Lstm,
    dense: Dense,
    #[module(skip)]
    config: PairConfig,
}

/// `x [batch, time, features]` and its mask, padded with masked zero steps to `time` steps.
fn pad_time(x: Tensor<3>, mask: Option<Mask>, time: usize) -> padless::Result<(Tensor<3>, Mask)> {
    let [batch, steps, features] = x.dims();
    let device = x.device();
    let mask = mask.unwrap_or_else(|| Mask::all_valid(batch, steps, &device));
    if steps == time {
        return Ok((x, mask));
    }
    let zeros = Tensor::zeros([batch, time - steps, features], &device);
    let padding = Tensor::<2, Bool>::from_data(
        TensorData::new(vec![false; batch * (time - steps)], [batch, time - steps]),
        &device,
    );
    Ok((
        Tensor::cat(vec![x, zeros], 1),
        Mask::from_valid(Tensor::cat(vec![mask.valid(), padding], 1)),
    ))
}

impl Model for DotProduct {
    type Config = PairConfig;
    const KIND: &'static str = "dot_product";

    fn build(config: &PairConfig, device: &Device) -> padless::Result<Self> {
        Ok(DotProduct {
            lstm: LstmConfig::new(2, config.units).init(device),
            dense: DenseConfig::new(config.units, 1).init(device),
            config: config.clone(),
        })
    }

    fn config(&self) -> padless::Result<PairConfig> {
        Ok(self.config.clone())
    }

    fn forward_batch(
        &self,
        inputs: &Inputs,
        _read_steps: Option<&[usize]>,
    ) -> padless::Result<Value> {
        let [a, b] = inputs.exactly::<2>("DotProduct")?;
        let (a, mask_a) = a.clone().into_sequence("DotProduct input a")?;
        let (b, mask_b) = b.clone().into_sequence("DotProduct input b")?;
        let time = a.dims()[1].max(b.dims()[1]);
        let (a, mask_a) = pad_time(a, mask_a, time)?;
        let (b, mask_b) = pad_time(b, mask_b, time)?;
        // A step is valid where both inputs are.
        let mask = and_masks(Some(&mask_a), Some(&mask_b))?;
        let out = self
            .lstm
            .forward(Tensor::cat(vec![a, b], 2), mask.as_ref(), None)?;
        Ok(Value::Vector(self.dense.forward(out.last)))
    }

    fn weights(&self) -> Vec<NamedWeight> {
        let lstm = Layer::weights(&self.lstm)
            .into_iter()
            .map(|w| w.prefixed("lstm"));
        let dense = Layer::weights(&self.dense)
            .into_iter()
            .map(|w| w.prefixed("dense"));
        lstm.chain(dense).collect()
    }

    fn set_weights(&mut self, weights: &[NamedWeight]) -> padless::Result<()> {
        Layer::set_weights(&mut self.lstm, &strip_prefix(weights, "lstm"))?;
        Layer::set_weights(&mut self.dense, &strip_prefix(weights, "dense"))
    }
}

/// Pairs of sequences of 2 to 8 steps in `[-1, 1]`, with their dot product over the common
/// steps as the target.
fn examples(n: usize, seed: u64) -> Vec<Example> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    (0..n)
        .map(|_| {
            let (len_a, len_b) = (2 + (next() * 7.0) as usize, 2 + (next() * 7.0) as usize);
            let a: Vec<f32> = (0..len_a).map(|_| 2.0 * next() - 1.0).collect();
            let b: Vec<f32> = (0..len_b).map(|_| 2.0 * next() - 1.0).collect();
            let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let steps = |v: &[f32]| InputSeq::Features(v.iter().map(|&x| vec![x]).collect());
            Example::with_inputs(
                vec![steps(&a), steps(&b)],
                TargetSeq::Dense(vec![vec![dot]]),
            )
        })
        .collect()
}

fn compile() -> CompileConfig {
    let mut config = CompileConfig::new(SequenceLoss::new(LossKind::MeanSquaredError));
    config.learning_rate = 0.01;
    config.schedule = LrSchedule::from(Decay::Cosine { floor: 0.1 }).with_warmup(10);
    config
}

fn main() -> padless::Result<()> {
    let device = training_device();
    device.seed(3);
    let model = DotProduct::build(&PairConfig { units: 16 }, &device)?;
    let mut trainer = Trainer::new(model, compile(), &device)?;
    let mut batches = BatchOptions::new(32);
    batches.shuffle_seed = Some(1);
    let fit = FitConfig {
        validation_split: 0.1,
        ..FitConfig::new(25, batches)
    };
    let history = trainer.fit(&examples(800, 7), None, &fit, &mut [])?;
    let (first, last) = (
        history[0]["val_loss"],
        history[history.len() - 1]["val_loss"],
    );
    println!(
        "validation loss {first:.4} -> {last:.4} over {} epochs",
        history.len()
    );
    assert!(last < 0.1 * first, "the loss falls: {first} -> {last}");

    // One row alone, and the same row first in a batch of longer rows of both inputs.
    let row = examples(1, 99);
    let inference = default_device();
    let output = |examples: &[Example]| -> padless::Result<f32> {
        let batch = &make_batches(examples, &trainer.batch_options(8), &inference)?[0];
        let y = trainer
            .predict(batch.inputs.clone())?
            .into_vector("output")?;
        Ok(f32_vec(y)[0])
    };
    let alone = output(&row)?;
    let mut padded = row.clone();
    let longest = |e: &Example| e.inputs.iter().map(InputSeq::len).max().unwrap_or(0);
    padded.extend(
        examples(40, 1234)
            .into_iter()
            .filter(|e| longest(e) > longest(&row[0]))
            .take(3),
    );
    let together = output(&padded)?;
    assert!(
        (alone - together).abs() < 1e-5,
        "{alone} alone, {together} in a padded batch"
    );
    println!("row 0's output is {alone:.5} alone and {together:.5} in a padded batch");

    // A checkpoint resumes the run, and loads the model alone.
    let path = std::env::temp_dir().join(format!("two-inputs-{}.safetensors", std::process::id()));
    trainer.save(&path)?;
    let resumed = Trainer::<DotProduct>::resume(&path, compile(), &device)?;
    assert_eq!((resumed.epoch, resumed.step), (trainer.epoch, trainer.step));
    let loaded: DotProduct = padless::load(&path, &inference)?;
    assert_eq!(loaded.weights(), trainer.model.weights());
    std::fs::remove_file(&path).ok();
    println!(
        "resumed at epoch {} (step {}) from {}",
        resumed.epoch,
        resumed.step,
        path.display()
    );
    Ok(())
}
