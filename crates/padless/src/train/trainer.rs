//! [`Trainer`]: `compile`, `fit`, `evaluate`, `predict`, `train_on_batch`, `test_on_batch`,
//! over any [`Model`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use burn::module::{ModuleMapper, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

use super::callbacks::{Callback, CallbackState, Control};
use super::data::{Batch, BatchOptions, BatchSource, Example, make_batches, split_validation};
use super::metric::{Metric, MetricKind, batch_metrics};
use super::optimizer::{OptimizerConfig, positive};
use super::schedule::{LrSchedule, RunProgress};
use super::weight_average::{WeightAverage, check_decay};
use crate::error::{Error, Result};
use crate::layer::Spec;
use crate::losses::{LossInputs, LossOutput, SequenceLoss, TargetMask, Targets};
use crate::model::{Inputs, Model};
use crate::model_config::ModelConfig;
use crate::sequential::Sequential;
use crate::tensor_util::f32_vec;
use crate::value::Value;

/// Named values of an epoch or batch (`loss`, `accuracy`, `val_loss`…).
pub type Logs = BTreeMap<String, f64>;

/// What to do with NaN or inf at a valid step of a batch's inputs (masked steps are never
/// read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFiniteInputs {
    /// Stop with an error naming the row and step (the default).
    #[default]
    Error,
    /// Log a warning (`log::warn!`) naming the row and step, and go on.
    Warn,
    /// Do not check.
    Ignore,
}

/// What to do with a batch whose loss is NaN or infinite (a diverging run, or values the
/// model cannot take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFiniteLoss {
    /// Stop with [`Error::NonFiniteLoss`] naming the epoch, the batch and the step (the
    /// default); no gradient of that batch is applied.
    #[default]
    Error,
    /// Leave the batch out (no gradient, not in the epoch's averages), log a warning and
    /// count it in [`Trainer::skipped_batches`].
    Skip,
}

/// What `compile` takes.
#[derive(Debug, Clone)]
pub struct CompileConfig {
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The base learning rate.
    pub learning_rate: f64,
    /// How the rate changes from step to step ([`LrSchedule`]); the trainer multiplies it by
    /// its plateau factor ([`Trainer::lr_factor`]).
    pub schedule: LrSchedule,
    /// Clip each parameter's gradient to this norm.
    pub clip_norm: Option<f32>,
    /// The loss.
    pub loss: SequenceLoss,
    /// Built-in metrics beside the loss.
    pub metrics: Vec<MetricKind>,
    /// Metrics of one's own beside the loss ([`Metric`]).
    pub custom_metrics: Vec<Arc<dyn Metric>>,
    /// NaN or inf at valid steps of the inputs: an error, a warning, or unchecked.
    pub non_finite_inputs: NonFiniteInputs,
    /// Keep an exponential moving average of the weights with this decay per step
    /// ([`WeightAverage`]; Keras' `use_ema` with `ema_momentum`): started at the weights
    /// after the first step and updated after each later one, available from
    /// [`Trainer::averaged_model`], saved in checkpoints, and written over the model's weights
    /// at the end of [`Trainer::fit`] (as Keras does). Validation during `fit` uses the
    /// trained weights.
    pub weight_average: Option<f64>,
    /// Batches per optimizer step (1: a step per batch). With `k > 1` the gradients of `k`
    /// consecutive batches are summed, each batch's loss weighted `1 / k` (so the step follows
    /// their mean gradient, as one batch `k` times as large would with a mean loss), and one
    /// optimizer step is taken; an epoch's last group may be shorter (weighted by its own
    /// size).
    pub accumulate_batches: usize,
    /// The seed of the per-step randomness (dropout): before each batch the device's
    /// generator is seeded from this seed and the step, so a run resumed from a checkpoint
    /// draws what the uninterrupted run would. `None`: drawn from the device's generator when
    /// the trainer is built (so seeding the device before building makes runs repeatable).
    pub seed: Option<u64>,
    /// A batch whose loss is NaN or infinite: an error (the default) or skipped.
    pub non_finite_loss: NonFiniteLoss,
}

impl CompileConfig {
    /// Adam at 1e-3, constant, no clipping, the given loss, no metrics, a step per batch.
    pub fn new(loss: SequenceLoss) -> Self {
        CompileConfig {
            optimizer: OptimizerConfig::default(),
            learning_rate: 1e-3,
            schedule: LrSchedule::constant(),
            clip_norm: None,
            loss,
            metrics: Vec::new(),
            custom_metrics: Vec::new(),
            non_finite_inputs: NonFiniteInputs::Error,
            weight_average: None,
            accumulate_batches: 1,
            seed: None,
            non_finite_loss: NonFiniteLoss::Error,
        }
    }

    /// Checks the settings, whether they come from code, a config or a checkpoint: the
    /// learning rate and the clip norm finite and above 0, the optimizer's settings
    /// ([`OptimizerConfig::validate`]), the schedule's ([`LrSchedule::validate`]), the
    /// weight-average decay and the label smoothing in `[0, 1)`, `accumulate_batches` at least
    /// 1.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting, what it takes and the value found.
    pub fn validate(&self) -> Result<()> {
        positive("Trainer", "learning rate", self.learning_rate, false)?;
        if let Some(clip) = self.clip_norm {
            positive("Trainer", "clip norm", f64::from(clip), false)?;
        }
        self.optimizer.validate()?;
        self.schedule.validate()?;
        if let Some(decay) = self.weight_average {
            check_decay(decay)?;
        }
        let smoothing = self.loss.label_smoothing;
        if !(0.0..1.0).contains(&smoothing) {
            return Err(Error::config(
                "SequenceLoss",
                format!("expected label smoothing in [0, 1), found {smoothing}"),
            ));
        }
        if self.accumulate_batches == 0 {
            return Err(Error::config(
                "Trainer",
                "accumulate_batches must be at least 1, found 0",
            ));
        }
        Ok(())
    }
}

/// What `fit` takes.
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Epochs this call trains (after those a resumed trainer has done).
    pub epochs: usize,
    /// How batches are made (size, padding side, shuffling seed, bucketing); the shuffling
    /// seed of epoch `e` is `shuffle_seed + e`.
    pub batches: BatchOptions,
    /// Hold out this last fraction of the training examples (Keras `validation_split`).
    pub validation_split: f64,
    /// The epochs the whole run is planned for, which progress-based schedules count
    /// towards; `None`: the epochs done before this call plus `epochs`. A run that is to be
    /// interrupted and resumed gives the same plan to every call.
    pub total_epochs: Option<usize>,
    /// Stop after the optimizer step that passes this many minutes of training, counted over
    /// the whole run ([`Trainer::train_seconds`], which checkpoints keep), ending that epoch
    /// early; progress-based schedules count time towards it.
    pub max_minutes: Option<f64>,
}

impl FitConfig {
    /// `epochs` epochs of `batches`, no validation split, no time budget.
    pub fn new(epochs: usize, batches: BatchOptions) -> Self {
        FitConfig {
            epochs,
            batches,
            validation_split: 0.0,
            total_epochs: None,
            max_minutes: None,
        }
    }
}

/// A compiled model: the model, its optimizer, loss, metrics and schedule, and the state of a
/// run (epoch, step, learning rate, seed) that checkpoints keep.
///
/// `Trainer` alone is `Trainer<Sequential>`; any [`Model`] trains the same way
/// (`Trainer::<EncoderDecoder>::new(model, compile, &device)`).
pub struct Trainer<M: Model = Sequential> {
    /// The model (on an autodiff device).
    pub model: M,
    /// The config it was built from, if any (checkpoints save it; else the model's own
    /// [`Model::config`]).
    pub model_config: Option<M::Config>,
    /// Compile settings.
    pub config: CompileConfig,
    /// The learning rate of the last (or next) step.
    pub learning_rate: f64,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Factor on the scheduled rate, lowered by [`ReduceLrOnPlateau`](super::ReduceLrOnPlateau).
    pub lr_factor: f64,
    /// The seed of the per-step randomness ([`CompileConfig::seed`]).
    pub seed: u64,
    /// Seconds spent in `fit` over the whole run (a resumed run goes on counting).
    pub train_seconds: f64,
    /// Batches left out because their loss was not finite ([`NonFiniteLoss::Skip`]) over the
    /// whole run (checkpoints keep the count).
    pub skipped_batches: usize,
    pub(crate) optimizer: ModuleOptimizer,
    pub(crate) average: Option<WeightAverage<M>>,
    /// The callbacks' states after the last epoch, by key (saved in checkpoints).
    pub(crate) callback_states: BTreeMap<String, CallbackState>,
    /// The states a resumed trainer gives back to the callbacks of its first `fit`.
    pub(crate) resumed_states: BTreeMap<String, CallbackState>,
    pending: Option<GradientsParams>,
    input: Option<Spec>,
    output_steps: Option<usize>,
    mask_dropped_by: Option<String>,
    device: Device,
}

impl<M: Model> Trainer<M> {
    /// Compiles `model` (built on `device`, an autodiff device).
    ///
    /// # Errors
    /// Settings out of range ([`CompileConfig::validate`]).
    pub fn new(model: M, config: CompileConfig, device: &Device) -> Result<Self> {
        let output_steps = model.output_steps();
        let mask_dropped_by = model.mask_dropped_by();
        Self::assemble(model, config, device, None, output_steps, mask_dropped_by)
    }

    fn assemble(
        model: M,
        config: CompileConfig,
        device: &Device,
        input: Option<Spec>,
        output_steps: Option<usize>,
        mask_dropped_by: Option<String>,
    ) -> Result<Self> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(|| seed_from_device(device));
        Ok(Trainer {
            model,
            model_config: None,
            optimizer: config.optimizer.init(config.clip_norm),
            average: None,
            learning_rate: config.learning_rate,
            config,
            epoch: 0,
            step: 0,
            lr_factor: 1.0,
            seed,
            train_seconds: 0.0,
            skipped_batches: 0,
            callback_states: BTreeMap::new(),
            resumed_states: BTreeMap::new(),
            pending: None,
            input,
            output_steps,
            mask_dropped_by,
            device: device.clone(),
        })
    }

    /// The device batches should be made on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Batch options matching the model's output length.
    pub fn batch_options(&self, batch_size: usize) -> BatchOptions {
        let mut options = BatchOptions::new(batch_size);
        options.target_time = self.output_steps;
        options
    }

    /// The config that rebuilds the model: the one it was built from, else its own.
    ///
    /// # Errors
    /// As [`Model::config`].
    pub fn saved_model_config(&self) -> Result<M::Config> {
        match &self.model_config {
            Some(config) => Ok(config.clone()),
            None => self.model.config(),
        }
    }

    fn loss_of(&self, model: &M, batch: &Batch) -> Result<(LossOutput, Tensor<3>)> {
        match self.config.non_finite_inputs {
            NonFiniteInputs::Error => batch.inputs.check_finite()?,
            NonFiniteInputs::Warn => {
                if let Err(e) = batch.inputs.check_finite() {
                    log::warn!("{e}");
                }
            }
            NonFiniteInputs::Ignore => {}
        }
        // The loss reads no output step past a row's last valid target step: a model may skip
        // them (a decoder whose later steps nobody reads, see `Sequential::forward_reading`).
        let read_steps = read_steps(batch)?;
        let output = model.forward_batch(&batch.inputs, Some(&read_steps))?;
        let (y_pred, mask) = match output {
            Value::Sequence { values, mask } => (values, mask),
            Value::Vector(values) => (values.unsqueeze_dim::<3>(1), None),
            Value::Tokens { .. } => {
                return Err(Error::config("model", "the model's output is token ids"));
            }
        };
        let mut inputs = LossInputs::new(batch.targets.clone(), y_pred.clone())
            .with_output_mask(mask)
            .with_target_mask(batch.target_mask.clone());
        if let Some(w) = &batch.sample_weight {
            inputs = inputs.with_sample_weight(w.clone());
        }
        if let Some(layer) = &self.mask_dropped_by {
            inputs = inputs.with_mask_dropped_by(layer.clone());
        }
        Ok((self.config.loss.compute(inputs)?, y_pred))
    }

    fn logs(&self, out: &LossOutput, y_pred: Tensor<3>, targets: &Targets) -> Result<Logs> {
        let mut logs = Logs::new();
        let value = out
            .value
            .clone()
            .unwrap_or_else(|| out.per_step.clone().sum());
        logs.insert("loss".into(), f64::from(f32_vec(value)[0]));
        logs.extend(batch_metrics(
            &self.config.metrics,
            &self.config.custom_metrics,
            y_pred,
            targets,
            &out.mask,
        )?);
        Ok(logs)
    }

    /// One optimizer step on `batch` at the current [`Trainer::learning_rate`]; returns its
    /// loss and metrics.
    ///
    /// # Errors
    /// As the model and the loss.
    pub fn train_on_batch(&mut self, batch: &Batch) -> Result<Logs> {
        let (logs, finite) = self.accumulate(batch, 0, 1)?;
        if !finite {
            self.non_finite(&logs, self.epoch, 0)?;
        }
        self.apply_step();
        Ok(logs)
    }

    /// Handles a batch whose loss is not finite, by [`CompileConfig::non_finite_loss`]: the
    /// error naming epoch `epoch` (from 0) and batch `index` (from 0), or a warning and the
    /// count of skipped batches.
    fn non_finite(&mut self, logs: &Logs, epoch: usize, index: usize) -> Result<()> {
        let loss = logs.get("loss").copied().unwrap_or(f64::NAN);
        match self.config.non_finite_loss {
            NonFiniteLoss::Error => Err(Error::NonFiniteLoss {
                loss,
                epoch: epoch.saturating_add(1),
                batch: index.saturating_add(1),
                step: self.step,
            }),
            NonFiniteLoss::Skip => {
                self.skipped_batches = self.skipped_batches.saturating_add(1);
                log::warn!(
                    "the loss is {loss} at epoch {}, batch {}: batch skipped ({} so far)",
                    epoch.saturating_add(1),
                    index.saturating_add(1),
                    self.skipped_batches
                );
                Ok(())
            }
        }
    }

    /// Forward and backward on `batch`, its gradients (weighted `1 / group`) added to those
    /// pending since the last step, and whether its loss is finite: a batch whose loss is not
    /// runs no backward pass and adds nothing. The device's generator is seeded from the seed,
    /// the step and `micro` (the batch's place in its group) first.
    fn accumulate(&mut self, batch: &Batch, micro: usize, group: usize) -> Result<(Logs, bool)> {
        self.device
            .seed(step_seed(self.seed, self.step as u64, micro as u64));
        let (out, y_pred) = self.loss_of(&self.model, batch)?;
        let logs = self.logs(&out, y_pred.detach(), &batch.targets)?;
        if !logs.get("loss").is_some_and(|loss| loss.is_finite()) {
            return Ok((logs, false));
        }
        let mut value = out.value.unwrap_or_else(|| out.per_step.sum());
        if group > 1 {
            value = value.div_scalar(group as f32);
        }
        let grads = GradientsParams::from_grads(value.backward(), &self.model);
        self.pending = Some(match self.pending.take() {
            None => grads,
            Some(previous) => {
                let mut sum = GradientsAccumulator::<M>::new();
                sum.accumulate(&self.model, previous);
                sum.accumulate(&self.model, grads);
                sum.grads()
            }
        });
        Ok((logs, true))
    }

    /// The optimizer step on the pending gradients, if any, then the weight average's update.
    fn apply_step(&mut self) {
        let Some(grads) = self.pending.take() else {
            return;
        };
        // The optimizer updates a parameter in place only when nothing else holds it, so the
        // model is moved out (a hollow copy without weights stands in meanwhile).
        let hollow = self.model.clone().map(&mut Hollow);
        let model = std::mem::replace(&mut self.model, hollow);
        self.model = self.optimizer.step(self.learning_rate, model, grads);
        self.step += 1;
        if let Some(decay) = self.config.weight_average {
            match self.average.as_mut() {
                Some(average) => average.update(&self.model),
                None => {
                    self.average =
                        Some(WeightAverage::new(&self.model, decay).expect("checked at compile"))
                }
            }
        }
    }

    /// The model with the averaged weights (no autodiff), when
    /// [`CompileConfig::weight_average`] is set and at least one step was taken.
    pub fn averaged_model(&self) -> Option<M> {
        self.average.as_ref().map(WeightAverage::model)
    }

    /// The loss and metrics of `batch` with the inference model (dropout off, no gradients).
    ///
    /// # Errors
    /// As the model and the loss.
    pub fn test_on_batch(&self, batch: &Batch) -> Result<Logs> {
        self.test_with(&self.model.valid(), &valid_batch(batch))
    }

    /// Loss and metrics of a batch already on the inference model's device.
    fn test_with(&self, model: &M, batch: &Batch) -> Result<Logs> {
        let (out, y_pred) = self.loss_of(model, batch)?;
        self.logs(&out, y_pred, &batch.targets)
    }

    /// Loss and metrics over `examples`, averaged over batches weighted by their rows.
    ///
    /// # Errors
    /// As [`Trainer::test_on_batch`].
    pub fn evaluate(&self, examples: &[Example], batch_size: usize) -> Result<Logs> {
        let device = self.device.clone().without_autodiff();
        let batches = make_batches(examples, &self.batch_options(batch_size), &device)?;
        self.evaluate_batches(&batches)
    }

    /// Loss and metrics over `batches` (made on any device), averaged over batches weighted
    /// by their rows.
    ///
    /// # Errors
    /// As [`Trainer::test_on_batch`].
    pub fn evaluate_batches(&self, batches: &[Batch]) -> Result<Logs> {
        let model = self.model.valid();
        average(
            batches
                .iter()
                .map(|b| Ok((self.test_with(&model, &valid_batch(b))?, b.size))),
        )
    }

    /// The model's output for `inputs` (with its mask), from the inference model.
    ///
    /// # Errors
    /// As the model.
    pub fn predict(&self, inputs: impl Into<Inputs>) -> Result<Value> {
        let device = self.device.clone().without_autodiff();
        self.model
            .valid()
            .forward_batch(&inputs.into().to_device(&device), None)
    }

    /// Trains for `fit.epochs` epochs on batches of `examples` (shuffled from
    /// `fit.batches.shuffle_seed + epoch`), validating on `validation` (or the split-off
    /// fraction) after each, calling `callbacks`; returns the per-epoch logs.
    ///
    /// # Errors
    /// The first error of a batch or a callback.
    pub fn fit(
        &mut self,
        examples: &[Example],
        validation: Option<&[Example]>,
        fit: &FitConfig,
        callbacks: &mut [&mut dyn Callback<M>],
    ) -> Result<Vec<Logs>> {
        let (train, split) = split_validation(examples, fit.validation_split);
        let validation = validation
            .map(<[Example]>::to_vec)
            .or((!split.is_empty()).then_some(split));
        let mut options = fit.batches.clone();
        options.target_time = self.output_steps;
        let validation = match validation {
            Some(examples) => {
                let device = self.device.clone().without_autodiff();
                let options = self.batch_options(options.batch_size);
                Some(make_batches(&examples, &options, &device)?)
            }
            None => None,
        };
        let seed = fit.batches.shuffle_seed;
        let mut source = |epoch: usize, device: &Device| {
            let mut options = options.clone();
            options.shuffle_seed = seed.map(|s| s.wrapping_add(epoch as u64));
            make_batches(&train, &options, device)
        };
        self.fit_batches(&mut source, validation.as_deref(), fit, callbacks)
    }

    /// [`Trainer::fit`] on the batches `source` makes for each epoch (a task's own batching),
    /// validating on `validation` after each; `fit.batches` and `fit.validation_split` are not
    /// read. The first fit of a resumed trainer gives each callback the state its key had in
    /// the checkpoint ([`Callback::state_key`]).
    ///
    /// # Errors
    /// The first error of the source, a batch or a callback, or two callbacks saving their
    /// states under one key.
    pub fn fit_batches(
        &mut self,
        source: &mut dyn BatchSource,
        validation: Option<&[Batch]>,
        fit: &FitConfig,
        callbacks: &mut [&mut dyn Callback<M>],
    ) -> Result<Vec<Logs>> {
        self.give_back_states(callbacks)?;
        for callback in callbacks.iter_mut() {
            callback.on_train_begin(self)?;
        }
        let start = Instant::now();
        let seconds_before = self.train_seconds;
        let budget = fit.max_minutes.map(|m| m * 60.0);
        let over_budget = |seconds: f64| budget.is_some_and(|b| seconds > b);
        let first_epoch = self.epoch;
        let last_epoch = first_epoch.checked_add(fit.epochs).ok_or_else(|| {
            Error::config(
                "Trainer::fit",
                format!(
                    "expected at most {} more epochs after the {first_epoch} done, found {}",
                    usize::MAX - first_epoch,
                    fit.epochs
                ),
            )
        })?;
        let total_epochs = fit.total_epochs.unwrap_or(last_epoch).max(1);
        let group = self.config.accumulate_batches;
        let mut history = Vec::new();
        for epoch in first_epoch..last_epoch {
            if over_budget(self.train_seconds) {
                break;
            }
            let batches = source.batches(epoch, &self.device)?;
            let n = batches.len();
            for callback in callbacks.iter_mut() {
                callback.on_epoch_begin(epoch, n, self)?;
            }
            let mut seen = Vec::with_capacity(n);
            let mut timed_out = false;
            for (index, batch) in batches.iter().enumerate() {
                let micro = index % group;
                if micro == 0 {
                    let elapsed = seconds_before + start.elapsed().as_secs_f64();
                    let fraction = f64::max(
                        budget.map_or(0.0, |b| elapsed / b),
                        (epoch as f64 + index as f64 / n as f64) / total_epochs as f64,
                    );
                    let at = RunProgress {
                        step: self.step,
                        fraction,
                    };
                    self.learning_rate =
                        self.config.schedule.rate(self.config.learning_rate, at) * self.lr_factor;
                }
                let size = group.min(n - (index - micro));
                let (logs, finite) = self.accumulate(batch, micro, size)?;
                if !finite {
                    self.non_finite(&logs, epoch, index)?;
                }
                let step_ends = micro + 1 == size;
                if step_ends {
                    self.apply_step();
                }
                for callback in callbacks.iter_mut() {
                    callback.on_batch_end(epoch, index, &logs, self)?;
                }
                if finite {
                    seen.push((logs, batch.size));
                }
                if step_ends && over_budget(seconds_before + start.elapsed().as_secs_f64()) {
                    timed_out = true;
                    break;
                }
            }
            let mut logs = average(seen.into_iter().map(Ok))?;
            if let Some(validation) = validation {
                for (k, v) in self.evaluate_batches(validation)? {
                    logs.insert(format!("val_{k}"), v);
                }
            }
            logs.insert("lr".into(), self.learning_rate);
            self.epoch = epoch + 1;
            self.train_seconds = seconds_before + start.elapsed().as_secs_f64();
            let mut stop = timed_out;
            for callback in callbacks.iter_mut() {
                stop |= callback.on_epoch_end(epoch, &mut logs, self)? == Control::Stop;
            }
            self.train_seconds = seconds_before + start.elapsed().as_secs_f64();
            self.callback_states = callbacks
                .iter()
                .filter_map(|c| c.state_key().map(|key| (key, c.state())))
                .collect();
            for callback in callbacks.iter_mut() {
                callback.after_epoch_end(epoch, &logs, self)?;
            }
            history.push(logs);
            if stop || over_budget(self.train_seconds) {
                break;
            }
        }
        if let Some(average) = &self.average {
            self.model = average.copy_into(self.model.clone());
        }
        for callback in callbacks.iter_mut() {
            callback.on_train_end(self)?;
        }
        Ok(history)
    }

    /// Gives each callback the state its key had in the checkpoint this trainer was resumed
    /// from (once: a later `fit` starts its callbacks afresh, as Keras does), after checking
    /// that no two callbacks share a key, and that no callback watches another monitor than
    /// the one its kind watched in the checkpoint (a key is `kind/monitor`): a run resumed
    /// without its validation data would otherwise start its best-model record afresh on
    /// `loss` and overwrite the best model of `val_loss`.
    fn give_back_states(&mut self, callbacks: &mut [&mut dyn Callback<M>]) -> Result<()> {
        let resumed = std::mem::take(&mut self.resumed_states);
        for callback in callbacks.iter() {
            let Some(key) = callback.state_key() else {
                continue;
            };
            let Some((kind, monitor)) = key.split_once('/') else {
                continue;
            };
            if resumed.contains_key(&key) {
                continue;
            }
            let saved = resumed
                .keys()
                .filter_map(|k| k.split_once('/'))
                .find(|(saved_kind, _)| *saved_kind == kind);
            if let Some((_, saved_monitor)) = saved {
                return Err(Error::config(
                    "Trainer::fit",
                    format!(
                        "the resumed run's {kind} watched {saved_monitor}, this fit's watches {monitor}; expected the same monitor (resume with the validation data the run had)"
                    ),
                ));
            }
        }
        let mut keys = Vec::new();
        for callback in callbacks.iter_mut() {
            let Some(key) = callback.state_key() else {
                continue;
            };
            if keys.contains(&key) {
                return Err(Error::config(
                    "Trainer::fit",
                    format!("two callbacks keep their state under {key}; expected one per key"),
                ));
            }
            if let Some(state) = resumed.get(&key) {
                callback.load_state(state.clone())?;
            }
            keys.push(key);
        }
        Ok(())
    }
}

impl Trainer<Sequential> {
    /// Compiles `model` for inputs of `input` (unmasked spec; batches bring their masks).
    ///
    /// # Errors
    /// When the stack does not fit `input`, and as [`Trainer::new`].
    pub fn compile(
        model: Sequential,
        input: Spec,
        config: CompileConfig,
        device: &Device,
    ) -> Result<Self> {
        let output_steps = crate::model::output_steps_of(&model, input)?;
        let mask_dropped_by = model.mask_dropped_by(input)?;
        Self::assemble(
            model,
            config,
            device,
            Some(input),
            output_steps,
            mask_dropped_by,
        )
    }

    /// Builds `model_config` on `device` and compiles it.
    ///
    /// # Errors
    /// When the config does not build.
    pub fn from_config(
        model_config: &ModelConfig,
        config: CompileConfig,
        device: &Device,
    ) -> Result<Self> {
        let model = model_config.build(device)?;
        let mut trainer = Self::compile(model, model_config.input.spec(false), config, device)?;
        trainer.model_config = Some(model_config.clone());
        Ok(trainer)
    }

    /// The spec of the model's inputs: as compiled, else from its config.
    ///
    /// # Errors
    /// A stack compiled without an input spec whose input cannot be inferred.
    pub fn input_spec(&self) -> Result<Spec> {
        if let Some(input) = self.input {
            return Ok(input);
        }
        Ok(self.saved_model_config()?.input.spec(false))
    }
}

/// A model's hollow copy: each float parameter replaced by an empty tensor, so that it holds
/// no weights while the real model is with the optimizer.
struct Hollow;

impl ModuleMapper for Hollow {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let device = param.lazy_device();
        Param::initialized(param.id, Tensor::empty([0; D], &device))
    }
}

/// The seed of the device's generator for batch `micro` of optimizer step `step`: a mix of
/// the trainer's seed and both counters (splitmix64's finaliser), so that neighbouring steps
/// draw unrelated streams.
fn step_seed(seed: u64, step: u64, micro: u64) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(mix(seed) ^ step) ^ micro)
}

/// A seed drawn from the device's generator (48 bits from two uniform draws).
fn seed_from_device(device: &Device) -> u64 {
    let draws = f32_vec(Tensor::<1>::random(
        [2],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        device,
    ));
    let bits = |u: f32| (f64::from(u) * f64::from(1u32 << 24)) as u64;
    bits(draws[0]) | bits(draws[1]) << 24
}

/// Averages logs weighted by rows.
fn average(items: impl Iterator<Item = Result<(Logs, usize)>>) -> Result<Logs> {
    let mut sums = Logs::new();
    let mut rows = 0usize;
    for item in items {
        let (logs, size) = item?;
        rows += size;
        for (k, v) in logs {
            *sums.entry(k).or_insert(0.0) += v * size as f64;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(k, v)| (k, v / rows.max(1) as f64))
        .collect())
}

/// The batch on the plain (non-autodiff) device, for the inference model.
fn valid_batch(batch: &Batch) -> Batch {
    let mut batch = batch.clone();
    let device = batch.targets.device().without_autodiff();
    batch.inputs = batch.inputs.to_device(&device);
    batch.targets = batch.targets.to_device(&device);
    batch.sample_weight = batch.sample_weight.map(|w| w.to_device(&device));
    batch
}

/// One past each row's last valid target step: the output steps a loss masked by the batch's
/// targets reads.
fn read_steps(batch: &Batch) -> Result<Vec<usize>> {
    if let TargetMask::Lengths(lengths) = &batch.target_mask {
        return Ok(lengths.clone());
    }
    let mask = batch.target_mask.resolve(&batch.targets)?;
    let [rows, time] = mask.dims();
    let valid = mask.to_vec();
    Ok((0..rows)
        .map(|b| {
            (0..time)
                .rev()
                .find(|&t| valid[b * time + t])
                .map_or(0, |t| t + 1)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::step_seed;

    #[test]
    fn step_seeds_differ_between_steps_batches_and_seeds() {
        let seeds = [
            step_seed(1, 0, 0),
            step_seed(1, 1, 0),
            step_seed(1, 0, 1),
            step_seed(2, 0, 0),
        ];
        for (i, a) in seeds.iter().enumerate() {
            for b in &seeds[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(step_seed(1, 5, 0), step_seed(1, 5, 0));
    }
}
