//! Training any [`Model`](crate::model::Model): [`Trainer`] (`compile`, `fit`, `evaluate`,
//! `predict`, `train_on_batch`, `test_on_batch`), padded batches from variable-length
//! [`Example`]s of one or several inputs, optimizers, per-step schedules, metrics, callbacks,
//! checkpoints that resume exactly, and [`WeightAverage`].
//!
//! The loss of a batch uses the model output's mask AND the batch's target lengths, so a
//! model whose mask was consumed (an encoder, RepeatVector) still never scores padding.

mod callbacks;
mod checkpoint;
mod data;
mod fused_adam;
mod metric;
mod optimizer;
mod schedule;
mod trainer;
mod weight_average;

pub use crate::model::{CHECKPOINT_FORMAT, Inputs, checkpoint_metadata};
pub use callbacks::{
    Callback, CallbackState, Control, CsvLogger, EarlyStopping, ModelCheckpoint, Progress,
    ReduceLrOnPlateau, StatefulReset, format_logs,
};
pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use data::{
    Batch, BatchOptions, BatchSource, Example, InputSeq, TargetSeq, make_batches, split_validation,
};
pub use fused_adam::{FusedAdam, HostAdamBackend};
pub use metric::{Metric, MetricKind};
pub use optimizer::OptimizerConfig;
pub use schedule::{Decay, LrSchedule, RunProgress};
pub use trainer::{CompileConfig, FitConfig, Logs, NonFiniteInputs, NonFiniteLoss, Trainer};
pub use weight_average::WeightAverage;
