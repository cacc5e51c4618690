//! The `padless` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

/// Mask-aware sequence models: padding never leaks into states, losses or gradients.
#[derive(Parser, Debug)]
#[command(name = "padless", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the seed question's model (Masking, LSTM encoder, RepeatVector, LSTM decoder,
    /// TimeDistributed softmax), print its summary with the mask columns, run it on a
    /// pre-padded batch and check that the padding is invisible to the encoder.
    Demo {
        /// Seed for the weights.
        #[arg(long, default_value_t = 123)]
        seed: u64,
    },
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Demo { seed } => demo::run(seed),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("padless: {err:#}");
            ExitCode::FAILURE
        }
    }
}
