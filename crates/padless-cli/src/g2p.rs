//! `padless g2p`: train, evaluate and use a grapheme-to-phoneme model on the CMU Pronouncing
//! Dictionary shipped in `data/cmudict/`.
//!
//! Results (the trained model's scores, `eval`'s report, `pronounce`'s lines) go to stdout;
//! what is being read and trained, to stderr.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Subcommand, ValueEnum};
use padless::seq2seq::AttentionKind;
use padless::weights::StoredFloat;
use padless_g2p::cmudict::{Dictionary, Entry, Malformed, PhonemeSet, parse_with};
use padless_g2p::eval::{evaluate, evaluate_ensemble};
use padless_g2p::model::{letter_ids, max_phonemes, pronounce_ensemble};
use padless_g2p::split::{Side, Split, split_by_word};
use padless_g2p::train::{
    RunFiles, SchedulePolicy, TrainConfig, saved_config, train_run, vocabularies,
};
use padless_g2p::{G2p, Network};

use crate::{flags, paths};

/// The G2P subcommands (`Train` boxed: its many options would make every command as large as
/// it).
#[derive(Subcommand, Debug)]
pub enum G2pCommand {
    /// Train on the dictionary's train split (90% of the words), keep the best model on the
    /// validation split, then report the test split and pronounce a few unseen words.
    Train(Box<TrainArgs>),
    /// Word and phoneme error rates of a saved model (or of several decoded together) on a
    /// split.
    Eval(EvalArgs),
    /// Print the ARPAbet pronunciation of each word, given or read from stdin.
    Pronounce(PronounceArgs),
    /// Write a model again with its weights in 16 bits (half the file; widened to f32 when
    /// loaded), as the shipped model is stored.
    Export(ExportArgs),
}

/// `g2p export` options.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The model to read (a model or last checkpoint written by `g2p train`).
    #[arg(long)]
    model: PathBuf,
    /// Where the model goes.
    #[arg(long)]
    out: PathBuf,
    /// How each weight is stored: `f16` (rounded to nearest, 11 significant bits), `bf16` (8
    /// bits, f32's range) or `f32` (as trained).
    #[arg(long = "float", value_enum, default_value_t = FloatArg::F16)]
    format: FloatArg,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FloatArg {
    F16,
    Bf16,
    F32,
}

/// The shipped pretrained model, relative to the repository root.
const SHIPPED_MODEL: &str = "models/g2p.safetensors";

/// The shipped model: in the working folder's `models/`, else in this repository's.
fn shipped_model() -> PathBuf {
    let local = PathBuf::from(SHIPPED_MODEL);
    if local.exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(SHIPPED_MODEL)
    }
}

/// The models of `--model`, or the shipped one when none is given.
fn model_paths(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let shipped = shipped_model();
    if !shipped.is_file() {
        bail!(
            "no --model given, and the shipped model {} is missing: give a model written by `g2p train`",
            shipped.display()
        );
    }
    Ok(vec![shipped])
}

fn export_command(args: ExportArgs) -> Result<()> {
    paths::check_output_file("--out", &args.out)?;
    paths::check_outputs(
        &[("--model", Some(args.model.as_path()))],
        &[("--out", &args.out)],
    )?;
    let device = padless::default_device();
    let (model, header) = G2p::load(&args.model, &device).context("loading a model")?;
    // The training figures travel with the weights; the format's own entries are rewritten.
    let own = [
        "format",
        "family",
        "config",
        "letters",
        "phonemes",
        "direction",
    ];
    let extra: Vec<(&str, String)> = header
        .iter()
        .filter(|(k, _)| !own.contains(&k.as_str()) && !k.starts_with("padless"))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let format = match args.format {
        FloatArg::F16 => StoredFloat::F16,
        FloatArg::Bf16 => StoredFloat::Bf16,
        FloatArg::F32 => StoredFloat::F32,
    };
    model
        .save_as(&args.out, &extra, format)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} parameters as {:?}, {:.2} MB)",
        args.out.display(),
        model.network.n_parameters(),
        args.format,
        bytes as f64 / 1e6
    );
    Ok(())
}

/// Where the data is and how to read it.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// The dictionary (default: data/cmudict/cmudict.dict of this repository).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of the split by word (90/5/5).
    #[arg(long, default_value_t = 1)]
    split_seed: u64,
    /// Malformed dictionary lines (an unknown phoneme among them): stop with an error, or
    /// skip and count them.
    #[arg(long, value_enum, default_value_t = MalformedArg::Error)]
    malformed: MalformedArg,
    /// The phonemes the dictionary may use: a file of symbols separated by whitespace, one
    /// per line as in data/cmudict/cmudict.symbols (default: ARPAbet with stress digits).
    #[arg(long, value_name = "FILE")]
    phonemes: Option<PathBuf>,
    /// Use only every k-th word so that about this many words remain (quick experiments).
    #[arg(long, value_parser = flags::count)]
    limit: Option<usize>,
}

impl DataArgs {
    /// The dictionary: `--data`, else the shipped one.
    fn dictionary(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(default_data)
    }

    /// Checks `outputs` (files to write) against the files this command reads: the
    /// dictionary, the phoneme set and `more_inputs`.
    fn check_outputs(
        &self,
        more_inputs: &[(&str, &Path)],
        outputs: &[(&str, &Path)],
    ) -> Result<()> {
        let dictionary = self.dictionary();
        let mut inputs = vec![
            ("--data", Some(dictionary.as_path())),
            ("--phonemes", self.phonemes.as_deref()),
        ];
        inputs.extend(more_inputs.iter().map(|&(flag, path)| (flag, Some(path))));
        for &(flag, path) in outputs {
            paths::check_output_file(flag, path)?;
        }
        paths::check_outputs(&inputs, outputs)
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MalformedArg {
    Error,
    Skip,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ScheduleArg {
    Plateau,
    Linear,
    Anneal,
    Cosine,
}

/// The decoder's attention score (`--attention`).
#[derive(ValueEnum, Clone, Copy, Debug)]
enum AttentionArg {
    /// `q · k` (Luong's dot; the presets' choice).
    Dot,
    /// `q · k / sqrt(d)` (Transformer-style).
    ScaledDot,
    /// `q W · k` with a learned square `W` (Luong's general).
    General,
    /// `v · tanh(q W_q + k W_k)` with as many hidden units as one encoder direction
    /// (Bahdanau's additive).
    Additive,
}

impl AttentionArg {
    /// The attention of a model whose encoder has `d_encoder` units per direction.
    fn kind(self, d_encoder: usize) -> AttentionKind {
        match self {
            AttentionArg::Dot => AttentionKind::Dot { scaled: false },
            AttentionArg::ScaledDot => AttentionKind::Dot { scaled: true },
            AttentionArg::General => AttentionKind::General,
            AttentionArg::Additive => AttentionKind::Additive {
                d_attention: d_encoder,
            },
        }
    }
}

/// The network family (`--model`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// A bidirectional LSTM encoder and an LSTM decoder with attention.
    Lstm,
    /// A Transformer encoder-decoder (positions among valid letters, cached decoding).
    Transformer,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Preset {
    /// A few minutes on 2 cores.
    Quick,
    /// The README's first results model (683k parameters, up to an hour on 2 cores).
    Full,
    /// The README's best results model (3.98M parameters: two bidirectional layers of 256,
    /// dropout 0.3, label smoothing 0.1, weight average; the hour on 2 cores).
    Large,
}

/// `g2p train` options.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The network family. A Transformer's presets: `quick` (2 + 2 layers of width 64) and
    /// `full` (3 + 3 layers of width 256, 4 heads, feed-forward 768, warmup then a cosine
    /// schedule, up to an hour on 2 cores).
    #[arg(long = "model", value_enum, default_value_t = Family::Lstm)]
    family: Family,
    /// Model size and budget.
    #[arg(long, value_enum, default_value_t = Preset::Quick)]
    preset: Preset,
    /// At most this many epochs (overrides the preset).
    #[arg(long, value_parser = flags::epochs)]
    epochs: Option<usize>,
    /// Stop after this many minutes (overrides the preset).
    #[arg(long, value_parser = flags::minutes)]
    minutes: Option<f64>,
    /// Units per encoder direction (LSTM; overrides the preset).
    #[arg(long, value_parser = flags::count)]
    hidden: Option<usize>,
    /// Width of every Transformer layer (overrides the preset).
    #[arg(long, value_parser = flags::count)]
    d_model: Option<usize>,
    /// Attention heads of every Transformer layer; `--d-model` is a multiple of it
    /// (overrides the preset).
    #[arg(long, value_parser = flags::count)]
    heads: Option<usize>,
    /// Hidden units of each Transformer feed-forward block (overrides the preset).
    #[arg(long, value_parser = flags::count)]
    d_ff: Option<usize>,
    /// Steps of linear learning-rate warmup (overrides the preset).
    #[arg(long)]
    warmup: Option<usize>,
    /// Dropout on embeddings and before the output layer (overrides the preset).
    #[arg(long)]
    dropout: Option<f64>,
    /// Stacked bidirectional LSTM layers of the encoder (overrides the preset).
    #[arg(long)]
    encoder_layers: Option<usize>,
    /// Stacked LSTM layers of the decoder (overrides the preset's 1).
    #[arg(long)]
    decoder_layers: Option<usize>,
    /// Residual LSTM layers over the attentional vectors, before the output layer: they see
    /// every earlier step's attention (overrides the preset's 0).
    #[arg(long)]
    post_attention_layers: Option<usize>,
    /// The decoder's attention score (overrides the preset's `dot`).
    #[arg(long, value_enum)]
    attention: Option<AttentionArg>,
    /// Rows per training batch (overrides the preset).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Epochs without a better validation score before the learning rate halves; training
    /// stops after 4 times as many (overrides the preset).
    #[arg(long, value_parser = flags::count)]
    patience: Option<usize>,
    /// Learning-rate schedule: `plateau` halves it when validation stops improving, `linear`
    /// takes it down to 0 at the end of the epoch or time budget, `anneal` is `plateau` and
    /// then a linear fall to 1% over the budget's last third, `cosine` a half cosine to 1%
    /// over the budget (the Transformer presets'; overrides the preset).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Adam's initial learning rate (overrides the preset).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Label smoothing of the training loss, in [0, 1) (overrides the preset).
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay per step (for
    /// example 0.999), validate it each epoch and checkpoint it when it beats the trained
    /// weights (overrides the preset).
    #[arg(long, value_name = "DECAY")]
    average_weights: Option<f64>,
    /// Threads of the fused kernels, 1 or 2 (default: 2 where the process may use 2 or more
    /// cores). Two runs side by side with 1 each (models to decode together) keep both cores
    /// busier than the kernels' thread pair does.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=2))]
    threads: Option<u64>,
    /// Learn pronunciations last phoneme first (still pronounced in reading order): a
    /// partner for a left-to-right model, `eval`/`pronounce --model a --model b` then rescores
    /// both directions' best candidates with both models.
    #[arg(long)]
    right_to_left: bool,
    /// Seed of the weights and batches.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the best model goes; the last epoch's checkpoint goes beside it
    /// (`g2p-model.last.safetensors`).
    #[arg(long, default_value = "g2p-model.safetensors")]
    out: PathBuf,
    /// Continue the run of this last checkpoint (with the same data flags), exactly as if it
    /// had not stopped; its settings come from the checkpoint, and --epochs and --minutes
    /// (counted over the whole run) may extend its budget.
    #[arg(long, value_name = "PATH")]
    resume: Option<PathBuf>,
    /// The CSV log, one row per epoch (default: the model's path with `.csv`).
    #[arg(long, value_name = "PATH")]
    log: Option<PathBuf>,
    /// Beam width of the final test report (1 = greedy).
    #[arg(long, default_value_t = 1, value_parser = flags::count)]
    beam: usize,
}

/// `g2p eval` options.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    /// A model written by `g2p train`; repeat (`--model a --model b`) to decode several
    /// models together as an ensemble (their phoneme probabilities averaged at each step).
    /// Models of both directions (`--right-to-left`) rescore each other's candidates: each
    /// direction proposes its `--beam` best, every model scores them all. Default: the
    /// pretrained model shipped in models/ of this repository.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Beam width (1 = greedy).
    #[arg(long, default_value_t = 1, value_parser = flags::count)]
    beam: usize,
    /// Which split.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Words decoded at once.
    #[arg(long, default_value_t = 512, value_parser = flags::count)]
    batch_size: usize,
    /// Write the words it gets wrong to this file, one per line, tab-separated: the word,
    /// the output, the references (joined by ` | `) and `stress` where only a stress digit
    /// is wrong, else `phonemes`.
    #[arg(long, value_name = "PATH")]
    errors: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SplitArg {
    Train,
    Validation,
    Test,
}

impl SplitArg {
    fn side(self) -> Side {
        match self {
            SplitArg::Train => Side::Train,
            SplitArg::Validation => Side::Validation,
            SplitArg::Test => Side::Test,
        }
    }
}

/// `g2p pronounce` options.
#[derive(Args, Debug)]
pub struct PronounceArgs {
    /// Words to pronounce; when none are given, words are read from stdin (one per line, or
    /// separated by whitespace).
    words: Vec<String>,
    /// A model written by `g2p train`; repeat to decode several models together as an
    /// ensemble. Default: the pretrained model shipped in models/ of this repository.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Beam width (1 = greedy).
    #[arg(long, default_value_t = 4, value_parser = flags::count)]
    beam: usize,
    /// Stop with an error (exit status 1) at the first word that cannot be pronounced (a
    /// character the model does not know, an empty word), instead of naming it on stderr and
    /// going on with the others.
    #[arg(long)]
    strict: bool,
}

/// The run's settings from the family, the preset and the flags.
fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut config = match (args.family, args.preset) {
        (Family::Lstm, Preset::Quick) => TrainConfig::quick(),
        (Family::Lstm, Preset::Full) => TrainConfig::full(),
        (Family::Lstm, Preset::Large) => TrainConfig::large(),
        (Family::Transformer, Preset::Quick) => TrainConfig::transformer_quick(),
        (Family::Transformer, Preset::Full) => TrainConfig::transformer(),
        (Family::Transformer, Preset::Large) => {
            bail!("--model transformer has the presets quick and full, found --preset large")
        }
    };
    let lstm_only = [
        ("--hidden", args.hidden.is_some()),
        (
            "--post-attention-layers",
            args.post_attention_layers.is_some(),
        ),
        ("--attention", args.attention.is_some()),
    ];
    let transformer_only = [
        ("--d-model", args.d_model.is_some()),
        ("--heads", args.heads.is_some()),
        ("--d-ff", args.d_ff.is_some()),
    ];
    let (foreign, family, given) = match args.family {
        Family::Lstm => (transformer_only, "a Transformer", "lstm"),
        Family::Transformer => (lstm_only, "an LSTM", "transformer"),
    };
    if let Some((flag, _)) = foreign.iter().find(|f| f.1) {
        bail!("{flag} sets {family} network, found --model {given}");
    }
    if let Some(t) = config.transformer.as_mut() {
        t.d_model = args.d_model.unwrap_or(t.d_model);
        t.heads = args.heads.unwrap_or(t.heads);
        t.d_ff = args.d_ff.unwrap_or(t.d_ff);
        t.dropout = args.dropout.unwrap_or(t.dropout);
        t.encoder_layers = args.encoder_layers.unwrap_or(t.encoder_layers);
        t.decoder_layers = args.decoder_layers.unwrap_or(t.decoder_layers);
        if t.d_model % t.heads != 0 {
            bail!(
                "--d-model must be a multiple of --heads, found {} and {}",
                t.d_model,
                t.heads
            );
        }
        if !(0.0..1.0).contains(&t.dropout) || t.encoder_layers == 0 || t.decoder_layers == 0 {
            bail!(
                "--dropout must be in [0, 1) and --encoder-layers, --decoder-layers at least 1, found {}, {} and {}",
                t.dropout,
                t.encoder_layers,
                t.decoder_layers
            );
        }
    }
    config.max_epochs = args.epochs.unwrap_or(config.max_epochs);
    config.max_minutes = args.minutes.unwrap_or(config.max_minutes);
    config.network.d_encoder = args.hidden.unwrap_or(config.network.d_encoder);
    config.seed = args.seed.unwrap_or(config.seed);
    config.network.dropout = args.dropout.unwrap_or(config.network.dropout);
    config.patience = args.patience.unwrap_or(config.patience);
    config.network.encoder_layers = args.encoder_layers.unwrap_or(config.network.encoder_layers);
    config.network.decoder_layers = args.decoder_layers.unwrap_or(config.network.decoder_layers);
    config.network.post_attention_layers = args
        .post_attention_layers
        .unwrap_or(config.network.post_attention_layers);
    config.batch_size = args.batch_size.unwrap_or(config.batch_size);
    if let Some(attention) = args.attention {
        config.network.attention = attention.kind(config.network.d_encoder);
    }
    config.learning_rate = args.learning_rate.unwrap_or(config.learning_rate);
    config.label_smoothing = args.label_smoothing.unwrap_or(config.label_smoothing);
    if !(0.0..1.0).contains(&config.label_smoothing) {
        bail!(
            "--label-smoothing must be in [0, 1), found {}",
            config.label_smoothing
        );
    }
    if let Some(decay) = args.average_weights {
        if !(0.0..1.0).contains(&decay) {
            bail!("--average-weights must be a decay in [0, 1), found {decay}");
        }
        config.weight_average = Some(decay);
    }
    config.right_to_left |= args.right_to_left;
    if let Some(schedule) = args.schedule {
        config = config.with_policy(match schedule {
            ScheduleArg::Plateau => SchedulePolicy::Plateau,
            ScheduleArg::Linear => SchedulePolicy::Linear,
            ScheduleArg::Anneal => SchedulePolicy::Anneal,
            ScheduleArg::Cosine => SchedulePolicy::Cosine,
        });
    }
    if let Some(warmup) = args.warmup {
        config.schedule = config.schedule.with_warmup(warmup);
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) {
        bail!(
            "--learning-rate must be a positive number, found {}",
            config.learning_rate
        );
    }
    if !(0.0..1.0).contains(&config.network.dropout) {
        bail!(
            "--dropout must be in [0, 1), found {}",
            config.network.dropout
        );
    }
    if config.network.encoder_layers == 0
        || config.network.decoder_layers == 0
        || config.batch_size == 0
    {
        bail!(
            "--encoder-layers, --decoder-layers and --batch-size must be at least 1, found {}, {} and {}",
            config.network.encoder_layers,
            config.network.decoder_layers,
            config.batch_size
        );
    }
    Ok(config)
}

/// The settings of the run a checkpoint continues: its own, with --epochs and --minutes.
fn resumed_config(args: &TrainArgs, checkpoint: &Path) -> Result<TrainConfig> {
    let given = [
        ("--hidden", args.hidden.is_some()),
        ("--d-model", args.d_model.is_some()),
        ("--heads", args.heads.is_some()),
        ("--d-ff", args.d_ff.is_some()),
        ("--warmup", args.warmup.is_some()),
        ("--dropout", args.dropout.is_some()),
        ("--encoder-layers", args.encoder_layers.is_some()),
        ("--decoder-layers", args.decoder_layers.is_some()),
        (
            "--post-attention-layers",
            args.post_attention_layers.is_some(),
        ),
        ("--attention", args.attention.is_some()),
        ("--batch-size", args.batch_size.is_some()),
        ("--patience", args.patience.is_some()),
        ("--schedule", args.schedule.is_some()),
        ("--learning-rate", args.learning_rate.is_some()),
        ("--label-smoothing", args.label_smoothing.is_some()),
        ("--average-weights", args.average_weights.is_some()),
        ("--right-to-left", args.right_to_left),
        ("--seed", args.seed.is_some()),
    ];
    let changed: Vec<&str> = given.iter().filter(|g| g.1).map(|g| g.0).collect();
    if !changed.is_empty() {
        bail!(
            "--resume continues the saved run with its own settings; expected only --epochs and --minutes beside it, found {}",
            changed.join(", ")
        );
    }
    let mut config = saved_config(checkpoint)
        .with_context(|| format!("reading the run's settings from {}", checkpoint.display()))?;
    config.max_epochs = args.epochs.unwrap_or(config.max_epochs);
    config.max_minutes = args.minutes.unwrap_or(config.max_minutes);
    Ok(config)
}

/// Runs a G2P subcommand.
pub fn run(command: G2pCommand) -> Result<()> {
    match command {
        G2pCommand::Train(args) => train_command(*args),
        G2pCommand::Eval(args) => eval_command(args),
        G2pCommand::Pronounce(args) => pronounce_command(args),
        G2pCommand::Export(args) => export_command(args),
    }
}

fn default_data() -> PathBuf {
    let local = PathBuf::from("data/cmudict/cmudict.dict");
    if local.exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cmudict/cmudict.dict")
    }
}

/// Memory per byte of a dictionary once parsed (each phoneme a string of its own).
const DICTIONARY_BYTES_PER_BYTE: u64 = 16;

/// The dictionary of `args` and its split by word; each of `sides` must hold words.
fn load_split(args: &DataArgs, sides: &[Side]) -> Result<(Dictionary, Split)> {
    let path = args.dictionary();
    let phonemes = match &args.phonemes {
        Some(file) => {
            let text = paths::read_text(file, 64).context("reading the phoneme set")?;
            PhonemeSet::parse(&text, &file.display().to_string())
                .with_context(|| format!("parsing {}", file.display()))?
        }
        None => PhonemeSet::arpabet(),
    };
    let text =
        paths::read_text(&path, DICTIONARY_BYTES_PER_BYTE).context("reading the dictionary")?;
    let policy = match args.malformed {
        MalformedArg::Error => Malformed::Error,
        MalformedArg::Skip => Malformed::Skip,
    };
    let mut dict = parse_with(&text, policy, &phonemes)
        .with_context(|| format!("parsing {}", path.display()))?;
    if !dict.skipped.is_empty() {
        crate::status!(
            "skipped {} malformed lines of {} (first: line {}: {})",
            dict.skipped.len(),
            path.display(),
            dict.skipped[0].0,
            dict.skipped[0].1
        );
    }
    if let Some(limit) = args.limit {
        let step = dict.entries.len().div_ceil(limit).max(1);
        dict.entries = dict.entries.into_iter().step_by(step).collect();
    }
    let split = split_by_word(&dict.entries, args.split_seed);
    split
        .require(sides)
        .with_context(|| format!("splitting {}", path.display()))?;
    Ok((dict, split))
}

fn train_command(args: TrainArgs) -> Result<()> {
    let files = RunFiles {
        log: Some(
            args.log
                .clone()
                .unwrap_or_else(|| args.out.with_extension("csv")),
        ),
        resume: args.resume.clone(),
        ..RunFiles::beside(&args.out)
    };
    // A resumed run continues writing its own files, so `--resume` (usually the `last`
    // checkpoint) is not an input they must differ from.
    let mut outputs = vec![("--out", args.out.as_path())];
    if let Some(last) = &files.last {
        outputs.push(("the last checkpoint", last.as_path()));
    }
    let plot = files.log.as_ref().map(|log| log.with_extension("svg"));
    if let (Some(log), Some(plot)) = (&files.log, &plot) {
        outputs.push(("--log", log.as_path()));
        outputs.push(("the log's plot", plot.as_path()));
    }
    args.data.check_outputs(&[], &outputs)?;
    let (dict, split) = load_split(&args.data, &[Side::Train, Side::Validation, Side::Test])?;
    let config = match &args.resume {
        Some(path) => resumed_config(&args, path)?,
        None => train_config(&args)?,
    };
    check_training_size(&args, &config, &dict)?;
    crate::status!(
        "CMUdict: {} words ({} pronunciations); split by word: {} train, {} validation, {} test",
        dict.entries.len(),
        dict.n_pronunciations(),
        split.train.len(),
        split.validation.len(),
        split.test.len()
    );
    let network = match &config.transformer {
        Some(t) => format!(
            "Transformer {} + {} layers of width {}, {} heads, feed-forward {} ({:?}), dropout {}",
            t.encoder_layers, t.decoder_layers, t.d_model, t.heads, t.d_ff, t.activation, t.dropout
        ),
        None => format!(
            "embedding {}, BiLSTM 2x{} x{} encoder, LSTM {} x{} decoder, {:?} attention, dropout {}",
            config.network.d_embedding,
            config.network.d_encoder,
            config.network.encoder_layers,
            config.network.d_decoder(),
            config.network.decoder_layers,
            config.network.attention,
            config.network.dropout,
        ),
    };
    crate::status!(
        "model: {network}, label smoothing {}, {:?} schedule{}{} from lr {}, weight average {}, {}; up to {} epochs or {} min",
        config.label_smoothing,
        config.schedule.decay,
        if config.schedule.warmup_steps > 0 {
            format!(" after {} warmup steps", config.schedule.warmup_steps)
        } else {
            String::new()
        },
        if config.halve_on_plateau {
            ", halved on a plateau"
        } else {
            ""
        },
        config.learning_rate,
        config
            .weight_average
            .map_or("none".to_string(), |d| format!("decay {d}")),
        if config.right_to_left {
            "right to left"
        } else {
            "left to right"
        },
        config.max_epochs,
        config.max_minutes
    );
    if let Some(threads) = args.threads {
        padless::cpu::set_threads(threads as usize);
    }
    if let Some(path) = &files.resume {
        crate::status!("resuming the run of {}", path.display());
    }
    let device = padless::training_device();
    let report = train_run(&split, &config, &files, &device, |log| {
        let average = log.average.map_or(String::new(), |(wer, per)| {
            format!(", average WER {:.2}% PER {:.2}%", 100.0 * wer, 100.0 * per)
        });
        crate::status!(
            "epoch {:>2}: loss {:.4}, validation WER {:.2}% PER {:.2}%{average} (lr {:.1e}, {:.0} s)",
            log.epoch,
            log.train_loss,
            100.0 * log.validation_wer,
            100.0 * log.validation_per,
            log.learning_rate,
            log.seconds
        );
    })
    .context("training")?;
    println!(
        "trained {} parameters in {:.0} s ({} steps); best validation WER {:.2}%; saved {} (last epoch: {}, log: {})",
        report.parameters,
        report.seconds,
        report.steps,
        100.0 * report.best_validation_wer,
        args.out.display(),
        files.last.as_deref().unwrap_or(&args.out).display(),
        files.log.as_deref().unwrap_or(&args.out).display()
    );
    let inference = padless::default_device();
    let (model, _) = G2p::load(&args.out, &inference)?;
    let test = evaluate(&model, &split.test, args.beam, 512, &inference)?;
    println!("test split: {test}");
    let unseen: Vec<String> = split
        .test
        .iter()
        .step_by((split.test.len() / 6).max(1))
        .take(6)
        .map(|e| e.word.clone())
        .collect();
    println!("unseen words (test split), greedy:");
    for (word, phonemes) in unseen
        .iter()
        .zip(model.pronounce(&unseen, 1, 64, &inference)?)
    {
        let entry = split
            .test
            .iter()
            .find(|e| &e.word == word)
            .expect("from test");
        println!(
            "  {word:<14} {:<28} reference: {}",
            phonemes.join(" "),
            entry.pronunciations[0].join(" ")
        );
    }
    // The curves of the run's CSV log, beside it.
    if let Some(log) = files.log.as_deref().filter(|log| log.is_file()) {
        crate::plot::write_svg(log, &log.with_extension("svg"))?;
    }
    Ok(())
}

fn eval_command(args: EvalArgs) -> Result<()> {
    if let Some(errors) = &args.errors {
        let models: Vec<(&str, &Path)> = args
            .model
            .iter()
            .map(|m| ("--model", m.as_path()))
            .collect();
        args.data.check_outputs(&models, &[("--errors", errors)])?;
    }
    let (_, split) = load_split(&args.data, &[args.split.side()])?;
    let device = padless::default_device();
    let paths = model_paths(&args.model)?;
    let (models, headers) = load_models(&paths, &device)?;
    let entries = split.side(args.split.side());
    check_decoding_size(&models, entries, args.beam, args.batch_size)?;
    let report = evaluate_ensemble(&models, entries, args.beam, args.batch_size, &device)?;
    let described: Vec<String> = paths
        .iter()
        .zip(&models)
        .zip(&headers)
        .map(|((path, model), header)| {
            format!(
                "{} ({} parameters, trained {} epochs{})",
                path.display(),
                model.network.n_parameters(),
                header.get("epoch").map_or("?", String::as_str),
                if model.right_to_left {
                    ", right to left"
                } else {
                    ""
                }
            )
        })
        .collect();
    if let Some(path) = &args.errors {
        let mut text = String::from("word\toutput\treferences\twrong\n");
        for error in &report.errors {
            let references: Vec<String> = error.references.iter().map(|r| r.join(" ")).collect();
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                error.word,
                error.output.join(" "),
                references.join(" | "),
                if error.stress_only() {
                    "stress"
                } else {
                    "phonemes"
                }
            ));
        }
        padless::files::write_atomically(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        crate::status!("wrote the wrong words to {}", path.display());
    }
    if args.json {
        let models: Vec<serde_json::Value> = paths
            .iter()
            .zip(&models)
            .zip(&headers)
            .map(|((path, model), header)| {
                serde_json::json!({
                    "path": path.display().to_string(),
                    "parameters": model.network.n_parameters(),
                    "epochs": header.get("epoch").and_then(|e| e.parse::<u64>().ok()),
                    "direction": model.direction(),
                })
            })
            .collect();
        return crate::output::write_json(&serde_json::json!({
            "models": models,
            "split": format!("{:?}", args.split).to_lowercase(),
            "beam": report.beam,
            "words": report.words,
            "wer": report.wer,
            "per": report.per,
            "wer_without_stress": report.wer_without_stress,
            "per_without_stress": report.per_without_stress,
            "wrong_words": report.errors.len(),
            "stress_only_errors": report.stress_only_errors(),
            "words_per_second": report.words_per_second,
        }));
    }
    println!(
        "{}{}: {:?} split: {report}",
        if models.len() > 1 {
            format!("ensemble of {}: ", models.len())
        } else {
            String::new()
        },
        described.join(" + "),
        args.split
    );
    println!(
        "wrong: {} words, {} of them only in stress (the phonemes right, a stress digit wrong)",
        report.errors.len(),
        report.stress_only_errors()
    );
    println!(
        "stress digits ignored on both sides: WER {:.2}%, PER {:.2}%",
        100.0 * report.wer_without_stress,
        100.0 * report.per_without_stress
    );
    Ok(())
}

/// Words read from stdin and decoded as one group (64 at a time): memory stays bounded
/// however long the input is.
const PRONOUNCE_GROUP: usize = 1024;

/// Words decoded at once by `g2p pronounce`.
const PRONOUNCE_BATCH: usize = 64;

fn pronounce_command(args: PronounceArgs) -> Result<()> {
    let device = padless::default_device();
    let (models, _) = load_models(&model_paths(&args.model)?, &device)?;
    // The settings alone (a one-letter word) must fit in the memory budget; a word that does
    // not fit beyond that is too long, and left out as unpronounceable.
    check_decoding_size(&models, &[], args.beam, PRONOUNCE_BATCH)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !args.words.is_empty() {
        for group in args.words.chunks(PRONOUNCE_GROUP) {
            pronounce_group(&models, group, &args, &device, &mut out)?;
        }
        return Ok(());
    }
    let stdin = std::io::stdin();
    // A person typing words gets each line's answer at once; a pipe is read in groups.
    let group_size = if stdin.is_terminal() {
        1
    } else {
        PRONOUNCE_GROUP
    };
    let mut group = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.context("reading words from stdin")?;
        group.extend(line.split_whitespace().map(String::from));
        if group.len() >= group_size {
            pronounce_group(&models, &group, &args, &device, &mut out)?;
            group.clear();
        }
    }
    pronounce_group(&models, &group, &args, &device, &mut out)
}

/// Pronounces `words` onto `out`, `word<TAB>phonemes` per line. A word that cannot be
/// pronounced is named on stderr and left out, or with `--strict` ends the command with an
/// error once the words before it are printed.
fn pronounce_group(
    models: &[G2p],
    words: &[String],
    args: &PronounceArgs,
    device: &Device,
    out: &mut impl Write,
) -> Result<()> {
    let mut pronounceable = Vec::with_capacity(words.len());
    for word in words {
        match check_pronounceable(models, word, args.beam) {
            Ok(()) => pronounceable.push(word.clone()),
            Err(err) if args.strict => {
                write_pronunciations(models, &pronounceable, args.beam, device, out)?;
                return Err(err);
            }
            // Not silenced by --quiet: the word is missing from the results.
            Err(err) => eprintln!("padless: warning: {err:#}"),
        }
    }
    write_pronunciations(models, &pronounceable, args.beam, device, out)
}

/// Whether the models can pronounce `word`: every character known, not empty, and its
/// decoding inside the memory budget.
fn check_pronounceable(models: &[G2p], word: &str, beam: usize) -> Result<()> {
    letter_ids(&models[0].letters, word)?;
    let entry = Entry {
        word: word.to_string(),
        pronunciations: Vec::new(),
    };
    check_decoding_size(models, std::slice::from_ref(&entry), beam, 1)
        .with_context(|| format!("cannot pronounce `{word}`"))
}

fn write_pronunciations(
    models: &[G2p],
    words: &[String],
    beam: usize,
    device: &Device,
    out: &mut impl Write,
) -> Result<()> {
    if words.is_empty() {
        return Ok(());
    }
    let entries: Vec<Entry> = words
        .iter()
        .map(|word| Entry {
            word: word.clone(),
            pronunciations: Vec::new(),
        })
        .collect();
    check_decoding_size(models, &entries, beam, PRONOUNCE_BATCH)?;
    let outputs = pronounce_ensemble(models, words, beam, PRONOUNCE_BATCH, device)?;
    for (word, phonemes) in words.iter().zip(outputs) {
        writeln!(out, "{word}\t{}", phonemes.join(" "))?;
    }
    out.flush()?;
    Ok(())
}

/// A saved model's header entries (training figures among them).
type Header = HashMap<String, String>;

/// The models at `paths` (one or more, decoded together) with their headers.
fn load_models(paths: &[PathBuf], device: &Device) -> Result<(Vec<G2p>, Vec<Header>)> {
    let mut models = Vec::with_capacity(paths.len());
    let mut headers = Vec::with_capacity(paths.len());
    for path in paths {
        // The error names the file.
        let (model, header) = G2p::load(path, device).context("loading a model")?;
        models.push(model);
        headers.push(header);
    }
    Ok((models, headers))
}

/// Checks that the model that `config` trains on `dict` fits in the memory budget, naming the
/// size flags in the error.
fn check_training_size(args: &TrainArgs, config: &TrainConfig, dict: &Dictionary) -> Result<()> {
    let (letters, phonemes) = vocabularies(&dict.entries);
    let longest = dict
        .entries
        .iter()
        .map(|e| e.word.chars().count())
        .max()
        .unwrap_or(1);
    let rows = config.batch_size.min(dict.n_pronunciations().max(1));
    let mut flags = vec![
        format!("--model {:?}", args.family).to_lowercase(),
        format!("--preset {:?}", args.preset).to_lowercase(),
    ];
    for (flag, value) in [
        ("--hidden", args.hidden),
        ("--d-model", args.d_model),
        ("--heads", args.heads),
        ("--d-ff", args.d_ff),
        ("--encoder-layers", args.encoder_layers),
        ("--decoder-layers", args.decoder_layers),
        ("--post-attention-layers", args.post_attention_layers),
        ("--batch-size", args.batch_size),
    ] {
        if let Some(value) = value {
            flags.push(format!("{flag} {value}"));
        }
    }
    match config.transformer_network(&letters, &phonemes) {
        Some(network) => flags::check_transformer(
            &flags.join(" "),
            &network,
            rows,
            longest,
            max_phonemes(longest),
        ),
        None => flags::check_encoder_decoder(
            &flags.join(" "),
            &config.network(&letters, &phonemes),
            rows,
            longest,
            max_phonemes(longest),
        ),
    }
}

/// Checks that decoding `entries` with `models`, `beam` hypotheses per word and `batch_size`
/// words at a time fits in the memory budget.
fn check_decoding_size(
    models: &[G2p],
    entries: &[Entry],
    beam: usize,
    batch_size: usize,
) -> Result<()> {
    let longest = entries
        .iter()
        .map(|e| e.word.chars().count())
        .max()
        .unwrap_or(1);
    let rows = batch_size.min(entries.len().max(1));
    let flags = format!("--beam {beam} --batch-size {batch_size}");
    for model in models {
        match &model.network {
            Network::Lstm(network) => {
                flags::check_decoding(&flags, &network.config, rows, beam, longest)?
            }
            Network::Transformer(network) => flags::check_transformer_decoding(
                &flags,
                &network.config,
                rows,
                beam,
                longest,
                max_phonemes(longest),
            )?,
        }
    }
    Ok(())
}
