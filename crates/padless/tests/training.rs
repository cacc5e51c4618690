//! Training end to end: a toy sequence-to-sequence task is learned, runs are reproducible
//! from a seed, and checkpoints round-trip (and fail clearly when damaged).

use std::sync::Mutex;

use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

/// burn's random generator is per device: tests that seed it, or draw from it (any model
/// built) while another seeded test runs, run one at a time.
static SEEDED: Mutex<()> = Mutex::new(());

fn reverse_task(n: usize, seed: u64) -> Vec<Example> {
    let mut state = seed.wrapping_mul(6364136223846793005) | 1;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    (0..n)
        .map(|_| {
            let len = 1 + next(4) as usize;
            let tokens: Vec<i64> = (0..len).map(|_| 1 + next(4) as i64).collect();
            let mut reversed = tokens.clone();
            reversed.reverse();
            Example::new(InputSeq::Tokens(tokens), TargetSeq::Labels(reversed))
        })
        .collect()
}

fn model_config() -> ModelConfig {
    let rnn = |units, return_sequences| {
        LayerConfig::Lstm(LstmConfig {
            units,
            return_sequences,
            ..Default::default()
        })
    };
    ModelConfig {
        input: InputConfig::Tokens { time: None },
        layers: vec![
            LayerConfig::Embedding(EmbeddingConfig::new(6, 8).with_mask_zero(true)),
            rnn(32, false),
            LayerConfig::RepeatVector(RepeatVectorConfig { n_steps: 4 }),
            rnn(32, true),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 6,
                ..Default::default()
            })),
        ],
    }
}

fn compile() -> CompileConfig {
    let mut config =
        CompileConfig::new(SequenceLoss::new(LossKind::SparseCategoricalCrossentropy {
            from_logits: true,
        }));
    config.learning_rate = 0.02;
    config.clip_norm = Some(5.0);
    config.metrics = vec![MetricKind::TokenAccuracy, MetricKind::SequenceAccuracy];
    config
}

fn fit_config(epochs: usize) -> FitConfig {
    let mut batches = BatchOptions::new(32);
    batches.shuffle_seed = Some(1);
    FitConfig {
        validation_split: 0.2,
        ..FitConfig::new(epochs, batches)
    }
}

fn trained(epochs: usize, seed: u64) -> (Trainer, Vec<Logs>) {
    let device = training_device();
    device.seed(seed);
    let mut trainer = Trainer::from_config(&model_config(), compile(), &device).unwrap();
    let history = trainer
        .fit(&reverse_task(600, 5), None, &fit_config(epochs), &mut [])
        .unwrap();
    (trainer, history)
}

#[test]
fn a_toy_seq2seq_model_learns_to_reverse() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let (trainer, history) = trained(20, 42);
    let first = &history[0];
    let last = history.last().unwrap();
    assert!(
        last["loss"] < first["loss"] * 0.3,
        "loss {} -> {}",
        first["loss"],
        last["loss"]
    );
    assert!(
        last["val_accuracy"] > 0.9,
        "validation token accuracy {}",
        last["val_accuracy"]
    );
    let test = trainer.evaluate(&reverse_task(100, 99), 50).unwrap();
    assert!(
        test["accuracy"] > 0.9,
        "held-out token accuracy {}",
        test["accuracy"]
    );
}

#[test]
fn the_same_seed_and_data_give_identical_curves() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let (_, a) = trained(2, 7);
    let (_, b) = trained(2, 7);
    assert_eq!(a, b);
    let (_, c) = trained(2, 8);
    assert_ne!(a, c);
}

#[test]
fn a_resumed_run_continues_exactly_as_an_uninterrupted_one() {
    // Adam's moments and step count, the epoch (which seeds the shuffling) and the learning
    // rate all come back from the checkpoint, so epoch 3 after a resume is epoch 3 of a run
    // that never stopped, bit for bit.
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let (_, straight) = trained(3, 13);
    let (first_two, _) = trained(2, 13);
    let dir = std::env::temp_dir().join(format!("padless-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("last.safetensors");
    save_checkpoint(&first_two, &path).unwrap();
    let mut resumed = load_checkpoint(&path, compile(), &training_device()).unwrap();
    let third = resumed
        .fit(&reverse_task(600, 5), None, &fit_config(1), &mut [])
        .unwrap();
    assert_eq!(resumed.epoch, 3);
    assert_eq!(third[0], straight[2]);
    // Without the optimizer state (a fresh Adam on the same weights) epoch 3 differs.
    let mut fresh_optimizer =
        Trainer::from_config(&model_config(), compile(), &training_device()).unwrap();
    fresh_optimizer
        .model
        .set_weights(&first_two.model.weights())
        .unwrap();
    fresh_optimizer.epoch = 2;
    let other = fresh_optimizer
        .fit(&reverse_task(600, 5), None, &fit_config(1), &mut [])
        .unwrap();
    assert_ne!(other[0]["loss"], straight[2]["loss"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_inputs_at_valid_steps_are_an_error_or_a_warning_by_option() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let device = training_device();
    let config = ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: 2,
        },
        layers: vec![LayerConfig::TimeDistributed(TimeDistributedConfig(
            DenseConfig {
                units: 1,
                ..Default::default()
            },
        ))],
    };
    let example = |steps: Vec<Vec<f32>>| {
        Example::new(
            InputSeq::Features(steps.clone()),
            TargetSeq::Dense(vec![vec![0.0]; steps.len()]),
        )
    };
    // Row 1 is post-padded with NaN at its masked step: never read.
    let padded = make_batches(
        &[
            example(vec![vec![1.0, 2.0], vec![3.0, 4.0]]),
            example(vec![vec![5.0, 6.0]]),
        ],
        &BatchOptions::new(2),
        &device,
    )
    .unwrap();
    let mut batch = padded[0].clone();
    if let Value::Sequence { values, mask } = batch.inputs[0].clone() {
        let mut v = f32_vec(values);
        v[6] = f32::NAN; // row 1, step 1 (masked)
        batch.inputs = Value::sequence(tensor_from(&v, [2, 2, 2], &device), mask).into();
    }
    let compile = || CompileConfig::new(SequenceLoss::new(LossKind::MeanSquaredError));
    let mut trainer = Trainer::from_config(&config, compile(), &device).unwrap();
    assert!(trainer.train_on_batch(&batch).unwrap()["loss"].is_finite());
    let with_inf = make_batches(
        &[example(vec![vec![1.0, 2.0], vec![3.0, f32::INFINITY]])],
        &BatchOptions::new(1),
        &device,
    )
    .unwrap();
    let err = trainer
        .train_on_batch(&with_inf[0])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input at [row 0, step 1] is inf, expected a finite value at a valid step"),
        "{err}"
    );
    let mut warn = compile();
    warn.non_finite_inputs = NonFiniteInputs::Warn;
    let trainer = Trainer::from_config(&config, warn, &device).unwrap();
    assert!(trainer.test_on_batch(&with_inf[0]).is_ok());
}

#[test]
fn checkpoints_round_trip_and_fail_clearly_when_damaged() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let (trainer, _) = trained(1, 3);
    let dir = std::env::temp_dir().join(format!("padless-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    save_checkpoint(&trainer, &path).unwrap();
    let loaded = load_checkpoint(&path, compile(), &training_device()).unwrap();
    assert_eq!(loaded.epoch, 1);
    let batch = &make_batches(
        &reverse_task(8, 11),
        &trainer.batch_options(8),
        trainer.device(),
    )
    .unwrap()[0];
    let predict = |t: &Trainer| {
        f32_vec(
            t.predict(batch.inputs.clone())
                .unwrap()
                .into_sequence("p")
                .unwrap()
                .0,
        )
    };
    assert_eq!(predict(&trainer), predict(&loaded));

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_checkpoint(&path, compile(), &training_device())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = load_checkpoint(&path, compile(), &training_device())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a padless file"), "{err}");
    let foreign = std::collections::HashMap::from([(
        "format".to_string(),
        "padless-checkpoint-0".to_string(),
    )]);
    padless::weights::save_safetensors(&path, &trainer.model.weights(), &foreign).unwrap();
    let err = load_checkpoint(&path, compile(), &training_device())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("format padless-checkpoint-0, expected padless-checkpoint-2"),
        "{err}"
    );
    let err = load_checkpoint(&dir.join("missing"), compile(), &training_device())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An epoch's end for one callback as `fit` runs it: `on_epoch_end`, then `after_epoch_end`
/// (where checkpoints are written).
fn end_epoch(callback: &mut dyn Callback, epoch: usize, mut logs: Logs, trainer: &mut Trainer) {
    callback.on_epoch_end(epoch, &mut logs, trainer).unwrap();
    callback.after_epoch_end(epoch, &logs, trainer).unwrap();
}

#[test]
fn callbacks_follow_their_monitor() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let device = training_device();
    let mut trainer = Trainer::from_config(&model_config(), compile(), &device).unwrap();
    let logs = |loss: f64, accuracy: f64| {
        Logs::from([
            ("val_loss".to_string(), loss),
            ("accuracy".to_string(), accuracy),
        ])
    };
    // Early stopping: losses 1.0, 0.9 (better), 0.95, 0.92 (two epochs without improvement).
    let mut stop = EarlyStopping::new("val_loss", 2);
    let seen: Vec<Control> = [1.0, 0.9, 0.95, 0.92]
        .iter()
        .map(|&l| {
            stop.on_epoch_end(0, &mut logs(l, 0.0), &mut trainer)
                .unwrap()
        })
        .collect();
    assert_eq!(
        seen,
        [
            Control::Continue,
            Control::Continue,
            Control::Continue,
            Control::Stop
        ]
    );
    // min_delta: 0.9 after 1.0 is not an improvement of more than 0.2.
    let mut strict = EarlyStopping::new("val_loss", 1).with_min_delta(0.2);
    strict
        .on_epoch_end(0, &mut logs(1.0, 0.0), &mut trainer)
        .unwrap();
    assert_eq!(
        strict
            .on_epoch_end(1, &mut logs(0.9, 0.0), &mut trainer)
            .unwrap(),
        Control::Stop
    );
    // Accuracy improves upwards.
    let mut by_accuracy = EarlyStopping::new("accuracy", 1);
    by_accuracy
        .on_epoch_end(0, &mut logs(0.0, 0.5), &mut trainer)
        .unwrap();
    assert_eq!(
        by_accuracy
            .on_epoch_end(1, &mut logs(0.0, 0.6), &mut trainer)
            .unwrap(),
        Control::Continue
    );
    assert_eq!(
        by_accuracy
            .on_epoch_end(2, &mut logs(0.0, 0.55), &mut trainer)
            .unwrap(),
        Control::Stop
    );
    let err = EarlyStopping::new("val_f1", 1)
        .on_epoch_end(0, &mut logs(1.0, 0.0), &mut trainer)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("monitors val_f1, but the logs have accuracy, val_loss"),
        "{err}"
    );

    // Reduce on plateau: after two flat epochs the rate is multiplied by 0.5.
    let start = trainer.learning_rate;
    let mut reduce = ReduceLrOnPlateau::new("val_loss", 0.5, 2);
    for l in [1.0, 1.0, 1.0] {
        reduce
            .on_epoch_end(0, &mut logs(l, 0.0), &mut trainer)
            .unwrap();
    }
    assert_eq!(trainer.learning_rate, start * 0.5);
    assert_eq!(trainer.lr_factor, 0.5);

    // Best checkpoint written only on improvement; CSV log with a header and one row per epoch.
    let dir = std::env::temp_dir().join(format!("padless-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let best = dir.join("best.safetensors");
    let mut checkpoint = ModelCheckpoint::new(Some(best.clone()), None, "val_loss");
    end_epoch(&mut checkpoint, 0, logs(1.0, 0.0), &mut trainer);
    let written = std::fs::metadata(&best).unwrap().modified().unwrap();
    std::fs::remove_file(&best).unwrap();
    end_epoch(&mut checkpoint, 1, logs(1.5, 0.0), &mut trainer);
    assert!(!best.exists(), "a worse epoch writes no best checkpoint");
    end_epoch(&mut checkpoint, 2, logs(0.5, 0.0), &mut trainer);
    assert!(best.exists() && std::fs::metadata(&best).unwrap().modified().unwrap() >= written);
    let csv = dir.join("log.csv");
    let mut logger = CsvLogger::new(&csv);
    logger
        .on_epoch_end(0, &mut logs(1.0, 0.25), &mut trainer)
        .unwrap();
    logger
        .on_epoch_end(1, &mut logs(0.5, 0.75), &mut trainer)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "epoch,accuracy,val_loss\n1,0.25,1\n2,0.75,0.5\n"
    );
    // A resumed run appends under the existing header.
    let mut resumed = CsvLogger::appending(&csv).unwrap();
    resumed
        .on_epoch_end(2, &mut logs(0.25, 1.0), &mut trainer)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "epoch,accuracy,val_loss\n1,0.25,1\n2,0.75,0.5\n3,1,0.25\n"
    );
    // A resumed checkpoint keeps the earlier best: a worse epoch does not replace it.
    std::fs::remove_file(&best).unwrap();
    let mut resumed =
        ModelCheckpoint::new(Some(best.clone()), None, "val_loss").with_best_so_far(Some(0.5));
    end_epoch(&mut resumed, 3, logs(0.75, 0.0), &mut trainer);
    assert!(!best.exists(), "0.75 does not beat the earlier best 0.5");
    end_epoch(&mut resumed, 4, logs(0.25, 0.0), &mut trainer);
    assert!(best.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn weight_values(model: &Sequential) -> Vec<f32> {
    model.weights().into_iter().flat_map(|w| w.values).collect()
}

#[test]
fn a_weight_average_follows_the_steps_and_replaces_the_weights_after_fit() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let device = training_device();
    let build = |average: Option<f64>| {
        device.seed(3);
        let mut config = compile();
        config.weight_average = average;
        Trainer::from_config(&model_config(), config, &device).unwrap()
    };
    let batches = make_batches(&reverse_task(96, 7), &BatchOptions::new(32), &device).unwrap();
    let (mut plain, mut averaged) = (build(None), build(Some(0.5)));
    // The average starts at the weights after the first step, then blends with
    // d = min(0.5, (1 + n) / (10 + n)): 1/10, 2/11, ... (worked here in f64).
    let mut expected: Option<Vec<f64>> = None;
    for (n, batch) in batches.iter().chain(&batches).enumerate() {
        plain.train_on_batch(batch).unwrap();
        averaged.train_on_batch(batch).unwrap();
        let w = weight_values(&averaged.model);
        expected = Some(match expected {
            None => w.iter().map(|&v| f64::from(v)).collect(),
            Some(avg) => {
                let d = f64::min(0.5, n as f64 / (9.0 + n as f64));
                avg.iter()
                    .zip(&w)
                    .map(|(a, &v)| d * a + (1.0 - d) * f64::from(v))
                    .collect()
            }
        });
    }
    assert!(plain.averaged_model().is_none());
    let got = weight_values(&averaged.averaged_model().unwrap());
    let expected = expected.unwrap();
    let last = weight_values(&averaged.model);
    let mut moved = 0.0f64;
    for ((g, e), l) in got.iter().zip(&expected).zip(&last) {
        assert!(
            (f64::from(*g) - e).abs() < 1e-5 * (1.0 + e.abs()),
            "{g} vs {e}"
        );
        moved = moved.max((e - f64::from(*l)).abs());
    }
    assert!(
        moved > 1e-3,
        "the average differs from the last weights ({moved})"
    );

    // fit ends with the average written over the weights; training goes on from there.
    let mut config = compile();
    config.weight_average = Some(0.9);
    device.seed(3);
    let mut trainer = Trainer::from_config(&model_config(), config, &device).unwrap();
    trainer
        .fit(&reverse_task(96, 7), None, &fit_config(2), &mut [])
        .unwrap();
    let after_fit = weight_values(&trainer.model);
    assert_eq!(after_fit, weight_values(&trainer.averaged_model().unwrap()));
    trainer.train_on_batch(&batches[0]).unwrap();
    assert_ne!(
        after_fit,
        weight_values(&trainer.model),
        "gradients still reach the weights"
    );
}

#[test]
fn a_weight_average_decay_outside_zero_one_is_refused_at_compile() {
    let _guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let mut config = compile();
    config.weight_average = Some(1.0);
    let err = Trainer::from_config(&model_config(), config, &training_device())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("decay must be in [0, 1), found 1"), "{err}");
}
