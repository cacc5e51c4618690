//! [`Callback`]s of [`Trainer::fit`]: progress, early stopping, checkpoints, CSV log,
//! reduce-LR-on-plateau and stateful resets.
//!
//! Callbacks with a state (a monitor's best value and patience counter, best weights) report
//! it under a key ([`Callback::state_key`]); the trainer keeps the states of the last epoch in
//! its checkpoints and gives them back to the same callbacks when a resumed run starts, so the
//! resumed run stops, halves its rate and replaces its best checkpoint exactly when the
//! uninterrupted run would.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::trainer::{Logs, Trainer};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sequential::Sequential;
use crate::weights::NamedWeight;

/// Whether training goes on after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this epoch.
    Stop,
}

/// What a callback keeps between epochs, saved in checkpoints: plain values in the header,
/// weights (such as the best epoch's) as tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallbackState {
    /// Values (JSON).
    pub values: serde_json::Value,
    /// Weights.
    pub weights: Vec<NamedWeight>,
}

/// Hooks called by [`Trainer::fit`]; every method defaults to doing nothing.
///
/// At the end of an epoch every callback's [`Callback::on_epoch_end`] runs in order (each may
/// add entries to the epoch's logs, which later callbacks and the history see), then the
/// trainer records the callbacks' states, then every [`Callback::after_epoch_end`] runs: the
/// place to write checkpoints, which then hold this epoch's complete state.
pub trait Callback<M: Model = Sequential> {
    /// Before the first epoch (after a resumed run's states were given back).
    fn on_train_begin(&mut self, _trainer: &mut Trainer<M>) -> Result<()> {
        Ok(())
    }
    /// Before an epoch of `n_batches` batches.
    fn on_epoch_begin(
        &mut self,
        _epoch: usize,
        _n_batches: usize,
        _trainer: &mut Trainer<M>,
    ) -> Result<()> {
        Ok(())
    }
    /// After each batch (and its optimizer step, unless gradients are being accumulated).
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _logs: &Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<()> {
        Ok(())
    }
    /// After an epoch, with its logs (training averages, `val_*`, `lr`, and what earlier
    /// callbacks added), to which this callback may add.
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &mut Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After every callback's `on_epoch_end` and the trainer's record of their states, with
    /// the epoch's final logs.
    fn after_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<()> {
        Ok(())
    }
    /// After the last epoch.
    fn on_train_end(&mut self, _trainer: &mut Trainer<M>) -> Result<()> {
        Ok(())
    }
    /// The key this callback's state is saved under (unique among one fit's callbacks), or
    /// `None` for a callback without state (the default).
    fn state_key(&self) -> Option<String> {
        None
    }
    /// The state to save (called after each epoch when [`Callback::state_key`] is some).
    fn state(&self) -> CallbackState {
        CallbackState::default()
    }
    /// Takes back a saved state (a resumed run, before `on_train_begin`).
    ///
    /// # Errors
    /// A state this callback cannot read.
    fn load_state(&mut self, _state: CallbackState) -> Result<()> {
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

/// What a [`Watch`] keeps between epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct WatchState {
    best: Option<f64>,
    wait: usize,
}

impl Watch {
    fn state(&self) -> serde_json::Value {
        serde_json::to_value(WatchState {
            best: self.best,
            wait: self.wait,
        })
        .expect("plain data")
    }

    fn load(&mut self, values: serde_json::Value) -> Result<()> {
        let state: WatchState = serde_json::from_value(values).map_err(|e| {
            Error::config(
                "callback",
                format!("saved state of the {} monitor: {e}", self.monitor),
            )
        })?;
        self.best = state.best;
        self.wait = state.wait;
        Ok(())
    }

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

impl<M: Model> Callback<M> for Progress {
    fn on_epoch_begin(
        &mut self,
        epoch: usize,
        n_batches: usize,
        _trainer: &mut Trainer<M>,
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
        _trainer: &mut Trainer<M>,
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
        _epoch: usize,
        _logs: &mut Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<Control> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(Control::Continue)
    }

    fn after_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<()> {
        eprintln!("epoch {}/{}: {}", epoch + 1, self.epochs, format_logs(logs));
        Ok(())
    }
}

/// Stops when `monitor` has not improved by `min_delta` for `patience` epochs; with
/// [`EarlyStopping::with_restore_best_weights`], gives the model the weights of its best epoch
/// at the end of training (Keras' `restore_best_weights`).
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Whether the best epoch's weights are kept and restored at the end of training.
    pub restore_best_weights: bool,
    best_weights: Option<Vec<NamedWeight>>,
    watch: Watch,
}

impl EarlyStopping {
    /// Watches `monitor` with `patience`.
    pub fn new(monitor: impl Into<String>, patience: usize) -> Self {
        EarlyStopping {
            patience,
            restore_best_weights: false,
            best_weights: None,
            watch: Watch::new(monitor.into(), 0.0),
        }
    }

    /// The smallest change that counts as an improvement (default 0).
    pub fn with_min_delta(mut self, min_delta: f64) -> Self {
        self.watch.min_delta = min_delta;
        self
    }

    /// Keeps a copy of the weights of each epoch that improves on the best, and gives them to
    /// the model at the end of training, whether it stopped early or ran all its epochs.
    pub fn with_restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    /// The best value of the monitor so far.
    pub fn best(&self) -> Option<f64> {
        self.watch.best
    }
}

impl<M: Model> Callback<M> for EarlyStopping {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        trainer: &mut Trainer<M>,
    ) -> Result<Control> {
        if self.watch.observe(logs)? && self.restore_best_weights {
            self.best_weights = Some(trainer.model.weights());
        }
        Ok(if self.watch.wait >= self.patience {
            Control::Stop
        } else {
            Control::Continue
        })
    }

    fn on_train_end(&mut self, trainer: &mut Trainer<M>) -> Result<()> {
        if self.restore_best_weights
            && let Some(best) = &self.best_weights
        {
            trainer.model.set_weights(best)?;
        }
        Ok(())
    }

    fn state_key(&self) -> Option<String> {
        Some(format!("early_stopping/{}", self.watch.monitor))
    }

    fn state(&self) -> CallbackState {
        CallbackState {
            values: self.watch.state(),
            weights: self.best_weights.clone().unwrap_or_default(),
        }
    }

    fn load_state(&mut self, state: CallbackState) -> Result<()> {
        self.watch.load(state.values)?;
        self.best_weights = (!state.weights.is_empty()).then_some(state.weights);
        Ok(())
    }
}

/// Writes a checkpoint of the best epoch by `monitor` and of the last epoch (atomically), in
/// [`Callback::after_epoch_end`], so that each holds its epoch's complete state.
pub struct ModelCheckpoint {
    /// Where the best checkpoint goes.
    pub best: Option<PathBuf>,
    /// Where the last checkpoint goes.
    pub last: Option<PathBuf>,
    metadata: Vec<(String, String)>,
    improved: bool,
    watch: Watch,
}

impl ModelCheckpoint {
    /// Best by `monitor` to `best`, every epoch to `last`.
    pub fn new(best: Option<PathBuf>, last: Option<PathBuf>, monitor: impl Into<String>) -> Self {
        ModelCheckpoint {
            best,
            last,
            metadata: Vec::new(),
            improved: false,
            watch: Watch::new(monitor.into(), 0.0),
        }
    }

    /// Starts from a best value reached before (a resumed run), so the best checkpoint is
    /// replaced only by an epoch that beats it.
    pub fn with_best_so_far(mut self, best: Option<f64>) -> Self {
        self.watch.best = best;
        self
    }

    /// Adds header entries to every checkpoint written (a task's own settings, such as its
    /// vocabularies), readable with [`checkpoint_metadata`](crate::model::checkpoint_metadata).
    pub fn with_metadata(mut self, metadata: Vec<(String, String)>) -> Self {
        self.metadata = metadata;
        self
    }
}

impl<M: Model> Callback<M> for ModelCheckpoint {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<Control> {
        self.improved = self.best.is_some() && self.watch.observe(logs)?;
        Ok(Control::Continue)
    }

    fn after_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        trainer: &mut Trainer<M>,
    ) -> Result<()> {
        if let Some(path) = &self.last {
            trainer.save_with(path, &self.metadata)?;
        }
        if let Some(path) = &self.best
            && self.improved
        {
            trainer.save_with(path, &self.metadata)?;
        }
        Ok(())
    }

    fn state_key(&self) -> Option<String> {
        self.best
            .is_some()
            .then(|| format!("model_checkpoint/{}", self.watch.monitor))
    }

    fn state(&self) -> CallbackState {
        CallbackState {
            values: self.watch.state(),
            weights: Vec::new(),
        }
    }

    fn load_state(&mut self, state: CallbackState) -> Result<()> {
        self.watch.load(state.values)
    }
}

/// Appends one CSV row per epoch (`epoch`, then the log keys of the first epoch in order),
/// written through the `csv` crate.
pub struct CsvLogger {
    path: PathBuf,
    header: Option<Vec<String>>,
}

impl CsvLogger {
    /// Logs to `path` (replaced at the first epoch).
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
        let header = match csv::Reader::from_path(&path) {
            Ok(mut reader) => {
                let header = reader.headers().map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e.into(),
                })?;
                Some(header.iter().skip(1).map(String::from).collect())
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => None,
                _ => {
                    return Err(Error::Io {
                        path,
                        source: e.into(),
                    });
                }
            },
        };
        Ok(CsvLogger { path, header })
    }
}

impl<M: Model> Callback<M> for CsvLogger {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &mut Logs,
        _trainer: &mut Trainer<M>,
    ) -> Result<Control> {
        let io = |source: std::io::Error| Error::Io {
            path: self.path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(self.header.is_some())
            .write(true)
            .truncate(self.header.is_none())
            .open(&self.path)
            .map_err(io)?;
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        let header = match &self.header {
            Some(header) => header.clone(),
            None => {
                let keys: Vec<String> = logs.keys().cloned().collect();
                writer
                    .write_record(std::iter::once("epoch").chain(keys.iter().map(String::as_str)))
                    .map_err(|e| io(e.into()))?;
                self.header = Some(keys.clone());
                keys
            }
        };
        let row = header
            .iter()
            .map(|k| logs.get(k).map_or(String::new(), |v| v.to_string()));
        writer
            .write_record(std::iter::once((epoch + 1).to_string()).chain(row))
            .map_err(|e| io(e.into()))?;
        writer.flush().map_err(io)?;
        Ok(Control::Continue)
    }
}

/// Multiplies the learning rate by `factor` when `monitor` has not improved for `patience`
/// epochs, down to `min_lr`: the trainer's plateau factor ([`Trainer::lr_factor`]) multiplies
/// the scheduled rate from then on (halving on a plateau is `factor` 0.5).
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

impl<M: Model> Callback<M> for ReduceLrOnPlateau {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &mut Logs,
        trainer: &mut Trainer<M>,
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

    fn state_key(&self) -> Option<String> {
        Some(format!("reduce_lr_on_plateau/{}", self.watch.monitor))
    }

    fn state(&self) -> CallbackState {
        CallbackState {
            values: self.watch.state(),
            weights: Vec::new(),
        }
    }

    fn load_state(&mut self, state: CallbackState) -> Result<()> {
        self.watch.load(state.values)
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

impl<M: Model> Callback<M> for StatefulReset {
    fn on_batch_end(
        &mut self,
        epoch: usize,
        batch: usize,
        _logs: &Logs,
        trainer: &mut Trainer<M>,
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
        _logs: &mut Logs,
        trainer: &mut Trainer<M>,
    ) -> Result<Control> {
        trainer.model.reset_states();
        Ok(Control::Continue)
    }
}
