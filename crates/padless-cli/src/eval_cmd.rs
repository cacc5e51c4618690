//! `padless evaluate` (masked loss and metrics of a checkpoint on a data file) and
//! `padless predict` (decoded outputs of a checkpoint for a data file or one input).
//!
//! Both read `vocab.json` and `training.json` from the checkpoint's directory, so data is
//! read and coded exactly as `train` did. Their results go to stdout, as text or, with
//! `--json`, as one JSON object (fields in `docs/cli.md`).

use std::io::Write;
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
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
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
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A trained model, its checkpoint file and the vocabularies it was trained with.
struct Loaded {
    trainer: Trainer,
    file: PathBuf,
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
    vocabs.check_checkpoint(&file, &dir.join(VOCAB_FILE))?;
    Ok(Loaded {
        trainer,
        file,
        vocabs,
    })
}

/// Runs `padless evaluate`: prints `loss` and each metric on its own line, or as JSON.
///
/// # Errors
/// Missing or damaged files, malformed lines, unknown symbols under `--unknown error`.
pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    let Loaded {
        trainer,
        file,
        vocabs,
    } = load(&args.checkpoint)?;
    let records = read_records(&args.data, args.format, vocabs.tokens, true)?;
    let mode = OutputMode::of(&trainer)?;
    let examples = examples(&records, &args.data, &vocabs, mode, args.unknown)?;
    let logs = trainer.evaluate(&examples, args.batch_size)?;
    crate::status!(
        "{} sequences of {}: {}",
        examples.len(),
        args.data.display(),
        format_logs(&logs)
    );
    if args.json {
        let metrics: serde_json::Map<String, serde_json::Value> = logs
            .iter()
            .filter(|(name, _)| name.as_str() != "loss")
            .map(|(name, &value)| (name.clone(), value.into()))
            .collect();
        return crate::output::write_json(&serde_json::json!({
            "checkpoint": file.display().to_string(),
            "data": args.data.display().to_string(),
            "sequences": examples.len(),
            "loss": logs.get("loss"),
            "metrics": metrics,
        }));
    }
    for (name, value) in &logs {
        println!("{name} {value:.6}");
    }
    Ok(())
}

/// Runs `padless predict`: prints one decoded output per input, in order, or all of them as
/// JSON.
///
/// # Errors
/// Missing or damaged files, malformed lines, unknown symbols under `--unknown error`.
pub fn predict_cmd(args: PredictArgs) -> Result<()> {
    let Loaded {
        trainer,
        file,
        vocabs,
    } = load(&args.checkpoint)?;
    // Each input with the line it came from (none for `--input`).
    let sources: Vec<(Option<usize>, RawSeq)> = match (&args.data, &args.input) {
        (Some(path), _) => read_records(path, args.format, vocabs.tokens, false)?
            .into_iter()
            .map(|r| (Some(r.line), r.input))
            .collect(),
        (None, Some(text)) => vec![(None, inline_input(text, &vocabs)?)],
        (None, None) => unreachable!("clap requires --data or --input"),
    };
    let inputs = sources
        .iter()
        .map(|(line, seq)| {
            encode_input(seq, &vocabs, args.unknown).with_context(|| match (line, &args.data) {
                (Some(line), Some(path)) => format!("{}:{line}", path.display()),
                _ => "--input".to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = predict(&trainer, inputs, &vocabs, args.batch_size)?;
    if args.json {
        let numbers = matches!(vocabs.target, Coding::Numbers { .. });
        let predictions = sources
            .iter()
            .zip(&outputs)
            .map(|((line, seq), output)| {
                let mut entry = serde_json::Map::new();
                if let Some(line) = line {
                    entry.insert("line".into(), (*line).into());
                }
                let input = match seq {
                    RawSeq::Symbols(symbols) => vocabs.tokens.join(symbols).into(),
                    RawSeq::Numbers(rows) => serde_json::to_value(rows)?,
                };
                entry.insert("input".into(), input);
                // Vector outputs come decoded as JSON text; they go in as arrays.
                let output = if numbers {
                    serde_json::from_str(output)?
                } else {
                    output.as_str().into()
                };
                entry.insert("output".into(), output);
                Ok(serde_json::Value::Object(entry))
            })
            .collect::<Result<Vec<_>>>()?;
        return crate::output::write_json(&serde_json::json!({
            "checkpoint": file.display().to_string(),
            "predictions": predictions,
        }));
    }
    let mut stdout = std::io::stdout().lock();
    for line in outputs {
        writeln!(stdout, "{line}")?;
    }
    stdout.flush()?;
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
