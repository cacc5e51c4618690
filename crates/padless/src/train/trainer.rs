//! [`Trainer`]: `compile`, `fit`, `evaluate`, `predict`, `train_on_batch`, `test_on_batch`.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};

use super::callbacks::{Callback, Control};
use super::data::{Batch, BatchOptions, Example, make_batches, split_validation};
use super::optimizer::{LrSchedule, OptimizerConfig};
use super::weight_average::{WeightAverage, check_decay};
use crate::error::{Error, Result};
use crate::layer::Spec;
use crate::losses::{LossInputs, LossOutput, SequenceLoss, TargetMask, Targets};
use crate::metrics::{predicted_classes, sequence_accuracy, token_accuracy};
use crate::model_config::ModelConfig;
use crate::sequential::Sequential;
use crate::tensor_util::f32_vec;
use crate::value::Value;

/// Named values of an epoch or batch (`loss`, `accuracy`, `val_loss`…).
pub type Logs = BTreeMap<String, f64>;

/// A metric reported beside the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Correct valid steps over valid steps (`accuracy`).
    TokenAccuracy,
    /// Rows whose valid steps are all correct (`sequence_accuracy`).
    SequenceAccuracy,
}

/// What to do with NaN or inf at a valid step of a batch's inputs (masked steps are never
/// read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFiniteInputs {
    /// Stop with an error naming the row and step (the default).
    #[default]
    Error,
    /// Print a warning naming the row and step, and go on.
    Warn,
    /// Do not check.
    Ignore,
}

/// What `compile` takes.
#[derive(Debug, Clone)]
pub struct CompileConfig {
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The base learning rate.
    pub learning_rate: f64,
    /// How it changes per epoch.
    pub schedule: LrSchedule,
    /// Clip each parameter's gradient to this norm.
    pub clip_norm: Option<f32>,
    /// The loss.
    pub loss: SequenceLoss,
    /// Metrics beside the loss.
    pub metrics: Vec<MetricKind>,
    /// NaN or inf at valid steps of the inputs: an error, a warning, or unchecked.
    pub non_finite_inputs: NonFiniteInputs,
    /// Keep an exponential moving average of the weights with this decay per step
    /// ([`WeightAverage`]; Keras' `use_ema` with `ema_momentum`): started at the weights
    /// after the first step and updated after each later one, available from
    /// [`Trainer::averaged_model`], and written over the model's weights at the end of
    /// [`Trainer::fit`] (as Keras does). Validation during `fit` uses the trained weights.
    /// Checkpoints do not hold the average: a resumed run starts a new one.
    pub weight_average: Option<f64>,
}

impl CompileConfig {
    /// Adam at 1e-3, constant, no clipping, the given loss, no metrics.
    pub fn new(loss: SequenceLoss) -> Self {
        CompileConfig {
            optimizer: OptimizerConfig::default(),
            learning_rate: 1e-3,
            schedule: LrSchedule::Constant,
            clip_norm: None,
            loss,
            metrics: Vec::new(),
            non_finite_inputs: NonFiniteInputs::Error,
            weight_average: None,
        }
    }
}

/// What `fit` takes.
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Epochs.
    pub epochs: usize,
    /// How batches are made (size, padding side, shuffling seed, bucketing).
    pub batches: BatchOptions,
    /// Hold out this last fraction of the training examples (Keras `validation_split`).
    pub validation_split: f64,
}

/// A compiled model: the stack, its optimizer and loss.
pub struct Trainer {
    /// The model (on an autodiff device).
    pub model: Sequential,
    /// The config it was built from, if any (checkpoints need it to rebuild the model).
    pub model_config: Option<ModelConfig>,
    /// Compile settings.
    pub config: CompileConfig,
    /// The learning rate in force (callbacks may change it).
    pub learning_rate: f64,
    /// Epochs completed.
    pub epoch: usize,
    /// Factor on the scheduled rate, lowered by [`ReduceLrOnPlateau`](super::ReduceLrOnPlateau).
    pub lr_factor: f64,
    pub(crate) optimizer: ModuleOptimizer,
    average: Option<WeightAverage<Sequential>>,
    input: Spec,
    output_time: Option<usize>,
    mask_dropped_by: Option<String>,
    device: Device,
}

impl Trainer {
    /// Compiles `model` for inputs of `input` (unmasked spec; batches bring their masks).
    ///
    /// # Errors
    /// When the stack does not fit `input`.
    pub fn compile(
        model: Sequential,
        input: Spec,
        config: CompileConfig,
        device: &Device,
    ) -> Result<Self> {
        let rows = model.check(input)?;
        let output_time = match rows.last().map(|r| r.output) {
            Some(Spec::Sequence { time, .. }) => time,
            _ => Some(1),
        };
        let mask_dropped_by = model.mask_dropped_by(input)?;
        if let Some(decay) = config.weight_average {
            check_decay(decay)?;
        }
        Ok(Trainer {
            model,
            model_config: None,
            optimizer: config.optimizer.init(config.clip_norm),
            average: None,
            learning_rate: config.learning_rate,
            config,
            epoch: 0,
            lr_factor: 1.0,
            input,
            output_time,
            mask_dropped_by,
            device: device.clone(),
        })
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

    /// The spec of the model's inputs.
    pub fn input_spec(&self) -> Spec {
        self.input
    }

    /// The device batches should be made on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Batch options matching the model's output length.
    pub fn batch_options(&self, batch_size: usize) -> BatchOptions {
        let mut options = BatchOptions::new(batch_size);
        options.target_time = self.output_time;
        options
    }

    fn loss_of(&self, model: &Sequential, batch: &Batch) -> Result<(LossOutput, Tensor<3>)> {
        match self.config.non_finite_inputs {
            NonFiniteInputs::Error => batch.inputs.check_finite("inputs")?,
            NonFiniteInputs::Warn => {
                if let Err(e) = batch.inputs.check_finite("inputs") {
                    log::warn!("{e}");
                }
            }
            NonFiniteInputs::Ignore => {}
        }
        // The loss reads no output step past a row's last valid target step: a decoder whose
        // later steps nobody reads skips them (exact, see `Sequential::forward_reading`).
        let read_steps = read_steps(batch)?;
        let output = model.forward_reading(batch.inputs.clone(), Some(&read_steps))?;
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
        if self.config.metrics.is_empty() {
            return Ok(logs);
        }
        let predicted = predicted_classes(y_pred);
        let labels: Tensor<2, Int> = match targets {
            Targets::Labels(l) => l.clone(),
            Targets::Dense(y) => predicted_classes(y.clone()),
        };
        for metric in &self.config.metrics {
            let (name, value) = match metric {
                MetricKind::TokenAccuracy => (
                    "accuracy",
                    token_accuracy(&predicted, &labels, Some(&out.mask), None)?,
                ),
                MetricKind::SequenceAccuracy => (
                    "sequence_accuracy",
                    sequence_accuracy(&predicted, &labels, Some(&out.mask))?,
                ),
            };
            logs.insert(name.into(), value);
        }
        Ok(logs)
    }

    /// One optimizer step on `batch`; returns its loss and metrics.
    ///
    /// # Errors
    /// As the model and the loss.
    pub fn train_on_batch(&mut self, batch: &Batch) -> Result<Logs> {
        let (out, y_pred) = self.loss_of(&self.model, batch)?;
        let logs = self.logs(&out, y_pred.detach(), &batch.targets)?;
        let value = out.value.unwrap_or_else(|| out.per_step.sum());
        let grads = GradientsParams::from_grads(value.backward(), &self.model);
        self.model = self
            .optimizer
            .step(self.learning_rate, self.model.clone(), grads);
        if let Some(decay) = self.config.weight_average {
            match self.average.as_mut() {
                Some(average) => average.update(&self.model),
                None => self.average = Some(WeightAverage::new(&self.model, decay)?),
            }
        }
        Ok(logs)
    }

    /// The model with the averaged weights (no autodiff), when
    /// [`CompileConfig::weight_average`] is set and at least one step was taken.
    pub fn averaged_model(&self) -> Option<Sequential> {
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
    fn test_with(&self, model: &Sequential, batch: &Batch) -> Result<Logs> {
        let (out, y_pred) = self.loss_of(model, batch)?;
        self.logs(&out, y_pred, &batch.targets)
    }

    /// Loss and metrics over `examples`, averaged over batches weighted by their rows.
    ///
    /// # Errors
    /// As [`Trainer::test_on_batch`].
    pub fn evaluate(&self, examples: &[Example], batch_size: usize) -> Result<Logs> {
        let model = self.model.valid();
        let device = self.device.clone().without_autodiff();
        let batches = make_batches(examples, &self.batch_options(batch_size), &device)?;
        average(
            batches
                .iter()
                .map(|b| Ok((self.test_with(&model, b)?, b.size))),
        )
    }

    /// The model's output for `inputs` (with its mask), from the inference model.
    ///
    /// # Errors
    /// As the model.
    pub fn predict(&self, inputs: Value) -> Result<Value> {
        let device = self.device.clone().without_autodiff();
        self.model.valid().forward(inputs.to_device(&device))
    }

    /// Trains for `fit.epochs` epochs, calling `callbacks`; returns the per-epoch logs.
    ///
    /// # Errors
    /// The first error of a batch or a callback.
    pub fn fit(
        &mut self,
        examples: &[Example],
        validation: Option<&[Example]>,
        fit: &FitConfig,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Vec<Logs>> {
        let (train, split) = split_validation(examples, fit.validation_split);
        let validation = validation
            .map(<[Example]>::to_vec)
            .or((!split.is_empty()).then_some(split));
        let mut options = fit.batches.clone();
        options.target_time = self.output_time;
        let mut history = Vec::new();
        for callback in callbacks.iter_mut() {
            callback.on_train_begin(self)?;
        }
        let first_epoch = self.epoch;
        for epoch in first_epoch..first_epoch + fit.epochs {
            if let Some(seed) = fit.batches.shuffle_seed {
                options.shuffle_seed = Some(seed.wrapping_add(epoch as u64));
            }
            self.learning_rate =
                self.config.schedule.rate(self.config.learning_rate, epoch) * self.lr_factor;
            let batches = make_batches(&train, &options, &self.device)?;
            for callback in callbacks.iter_mut() {
                callback.on_epoch_begin(epoch, batches.len(), self)?;
            }
            let mut seen = Vec::with_capacity(batches.len());
            for (index, batch) in batches.iter().enumerate() {
                let logs = self.train_on_batch(batch)?;
                for callback in callbacks.iter_mut() {
                    callback.on_batch_end(epoch, index, &logs, self)?;
                }
                seen.push((logs, batch.size));
            }
            let mut logs = average(seen.into_iter().map(Ok))?;
            if let Some(val) = &validation {
                for (k, v) in self.evaluate(val, options.batch_size)? {
                    logs.insert(format!("val_{k}"), v);
                }
            }
            logs.insert("lr".into(), self.learning_rate);
            self.epoch = epoch + 1;
            history.push(logs.clone());
            let mut stop = false;
            for callback in callbacks.iter_mut() {
                stop |= callback.on_epoch_end(epoch, &logs, self)? == Control::Stop;
            }
            if stop {
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
