//! [`Callback`]s of [`Trainer::fit`]: progress, early stopping, checkpoints, CSV log,
//! reduce-LR-on-plateau and stateful resets.

use std::io::Write;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::checkpoint::save_checkpoint;
use super::trainer::{Logs, Trainer};
use crate::error::{Error, Result};

/// Whether training goes on after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this epoch.
    Stop,
}

/// Hooks called by [`Trainer::fit`]; every method defaults to doing nothing.
pub trait Callback {
    /// Before the first epoch.
    fn on_train_begin(&mut self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
    /// Before an epoch of `n_batches` batches.
    fn on_epoch_begin(
        &mut self,
        _epoch: usize,
        _n_batches: usize,
        _trainer: &mut Trainer,
    ) -> Result<()> {
        Ok(())
    }
    /// After each optimizer step.
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _logs: &Logs,
        _trainer: &mut Trainer,
    ) -> Result<()> {
        Ok(())
    }
    /// After an epoch, with its logs (training averages, `val_*`, `lr`).
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _trainer: &mut Trainer,
    ) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After the last epoch.
    fn on_train_end(&mut self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
}

/// A monitored log value: its best so far and the epochs since it last improved.
/// `loss`-like values improve downwards, `*accuracy` upwards.
#[derive(Debug, Clone)]
struct Watch {
    monitor: String,
    min_delta: f64,
    best: Option<f64>,
    wait: usize,
}

impl Watch {
    fn new(monitor: String, min_delta: f64) -> Self {
        Watch {
            monitor,
            min_delta,
            best: None,
            wait: 0,
        }
    }

    /// Records this epoch's value; true when it improved on the best by more than
    /// `min_delta` (then `wait` restarts at 0, else it grows by 1).
    fn observe(&mut self, logs: &Logs) -> Result<bool> {
        let value = logs.get(&self.monitor).copied().ok_or_else(|| {
            Error::config(
                "callback",
                format!(
                    "monitors {}, but the logs have {}",
                    self.monitor,
                    logs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let improved = match self.best {
            None => true,
            Some(best) if self.monitor.contains("acc") => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        };
        if improved {
            self.best = Some(value);
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        Ok(improved)
    }
}

/// Formats logs as `loss 0.1234 · accuracy 0.9500`.
pub fn format_logs(logs: &Logs) -> String {
    logs.iter()
        .map(|(k, v)| {
            if k == "lr" {
                format!("{k} {v:.2e}")
            } else {
                format!("{k} {v:.4}")
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A progress bar per epoch with the running loss and metrics, and one summary line per
/// epoch. The bar is drawn only on a terminal; the summary lines always go to stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    sums: Logs,
    seen: usize,
}

impl Progress {
    /// Progress for `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Progress {
            bar: None,
            epochs,
            sums: Logs::new(),
            seen: 0,
        }
    }
}

impl Callback for Progress {
    fn on_epoch_begin(
        &mut self,
        epoch: usize,
        n_batches: usize,
        _trainer: &mut Trainer,
    ) -> Result<()> {
        let bar =
            ProgressBar::with_draw_target(Some(n_batches as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        self.bar = Some(bar);
        self.sums.clear();
        self.seen = 0;
        Ok(())
    }

    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _batch: usize,
        logs: &Logs,
        _trainer: &mut Trainer,
    ) -> Result<()> {
        self.seen += 1;
        for (k, v) in logs {
            *self.sums.entry(k.clone()).or_insert(0.0) += v;
        }
        if let Some(bar) = &self.bar {
            let running: Logs = self
                .sums
                .iter()
                .map(|(k, v)| (k.clone(), v / self.seen as f64))
                .collect();
            bar.set_message(format_logs(&running));
            bar.inc(1);
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _trainer: &mut Trainer,
    ) -> Result<Control> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("epoch {}/{}: {}", epoch + 1, self.epochs, format_logs(logs));
        Ok(Control::Continue)
    }
}

/// Stops when `monitor` has not improved by `min_delta` for `patience` epochs.
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    watch: Watch,
}

impl EarlyStopping {
    /// Watches `monitor` with `patience`.
    pub fn new(monitor: impl Into<String>, patience: usize) -> Self {
        EarlyStopping {
            patience,
            watch: Watch::new(monitor.into(), 0.0),
        }
    }

    /// The smallest change that counts as an improvement (default 0).
    pub fn with_min_delta(mut self, min_delta: f64) -> Self {
        self.watch.min_delta = min_delta;
        self
    }
}

impl Callback for EarlyStopping {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &Logs,
        _trainer: &mut Trainer,
    ) -> Result<Control> {
        self.watch.observe(logs)?;
        Ok(if self.watch.wait >= self.patience {
            Control::Stop
        } else {
            Control::Continue
        })
    }
}

/// Writes a checkpoint of the best epoch by `monitor` and of the last epoch (atomically).
pub struct ModelCheckpoint {
    /// Where the best checkpoint goes.
    pub best: Option<PathBuf>,
    /// Where the last checkpoint goes.
    pub last: Option<PathBuf>,
    watch: Watch,
}

impl ModelCheckpoint {
    /// Best by `monitor` to `best`, every epoch to `last`.
    pub fn new(best: Option<PathBuf>, last: Option<PathBuf>, monitor: impl Into<String>) -> Self {
        ModelCheckpoint {
            best,
            last,
            watch: Watch::new(monitor.into(), 0.0),
        }
    }

    /// Starts from a best value reached before (a resumed run), so the best checkpoint is
    /// replaced only by an epoch that beats it.
    pub fn with_best_so_far(mut self, best: Option<f64>) -> Self {
        self.watch.best = best;
        self
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &Logs,
        trainer: &mut Trainer,
    ) -> Result<Control> {
        if let Some(path) = &self.last {
            save_checkpoint(trainer, path)?;
        }
        if let Some(path) = &self.best
            && self.watch.observe(logs)?
        {
            save_checkpoint(trainer, path)?;
        }
        Ok(Control::Continue)
    }
}

/// Appends one CSV row per epoch (`epoch,` then the log keys in order).
pub struct CsvLogger {
    path: PathBuf,
    header: Option<Vec<String>>,
}

impl CsvLogger {
    /// Logs to `path` (replaced at the start of training).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvLogger {
            path: path.into(),
            header: None,
        }
    }

    /// Logs to `path`, appending to the log already there (a resumed run) under its header;
    /// a new log when there is none.
    ///
    /// # Errors
    /// When an existing log cannot be read.
    pub fn appending(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let header = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .next()
                .map(|line| line.split(',').skip(1).map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(CsvLogger { path, header })
    }
}

impl Callback for CsvLogger {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _trainer: &mut Trainer,
    ) -> Result<Control> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(self.header.is_some())
            .write(true)
            .truncate(self.header.is_none())
            .open(&self.path)
            .map_err(io)?;
        let keys: Vec<String> = logs.keys().cloned().collect();
        if self.header.is_none() {
            writeln!(file, "epoch,{}", keys.join(",")).map_err(io)?;
            self.header = Some(keys.clone());
        }
        let header = self.header.as_ref().expect("set above");
        let row: Vec<String> = header
            .iter()
            .map(|k| logs.get(k).map_or(String::new(), |v| v.to_string()))
            .collect();
        writeln!(file, "{},{}", epoch + 1, row.join(",")).map_err(io)?;
        Ok(Control::Continue)
    }
}

/// Multiplies the learning rate by `factor` when `monitor` has not improved for `patience`
/// epochs, down to `min_lr`.
pub struct ReduceLrOnPlateau {
    /// The factor (0.1 in Keras).
    pub factor: f64,
    /// Epochs without improvement before reducing.
    pub patience: usize,
    /// The floor.
    pub min_lr: f64,
    watch: Watch,
}

impl ReduceLrOnPlateau {
    /// Watches `monitor`.
    pub fn new(monitor: impl Into<String>, factor: f64, patience: usize) -> Self {
        ReduceLrOnPlateau {
            factor,
            patience,
            min_lr: 0.0,
            watch: Watch::new(monitor.into(), 0.0),
        }
    }
}

impl Callback for ReduceLrOnPlateau {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &Logs,
        trainer: &mut Trainer,
    ) -> Result<Control> {
        let improved = self.watch.observe(logs)?;
        if !improved
            && self.watch.wait >= self.patience
            && trainer.learning_rate * self.factor >= self.min_lr
        {
            trainer.lr_factor *= self.factor;
            trainer.learning_rate *= self.factor;
            self.watch.wait = 0;
        }
        Ok(Control::Continue)
    }
}

/// Resets the states of stateful recurrent layers after the batches a predicate picks
/// (every N batches, at document boundaries…), and at the end of every epoch.
pub struct StatefulReset {
    predicate: Box<dyn FnMut(usize, usize) -> bool>,
    /// How many resets happened.
    pub resets: usize,
}

impl StatefulReset {
    /// Resets after batch `b` of epoch `e` when `predicate(e, b)`.
    pub fn new(predicate: impl FnMut(usize, usize) -> bool + 'static) -> Self {
        StatefulReset {
            predicate: Box::new(predicate),
            resets: 0,
        }
    }

    /// Resets after every `n` batches.
    pub fn every(n: usize) -> Self {
        Self::new(move |_, batch| (batch + 1) % n.max(1) == 0)
    }
}

impl Callback for StatefulReset {
    fn on_batch_end(
        &mut self,
        epoch: usize,
        batch: usize,
        _logs: &Logs,
        trainer: &mut Trainer,
    ) -> Result<()> {
        if (self.predicate)(epoch, batch) {
            trainer.model.reset_states();
            self.resets += 1;
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        trainer: &mut Trainer,
    ) -> Result<Control> {
        trainer.model.reset_states();
        Ok(Control::Continue)
    }
}
