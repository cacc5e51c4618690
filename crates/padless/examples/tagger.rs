//! A per-step tagger: Masking, LSTM(return_sequences), Dropout, Dense(sigmoid), trained with
//! binary cross-entropy whose padded labels are ignored.
//!
//! Claim checked: the model learns the tags (a step is tagged when its value exceeds the
//! previous step's) from variable-length rows; the loss only counts each row's real steps
//! (the input mask from Masking AND the target lengths).
//!
//! Run: `cargo run -p padless --example tagger`

use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

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
            let len = 2 + (next() * 7.0) as usize;
            let values: Vec<f32> = (0..len).map(|_| 0.1 + next()).collect();
            let tags: Vec<Vec<f32>> = (0..len)
                .map(|t| {
                    vec![if t > 0 && values[t] > values[t - 1] {
                        1.0
                    } else {
                        0.0
                    }]
                })
                .collect();
            Example::new(
                InputSeq::Features(values.iter().map(|&v| vec![v]).collect()),
                TargetSeq::Dense(tags),
            )
        })
        .collect()
}

fn main() -> padless::Result<()> {
    let device = training_device();
    device.seed(5);
    let config = ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: 1,
        },
        layers: vec![
            LayerConfig::Masking(MaskingConfig { mask_value: 0.0 }),
            LayerConfig::Lstm(LstmConfig {
                units: 16,
                return_sequences: true,
                ..Default::default()
            }),
            LayerConfig::Dropout(DropoutConfig { rate: 0.1 }),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 1,
                activation: ActivationKind::Sigmoid,
                ..Default::default()
            })),
        ],
    };
    let mut compile = CompileConfig::new(SequenceLoss::new(LossKind::BinaryCrossentropy {
        from_logits: false,
    }));
    compile.learning_rate = 0.02;
    let mut trainer = Trainer::from_config(&config, compile, &device)?;
    let mut batches = BatchOptions::new(32);
    batches.shuffle_seed = Some(1);
    let fit = FitConfig::new(15, batches);
    let history = trainer.fit(&examples(400, 3), None, &fit, &mut [])?;
    let first = history[0]["loss"];
    let last = history.last().expect("epochs")["loss"];
    println!("training loss {first:.4} -> {last:.4}");
    let test = trainer.evaluate(&examples(100, 9), 100)?;
    println!("held-out masked BCE {:.4}", test["loss"]);
    assert!(last < first * 0.5, "the tagger learns");
    assert!(test["loss"] < 0.35, "held-out loss {}", test["loss"]);
    println!("claim checked: the tagger learns, scored on real steps only");
    Ok(())
}
