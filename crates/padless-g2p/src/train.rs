//! Training a [`G2p`] model (an LSTM or a Transformer) through padless's [`Trainer`]:
//! teacher forcing on this crate's
//! length-bucketed batches with the target-masked loss, Adam, a time and epoch budget, the
//! library's per-step schedules with halving on a validation plateau, greedy validation after
//! each epoch as a callback that adds `val_wer` and `val_per` to the logs, the best model on
//! validation saved atomically, and a checkpoint of the last epoch that `resume` continues.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use padless::Model;
use padless::losses::{LossKind, SequenceLoss};
use padless::model::checkpoint_metadata;
use padless::seq2seq::{AttentionKind, EncoderDecoder, EncoderDecoderConfig};
use padless::train::{
    Batch, Callback, CallbackState, CompileConfig, Control, CsvLogger, Decay, EarlyStopping,
    FitConfig, Logs, LrSchedule, ModelCheckpoint, ReduceLrOnPlateau, Trainer,
};
use padless::transformer::{Transformer, TransformerConfig};
use serde::{Deserialize, Serialize};

use crate::batch::{bucketed_batches, make_pairs};
use crate::cmudict::Entry;
use crate::error::{G2pError, Result};
use crate::eval::evaluate;
use crate::model::{G2p, direction_name};
use crate::network::Network;
use crate::split::Split;
use crate::vocab::{SOURCE_SPECIALS, TARGET_SPECIALS, Vocab};

/// Settings of a training run: the network, and the task's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The LSTM network, trained when `transformer` is `None`. Its vocabulary sizes
    /// (`n_source_tokens`, `n_target_tokens`) are set from the dictionary when training
    /// starts ([`TrainConfig::network`]).
    pub network: EncoderDecoderConfig,
    /// A Transformer to train instead of the LSTM `network` (its vocabulary sizes are set
    /// from the dictionary as `network`'s are: [`TrainConfig::transformer_network`]).
    #[serde(default)]
    pub transformer: Option<TransformerConfig>,
    /// Pairs per batch.
    pub batch_size: usize,
    /// At most this many epochs.
    pub max_epochs: usize,
    /// Stop after the epoch (or batch) that passes this many minutes.
    pub max_minutes: f64,
    /// Adam's initial learning rate.
    pub learning_rate: f64,
    /// Clip each parameter's gradient to this norm.
    pub clip_norm: Option<f32>,
    /// Seed of the weights, the batches and dropout.
    pub seed: u64,
    /// Validation words decoded after each epoch (the first ones of the validation split).
    pub validation_words: usize,
    /// With [`TrainConfig::halve_on_plateau`], halve the learning rate after each run of this
    /// many epochs without a better validation score; stop after `4 * patience` such epochs
    /// in a row.
    pub patience: usize,
    /// How the learning rate moves from step to step; progress counts towards `max_epochs`
    /// and `max_minutes`, whichever is nearer.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Halve the rate on a validation plateau ([`ReduceLrOnPlateau`], on top of the schedule).
    #[serde(default = "yes")]
    pub halve_on_plateau: bool,
    /// Label smoothing of the training loss (0: none).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Decay of an exponential moving average of the weights updated after every step
    /// ([`padless::train::WeightAverage`]; none when `None`). Each epoch validates the
    /// average beside the trained weights and the better of the two competes for the saved
    /// model.
    #[serde(default)]
    pub weight_average: Option<f64>,
    /// Learn each pronunciation last phoneme first ([`G2p::right_to_left`]): a model whose
    /// errors differ from a left-to-right one's, for rescoring a pair (see
    /// [`crate::model::pronounce_ensemble`]). It still pronounces in reading order.
    #[serde(default)]
    pub right_to_left: bool,
}

fn yes() -> bool {
    true
}

/// The learning-rate policies of `g2p train --schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulePolicy {
    /// Constant, halved after each `patience` epochs without a better validation score.
    Plateau,
    /// Falls linearly from the initial rate to 1% of it over the budget ([`Decay::Linear`]),
    /// without halving: training on a fixed time budget gains from ending at a small rate.
    Linear,
    /// The plateau rule, then over the last third of the budget a linear fall to 1% of the
    /// rate it has reached ([`Decay::Anneal`]): most steps at a high rate, and a short
    /// annealing that ends near a minimum.
    Anneal,
    /// A half cosine from the initial rate to 1% of it over the budget ([`Decay::Cosine`]),
    /// without halving.
    Cosine,
}

impl TrainConfig {
    /// Sets the schedule and halving of `policy`, keeping the warmup.
    pub fn with_policy(mut self, policy: SchedulePolicy) -> Self {
        let (decay, halve) = match policy {
            SchedulePolicy::Plateau => (Decay::Constant, true),
            SchedulePolicy::Linear => (Decay::Linear { floor: 0.01 }, false),
            SchedulePolicy::Anneal => (Decay::Anneal { floor: 0.01 }, true),
            SchedulePolicy::Cosine => (Decay::Cosine { floor: 0.01 }, false),
        };
        self.schedule = LrSchedule::from(decay).with_warmup(self.schedule.warmup_steps);
        self.halve_on_plateau = halve;
        self
    }

    /// A run of a few minutes on 2 cores: a small model that already pronounces unseen words
    /// plausibly.
    pub fn quick() -> Self {
        TrainConfig {
            network: EncoderDecoderConfig {
                n_source_tokens: 0,
                n_target_tokens: 0,
                d_embedding: 32,
                d_encoder: 64,
                encoder_layers: 1,
                decoder_layers: 1,
                post_attention_layers: 0,
                attention: AttentionKind::Dot { scaled: false },
                dropout: 0.0,
            },
            batch_size: 64,
            max_epochs: 3,
            max_minutes: 3.0,
            learning_rate: 2e-3,
            clip_norm: Some(5.0),
            seed: 1,
            validation_words: 500,
            patience: 1,
            schedule: LrSchedule::constant(),
            halve_on_plateau: true,
            label_smoothing: 0.0,
            weight_average: None,
            right_to_left: false,
            transformer: None,
        }
    }

    /// The model of the README's results (up to 60 minutes on 2 cores).
    pub fn full() -> Self {
        TrainConfig {
            network: EncoderDecoderConfig {
                d_embedding: 64,
                d_encoder: 128,
                dropout: 0.1,
                ..TrainConfig::quick().network
            },
            batch_size: 128,
            max_epochs: 40,
            max_minutes: 58.0,
            validation_words: 2000,
            ..TrainConfig::quick()
        }
    }

    /// The README's best results model: [`TrainConfig::full`] with two bidirectional encoder
    /// layers of 256 units per direction and a 512-unit decoder (3.98M parameters), dropout
    /// 0.3, label smoothing 0.1, patience 2 and a weight average (decay 0.9995).
    pub fn large() -> Self {
        let full = TrainConfig::full();
        TrainConfig {
            network: EncoderDecoderConfig {
                d_encoder: 256,
                encoder_layers: 2,
                dropout: 0.3,
                ..full.network.clone()
            },
            patience: 2,
            label_smoothing: 0.1,
            weight_average: Some(0.9995),
            ..full
        }
    }

    /// A Transformer for up to 60 minutes on 2 cores: 3 + 3 layers of width 256 with 4 heads
    /// and feed-forward blocks of 768 (4.8M parameters: under 10 MB in 16 bits), dropout 0.1,
    /// label smoothing 0.1, batches of 128, Adam at 1e-3 after a warmup of 1,000 steps then a
    /// half cosine to 1% of it over the budget, no halving on plateaus.
    pub fn transformer() -> Self {
        TrainConfig {
            transformer: Some(TransformerConfig {
                dropout: 0.1,
                ..TransformerConfig::new([0, 0], 256, 4, 768, [3, 3])
            }),
            learning_rate: 1e-3,
            clip_norm: Some(1.0),
            schedule: LrSchedule::from(Decay::Cosine { floor: 0.01 }).with_warmup(1000),
            halve_on_plateau: false,
            label_smoothing: 0.1,
            patience: 4,
            ..TrainConfig::full()
        }
    }

    /// A Transformer small enough for a test or a first look: 2 + 2 layers of width 64.
    pub fn transformer_quick() -> Self {
        TrainConfig {
            transformer: Some(TransformerConfig::new([0, 0], 64, 4, 256, [2, 2])),
            learning_rate: 2e-3,
            schedule: LrSchedule::from(Decay::Cosine { floor: 0.01 }).with_warmup(100),
            halve_on_plateau: false,
            ..TrainConfig::quick()
        }
    }

    /// `lstm` or `transformer`: the family this run trains.
    pub fn family(&self) -> &'static str {
        match self.transformer {
            Some(_) => crate::network::TRANSFORMER,
            None => crate::network::LSTM,
        }
    }

    /// The Transformer's config for these vocabularies, when the run trains one.
    pub fn transformer_network(
        &self,
        letters: &Vocab,
        phonemes: &Vocab,
    ) -> Option<TransformerConfig> {
        self.transformer.as_ref().map(|t| TransformerConfig {
            n_source_tokens: letters.len(),
            n_target_tokens: phonemes.len(),
            ..t.clone()
        })
    }

    /// The LSTM network's config for these vocabularies.
    pub fn network(&self, letters: &Vocab, phonemes: &Vocab) -> EncoderDecoderConfig {
        EncoderDecoderConfig {
            n_source_tokens: letters.len(),
            n_target_tokens: phonemes.len(),
            ..self.network.clone()
        }
    }

    /// The trainer's compile settings: Adam at `learning_rate` with `clip_norm`, the masked
    /// sparse cross-entropy of the logits with `label_smoothing`, the schedule, the weight
    /// average, and `seed` for dropout.
    pub fn compile(&self) -> CompileConfig {
        let loss = SequenceLoss::new(LossKind::SparseCategoricalCrossentropy { from_logits: true })
            .with_label_smoothing(self.label_smoothing as f32);
        let mut compile = CompileConfig::new(loss);
        compile.learning_rate = self.learning_rate;
        compile.clip_norm = self.clip_norm;
        compile.schedule = self.schedule;
        compile.weight_average = self.weight_average;
        compile.seed = Some(self.seed);
        compile
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    /// Mean masked loss per valid target step over the epoch's batches (label-smoothed if
    /// set), averaged by their rows.
    pub train_loss: f64,
    /// Greedy WER on the validation words.
    pub validation_wer: f64,
    /// Greedy PER on the validation words.
    pub validation_per: f64,
    /// Greedy WER and PER of the weight average on the validation words, when one is kept.
    #[serde(default)]
    pub average: Option<(f64, f64)>,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Seconds of training since the start of the run (a resumed run goes on counting).
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Per-epoch figures of this call (a resumed run: the epochs after the resume).
    pub history: Vec<EpochLog>,
    /// Optimizer steps of the whole run.
    pub steps: usize,
    /// Training time of the whole run, validation included.
    pub seconds: f64,
    /// The best validation WER (the saved model's).
    pub best_validation_wer: f64,
    /// Scalar parameters.
    pub parameters: usize,
}

/// Where a run writes, and what it continues.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFiles {
    /// The best model on validation (a [`G2p`] model file).
    pub best: PathBuf,
    /// A checkpoint of each epoch's end: the run's complete state, which `resume` continues.
    pub last: Option<PathBuf>,
    /// A CSV log, one row per epoch (appended to by a resumed run).
    pub log: Option<PathBuf>,
    /// A `last` checkpoint of an earlier run to continue, with the same data and settings.
    pub resume: Option<PathBuf>,
}

impl RunFiles {
    /// Only the best model, at `best`.
    pub fn new(best: impl Into<PathBuf>) -> Self {
        RunFiles {
            best: best.into(),
            last: None,
            log: None,
            resume: None,
        }
    }

    /// The best model at `best`, the last checkpoint and the log beside it:
    /// `model.safetensors` → `model.last.safetensors`, `model.csv`.
    pub fn beside(best: impl Into<PathBuf>) -> Self {
        let best = best.into();
        RunFiles {
            last: Some(best.with_extension("last.safetensors")),
            log: Some(best.with_extension("csv")),
            best,
            resume: None,
        }
    }
}

/// The alphabets of a dictionary: every character of every word, and every phoneme. Taken
/// over all splits (spellings and the phoneme inventory are not labels), so that any
/// dictionary word can be evaluated.
pub fn vocabularies(entries: &[Entry]) -> (Vocab, Vocab) {
    let letters = Vocab::new(
        &SOURCE_SPECIALS,
        entries
            .iter()
            .flat_map(|e| e.word.chars().map(String::from)),
    );
    let phonemes = Vocab::new(
        &TARGET_SPECIALS,
        entries
            .iter()
            .flat_map(|e| e.pronunciations.iter().flatten().cloned()),
    );
    (letters, phonemes)
}

/// Trains on `split.train`, validates on the first `validation_words` of `split.validation`
/// after each epoch, and saves the best model to `out`. `on_epoch` sees each epoch's figures
/// (for printing); the progress bar shows only on a terminal.
///
/// # Errors
/// An empty training split, bad settings, or a model file that cannot be written.
pub fn train(
    split: &Split,
    config: &TrainConfig,
    out: &Path,
    device: &Device,
    on_epoch: impl FnMut(&EpochLog),
) -> Result<TrainReport> {
    train_run(split, config, &RunFiles::new(out), device, on_epoch)
}

/// The header entry of a `last` checkpoint that holds the run's [`TrainConfig`].
const TRAIN_CONFIG: &str = "train_config";

/// The settings saved in a `last` checkpoint, for continuing its run.
///
/// # Errors
/// A file that is not a G2P run's checkpoint.
pub fn saved_config(checkpoint: &Path) -> Result<TrainConfig> {
    let metadata = checkpoint_metadata(checkpoint)?;
    let bad = |reason: String| G2pError::BadModel {
        path: checkpoint.to_path_buf(),
        reason,
    };
    let json = metadata.get(TRAIN_CONFIG).ok_or_else(|| {
        bad(format!(
            "header has no {TRAIN_CONFIG}: not the last checkpoint of a g2p train run"
        ))
    })?;
    serde_json::from_str(json).map_err(|e| bad(format!("{TRAIN_CONFIG}: {e}")))
}

/// [`train`] writing the files of `files`: the best model, and when given, a checkpoint of
/// the last epoch and a CSV log; with `files.resume`, continues that checkpoint's run (the
/// same data and settings, `config.max_epochs` and `config.max_minutes` counted over the
/// whole run) exactly as if it had not stopped.
///
/// # Errors
/// As [`train`], and a checkpoint to resume whose vocabularies, direction or network differ
/// from this run's.
pub fn train_run(
    split: &Split,
    config: &TrainConfig,
    files: &RunFiles,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<TrainReport> {
    if split.train.is_empty() || split.validation.is_empty() {
        return Err(G2pError::Config(format!(
            "training needs words in the train and validation splits, found {} and {}",
            split.train.len(),
            split.validation.len()
        )));
    }
    if config.batch_size == 0 {
        return Err(G2pError::Config(
            "batch_size must be at least 1, found 0".to_string(),
        ));
    }
    let all: Vec<Entry> = [&split.train, &split.validation, &split.test]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let (letters, phonemes) = vocabularies(&all);
    let mut pairs = make_pairs(&split.train, &letters, &phonemes)?;
    if config.right_to_left {
        for pair in &mut pairs {
            pair.phonemes.reverse();
        }
    }
    let task = Task {
        letters,
        phonemes,
        right_to_left: config.right_to_left,
    };
    let header = run_header(&task, config);
    let run = Run {
        split,
        config,
        files,
        device,
        task,
        header,
        pairs: &pairs,
    };
    match config.transformer_network(&run.task.letters, &run.task.phonemes) {
        None => {
            let network = config.network(&run.task.letters, &run.task.phonemes);
            fit::<EncoderDecoder>(run, &network, &mut on_epoch)
        }
        Some(network) => fit::<Transformer>(run, &network, &mut on_epoch),
    }
}

/// A network family that `g2p train` trains and a [`G2p`] holds.
pub trait Trainable: Model + Clone + Into<Network> + 'static {}

impl Trainable for EncoderDecoder {}
impl Trainable for Transformer {}

/// What a run reads and writes, whatever its network.
struct Run<'a> {
    split: &'a Split,
    config: &'a TrainConfig,
    files: &'a RunFiles,
    device: &'a Device,
    task: Task,
    header: Vec<(String, String)>,
    pairs: &'a [crate::batch::Pair],
}

/// [`train_run`] for one family: `network` is its config with the vocabularies' sizes.
fn fit<N: Trainable>(
    run: Run<'_>,
    network: &N::Config,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<TrainReport> {
    let Run {
        split,
        config,
        files,
        device,
        task,
        header,
        pairs,
    } = run;
    let mut trainer = match &files.resume {
        Some(path) => resume::<N>(path, network, &header, config, device)?,
        None => {
            device.seed(config.seed);
            Trainer::new(N::build(network, device)?, config.compile(), device)?
        }
    };
    let parameters = trainer.model.weights().iter().map(|w| w.values.len()).sum();
    let validation = &split.validation[..config.validation_words.min(split.validation.len())];
    let (batch_size, seed) = (config.batch_size, config.seed);
    let mut source = |epoch: usize, device: &Device| -> padless::Result<Vec<Batch>> {
        // Epoch e (from 0) shuffles with seed + e + 1.
        Ok(
            bucketed_batches(pairs, batch_size, seed + epoch as u64 + 1, device)
                .into_iter()
                .map(Batch::from)
                .collect(),
        )
    };
    let fit = FitConfig {
        total_epochs: Some(config.max_epochs),
        max_minutes: Some(config.max_minutes),
        ..FitConfig::new(
            config.max_epochs.saturating_sub(trainer.epoch),
            padless::train::BatchOptions::new(batch_size),
        )
    };
    let patience = config.patience.max(1);
    let mut bar = Bar::default();
    let mut validate = Validate {
        task: &task,
        words: validation,
        best: files.best.clone(),
        header: header.clone(),
        best_score: None,
        history: Vec::new(),
        on_epoch,
    };
    let mut halve = ReduceLrOnPlateau::new(SCORE, 0.5, patience);
    let mut stop = EarlyStopping::new(SCORE, 4 * patience);
    let mut last = ModelCheckpoint::new(None, files.last.clone(), SCORE).with_metadata(header);
    let mut log = match &files.log {
        Some(path) if files.resume.is_some() => Some(CsvLogger::appending(path)?),
        Some(path) => Some(CsvLogger::new(path)),
        None => None,
    };
    let mut callbacks: Vec<&mut dyn Callback<N>> = vec![&mut bar, &mut validate];
    if config.halve_on_plateau {
        callbacks.push(&mut halve);
    }
    callbacks.push(&mut stop);
    callbacks.push(&mut last);
    if let Some(log) = log.as_mut() {
        callbacks.push(log);
    }
    trainer.fit_batches(&mut source, None, &fit, &mut callbacks)?;
    drop(callbacks);
    Ok(TrainReport {
        steps: trainer.step,
        seconds: trainer.train_seconds,
        best_validation_wer: validate.best_score.map_or(f64::INFINITY, |s| s.0),
        parameters,
        history: validate.history,
    })
}

/// The trainer of a `last` checkpoint, after checking that it is this run's.
fn resume<N: Trainable>(
    path: &Path,
    network: &N::Config,
    header: &[(String, String)],
    config: &TrainConfig,
    device: &Device,
) -> Result<Trainer<N>> {
    let bad = |reason: String| G2pError::BadModel {
        path: path.to_path_buf(),
        reason,
    };
    let saved = checkpoint_metadata(path)?;
    for (key, value) in header {
        if key == TRAIN_CONFIG {
            continue;
        }
        match saved.get(key) {
            Some(found) if found == value => {}
            Some(found) => {
                return Err(bad(format!(
                    "its {key} is {found}, this run's is {value}: resume with the data and settings of the run that wrote it"
                )));
            }
            None => {
                return Err(bad(format!(
                    "header has no {key}: not the last checkpoint of a g2p train run"
                )));
            }
        }
    }
    let trainer = Trainer::<N>::resume(path, config.compile(), device)?;
    // Configs compare as the JSON they are saved as.
    let saved = trainer.model.config()?;
    let json = |config: &N::Config| serde_json::to_value(config).expect("plain data serialises");
    if json(&saved) != json(network) {
        return Err(bad(format!(
            "its network is {saved:?}, this run's is {network:?}"
        )));
    }
    Ok(trainer)
}

/// What a model of this run reads and writes besides its network.
struct Task {
    letters: Vocab,
    phonemes: Vocab,
    right_to_left: bool,
}

impl Task {
    fn model(&self, network: impl Into<Network>) -> G2p {
        G2p {
            network: network.into(),
            letters: self.letters.clone(),
            phonemes: self.phonemes.clone(),
            right_to_left: self.right_to_left,
        }
    }
}

/// The header entries of the run's files: vocabularies, direction, settings.
fn run_header(task: &Task, config: &TrainConfig) -> Vec<(String, String)> {
    let json = |v: serde_json::Result<String>| v.expect("plain data serialises");
    vec![
        (
            "letters".to_string(),
            json(serde_json::to_string(&task.letters.symbols)),
        ),
        (
            "phonemes".to_string(),
            json(serde_json::to_string(&task.phonemes.symbols)),
        ),
        (
            "direction".to_string(),
            direction_name(task.right_to_left).to_string(),
        ),
        (
            TRAIN_CONFIG.to_string(),
            json(serde_json::to_string(config)),
        ),
    ]
}

/// The monitor of the plateau rule and of early stopping: `val_wer + val_per / 10^6`, which
/// orders epochs by WER, then by PER (WER moves in coarse steps early on). A WER step is at
/// least 1 / `validation_words`, far above any PER term.
const SCORE: &str = "val_score";

/// Greedy validation after each epoch: adds `val_wer`, `val_per`, `val_score` (and
/// `avg_val_wer`, `avg_val_per` of the weight average) and `seconds` (training time so far,
/// validation included) to the logs, saves the better of the
/// trained weights and their average when it beats the best so far, and reports the epoch.
struct Validate<'a> {
    task: &'a Task,
    words: &'a [Entry],
    best: PathBuf,
    header: Vec<(String, String)>,
    best_score: Option<(f64, f64)>,
    history: Vec<EpochLog>,
    on_epoch: &'a mut dyn FnMut(&EpochLog),
}

impl Validate<'_> {
    fn score(&self, network: impl Into<Network>) -> padless::Result<(G2p, (f64, f64))> {
        let model = self.task.model(network);
        let inference = padless::default_device();
        let report = evaluate(&model, self.words, 1, 256, &inference).map_err(to_padless)?;
        Ok((model, (report.wer, report.per)))
    }
}

fn to_padless(e: G2pError) -> padless::Error {
    match e {
        G2pError::Padless(e) => e,
        other => padless::Error::Config {
            layer: "g2p validation".into(),
            message: other.to_string(),
        },
    }
}

impl<N: Trainable> Callback<N> for Validate<'_> {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        trainer: &mut Trainer<N>,
    ) -> padless::Result<Control> {
        let started = std::time::Instant::now();
        let (model, score) = self.score(trainer.model.valid())?;
        logs.insert("val_wer".into(), score.0);
        logs.insert("val_per".into(), score.1);
        logs.insert(SCORE.into(), score.0 + score.1 * 1e-6);
        let averaged = match trainer.averaged_model() {
            Some(network) => {
                let (averaged, average_score) = self.score(network)?;
                logs.insert("avg_val_wer".into(), average_score.0);
                logs.insert("avg_val_per".into(), average_score.1);
                Some((averaged, average_score))
            }
            None => None,
        };
        let log = EpochLog {
            epoch: epoch + 1,
            train_loss: logs.get("loss").copied().unwrap_or(f64::NAN),
            validation_wer: score.0,
            validation_per: score.1,
            average: averaged.as_ref().map(|(_, score)| *score),
            learning_rate: trainer.learning_rate,
            // Validation included (the trainer counts it once every callback has run).
            seconds: trainer.train_seconds + started.elapsed().as_secs_f64(),
        };
        // The run's clock in the log, for learning curves against time (`padless plot --x
        // minutes`).
        logs.insert("seconds".into(), log.seconds);
        (self.on_epoch)(&log);
        // The schedule follows the trained weights; the saved model is the better of the
        // trained weights and their average.
        let (model, kept, weights) = match averaged {
            Some((averaged, average_score)) if average_score < score => {
                (averaged, average_score, "average")
            }
            _ => (model, score, "trained"),
        };
        if self.best_score.is_none_or(|best| kept < best) {
            self.best_score = Some(kept);
            let mut extra: Vec<(&str, String)> = self
                .header
                .iter()
                .filter(|(k, _)| k == TRAIN_CONFIG)
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            extra.extend([
                ("epoch", (epoch + 1).to_string()),
                ("validation_wer", kept.0.to_string()),
                ("validation_per", kept.1.to_string()),
                ("weights", weights.to_string()),
                ("train_seconds", log.seconds.to_string()),
            ]);
            model.save(&self.best, &extra).map_err(to_padless)?;
        }
        self.history.push(log);
        Ok(Control::Continue)
    }

    fn state_key(&self) -> Option<String> {
        Some("g2p_validation".into())
    }

    fn state(&self) -> CallbackState {
        CallbackState {
            values: serde_json::json!({ "best": self.best_score }),
            weights: Vec::new(),
        }
    }

    fn load_state(&mut self, state: CallbackState) -> padless::Result<()> {
        self.best_score = serde_json::from_value(state.values["best"].clone()).map_err(|e| {
            padless::Error::Config {
                layer: "g2p validation".into(),
                message: format!("saved best score: {e}"),
            }
        })?;
        Ok(())
    }
}

/// The epoch's progress bar with the running loss (drawn only on a terminal).
#[derive(Default)]
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    loss: (f64, usize),
}

impl<N: Trainable> Callback<N> for Bar {
    fn on_epoch_begin(
        &mut self,
        epoch: usize,
        n_batches: usize,
        _trainer: &mut Trainer<N>,
    ) -> padless::Result<()> {
        let bar = indicatif::ProgressBar::new(n_batches as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "epoch {} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}, eta {{eta}})",
                epoch + 1
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        self.bar = Some(bar);
        self.loss = (0.0, 0);
        Ok(())
    }

    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _batch: usize,
        logs: &Logs,
        _trainer: &mut Trainer<N>,
    ) -> padless::Result<()> {
        self.loss.0 += logs.get("loss").copied().unwrap_or(0.0);
        self.loss.1 += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", self.loss.0 / self.loss.1 as f64));
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &mut Logs,
        _trainer: &mut Trainer<N>,
    ) -> padless::Result<Control> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_set_the_library_schedules_and_halving() {
        let quick = TrainConfig::quick();
        assert_eq!(
            quick.clone().with_policy(SchedulePolicy::Linear).schedule,
            LrSchedule::from(Decay::Linear { floor: 0.01 })
        );
        assert!(
            !quick
                .clone()
                .with_policy(SchedulePolicy::Linear)
                .halve_on_plateau
        );
        let anneal = quick.clone().with_policy(SchedulePolicy::Anneal);
        assert_eq!(
            anneal.schedule,
            LrSchedule::from(Decay::Anneal { floor: 0.01 })
        );
        assert!(anneal.halve_on_plateau);
        assert_eq!(
            quick.clone().with_policy(SchedulePolicy::Plateau),
            TrainConfig::quick()
        );
    }

    #[test]
    fn run_files_beside_the_model() {
        let files = RunFiles::beside("runs/g2p-model.safetensors");
        assert_eq!(
            files.last.unwrap(),
            Path::new("runs/g2p-model.last.safetensors")
        );
        assert_eq!(files.log.unwrap(), Path::new("runs/g2p-model.csv"));
    }
}
