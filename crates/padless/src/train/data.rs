//! Variable-length examples (one or several input sequences each) and padded, masked
//! batches; [`BatchSource`], where a fit gets each epoch's batches.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::losses::{SampleWeight, TargetMask, Targets};
use crate::mask::{Mask, Padding};
use crate::model::Inputs;
use crate::value::Value;

/// One input sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSeq {
    /// Token ids (0 is the padding id).
    Tokens(Vec<i64>),
    /// One feature vector per step.
    Features(Vec<Vec<f32>>),
}

impl InputSeq {
    /// Steps.
    pub fn len(&self) -> usize {
        match self {
            InputSeq::Tokens(t) => t.len(),
            InputSeq::Features(f) => f.len(),
        }
    }

    /// Whether it has no step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One target sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSeq {
    /// Class labels, one per step.
    Labels(Vec<i64>),
    /// One target vector per step (one-hot, probabilities or regression).
    Dense(Vec<Vec<f32>>),
}

impl TargetSeq {
    /// Steps.
    pub fn len(&self) -> usize {
        match self {
            TargetSeq::Labels(t) => t.len(),
            TargetSeq::Dense(f) => f.len(),
        }
    }

    /// Whether it has no step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One example: its input sequences (one for most models), its target and an optional
/// per-sequence weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The inputs, in the order the model reads them (one for a one-input model).
    pub inputs: Vec<InputSeq>,
    /// The target.
    pub target: TargetSeq,
    /// A per-sequence sample weight.
    pub weight: Option<f32>,
}

impl Example {
    /// An example of one input.
    pub fn new(input: InputSeq, target: TargetSeq) -> Self {
        Example::with_inputs(vec![input], target)
    }

    /// An example of several inputs (a model that reads several sequences).
    pub fn with_inputs(inputs: Vec<InputSeq>, target: TargetSeq) -> Self {
        Example {
            inputs,
            target,
            weight: None,
        }
    }

    /// This example with a per-sequence sample weight.
    pub fn weighted(mut self, weight: f32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Steps of the first input (what bucketing sorts by).
    fn input_len(&self) -> usize {
        self.inputs.first().map_or(0, InputSeq::len)
    }
}

/// A padded batch: inputs with their masks, targets with their target mask (lengths).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Each input `[batch, time(, features)]` with the mask of its lengths.
    pub inputs: Inputs,
    /// Targets padded to the batch's (or the model's) target length.
    pub targets: Targets,
    /// The targets' lengths.
    pub target_mask: TargetMask,
    /// Per-sequence weights, when every example has one.
    pub sample_weight: Option<SampleWeight>,
    /// Rows.
    pub size: usize,
}

/// Where [`Trainer::fit_batches`](super::Trainer::fit_batches) gets each epoch's batches: any
/// `FnMut(epoch, &Device) -> Result<Vec<Batch>>`, or a type of one's own (a task with its own
/// bucketing).
pub trait BatchSource {
    /// The batches of epoch `epoch` (from 0), made on `device`; the same epoch should give the
    /// same batches, so that a resumed run sees what an uninterrupted one would.
    ///
    /// # Errors
    /// Whatever making them can fail with.
    fn batches(&mut self, epoch: usize, device: &Device) -> Result<Vec<Batch>>;
}

impl<F: FnMut(usize, &Device) -> Result<Vec<Batch>>> BatchSource for F {
    fn batches(&mut self, epoch: usize, device: &Device) -> Result<Vec<Batch>> {
        self(epoch, device)
    }
}

/// How examples become batches.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Rows per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Where input padding goes.
    pub input_padding: Padding,
    /// Pad every target to this length (a model whose output length is fixed, e.g. by
    /// RepeatVector); the longest target of the batch when `None`.
    pub target_time: Option<usize>,
    /// Shuffle with this seed; keep the order when `None`.
    pub shuffle_seed: Option<u64>,
    /// Group examples of similar input length into batches (less padding).
    pub bucket_by_length: bool,
}

impl BatchOptions {
    /// Batches of `batch_size`, post-padded, in order.
    pub fn new(batch_size: usize) -> Self {
        BatchOptions {
            batch_size,
            input_padding: Padding::Post,
            target_time: None,
            shuffle_seed: None,
            bucket_by_length: false,
        }
    }
}

/// Splits off the last `fraction` of `examples` for validation (Keras `validation_split`).
pub fn split_validation(examples: &[Example], fraction: f64) -> (Vec<Example>, Vec<Example>) {
    let n_val = ((examples.len() as f64) * fraction).round() as usize;
    let cut = examples.len() - n_val.min(examples.len());
    (examples[..cut].to_vec(), examples[cut..].to_vec())
}

/// Pads `examples` into batches.
///
/// # Errors
/// An empty example, mixed kinds of inputs or targets, vectors of different sizes, or a
/// target longer than `target_time`, each naming the example.
pub fn make_batches(
    examples: &[Example],
    options: &BatchOptions,
    device: &Device,
) -> Result<Vec<Batch>> {
    if options.batch_size == 0 {
        return Err(Error::config("batches", "batch_size must be at least 1"));
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    if let Some(seed) = options.shuffle_seed {
        order.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    let mut chunks: Vec<Vec<usize>> = if options.bucket_by_length {
        let mut sorted = order.clone();
        sorted.sort_by_key(|&i| examples[i].input_len());
        sorted
            .chunks(options.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    } else {
        order
            .chunks(options.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    };
    if options.bucket_by_length
        && let Some(seed) = options.shuffle_seed
    {
        chunks.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(1)));
    }
    chunks
        .iter()
        .map(|rows| {
            let rows: Vec<&Example> = rows.iter().map(|&i| &examples[i]).collect();
            make_batch(&rows, options, device)
        })
        .collect()
}

fn make_batch(rows: &[&Example], options: &BatchOptions, device: &Device) -> Result<Batch> {
    let batch = rows.len();
    let n_inputs = rows[0].inputs.len();
    if n_inputs == 0 {
        return Err(Error::config(
            "batches",
            "example 0 of a batch has no input, expected at least one",
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        if row.inputs.len() != n_inputs {
            return Err(Error::config(
                "batches",
                format!(
                    "example {i} of a batch has {} inputs, expected {n_inputs} as the first",
                    row.inputs.len()
                ),
            ));
        }
        if row.inputs.iter().any(InputSeq::is_empty) || row.target.is_empty() {
            return Err(Error::config(
                "batches",
                format!("example {i} of a batch has an empty input or target"),
            ));
        }
    }
    let inputs = (0..n_inputs)
        .map(|k| {
            let column: Vec<&InputSeq> = rows.iter().map(|r| &r.inputs[k]).collect();
            pad_inputs(&column, options.input_padding, device)
        })
        .collect::<Result<Vec<Value>>>()?;
    let target_lengths: Vec<usize> = rows.iter().map(|r| r.target.len()).collect();
    let longest = target_lengths.iter().copied().max().unwrap_or(1);
    let target_time = options.target_time.unwrap_or(longest);
    if longest > target_time {
        return Err(Error::config(
            "batches",
            format!(
                "a target has {longest} steps, more than the model's {target_time} output steps"
            ),
        ));
    }
    let targets = match &rows[0].target {
        TargetSeq::Labels(_) => {
            let mut labels = vec![0i64; batch * target_time];
            for (b, row) in rows.iter().enumerate() {
                let TargetSeq::Labels(l) = &row.target else {
                    return Err(Error::config("batches", "targets mix labels and vectors"));
                };
                labels[b * target_time..b * target_time + l.len()].copy_from_slice(l);
            }
            Targets::Labels(Tensor::from_data(
                TensorData::new(labels, [batch, target_time]),
                device,
            ))
        }
        TargetSeq::Dense(first) => {
            let width = first[0].len();
            let mut values = vec![0f32; batch * target_time * width];
            for (b, row) in rows.iter().enumerate() {
                let TargetSeq::Dense(steps) = &row.target else {
                    return Err(Error::config("batches", "targets mix labels and vectors"));
                };
                for (t, step) in steps.iter().enumerate() {
                    if step.len() != width {
                        return Err(Error::shape(
                            "target step",
                            format!("[{width}]"),
                            &[step.len()],
                        ));
                    }
                    values[(b * target_time + t) * width..(b * target_time + t + 1) * width]
                        .copy_from_slice(step);
                }
            }
            Targets::Dense(Tensor::from_data(
                TensorData::new(values, [batch, target_time, width]),
                device,
            ))
        }
    };
    let sample_weight = rows
        .iter()
        .map(|r| r.weight)
        .collect::<Option<Vec<f32>>>()
        .map(|w| SampleWeight::PerSequence(Tensor::from_data(TensorData::new(w, [batch]), device)));
    Ok(Batch {
        inputs: Inputs::new(inputs),
        targets,
        target_mask: TargetMask::Lengths(target_lengths),
        sample_weight,
        size: batch,
    })
}

/// One input of every row, padded on `padding`'s side, with the mask of its lengths.
fn pad_inputs(rows: &[&InputSeq], padding: Padding, device: &Device) -> Result<Value> {
    let batch = rows.len();
    let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    let time = lengths.iter().copied().max().unwrap_or(1);
    let mask = Mask::from_lengths(&lengths, time, padding, device)?;
    let place = |len: usize, t: usize| -> Option<usize> {
        let first = match padding {
            Padding::Post => 0,
            Padding::Pre => time - len,
        };
        (t >= first && t < first + len).then(|| t - first)
    };
    Ok(match rows[0] {
        InputSeq::Tokens(_) => {
            let mut ids = vec![0i64; batch * time];
            for (b, row) in rows.iter().enumerate() {
                let InputSeq::Tokens(tokens) = row else {
                    return Err(Error::config(
                        "batches",
                        "inputs mix tokens and feature vectors",
                    ));
                };
                for t in 0..time {
                    if let Some(j) = place(tokens.len(), t) {
                        ids[b * time + t] = tokens[j];
                    }
                }
            }
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, time]), device);
            Value::Tokens {
                ids,
                mask: Some(mask),
            }
        }
        InputSeq::Features(first) => {
            let features = first[0].len();
            let mut values = vec![0f32; batch * time * features];
            for (b, row) in rows.iter().enumerate() {
                let InputSeq::Features(steps) = row else {
                    return Err(Error::config(
                        "batches",
                        "inputs mix tokens and feature vectors",
                    ));
                };
                for t in 0..time {
                    if let Some(j) = place(steps.len(), t) {
                        let step = &steps[j];
                        if step.len() != features {
                            return Err(Error::shape(
                                "input step",
                                format!("[{features}]"),
                                &[step.len()],
                            ));
                        }
                        values[(b * time + t) * features..(b * time + t + 1) * features]
                            .copy_from_slice(step);
                    }
                }
            }
            let values =
                Tensor::from_data(TensorData::new(values, [batch, time, features]), device);
            Value::sequence(values, Some(mask))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_util::{f32_vec, i64_vec};

    fn example(tokens: &[i64], labels: &[i64]) -> Example {
        Example::new(
            InputSeq::Tokens(tokens.to_vec()),
            TargetSeq::Labels(labels.to_vec()),
        )
    }

    #[test]
    fn batches_pad_inputs_and_targets_with_masks() {
        let device = crate::default_device();
        let examples = vec![example(&[3, 4, 5], &[1]), example(&[6], &[2, 2, 2])];
        let mut options = BatchOptions::new(2);
        options.input_padding = Padding::Pre;
        let batches = make_batches(&examples, &options, &device).unwrap();
        let Value::Tokens { ids, mask } = &batches[0].inputs[0] else {
            panic!()
        };
        assert_eq!(i64_vec(ids.clone()), vec![3, 4, 5, 0, 0, 6]);
        assert_eq!(
            mask.as_ref().unwrap().to_vec(),
            vec![true, true, true, false, false, true]
        );
        let Targets::Labels(labels) = &batches[0].targets else {
            panic!()
        };
        assert_eq!(i64_vec(labels.clone()), vec![1, 0, 0, 2, 2, 2]);
        let TargetMask::Lengths(l) = &batches[0].target_mask else {
            panic!()
        };
        assert_eq!(l, &vec![1, 3]);
    }

    #[test]
    fn shuffling_is_seeded_and_bucketing_groups_lengths() {
        let device = crate::default_device();
        let examples: Vec<Example> = (1..=8).map(|n| example(&vec![1; n], &[0])).collect();
        let mut options = BatchOptions::new(2);
        options.shuffle_seed = Some(3);
        let order = |o: &BatchOptions| -> Vec<usize> {
            make_batches(&examples, o, &device)
                .unwrap()
                .iter()
                .flat_map(|b| b.inputs.mask().unwrap().lengths())
                .collect()
        };
        assert_eq!(order(&options), order(&options));
        assert_ne!(order(&options), (1..=8).collect::<Vec<_>>());
        options.bucket_by_length = true;
        let bucketed = order(&options);
        for pair in bucketed.chunks(2) {
            assert_eq!(pair[0].abs_diff(pair[1]), 1, "{bucketed:?}");
        }
        let features = Example::new(
            InputSeq::Features(vec![vec![1.0, 2.0]]),
            TargetSeq::Dense(vec![vec![0.5], vec![0.25]]),
        )
        .weighted(2.0);
        let mut fixed = BatchOptions::new(4);
        fixed.target_time = Some(3);
        let batch = &make_batches(std::slice::from_ref(&features), &fixed, &device).unwrap()[0];
        let Targets::Dense(y) = &batch.targets else {
            panic!()
        };
        assert_eq!(f32_vec(y.clone()), vec![0.5, 0.25, 0.0]);
        fixed.target_time = Some(1);
        let err = make_batches(&[features], &fixed, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 steps, more than the model's 1"), "{err}");
    }

    #[test]
    fn several_inputs_are_padded_each_to_its_own_length_with_its_mask() {
        let device = crate::default_device();
        let two = |tokens: &[i64], steps: &[f32]| {
            Example::with_inputs(
                vec![
                    InputSeq::Tokens(tokens.to_vec()),
                    InputSeq::Features(steps.iter().map(|&v| vec![v]).collect()),
                ],
                TargetSeq::Labels(vec![1]),
            )
        };
        let rows = [two(&[1, 2], &[0.5]), two(&[3], &[1.0, 2.0, 3.0])];
        let batch = &make_batches(&rows, &BatchOptions::new(2), &device).unwrap()[0];
        assert_eq!(batch.inputs.len(), 2);
        let Value::Tokens { ids, mask } = &batch.inputs[0] else {
            panic!()
        };
        assert_eq!(i64_vec(ids.clone()), vec![1, 2, 3, 0]);
        assert_eq!(mask.as_ref().unwrap().lengths(), vec![2, 1]);
        let Value::Sequence { values, mask } = &batch.inputs[1] else {
            panic!()
        };
        assert_eq!(f32_vec(values.clone()), vec![0.5, 0.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(mask.as_ref().unwrap().lengths(), vec![1, 3]);
        let one = Example::new(InputSeq::Tokens(vec![1]), TargetSeq::Labels(vec![1]));
        let err = make_batches(&[rows[0].clone(), one], &BatchOptions::new(2), &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("example 1 of a batch has 1 inputs, expected 2 as the first"),
            "{err}"
        );
    }
}
