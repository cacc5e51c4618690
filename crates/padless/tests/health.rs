//! Training health: a non-finite loss stops training with an error naming where (or is
//! skipped, by option), a model with non-finite weights is never written, hyperparameters
//! are checked whether they come from code or a checkpoint, a resumed run keeps its monitor,
//! and counts that would overflow are errors.

use std::path::{Path, PathBuf};

use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::train::*;

fn model_config() -> ModelConfig {
    ModelConfig {
        input: InputConfig::Sequence {
            time: None,
            features: 2,
        },
        // A linear layer passes NaN inputs on to the loss (a saturating activation, such as
        // the fast tanh's clamp, may not).
        layers: vec![LayerConfig::TimeDistributed(TimeDistributedConfig(
            DenseConfig {
                units: 3,
                ..Default::default()
            },
        ))],
    }
}

fn compile() -> CompileConfig {
    let mut config = CompileConfig::new(SequenceLoss::new(LossKind::MeanSquaredError));
    config.learning_rate = 0.01;
    config.seed = Some(3);
    // The NaN inputs below reach the loss: these tests are about the loss's check.
    config.non_finite_inputs = NonFiniteInputs::Ignore;
    config
}

/// Two steps of two features; NaN features give a NaN loss.
fn example(x: f32) -> Example {
    Example::new(
        InputSeq::Features(vec![vec![x, 0.5], vec![0.25, x]]),
        TargetSeq::Dense(vec![vec![1.0, 0.0, -1.0], vec![0.5, 0.5, 0.0]]),
    )
}

/// One batch per value, in order.
fn batches(values: &[f32], device: &burn::tensor::Device) -> Vec<Batch> {
    values
        .iter()
        .flat_map(|&x| make_batches(&[example(x)], &BatchOptions::new(1), device).unwrap())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padless-health-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn all_finite(weights: &[padless::weights::NamedWeight]) -> bool {
    weights
        .iter()
        .all(|w| w.values.iter().all(|v| v.is_finite()))
}

fn trainer(model: &Sequential, config: CompileConfig) -> Trainer {
    let device = training_device();
    let spec = model_config().input.spec(false);
    Trainer::compile(model.clone(), spec, config, &device).unwrap()
}

fn fit_on(trainer: &mut Trainer, values: &[f32], epochs: usize) -> padless::Result<Vec<Logs>> {
    let device = trainer.device().clone();
    let mut source = |_: usize, _: &burn::tensor::Device| -> padless::Result<Vec<Batch>> {
        Ok(batches(values, &device))
    };
    let fit = FitConfig::new(epochs, BatchOptions::new(1));
    trainer.fit_batches(&mut source, None, &fit, &mut [])
}

#[test]
fn a_non_finite_loss_stops_training_naming_epoch_batch_and_step() {
    let model = model_config().build(&training_device()).unwrap();
    let mut trainer = trainer(&model, compile());
    let err = fit_on(&mut trainer, &[0.1, 0.3, f32::NAN, 0.2], 2).unwrap_err();
    assert!(
        matches!(
            err,
            padless::Error::NonFiniteLoss {
                epoch: 1,
                batch: 3,
                step: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("the loss is NaN at epoch 1, batch 3 (after 2 optimizer steps)"),
        "{text}"
    );
    // The batch's gradient was not applied: two steps, finite weights.
    assert_eq!(trainer.step, 2);
    assert!(all_finite(&Model::weights(&trainer.model)));

    // One batch alone, as train_on_batch runs it: the same error, nothing applied.
    let before = Model::weights(&trainer.model);
    let bad = &batches(&[f32::NAN], trainer.device())[0];
    let err = trainer.train_on_batch(bad).unwrap_err().to_string();
    assert!(err.contains("the loss is NaN at epoch 1, batch 1"), "{err}");
    assert_eq!(Model::weights(&trainer.model), before);
}

#[test]
fn skipping_leaves_the_batch_out_as_if_it_were_not_there() {
    let model = model_config().build(&training_device()).unwrap();
    let mut config = compile();
    config.non_finite_loss = NonFiniteLoss::Skip;
    let mut skipping = trainer(&model, config.clone());
    let history = fit_on(&mut skipping, &[0.1, f32::NAN, 0.2], 1).unwrap();
    let mut without = trainer(&model, config);
    let reference = fit_on(&mut without, &[0.1, 0.2], 1).unwrap();
    assert_eq!(skipping.skipped_batches, 1);
    assert_eq!(without.skipped_batches, 0);
    assert_eq!(skipping.step, 2);
    // The same steps on the same batches: the same weights and logs, bit for bit.
    assert_eq!(
        Model::weights(&skipping.model),
        Model::weights(&without.model)
    );
    assert_eq!(history, reference);
    assert!(history[0]["loss"].is_finite());

    // The count is kept by checkpoints.
    let path = scratch("skip").join("last.safetensors");
    skipping.save(&path).unwrap();
    let resumed: Trainer =
        Trainer::resume(&path, skipping.config.clone(), &training_device()).unwrap();
    assert_eq!(resumed.skipped_batches, 1);
}

#[test]
fn a_model_with_non_finite_weights_is_never_written() {
    let device = training_device();
    let mut model = model_config().build(&device).unwrap();
    let dir = scratch("nan-weights");
    let path = dir.join("model.safetensors");
    std::fs::write(&path, b"previous").unwrap();
    let mut weights = Model::weights(&model);
    weights[1].values[2] = f32::INFINITY;
    let name = weights[1].name.clone();
    Model::set_weights(&mut model, &weights).unwrap();
    let err = padless::save(&model, &path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("weight {name} holds inf at element 2"))
            && err.contains("expected finite weights, so the file is not written"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    // A trainer's checkpoint likewise (what ModelCheckpoint writes as best and last).
    let trainer = trainer(&model, compile());
    let last = dir.join("last.safetensors");
    let err = trainer.save(&last).unwrap_err().to_string();
    assert!(err.contains("holds inf"), "{err}");
    assert!(!last.exists());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[test]
fn hyperparameters_out_of_range_are_refused_naming_them() {
    let device = training_device();
    type Change = fn(&mut CompileConfig);
    let cases: &[(Change, &str)] = &[
        (
            |c| c.learning_rate = -1.0,
            "Trainer: expected a finite learning rate greater than 0, found -1",
        ),
        (
            |c| c.learning_rate = 0.0,
            "expected a finite learning rate greater than 0, found 0",
        ),
        (
            |c| c.learning_rate = f64::NAN,
            "expected a finite learning rate greater than 0, found NaN",
        ),
        (
            |c| c.learning_rate = f64::INFINITY,
            "expected a finite learning rate greater than 0, found inf",
        ),
        (
            |c| c.clip_norm = Some(0.0),
            "expected a finite clip norm greater than 0, found 0",
        ),
        (
            |c| c.clip_norm = Some(-1.0),
            "expected a finite clip norm greater than 0, found -1",
        ),
        (
            |c| c.clip_norm = Some(f32::INFINITY),
            "expected a finite clip norm greater than 0, found inf",
        ),
        (
            |c| {
                c.optimizer = OptimizerConfig::Sgd {
                    momentum: -0.5,
                    nesterov: false,
                }
            },
            "SGD: expected momentum in [0, 1), found -0.5",
        ),
        (
            |c| {
                c.optimizer = OptimizerConfig::Sgd {
                    momentum: 1.0,
                    nesterov: true,
                }
            },
            "SGD: expected momentum in [0, 1), found 1",
        ),
        (
            |c| {
                c.optimizer = OptimizerConfig::Adam {
                    beta_1: 1.0,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                }
            },
            "Adam: expected beta_1 in [0, 1), found 1",
        ),
        (
            |c| {
                c.optimizer = OptimizerConfig::Adam {
                    beta_1: 0.9,
                    beta_2: -0.1,
                    epsilon: 1e-7,
                }
            },
            "Adam: expected beta_2 in [0, 1), found -0.1",
        ),
        (
            |c| {
                c.optimizer = OptimizerConfig::Adam {
                    beta_1: 0.9,
                    beta_2: 0.999,
                    epsilon: 0.0,
                }
            },
            "Adam: expected a finite epsilon greater than 0, found 0",
        ),
        (
            |c| {
                c.optimizer = OptimizerConfig::AdamW {
                    weight_decay: f32::NAN,
                }
            },
            "AdamW: expected a finite weight_decay at least 0, found NaN",
        ),
        (
            |c| c.optimizer = OptimizerConfig::RmsProp { rho: 1.5 },
            "RMSprop: expected rho in [0, 1), found 1.5",
        ),
        (
            |c| c.weight_average = Some(1.0),
            "WeightAverage: decay must be in [0, 1), found 1",
        ),
        (
            |c| c.loss.label_smoothing = 1.0,
            "SequenceLoss: expected label smoothing in [0, 1), found 1",
        ),
        (
            |c| c.loss.label_smoothing = -0.1,
            "expected label smoothing in [0, 1), found -0.1",
        ),
        (
            |c| {
                c.schedule = LrSchedule::from(Decay::Exponential {
                    rate: 0.0,
                    decay_steps: 10,
                    staircase: false,
                })
            },
            "LrSchedule: expected a finite rate greater than 0, found 0",
        ),
        (
            |c| {
                c.schedule = LrSchedule::from(Decay::Step {
                    every: 0,
                    factor: 0.5,
                })
            },
            "LrSchedule: expected every of at least 1, found 0",
        ),
        (
            |c| c.schedule = LrSchedule::from(Decay::Cosine { floor: 2.0 }),
            "LrSchedule: expected a floor in [0, 1], found 2",
        ),
        (
            |c| c.accumulate_batches = 0,
            "accumulate_batches must be at least 1, found 0",
        ),
    ];
    for (change, expected) in cases {
        let mut config = compile();
        change(&mut config);
        let err = Trainer::from_config(&model_config(), config, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    Trainer::from_config(&model_config(), compile(), &device).unwrap();
}

/// `path` with the `trainer` header entry's `key` set to the JSON `value`, written to `to`.
fn edit_trainer_header(path: &Path, to: &Path, key: &str, value: &str) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let entry = header["__metadata__"]["trainer"].as_str().unwrap();
    let mut state: serde_json::Value = serde_json::from_str(entry).unwrap();
    state[key] = serde_json::from_str(value).unwrap();
    header["__metadata__"]["trainer"] = serde_json::Value::String(state.to_string());
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(to, out).unwrap();
}

#[test]
fn a_checkpoint_header_with_a_bad_rate_or_count_is_refused() {
    let device = training_device();
    let model = model_config().build(&device).unwrap();
    let mut trainer = trainer(&model, compile());
    fit_on(&mut trainer, &[0.1, 0.2], 1).unwrap();
    let dir = scratch("header");
    let path = dir.join("last.safetensors");
    trainer.save(&path).unwrap();
    let edited = dir.join("edited.safetensors");
    // The unedited header resumes (the editing itself keeps the file readable).
    edit_trainer_header(&path, &edited, "epoch", "1");
    let resumed: Trainer = Trainer::resume(&edited, compile(), &device).unwrap();
    assert_eq!(resumed.epoch, 1);
    for (key, value, expected) in [
        (
            "lr_factor",
            "0",
            "expected a finite lr_factor greater than 0, found 0",
        ),
        (
            "lr_factor",
            "-2",
            "expected a finite lr_factor greater than 0, found -2",
        ),
        ("lr_factor", "null", "invalid type: null, expected f64"),
        (
            "learning_rate",
            "-1",
            "expected a finite learning_rate of at least 0, found -1",
        ),
        (
            "train_seconds",
            "-5",
            "expected finite train_seconds of at least 0, found -5",
        ),
        ("epoch", "1e300", "invalid type: floating point"),
        (
            "epoch",
            "18446744073709551615",
            "expected an epoch of at most 4294967295, found 18446744073709551615",
        ),
        ("epoch", "-1", "invalid value: integer `-1`, expected usize"),
        (
            "step",
            "18446744073709551615",
            "expected a step of at most 9223372036854775807, found 18446744073709551615",
        ),
        (
            "step",
            "18446744073709551616",
            "invalid type: floating point",
        ),
    ] {
        edit_trainer_header(&path, &edited, key, value);
        let err = Trainer::<Sequential>::resume(&edited, compile(), &device)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("edited.safetensors") && err.contains(expected),
            "{key} {value}: {err}"
        );
    }
}

#[test]
fn a_resumed_run_keeps_its_monitor_and_counts_do_not_overflow() {
    let device = training_device();
    let model = model_config().build(&device).unwrap();
    let mut trainer = trainer(&model, compile());
    let dir = scratch("monitor");
    let (best, last) = (dir.join("best.safetensors"), dir.join("last.safetensors"));
    let validation = batches(&[0.4, 0.6], &device.clone().without_autodiff());
    let train_batches = batches(&[0.1, 0.2], &device);
    let mut source = |_: usize, _: &burn::tensor::Device| -> padless::Result<Vec<Batch>> {
        Ok(train_batches.clone())
    };
    let mut checkpoint = ModelCheckpoint::new(Some(best.clone()), Some(last.clone()), "val_loss");
    let fit = FitConfig::new(1, BatchOptions::new(1));
    trainer
        .fit_batches(&mut source, Some(&validation), &fit, &mut [&mut checkpoint])
        .unwrap();
    let best_bytes = std::fs::read(&best).unwrap();

    // Resumed without validation, the checkpoint callback would watch `loss`: refused.
    let mut resumed: Trainer = Trainer::resume(&last, compile(), &device).unwrap();
    let mut on_loss = ModelCheckpoint::new(Some(best.clone()), Some(last.clone()), "loss");
    let err = resumed
        .fit_batches(&mut source, None, &fit, &mut [&mut on_loss])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "the resumed run's model_checkpoint watched val_loss, this fit's watches loss; expected the same monitor"
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&best).unwrap(), best_bytes);

    // With its monitor it goes on; more epochs than the counter holds are refused.
    let mut resumed: Trainer = Trainer::resume(&last, compile(), &device).unwrap();
    let mut on_val = ModelCheckpoint::new(Some(best.clone()), Some(last.clone()), "val_loss");
    resumed
        .fit_batches(&mut source, Some(&validation), &fit, &mut [&mut on_val])
        .unwrap();
    assert_eq!(resumed.epoch, 2);
    let endless = FitConfig::new(usize::MAX, BatchOptions::new(1));
    let err = resumed
        .fit_batches(&mut source, Some(&validation), &endless, &mut [])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "expected at most {} more epochs after the 2 done, found {}",
            usize::MAX - 2,
            usize::MAX
        )),
        "{err}"
    );
}
