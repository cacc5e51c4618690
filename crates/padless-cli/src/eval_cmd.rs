//! `padless evaluate` (masked loss and metrics of a checkpoint on a data file) and
//! `padless predict` (decoded outputs of a checkpoint for a data file or one input).
//!
//! Both read `vocab.json` and `training.json` from the checkpoint's directory, so data is
//! read and coded exactly as `train` did.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use padless::train::{Trainer, format_logs, load_checkpoint};

use crate::data_files::{Format, RawSeq, Tokens, parse_json_seq, read_records};
use crate::encode::{OutputMode, encode_input, examples, predict};
use crate::train_cmd::{TRAINING_FILE, VOCAB_FILE, load_settings, run_dir};
use crate::vocab::{Coding, UnknownPolicy, Vocabs};

/// Flags of `padless evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// A checkpoint (e.g. RUN/best.safetensors), or a run directory for its best one.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data with targets, in any format `train` reads.
    #[arg(long)]
    data: PathBuf,
    /// File format (by extension when left out).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Sequences per batch.
    #[arg(long, default_value_t = 64, value_parser = crate::flags::count)]
    batch_size: usize,
    /// Symbols missing from the training vocabulary: read as <unk>, or stop with an error.
    #[arg(long, value_enum, default_value = "error")]
    unknown: UnknownPolicy,
}

/// Flags of `padless predict`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["data", "input"])))]
pub struct PredictArgs {
    /// A checkpoint (e.g. RUN/best.safetensors), or a run directory for its best one.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Inputs, one per line or record (targets, if any, are ignored).
    #[arg(long)]
    data: Option<PathBuf>,
    /// One input: a string, split as in training (a JSON array for vector inputs).
    #[arg(long)]
    input: Option<String>,
    /// File format (by extension when left out).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Sequences per batch.
    #[arg(long, default_value_t = 64, value_parser = crate::flags::count)]
    batch_size: usize,
    /// Symbols missing from the training vocabulary: read as <unk>, or stop with an error.
    #[arg(long, value_enum, default_value = "error")]
    unknown: UnknownPolicy,
}

/// A trained model and the vocabularies it was trained with.
struct Loaded {
    trainer: Trainer,
    vocabs: Vocabs,
}

fn load(checkpoint: &Path) -> Result<Loaded> {
    let file = if checkpoint.is_dir() {
        checkpoint.join("best.safetensors")
    } else {
        checkpoint.to_path_buf()
    };
    anyhow::ensure!(
        file.is_file(),
        "reading {}: no such checkpoint (train writes RUN/best.safetensors and RUN/last.safetensors)",
        file.display()
    );
    let dir = run_dir(&file);
    let vocabs = Vocabs::load(&dir.join(VOCAB_FILE))?;
    let settings = load_settings(&dir.join(TRAINING_FILE))?;
    let trainer = load_checkpoint(&file, settings.compile()?, &padless::training_device())
        .with_context(|| format!("loading {}", file.display()))?;
    Ok(Loaded { trainer, vocabs })
}

/// Runs `padless evaluate`: prints `loss` and each metric on its own line.
///
/// # Errors
/// Missing or damaged files, malformed lines, unknown symbols under `--unknown error`.
pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    let Loaded { trainer, vocabs } = load(&args.checkpoint)?;
    let records = read_records(&args.data, args.format, vocabs.tokens, true)?;
    let mode = OutputMode::of(&trainer)?;
    let examples = examples(&records, &args.data, &vocabs, mode, args.unknown)?;
    let logs = trainer.evaluate(&examples, args.batch_size)?;
    eprintln!(
        "{} sequences of {}: {}",
        examples.len(),
        args.data.display(),
        format_logs(&logs)
    );
    for (name, value) in &logs {
        println!("{name} {value:.6}");
    }
    Ok(())
}

/// Runs `padless predict`: prints one decoded output per input, in order.
///
/// # Errors
/// Missing or damaged files, malformed lines, unknown symbols under `--unknown error`.
pub fn predict_cmd(args: PredictArgs) -> Result<()> {
    let Loaded { trainer, vocabs } = load(&args.checkpoint)?;
    let inputs = match (&args.data, &args.input) {
        (Some(path), _) => read_records(path, args.format, vocabs.tokens, false)?
            .iter()
            .map(|r| {
                encode_input(&r.input, &vocabs, args.unknown)
                    .with_context(|| format!("{}:{}", path.display(), r.line))
            })
            .collect::<Result<Vec<_>>>()?,
        (None, Some(text)) => {
            let seq = inline_input(text, &vocabs)?;
            vec![encode_input(&seq, &vocabs, args.unknown).context("--input")?]
        }
        (None, None) => unreachable!("clap requires --data or --input"),
    };
    for line in predict(&trainer, inputs, &vocabs, args.batch_size)? {
        println!("{line}");
    }
    Ok(())
}

fn inline_input(text: &str, vocabs: &Vocabs) -> Result<RawSeq> {
    let seq = match vocabs.input {
        Coding::Symbols { .. } => RawSeq::Symbols(vocabs.tokens.split(text)),
        Coding::Numbers { .. } => {
            let json = serde_json::from_str(text)
                .context("--input: expected a JSON array of numbers or number arrays")?;
            parse_json_seq(&json, Tokens::Chars, "input").context("--input")?
        }
    };
    anyhow::ensure!(
        seq.len() > 0,
        "--input: expected a non-empty sequence, found an empty one"
    );
    crate::data_files::check_sequence(&seq, "input").context("--input")?;
    Ok(seq)
}
