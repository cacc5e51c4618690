//! The `padless` command line.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a training step allocates and frees buffers of
/// hundreds of kilobytes many times, which glibc serves with fresh `mmap`s and page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod data_files;
mod demo;
mod encode;
mod eval_cmd;
mod flags;
#[cfg(test)]
mod fuzz;
mod g2p;
mod model_file;
mod output;
mod paths;
mod plot;
mod train_cmd;
mod vocab;

/// Shown after the flags by `padless --help` only: what `--bf16` does (one line on every other
/// page) and where output goes.
const AFTER_LONG_HELP: &str = "\
bfloat16 products (--bf16, before or after the command):
  Runs the CPU kernels' f32 matrix products in bfloat16 (operands rounded to 8 bits of
  mantissa, sums in f32) on Intel AMX tiles, or on AVX512-BF16 where there are none: several
  times (tiles) or up to twice (AVX512-BF16) the f32 rate per core, about three significant
  digits. Needs a Xeon of the 4th generation or later on Linux, or an x86-64 CPU with
  AVX512-BF16 (AMD Zen 4 or later); an error elsewhere.

Output:
  Results go to stdout, progress and logs to stderr, errors to stderr as `padless: ` and
  their chain of causes (exit status 1). --quiet leaves only results and errors.";

/// Mask-aware sequence models: padding never leaks into states, losses or gradients.
#[derive(Parser, Debug)]
#[command(name = "padless", version, about, after_long_help = AFTER_LONG_HELP)]
struct Args {
    /// Run the CPU kernels' matrix products in bfloat16 (details: `padless --help`).
    #[arg(long, global = true)]
    bf16: bool,
    /// Print only results and errors: no progress, no logs.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a seq2seq model whose encoder drops the mask; print its masked and unmasked losses.
    ///
    /// The model is the Keras character-level model of a common question about masks: Masking,
    /// an LSTM encoder (which consumes the mask), RepeatVector (which makes none), an LSTM
    /// decoder and a softmax per step. It learns to reverse generated words of the letters a to
    /// e, pre-padded with all-zero steps. padless masks the loss with the targets' lengths, so
    /// padded target steps are never scored; the unmasked loss beside it is what a framework
    /// that lost the mask reports. Prints the model's summary, the two losses, the accuracies
    /// and a few predictions (progress on stderr).
    #[command(name = "masking-demo", alias = "demo")]
    MaskingDemo {
        /// Seed for the weights, the data and the shuffling.
        #[arg(long, default_value_t = 123)]
        seed: u64,
        /// Training epochs.
        #[arg(long, default_value_t = 12, value_parser = flags::epochs)]
        epochs: usize,
    },
    /// Grapheme-to-phoneme conversion on the CMU Pronouncing Dictionary in data/cmudict.
    #[command(subcommand)]
    G2p(g2p::G2pCommand),
    /// Time training steps of a benchmark model of bench/SPEC.md through the public API:
    /// "seed-s2s" (Masking, LSTM(H), RepeatVector, LSTM(H), TimeDistributed softmax; B = T =
    /// 64) or, with --model transformer, "seq2seq-transformer" (a 3 + 3 layer encoder-decoder
    /// Transformer, d_model 256; B = T = 64).
    Bench {
        /// The benchmark model.
        #[arg(long, value_enum, default_value_t = bench::BenchModel::Lstm)]
        model: bench::BenchModel,
        /// Hidden units of both LSTMs (--model lstm).
        #[arg(long, default_value_t = 128, value_parser = flags::count)]
        hidden: usize,
        /// Threads of the fused recurrent kernels, 1 or 2 [default: 2, or 1 on one core].
        #[arg(long, value_parser = flags::kernel_threads)]
        threads: Option<usize>,
        /// Timed steps per repeat (3 repeats, median reported).
        #[arg(long, default_value_t = 20, value_parser = flags::count)]
        steps: usize,
        /// Fraction of valid input steps, in (0, 1] (lengths scaled); the SPEC lengths when
        /// absent.
        #[arg(long, value_parser = flags::fraction)]
        valid_fraction: Option<f64>,
        /// Source lengths lo:hi, uniform (--model transformer; SPEC: 8:64, its half-valid batch
        /// 4:32).
        #[arg(long, value_parser = bench::parse_lengths)]
        lengths: Option<(usize, usize)>,
        /// Run burn's composite operations instead of the fused CPU path (the reference;
        /// --model transformer).
        #[arg(long)]
        composite: bool,
        /// Print the figures as one JSON object instead of a line of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a model config's layers, output shapes, parameters and where masks go.
    Summary {
        /// A model config (JSON or TOML).
        config: std::path::PathBuf,
    },
    /// Train a model config on data files (JSON Lines, CSV or text), with progress, best and
    /// last checkpoints, a CSV log and its plot; --resume continues a run.
    Train(train_cmd::TrainArgs),
    /// Print the masked loss and metrics of a checkpoint on a data file.
    Evaluate(eval_cmd::EvaluateArgs),
    /// Print a checkpoint's decoded outputs for a data file or one input.
    Predict(eval_cmd::PredictArgs),
    /// Draw a training log (CSV: an epoch column, then numeric columns) as an SVG plot: losses
    /// on one panel, rates and accuracies on another.
    Plot(plot::PlotArgs),
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    output::set_quiet(args.quiet);
    if args.bf16 {
        padless::cpu::set_bf16_products(true).map_err(anyhow::Error::msg)?;
    }
    match args.command {
        Command::MaskingDemo { seed, epochs } => demo::run(seed, epochs),
        Command::Bench {
            model: bench::BenchModel::Transformer,
            threads,
            steps,
            valid_fraction,
            lengths,
            composite,
            json,
            ..
        } => bench::transformer::run(&bench::transformer::TransformerBenchArgs {
            threads: threads.unwrap_or_else(flags::available_threads),
            steps,
            repeats: 3,
            warmup: 3,
            lengths: lengths.unwrap_or((8, 64)),
            valid_fraction,
            composite,
            json,
        }),
        Command::Bench {
            model: bench::BenchModel::Lstm,
            hidden,
            threads,
            steps,
            valid_fraction,
            lengths,
            composite,
            json,
        } => {
            anyhow::ensure!(
                lengths.is_none() && !composite,
                "--lengths and --composite apply to --model transformer"
            );
            bench::run(&bench::BenchArgs {
                hidden,
                threads: threads.unwrap_or_else(flags::available_threads),
                steps,
                repeats: 3,
                warmup: 3,
                valid_fraction,
                json,
            })
        }
        Command::Summary { config } => summary(&config),
        Command::G2p(command) => g2p::run(command),
        Command::Train(args) => train_cmd::run(args),
        Command::Evaluate(args) => eval_cmd::evaluate(args),
        Command::Predict(args) => eval_cmd::predict_cmd(args),
        Command::Plot(args) => plot::run(args),
    }
}

fn summary(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: padless::model_config::ModelConfig =
        if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        } else {
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        };
    // Worked out from the config: the weights are not built, so a large model is summarised
    // at once, and one over the memory budget is refused before anything is allocated.
    let summary = config
        .check_size()
        .and_then(|()| config.summary())
        .with_context(|| format!("building the model of {}", path.display()))?;
    print!("{summary}");
    Ok(())
}

/// mimalloc's `mi_option_purge_delay` (its position in mimalloc v3's `mi_option_e`, the
/// version `libmimalloc-sys` builds by default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the OS after mimalloc's default 10 ms:
/// each fused call allocates buffers of megabytes that the OS would otherwise map and zero
/// again on every call. The process's peak memory is unchanged; it simply keeps it until exit.
fn keep_freed_memory_mapped() {
    // SAFETY: `mi_option_set` takes an option number and a value, touches only mimalloc's
    // option table, and may be called at any time; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Shows the library's log records on stderr as `padless warning: ...`: warnings and errors
/// by default, as `RUST_LOG` says where it is set (`RUST_LOG=off` silences them, `info` adds
/// more).
fn install_logger() {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .parse_default_env()
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(out, "padless {level}: {}", record.args())
        })
        .init();
}

fn main() -> ExitCode {
    keep_freed_memory_mapped();
    install_logger();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`padless ... | head`): the output simply ends.
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("padless: {err:#}");
            ExitCode::FAILURE
        }
    }
}
