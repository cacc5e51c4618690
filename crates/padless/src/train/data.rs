//! Variable-length examples and padded, masked batches.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::losses::{SampleWeight, TargetMask, Targets};
use crate::mask::{Mask, Padding};
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

/// An input, its target and an optional per-sequence weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The input.
    pub input: InputSeq,
    /// The target.
    pub target: TargetSeq,
    /// A per-sequence sample weight.
    pub weight: Option<f32>,
}

/// A padded batch: inputs with their mask, targets with their target mask (lengths).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Inputs `[batch, time(, features)]` with the mask of their lengths.
    pub inputs: Value,
    /// Targets padded to the batch's (or the model's) target length.
    pub targets: Targets,
    /// The targets' lengths.
    pub target_mask: TargetMask,
    /// Per-sequence weights, when every example has one.
    pub sample_weight: Option<SampleWeight>,
    /// Rows.
    pub size: usize,
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
        sorted.sort_by_key(|&i| examples[i].input.len());
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
    for (i, row) in rows.iter().enumerate() {
        if row.input.is_empty() || row.target.is_empty() {
            return Err(Error::config(
                "batches",
                format!("example {i} of a batch has an empty input or target"),
            ));
        }
    }
    let lengths: Vec<usize> = rows.iter().map(|r| r.input.len()).collect();
    let time = lengths.iter().copied().max().unwrap_or(1);
    let mask = Mask::from_lengths(&lengths, time, options.input_padding, device)?;
    let place = |len: usize, t: usize| -> Option<usize> {
        let first = match options.input_padding {
            Padding::Post => 0,
            Padding::Pre => time - len,
        };
        (t >= first && t < first + len).then(|| t - first)
    };
    let inputs = match &rows[0].input {
        InputSeq::Tokens(_) => {
            let mut ids = vec![0i64; batch * time];
            for (b, row) in rows.iter().enumerate() {
                let InputSeq::Tokens(tokens) = &row.input else {
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
                let InputSeq::Features(steps) = &row.input else {
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
    };
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
        inputs,
        targets,
        target_mask: TargetMask::Lengths(target_lengths),
        sample_weight,
        size: batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_util::{f32_vec, i64_vec};

    fn example(tokens: &[i64], labels: &[i64]) -> Example {
        Example {
            input: InputSeq::Tokens(tokens.to_vec()),
            target: TargetSeq::Labels(labels.to_vec()),
            weight: None,
        }
    }

    #[test]
    fn batches_pad_inputs_and_targets_with_masks() {
        let device = crate::default_device();
        let examples = vec![example(&[3, 4, 5], &[1]), example(&[6], &[2, 2, 2])];
        let mut options = BatchOptions::new(2);
        options.input_padding = Padding::Pre;
        let batches = make_batches(&examples, &options, &device).unwrap();
        let Value::Tokens { ids, mask } = &batches[0].inputs else {
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
        let features = Example {
            input: InputSeq::Features(vec![vec![1.0, 2.0]]),
            target: TargetSeq::Dense(vec![vec![0.5], vec![0.25]]),
            weight: Some(2.0),
        };
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
}
