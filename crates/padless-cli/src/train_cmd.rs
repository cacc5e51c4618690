//! `padless train`: a model config and data files in, checkpoints, vocabularies and a CSV log
//! out; `--resume` continues a run from a checkpoint (optimizer state, epoch, step, learning
//! rate, callbacks' monitors) as if it had not stopped.
//!
//! The output directory holds `best.safetensors` (best epoch by `val_loss`, or `loss`
//! without validation data), `last.safetensors` (every epoch), `log.csv` (one row per epoch)
//! and its plot `log.svg`,
//! `vocab.json` and `training.json` (the resolved `training` section), all written
//! atomically. `evaluate` and `predict` read the last two beside the checkpoint they load.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use padless::train::{
    BatchOptions, CsvLogger, FitConfig, ModelCheckpoint, Trainer, load_checkpoint,
};

use crate::data_files::{Format, Tokens, read_records};
use crate::encode::{OutputMode, examples};
use crate::model_file::{ModelFile, TrainingSettings};
use crate::vocab::{UnknownPolicy, Vocabs};

/// The vocabularies' file name in a run directory.
pub const VOCAB_FILE: &str = "vocab.json";
/// The resolved training settings' file name in a run directory.
pub const TRAINING_FILE: &str = "training.json";

/// Flags of `padless train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Model config (JSON, or TOML by extension) with an optional `training` section;
    /// vocabulary sizes left out or written "vocab" are filled from the data.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Training data: .jsonl, .csv, or text (input<TAB>target, or one sequence per line).
    #[arg(long)]
    data: PathBuf,
    /// Validation data, in any of the same formats.
    #[arg(long, conflicts_with = "validation_split")]
    validation: Option<PathBuf>,
    /// Hold out this last fraction of the training data for validation.
    #[arg(long, default_value_t = 0.0)]
    validation_split: f64,
    /// Epochs to train (more epochs, when resuming).
    #[arg(long, default_value_t = 10, value_parser = crate::flags::epochs)]
    epochs: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32, value_parser = crate::flags::count)]
    batch_size: usize,
    /// Seed for the initial weights and the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for checkpoints, vocabularies and the log (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Continue from a checkpoint of an earlier run (its directory must hold vocab.json and
    /// training.json).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// File format (by extension when left out).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// How strings split into symbols [default: chars; a resumed run keeps its own].
    #[arg(long, value_enum)]
    tokens: Option<Tokens>,
    /// Symbols of validation (or resumed training) data missing from the vocabulary.
    #[arg(long, value_enum, default_value = "error")]
    unknown: UnknownPolicy,
}

/// Runs `padless train`.
///
/// # Errors
/// Unreadable or malformed files (named with their line), a config that does not build, or
/// a failed epoch.
pub fn run(args: TrainArgs) -> Result<()> {
    crate::paths::check_run_folder(
        "--out",
        &args.out,
        &[
            "best.safetensors",
            "last.safetensors",
            "log.csv",
            "log.svg",
            VOCAB_FILE,
            TRAINING_FILE,
        ],
        &[
            ("--config", args.config.as_deref()),
            ("--data", Some(&args.data)),
            ("--validation", args.validation.as_deref()),
        ],
    )?;
    if !(0.0..1.0).contains(&args.validation_split) {
        bail!(
            "--validation-split: expected a fraction in [0, 1), found {}",
            args.validation_split
        );
    }
    let device = padless::training_device();
    device.seed(args.seed);
    let (mut trainer, vocabs, settings, records) = match &args.resume {
        Some(checkpoint) => {
            let dir = run_dir(checkpoint);
            let vocabs = Vocabs::load(&dir.join(VOCAB_FILE))?;
            if let Some(tokens) = args.tokens
                && tokens != vocabs.tokens
            {
                bail!(
                    "--tokens: the resumed run splits strings into {:?}, found {tokens:?}",
                    vocabs.tokens
                );
            }
            let settings = load_settings(&dir.join(TRAINING_FILE))?;
            let trainer = load_checkpoint(checkpoint, settings.compile()?, &device)
                .with_context(|| format!("resuming from {}", checkpoint.display()))?;
            vocabs.check_checkpoint(checkpoint, &dir.join(VOCAB_FILE))?;
            let records = read_records(&args.data, args.format, vocabs.tokens, true)?;
            (trainer, vocabs, settings, records)
        }
        None => {
            let config = args.config.as_deref().expect("clap requires --config");
            let file = ModelFile::read(config)?;
            let tokens = args.tokens.unwrap_or(Tokens::Chars);
            let records = read_records(&args.data, args.format, tokens, true)?;
            let vocabs = Vocabs::build(&records, tokens)
                .with_context(|| format!("reading {}", args.data.display()))?;
            let model = file
                .resolve(&vocabs)
                .with_context(|| format!("filling the sizes of {}", config.display()))?;
            let settings = file
                .training
                .clone()
                .resolve(&vocabs.target, &model)
                .with_context(|| format!("reading the training section of {}", config.display()))?;
            let trainer = Trainer::from_config(&model, settings.compile()?, &device)
                .with_context(|| format!("building the model of {}", config.display()))?;
            (trainer, vocabs, settings, records)
        }
    };
    let mode = OutputMode::of(&trainer)?;
    let train = examples(&records, &args.data, &vocabs, mode, args.unknown)?;
    let validation = match &args.validation {
        Some(path) => {
            let records = read_records(path, args.format, vocabs.tokens, true)?;
            Some(examples(&records, path, &vocabs, mode, args.unknown)?)
        }
        None => None,
    };

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    vocabs.save(&args.out.join(VOCAB_FILE))?;
    let json = serde_json::to_vec_pretty(&settings)?;
    let training_path = args.out.join(TRAINING_FILE);
    padless::weights::write_atomically(&training_path, &json)
        .with_context(|| format!("writing {}", training_path.display()))?;
    crate::status!(
        "{}",
        trainer.model.summary(trainer.input_spec()?)?.trim_end()
    );

    let has_validation = validation.is_some() || args.validation_split > 0.0;
    let monitor = if has_validation { "val_loss" } else { "loss" };
    let log = args.out.join("log.csv");
    let (best, last) = (
        args.out.join("best.safetensors"),
        args.out.join("last.safetensors"),
    );
    // A resumed run's checkpoint callback gets its best so far back from the checkpoint.
    let mut logger = if args.resume.is_some() {
        CsvLogger::appending(&log)?
    } else {
        CsvLogger::new(&log)
    };
    let mut checkpoint =
        ModelCheckpoint::new(Some(best.clone()), Some(last.clone()), monitor).with_metadata(vec![
            (crate::vocab::VOCAB_KEY.to_string(), vocabs.fingerprint()),
        ]);
    let first_epoch = trainer.epoch;
    let mut progress = crate::output::Progress::new(first_epoch.saturating_add(args.epochs));
    let mut batches = BatchOptions::new(args.batch_size);
    batches.shuffle_seed = Some(args.seed);
    let fit = FitConfig {
        validation_split: args.validation_split,
        ..FitConfig::new(args.epochs, batches)
    };
    crate::status!(
        "training on {} sequences from epoch {} ({})",
        train.len(),
        first_epoch + 1,
        args.data.display()
    );
    trainer.fit(
        &train,
        validation.as_deref(),
        &fit,
        &mut [&mut progress, &mut checkpoint, &mut logger],
    )?;
    let plot = log.with_extension("svg");
    crate::plot::write_svg(&log, &plot)?;
    println!(
        "epochs {} -> {}; best checkpoint by {monitor}: {}; last: {}; log: {}; plot: {}",
        first_epoch,
        trainer.epoch,
        best.display(),
        last.display(),
        log.display(),
        plot.display()
    );
    Ok(())
}

/// The directory of a run, from a checkpoint file (its parent) or the directory itself.
pub fn run_dir(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        checkpoint.to_path_buf()
    } else {
        checkpoint
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

/// Reads a run's `training.json`.
///
/// # Errors
/// A missing or malformed file, named.
pub fn load_settings(path: &Path) -> Result<TrainingSettings> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (train writes it beside the checkpoints)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
