//! Where the CLI's output goes, the same for every command (as cargo and ripgrep do):
//! results on stdout, progress and logs on stderr; `--quiet` leaves only results and errors.
//!
//! A command prints its results with `println!` (or [`write_json`]) and everything else with
//! [`status!`](crate::status), which `--quiet` silences; training progress goes through
//! [`Progress`]. Errors are printed once, by `main`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use padless::model::Model;
use padless::train::{Callback, Control, Logs, Trainer};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences progress and logs for the rest of the process (`--quiet`): the CLI's own status
/// lines, the training progress, and the library's `log` records below errors, whichever
/// logger shows them.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    if quiet {
        log::set_max_level(log::LevelFilter::Error);
    }
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints a progress or log line on stderr, unless `--quiet`.
#[macro_export]
macro_rules! status {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            eprintln!($($arg)*);
        }
    };
}

/// Writes `value` as one JSON document on one line of stdout (`--json`).
///
/// # Errors
/// When stdout cannot be written.
pub fn write_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// The training progress of [`padless::train::Progress`] (a bar and one line per epoch on
/// stderr), or nothing under `--quiet`.
pub struct Progress(Option<padless::train::Progress>);

impl Progress {
    /// Progress for `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Progress((!quiet()).then(|| padless::train::Progress::new(epochs)))
    }
}

impl<M: Model> Callback<M> for Progress {
    fn on_epoch_begin(
        &mut self,
        epoch: usize,
        n_batches: usize,
        trainer: &mut Trainer<M>,
    ) -> padless::Result<()> {
        match &mut self.0 {
            Some(progress) => progress.on_epoch_begin(epoch, n_batches, trainer),
            None => Ok(()),
        }
    }

    fn on_batch_end(
        &mut self,
        epoch: usize,
        batch: usize,
        logs: &Logs,
        trainer: &mut Trainer<M>,
    ) -> padless::Result<()> {
        match &mut self.0 {
            Some(progress) => progress.on_batch_end(epoch, batch, logs, trainer),
            None => Ok(()),
        }
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        trainer: &mut Trainer<M>,
    ) -> padless::Result<Control> {
        match &mut self.0 {
            Some(progress) => progress.on_epoch_end(epoch, logs, trainer),
            None => Ok(Control::Continue),
        }
    }

    fn after_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        trainer: &mut Trainer<M>,
    ) -> padless::Result<()> {
        match &mut self.0 {
            Some(progress) => progress.after_epoch_end(epoch, logs, trainer),
            None => Ok(()),
        }
    }
}

/// Whether `err`'s chain holds a closed pipe: the reader of stdout went away (`padless ... |
/// head`), which ends the output rather than being an error to report.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
