//! Training: [`Trainer`] (`compile`, `fit`, `evaluate`, `predict`, `train_on_batch`,
//! `test_on_batch`), padded batches from variable-length [`Example`]s, optimizers and
//! schedules, callbacks, checkpoints and [`WeightAverage`].
//!
//! The loss of a batch uses the model output's mask AND the batch's target lengths, so a
//! model whose mask was consumed (an encoder, RepeatVector) still never scores padding.

mod callbacks;
mod checkpoint;
mod data;
mod fused_adam;
mod optimizer;
mod trainer;
mod weight_average;

pub use callbacks::{
    Callback, Control, CsvLogger, EarlyStopping, ModelCheckpoint, Progress, ReduceLrOnPlateau,
    StatefulReset, format_logs,
};
pub use checkpoint::{CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint};
pub use data::{Batch, BatchOptions, Example, InputSeq, TargetSeq, make_batches, split_validation};
pub use fused_adam::{FusedAdam, HostAdamBackend};
pub use optimizer::{LrSchedule, OptimizerConfig};
pub use trainer::{CompileConfig, FitConfig, Logs, MetricKind, NonFiniteInputs, Trainer};
pub use weight_average::WeightAverage;
