//! `padless masking-demo` (also `demo`): a Keras character-level sequence-to-sequence model
//! whose encoder drops the mask, trained on a generated task, with its masked and unmasked
//! losses side by side.
//!
//! Its report (summary, losses, predictions) goes to stdout, the training progress to stderr.

use anyhow::{Context, ensure};
use burn::tensor::{Int, Tensor, TensorData};
use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

/// Input letters; targets add the end symbol `$` and the padding symbol `#`.
const LETTERS: &[char] = &['a', 'b', 'c', 'd', 'e'];
const END: i64 = 5;
const PAD: i64 = 6;
const MAX_LEN: usize = 6;
const OUT_STEPS: usize = MAX_LEN + 1;

fn symbol(label: i64) -> char {
    match label {
        END => '$',
        PAD => '#',
        l => LETTERS[l as usize],
    }
}

/// Words of 1 to 6 letters; the target is the word reversed, then `$`.
fn words(n: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m) as i64
    };
    (0..n)
        .map(|_| {
            let len = 1 + next(MAX_LEN as u64) as usize;
            (0..len).map(|_| next(LETTERS.len() as u64)).collect()
        })
        .collect()
}

fn example(word: &[i64]) -> Example {
    let one_hot = |l: i64| {
        (0..LETTERS.len())
            .map(|i| if i as i64 == l { 1.0 } else { 0.0 })
            .collect()
    };
    let mut target: Vec<i64> = word.iter().rev().copied().collect();
    target.push(END);
    Example::new(
        InputSeq::Features(word.iter().map(|&l| one_hot(l)).collect()),
        TargetSeq::Labels(target),
    )
}

fn model_config() -> ModelConfig {
    let lstm = |return_sequences| {
        LayerConfig::Lstm(LstmConfig {
            units: 64,
            return_sequences,
            ..Default::default()
        })
    };
    ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: LETTERS.len(),
        },
        layers: vec![
            LayerConfig::Masking(MaskingConfig { mask_value: 0.0 }),
            lstm(false),
            LayerConfig::RepeatVector(RepeatVectorConfig { n_steps: OUT_STEPS }),
            lstm(true),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 7,
                activation: ActivationKind::Softmax,
                ..Default::default()
            })),
        ],
    }
}

pub fn run(seed: u64, epochs: usize) -> anyhow::Result<()> {
    let device = training_device();
    device.seed(seed);
    let config = model_config();
    let mut compile =
        CompileConfig::new(SequenceLoss::new(LossKind::SparseCategoricalCrossentropy {
            from_logits: false,
        }));
    compile.learning_rate = 0.01;
    compile.clip_norm = Some(5.0);
    compile.metrics = vec![MetricKind::TokenAccuracy, MetricKind::SequenceAccuracy];
    let mut trainer =
        Trainer::from_config(&config, compile, &device).context("building the model")?;
    println!(
        "A character-level sequence-to-sequence model (Masking, LSTM encoder, RepeatVector, LSTM decoder, TimeDistributed softmax):\n"
    );
    print!("{}", trainer.model.summary(config.input.spec(false))?);
    println!(
        "\nTask: reverse words of a-e (1 to {MAX_LEN} letters, pre-padded with all-zero steps), then '$'.\n\
         The encoder consumes the input mask and RepeatVector makes none, so the loss is masked\n\
         by the targets' lengths: padded target steps are never scored.\n"
    );
    let train: Vec<Example> = words(2000, seed).iter().map(|w| example(w)).collect();
    let held_out_words = words(200, seed + 1);
    let held_out: Vec<Example> = held_out_words.iter().map(|w| example(w)).collect();
    let mut batches = BatchOptions::new(64);
    batches.input_padding = Padding::Pre;
    batches.shuffle_seed = Some(seed);
    let fit = FitConfig {
        validation_split: 0.1,
        ..FitConfig::new(epochs, batches)
    };
    let mut progress = crate::output::Progress::new(epochs);
    trainer.fit(&train, None, &fit, &mut [&mut progress])?;

    let test = trainer.evaluate(&held_out, 200)?;
    let mut options = trainer.batch_options(200);
    options.input_padding = Padding::Pre;
    let batch = &make_batches(&held_out, &options, trainer.device())?[0];
    let predicted = trainer.predict(batch.inputs.clone())?;
    let (probabilities, _) = predicted.into_sequence("demo")?;
    let unmasked = unmasked_loss(batch, probabilities.clone())?;
    println!("\nHeld-out words ({}):", held_out.len());
    println!(
        "  masked loss (padless, target lengths):        {:.4}",
        test["loss"]
    );
    println!("  unmasked loss (every step, '#' as a target):  {unmasked:.4}");
    println!(
        "  token accuracy {:.3} · word accuracy {:.3}",
        test["accuracy"], test["sequence_accuracy"]
    );
    ensure!(
        (test["loss"] - unmasked).abs() > 1e-6,
        "the masked and unmasked losses should differ"
    );

    let classes = padless::metrics::predicted_classes(probabilities);
    let rows = padless::tensor_util::i64_vec(classes);
    println!("\nPredictions:");
    for (b, word) in held_out_words.iter().take(6).enumerate() {
        let output: String = rows[b * OUT_STEPS..(b + 1) * OUT_STEPS]
            .iter()
            .take_while(|&&l| l != END)
            .map(|&l| symbol(l))
            .collect();
        let input: String = word.iter().map(|&l| symbol(l)).collect();
        let want: String = input.chars().rev().collect();
        let mark = if output == want { "ok" } else { "wrong" };
        println!("  {input:>6} -> {output:<7} ({mark})");
    }
    Ok(())
}

/// The loss a framework that lost the mask reports: every one of the 7 output steps scored,
/// the padding symbol `#` as the target of padded steps.
fn unmasked_loss(batch: &Batch, probabilities: Tensor<3>) -> anyhow::Result<f64> {
    let (Targets::Labels(labels), TargetMask::Lengths(lengths)) =
        (&batch.targets, &batch.target_mask)
    else {
        anyhow::bail!("the demo's batches have labels and lengths");
    };
    let mut padded = padless::tensor_util::i64_vec(labels.clone());
    for (b, &len) in lengths.iter().enumerate() {
        padded[b * OUT_STEPS + len..(b + 1) * OUT_STEPS].fill(PAD);
    }
    let device = probabilities.device();
    let labels =
        Tensor::<2, Int>::from_data(TensorData::new(padded, [lengths.len(), OUT_STEPS]), &device);
    let loss = SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: false });
    let out = loss.compute(LossInputs::new(Targets::Labels(labels), probabilities))?;
    let value = out.value.context("mean reduction")?;
    Ok(f64::from(f32_vec(value)[0]))
}
