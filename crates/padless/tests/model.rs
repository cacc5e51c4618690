//! The model abstraction through the one `Trainer`: a run resumed from its checkpoint equals
//! the uninterrupted run bit for bit (a `Sequential` with dropout, an `EncoderDecoder`), a
//! stack built in code saves and reloads, gradient accumulation equals one step on the mean
//! gradient, schedules move the rate per step, callbacks add to the logs and restore the best
//! weights, user metrics and the symbol error rate are reported, and the time budget stops a
//! run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::tensor::Tensor;
use padless::model_config::{InputConfig, LayerConfig, ModelConfig};
use padless::prelude::*;
use padless::seq2seq::{AttentionKind, BOS, EOS, EncoderDecoder, EncoderDecoderConfig};
use padless::train::*;

/// Every step seeds the device's one generator: tests that train run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SEEDED: Mutex<()> = Mutex::new(());
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("padless-model-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A seeded stream of small integers.
fn stream(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed.wrapping_mul(6364136223846793005) | 1;
    move |m| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    }
}

/// Token rows of 1 to 4 ids in 1..=4, each with its reverse as per-step labels.
fn reverse_task(n: usize, seed: u64) -> Vec<Example> {
    let mut next = stream(seed);
    (0..n)
        .map(|_| {
            let len = 1 + next(4) as usize;
            let tokens: Vec<i64> = (0..len).map(|_| 1 + next(4) as i64).collect();
            let reversed = tokens.iter().rev().copied().collect();
            Example::new(InputSeq::Tokens(tokens), TargetSeq::Labels(reversed))
        })
        .collect()
}

/// Embedding, a bidirectional LSTM over every step, dropout, per-step logits.
fn tagger_config() -> ModelConfig {
    ModelConfig {
        input: InputConfig::Tokens { time: None },
        layers: vec![
            LayerConfig::Embedding(EmbeddingConfig::new(6, 8).with_mask_zero(true)),
            LayerConfig::Bidirectional(BidirectionalConfig {
                layer: AnyRecurrentConfig::Lstm(LstmConfig {
                    units: 12,
                    return_sequences: true,
                    ..Default::default()
                }),
                merge_mode: MergeMode::Concat,
            }),
            LayerConfig::Dropout(DropoutConfig { rate: 0.3 }),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 6,
                activation: ActivationKind::Linear,
                ..Default::default()
            })),
        ],
    }
}

fn sparse_loss() -> SequenceLoss {
    SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: true })
}

/// Writes a fixed value per epoch into the logs as `score` (what a task's own validation
/// would add) and records the weights at each epoch's end.
struct Scores {
    values: Vec<f64>,
    weights: Vec<Vec<f32>>,
}

impl<M: Model> Callback<M> for Scores {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        trainer: &mut Trainer<M>,
    ) -> padless::Result<Control> {
        logs.insert("score".into(), self.values[epoch]);
        self.weights.push(values_of(&trainer.model.weights()));
        Ok(Control::Continue)
    }
}

fn values_of(weights: &[padless::weights::NamedWeight]) -> Vec<f32> {
    weights.iter().flat_map(|w| w.values.clone()).collect()
}

/// Best `score` at epoch 1; no improvement at epochs 2, 3, 4, so the rate halves after each.
const SCORES: [f64; 5] = [1.0, 0.7, 0.95, 0.97, 0.9];

/// Fits `epochs` of a 5-epoch plan with the callbacks whose state must survive a resume,
/// writing the last checkpoint to `last`.
fn fit_part<M: Model>(
    trainer: &mut Trainer<M>,
    examples: &[Example],
    epochs: usize,
    last: &std::path::Path,
) -> (Vec<Logs>, Vec<Vec<f32>>) {
    let mut batches = BatchOptions::new(16);
    batches.shuffle_seed = Some(3);
    let fit = FitConfig {
        validation_split: 0.25,
        total_epochs: Some(5),
        ..FitConfig::new(epochs, batches)
    };
    let mut scores = Scores {
        values: SCORES.to_vec(),
        weights: Vec::new(),
    };
    let mut reduce = ReduceLrOnPlateau::new("score", 0.5, 1);
    let mut stop = EarlyStopping::new("score", 50).with_restore_best_weights(true);
    let mut checkpoint = ModelCheckpoint::new(None, Some(last.to_path_buf()), "score");
    let history = trainer
        .fit(
            examples,
            None,
            &fit,
            &mut [&mut scores, &mut reduce, &mut stop, &mut checkpoint],
        )
        .unwrap();
    (history, scores.weights)
}

fn tagger_compile() -> CompileConfig {
    let mut config = CompileConfig::new(sparse_loss());
    config.learning_rate = 0.01;
    config.clip_norm = Some(5.0);
    config.schedule = LrSchedule::from(Decay::Cosine { floor: 0.1 }).with_warmup(3);
    config.metrics = vec![MetricKind::TokenAccuracy, MetricKind::SymbolErrorRate];
    config.weight_average = Some(0.9);
    config
}

/// Two epochs, a save, a resume and three more epochs give the logs and weights of five
/// uninterrupted epochs, bit for bit: dropout draws from (seed, step), the cosine schedule
/// counts towards the same plan, and the optimizer state, plateau factor, monitors' patience,
/// the best epoch's weights (restored at the end) and the weight average come back from the
/// checkpoint.
#[test]
fn a_resumed_sequential_with_dropout_equals_the_uninterrupted_run() {
    let _guard = one_at_a_time();
    let dir = scratch("resume-seq");
    let examples = reverse_task(160, 5);
    let device = training_device();
    let build = || {
        device.seed(21);
        Trainer::from_config(&tagger_config(), tagger_compile(), &device).unwrap()
    };

    let mut straight = build();
    let (history, weights) = fit_part(&mut straight, &examples, 5, &dir.join("a.safetensors"));
    assert_eq!(history.len(), 5);

    let mut first = build();
    let (mut parts, _) = fit_part(&mut first, &examples, 2, &dir.join("b.safetensors"));
    let mut resumed: Trainer =
        Trainer::resume(&dir.join("b.safetensors"), tagger_compile(), &device).unwrap();
    assert_eq!((resumed.epoch, resumed.step), (2, first.step));
    let (rest, _) = fit_part(&mut resumed, &examples, 3, &dir.join("c.safetensors"));
    parts.extend(rest);

    assert_eq!(parts, history, "logs of 2 + 3 epochs against 5");
    assert_eq!(resumed.step, straight.step);
    assert_eq!(resumed.lr_factor, 0.125, "three plateau halvings");
    assert_eq!(resumed.lr_factor, straight.lr_factor);
    let final_weights = values_of(&straight.model.weights());
    assert_eq!(values_of(&resumed.model.weights()), final_weights);
    assert_eq!(
        final_weights, weights[1],
        "the best epoch's weights are restored at the end"
    );
    assert_eq!(
        values_of(&resumed.averaged_model().unwrap().weights()),
        values_of(&straight.averaged_model().unwrap().weights())
    );
    // The rate followed the warmed-up cosine, halved three times: epochs differ.
    let rates: Vec<f64> = history.iter().map(|l| l["lr"]).collect();
    assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    // Dropout was drawn: the same run from another seed differs.
    let mut other_seed = {
        device.seed(21);
        let mut config = tagger_compile();
        config.seed = Some(first.seed.wrapping_add(1));
        Trainer::from_config(&tagger_config(), config, &device).unwrap()
    };
    let (other, _) = fit_part(&mut other_seed, &examples, 1, &dir.join("d.safetensors"));
    assert_ne!(other[0]["loss"], history[0]["loss"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn pairs(n: usize, seed: u64) -> Vec<Example> {
    let mut next = stream(seed);
    (0..n)
        .map(|_| {
            let len = 1 + next(5) as usize;
            let source: Vec<i64> = (0..len).map(|_| 1 + next(6) as i64).collect();
            // The target repeats each source token, mapped to 3..=8.
            let target: Vec<i64> = source.iter().flat_map(|&s| [s + 2, s + 2]).collect();
            let decoder_input = std::iter::once(BOS).chain(target.iter().copied()).collect();
            let labels = target.into_iter().chain(std::iter::once(EOS)).collect();
            Example::with_inputs(
                vec![InputSeq::Tokens(source), InputSeq::Tokens(decoder_input)],
                TargetSeq::Labels(labels),
            )
        })
        .collect()
}

fn seq2seq_config() -> EncoderDecoderConfig {
    EncoderDecoderConfig {
        n_source_tokens: 7,
        n_target_tokens: 9,
        d_embedding: 8,
        d_encoder: 8,
        encoder_layers: 1,
        decoder_layers: 1,
        post_attention_layers: 0,
        attention: AttentionKind::Dot { scaled: false },
        dropout: 0.2,
    }
}

fn seq2seq_compile() -> CompileConfig {
    let mut config = CompileConfig::new(sparse_loss().with_label_smoothing(0.1));
    config.learning_rate = 0.01;
    config.schedule = LrSchedule::from(Decay::Linear { floor: 0.01 });
    config
}

/// The same for an encoder-decoder trained on two inputs per example.
#[test]
fn a_resumed_encoder_decoder_equals_the_uninterrupted_run() {
    let _guard = one_at_a_time();
    let dir = scratch("resume-s2s");
    let examples = pairs(96, 8);
    let device = training_device();
    let build = || {
        device.seed(4);
        let model = EncoderDecoder::build(&seq2seq_config(), &device).unwrap();
        Trainer::new(model, seq2seq_compile(), &device).unwrap()
    };
    let mut straight = build();
    let (history, _) = fit_part(&mut straight, &examples, 3, &dir.join("a.safetensors"));
    let mut first = build();
    let (mut parts, _) = fit_part(&mut first, &examples, 2, &dir.join("b.safetensors"));
    let mut resumed =
        Trainer::<EncoderDecoder>::resume(&dir.join("b.safetensors"), seq2seq_compile(), &device)
            .unwrap();
    let (rest, _) = fit_part(&mut resumed, &examples, 1, &dir.join("c.safetensors"));
    parts.extend(rest);
    assert_eq!(parts, history);
    assert_eq!(
        values_of(&resumed.model.weights()),
        values_of(&straight.model.weights())
    );
    assert!(history[2]["loss"] < history[0]["loss"], "{history:?}");
    // The checkpoint rebuilds the model from the file alone, as any built-in kind.
    let AnyModel::EncoderDecoder(model) =
        padless::load(&dir.join("c.safetensors"), &default_device()).unwrap()
    else {
        panic!("an encoder-decoder checkpoint")
    };
    assert_eq!(model.config, seq2seq_config());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stack built in code (no config) saves as a checkpoint and as a model file, and both
/// rebuild it from the file alone; a file of one kind is not loaded as another, and a model
/// file without a run's state cannot be resumed.
#[test]
fn a_stack_built_in_code_saves_reloads_and_resumes() {
    let _guard = one_at_a_time();
    let dir = scratch("in-code");
    let device = training_device();
    device.seed(2);
    let model = Sequential::new(vec![
        AnyLayer::Embedding(
            EmbeddingConfig::new(6, 4)
                .with_mask_zero(true)
                .init(&device),
        ),
        AnyLayer::Gru(
            GruConfig::new(4, 5)
                .with_return_sequences(true)
                .init(&device),
        ),
        AnyLayer::TimeDistributed(TimeDistributed::new(DenseConfig::new(5, 6).init(&device))),
    ]);
    let input = Spec::Tokens {
        time: None,
        masked: false,
    };
    let mut trainer =
        Trainer::compile(model, input, CompileConfig::new(sparse_loss()), &device).unwrap();
    let examples = reverse_task(32, 1);
    trainer
        .fit(
            &examples,
            None,
            &FitConfig::new(1, BatchOptions::new(8)),
            &mut [],
        )
        .unwrap();
    let path = dir.join("ckpt.safetensors");
    trainer.save(&path).unwrap();
    let batch = &make_batches(&examples[..4], &trainer.batch_options(4), &device).unwrap()[0];
    let predict = |t: &Trainer| {
        f32_vec(
            t.predict(batch.inputs.clone())
                .unwrap()
                .into_sequence("p")
                .unwrap()
                .0,
        )
    };
    let resumed: Trainer = Trainer::resume(&path, CompileConfig::new(sparse_loss()), &device)
        .expect("a stack built in code resumes");
    assert_eq!(resumed.epoch, 1);
    assert_eq!(predict(&resumed), predict(&trainer));
    assert_eq!(resumed.input_spec().unwrap(), input);

    let model_path = dir.join("model.safetensors");
    padless::save(&trainer.model, &model_path).unwrap();
    let AnyModel::Sequential(loaded) = padless::load(&model_path, &default_device()).unwrap()
    else {
        panic!("a sequential file")
    };
    let inputs = batch.inputs.clone().to_device(&default_device());
    let out = |m: &Sequential| {
        f32_vec(
            Model::forward_batch(m, &inputs, None)
                .unwrap()
                .into_sequence("p")
                .unwrap()
                .0,
        )
    };
    assert_eq!(out(&loaded), predict(&trainer));

    let err = padless::load::<EncoderDecoder>(&model_path, &default_device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("holds a sequential model, expected encoder_decoder"),
        "{err}"
    );
    let err =
        Trainer::<Sequential>::resume(&model_path, CompileConfig::new(sparse_loss()), &device)
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("header has no trainer"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `accumulate_batches` 2, the batches [a, b] and [a, b] again give one optimizer step on
/// the mean of two equal gradients, which is the gradient of [a, b]: the weights equal one
/// step on [a, b], bit for bit. Two different batches give another step.
#[test]
fn accumulated_gradients_step_once_on_their_mean() {
    let _guard = one_at_a_time();
    let device = training_device();
    let config = ModelConfig {
        input: InputConfig::Tokens { time: None },
        layers: vec![
            LayerConfig::Embedding(EmbeddingConfig::new(6, 4).with_mask_zero(true)),
            LayerConfig::Lstm(LstmConfig {
                units: 6,
                return_sequences: true,
                ..Default::default()
            }),
            LayerConfig::TimeDistributed(TimeDistributedConfig(DenseConfig {
                units: 6,
                activation: ActivationKind::Linear,
                ..Default::default()
            })),
        ],
    };
    let train = |examples: &[Example], accumulate: usize| {
        device.seed(9);
        let mut compile = CompileConfig::new(sparse_loss());
        compile.accumulate_batches = accumulate;
        let mut trainer = Trainer::from_config(&config, compile, &device).unwrap();
        trainer
            .fit(
                examples,
                None,
                &FitConfig::new(1, BatchOptions::new(2)),
                &mut [],
            )
            .unwrap();
        (trainer.step, values_of(&trainer.model.weights()))
    };
    let task = reverse_task(4, 12);
    let (a, b, c) = (&task[0], &task[1], &task[2]);
    let once = train(&[a.clone(), b.clone()], 1);
    let twice = train(&[a.clone(), b.clone(), a.clone(), b.clone()], 2);
    assert_eq!(once.0, 1);
    assert_eq!(twice.0, 1);
    assert_eq!(twice.1, once.1);
    let mixed = train(&[a.clone(), b.clone(), c.clone(), b.clone()], 2);
    assert_eq!(mixed.0, 1);
    assert_ne!(mixed.1, once.1);
    let err = Trainer::from_config(
        &config,
        CompileConfig {
            accumulate_batches: 0,
            ..CompileConfig::new(sparse_loss())
        },
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("accumulate_batches must be at least 1, found 0"),
        "{err}"
    );
}

/// A step schedule moves the rate per optimizer step: 4 batches an epoch, the rate halves
/// every 2 steps, and an epoch's `lr` is its last step's: 0.1 · 0.5 at step 3, 0.1 · 0.5^3 at
/// step 7.
#[test]
fn the_rate_follows_the_schedule_step_by_step() {
    let _guard = one_at_a_time();
    let device = training_device();
    device.seed(1);
    let mut compile = CompileConfig::new(sparse_loss());
    compile.learning_rate = 0.1;
    compile.schedule = LrSchedule::from(Decay::Step {
        every: 2,
        factor: 0.5,
    });
    let mut trainer = Trainer::from_config(&tagger_config(), compile, &device).unwrap();
    let history = trainer
        .fit(
            &reverse_task(16, 3),
            None,
            &FitConfig::new(2, BatchOptions::new(4)),
            &mut [],
        )
        .unwrap();
    assert_eq!(trainer.step, 8);
    assert_eq!(history[0]["lr"], 0.05);
    assert_eq!(history[1]["lr"], 0.0125);
}

/// The fraction of the batch's steps that the loss counts.
struct ValidFraction;

impl Metric for ValidFraction {
    fn name(&self) -> String {
        "valid_fraction".into()
    }
    fn value(&self, y_pred: &Tensor<3>, _: &Targets, mask: &Mask) -> padless::Result<f64> {
        let [batch, time, _] = y_pred.dims();
        let valid = mask.lengths().iter().sum::<usize>();
        Ok(valid as f64 / (batch * time) as f64)
    }
}

/// A user metric sees the loss's mask (rows of 1 and 3 steps padded to 3: 4/6), the symbol
/// error rate is logged on training and validation data and serves as a monitor.
#[test]
fn user_metrics_and_the_symbol_error_rate_are_logged_and_monitored() {
    let _guard = one_at_a_time();
    let device = training_device();
    device.seed(5);
    let mut compile = CompileConfig::new(sparse_loss());
    compile.metrics = vec![MetricKind::SymbolErrorRate];
    compile.custom_metrics = vec![Arc::new(ValidFraction)];
    let mut trainer = Trainer::from_config(&tagger_config(), compile, &device).unwrap();
    let rows = [
        Example::new(InputSeq::Tokens(vec![1]), TargetSeq::Labels(vec![1])),
        Example::new(
            InputSeq::Tokens(vec![1, 2, 3]),
            TargetSeq::Labels(vec![3, 2, 1]),
        ),
    ];
    let batch = &make_batches(&rows, &BatchOptions::new(2), &device).unwrap()[0];
    let logs = trainer.test_on_batch(batch).unwrap();
    assert_eq!(logs["valid_fraction"], 4.0 / 6.0);
    let rate = logs["symbol_error_rate"];
    assert!((0.0..=1.0).contains(&rate), "{rate}");

    let mut stop = EarlyStopping::new("val_symbol_error_rate", 1);
    let history = trainer
        .fit(
            &reverse_task(64, 2),
            Some(&reverse_task(16, 9)),
            &FitConfig::new(3, BatchOptions::new(16)),
            &mut [&mut stop],
        )
        .unwrap();
    for logs in &history {
        for key in [
            "symbol_error_rate",
            "val_symbol_error_rate",
            "val_valid_fraction",
        ] {
            assert!(logs.contains_key(key), "{key} in {logs:?}");
        }
    }
    assert_eq!(
        stop.best(),
        Some(
            history
                .iter()
                .map(|l| l["val_symbol_error_rate"])
                .fold(f64::INFINITY, f64::min)
        )
    );
}

/// A time budget ends the run after the step that passes it (here the first), counted over
/// the whole run: a later fit has no time left.
#[test]
fn the_time_budget_stops_after_the_step_that_passes_it() {
    let _guard = one_at_a_time();
    let device = training_device();
    device.seed(5);
    let mut trainer =
        Trainer::from_config(&tagger_config(), CompileConfig::new(sparse_loss()), &device).unwrap();
    let fit = FitConfig {
        max_minutes: Some(1e-12),
        ..FitConfig::new(3, BatchOptions::new(8))
    };
    let history = trainer
        .fit(&reverse_task(64, 2), None, &fit, &mut [])
        .unwrap();
    assert_eq!((history.len(), trainer.step, trainer.epoch), (1, 1, 1));
    let again = trainer
        .fit(&reverse_task(64, 2), None, &fit, &mut [])
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(trainer.step, 1);
}

/// Callbacks get their saved states back only in a resumed trainer's first fit: a later fit
/// of the same trainer starts its callbacks afresh (as Keras does).
#[test]
fn a_later_fit_starts_its_callbacks_afresh() {
    let _guard = one_at_a_time();
    let device = training_device();
    device.seed(6);
    let mut trainer =
        Trainer::from_config(&tagger_config(), CompileConfig::new(sparse_loss()), &device).unwrap();
    let examples = reverse_task(16, 4);
    let fit = |trainer: &mut Trainer| {
        let mut scores = Scores {
            values: vec![1.0; 8],
            weights: Vec::new(),
        };
        let mut stop = EarlyStopping::new("score", 1);
        trainer
            .fit(
                &examples,
                None,
                &FitConfig::new(4, BatchOptions::new(8)),
                &mut [&mut scores, &mut stop],
            )
            .unwrap()
            .len()
    };
    // A flat score: the first epoch sets the best, the second stops.
    assert_eq!(fit(&mut trainer), 2);
    assert_eq!(fit(&mut trainer), 2);
    assert_eq!(trainer.epoch, 4);
}
