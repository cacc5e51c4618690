//! Records to padded-batch examples through the vocabularies, and model outputs back to text.
//!
//! How targets line up with inputs depends on the model's output ([`OutputMode`]): a tagger
//! (output steps follow the input) needs a target step per input step; a fixed-length
//! decoder (RepeatVector) gets the end symbol `</s>` after each target, so it learns where to
//! stop; a model with one output per sequence needs one target step.

use std::path::Path;

use anyhow::{Context, Result, bail};
use padless::Value;
use padless::layer::Spec;
use padless::metrics::predicted_classes;
use padless::tensor_util::{f32_vec, i64_vec};
use padless::train::{Example, InputSeq, TargetSeq, Trainer, make_batches};

use crate::data_files::{RawSeq, Record};
use crate::vocab::{Coding, END_ID, UnknownPolicy, Vocabs};

/// How a model's outputs line up with its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// One output step per input step (taggers, next-symbol models).
    PerStep,
    /// A fixed number of output steps, the target ending with `</s>` (RepeatVector decoders).
    Fixed(usize),
    /// One output per sequence (a recurrent layer's last output, pooling).
    Single,
}

impl OutputMode {
    /// The mode of `trainer`'s model.
    ///
    /// # Errors
    /// When the model does not fit its input spec.
    pub fn of(trainer: &Trainer) -> Result<Self> {
        let rows = trainer.model.check(trainer.input_spec()?)?;
        Ok(match rows.last().map(|r| r.output) {
            Some(Spec::Sequence { time: Some(n), .. }) => OutputMode::Fixed(n),
            Some(Spec::Sequence { time: None, .. }) => OutputMode::PerStep,
            _ => OutputMode::Single,
        })
    }
}

/// The model input of one sequence.
///
/// # Errors
/// Symbols where numbers were trained (or the reverse), vectors of another width, or an
/// unknown symbol under [`UnknownPolicy::Error`].
pub fn encode_input(seq: &RawSeq, vocabs: &Vocabs, policy: UnknownPolicy) -> Result<InputSeq> {
    Ok(match (seq, &vocabs.input) {
        (RawSeq::Symbols(s), Coding::Symbols { vocab }) => {
            InputSeq::Tokens(vocab.encode(s, policy)?)
        }
        (RawSeq::Numbers(n), Coding::Numbers { features }) => {
            check_width(n, *features, "input")?;
            InputSeq::Features(n.clone())
        }
        (_, coding) => bail!(
            "expected an input of {}, found {}",
            what(coding),
            what_seq(seq)
        ),
    })
}

fn encode_target(
    seq: &RawSeq,
    input_len: usize,
    vocabs: &Vocabs,
    mode: OutputMode,
    policy: UnknownPolicy,
) -> Result<TargetSeq> {
    let target = match (seq, &vocabs.target) {
        (RawSeq::Symbols(s), Coding::Symbols { vocab }) => {
            let mut ids = vocab.encode(s, policy)?;
            if matches!(mode, OutputMode::Fixed(_)) {
                ids.push(END_ID);
            }
            TargetSeq::Labels(ids)
        }
        (RawSeq::Numbers(n), Coding::Numbers { features }) => {
            check_width(n, *features, "target")?;
            TargetSeq::Dense(n.clone())
        }
        (_, coding) => bail!(
            "expected a target of {}, found {}",
            what(coding),
            what_seq(seq)
        ),
    };
    let steps = target.len();
    match mode {
        OutputMode::PerStep if steps != input_len => bail!(
            "expected a target of {input_len} steps like the input (the model outputs one step per input step), found {steps}"
        ),
        OutputMode::Fixed(n) if steps > n => bail!(
            "expected a target of at most {n} steps (the model outputs {n}; symbol targets also take </s>), found {steps}"
        ),
        OutputMode::Single if steps != 1 => {
            bail!("expected a target of 1 step (the model outputs one per sequence), found {steps}")
        }
        _ => Ok(target),
    }
}

fn check_width(steps: &[Vec<f32>], features: usize, side: &str) -> Result<()> {
    match steps.iter().position(|s| s.len() != features) {
        Some(t) => bail!(
            "expected {side} vectors of {features} numbers, found {} at step {t}",
            steps[t].len()
        ),
        None => Ok(()),
    }
}

fn what(coding: &Coding) -> &'static str {
    match coding {
        Coding::Symbols { .. } => "symbols",
        Coding::Numbers { .. } => "numeric vectors",
    }
}

fn what_seq(seq: &RawSeq) -> &'static str {
    match seq {
        RawSeq::Symbols(_) => "symbols",
        RawSeq::Numbers(_) => "numeric vectors",
    }
}

/// Training or evaluation examples from `records` of `path`.
///
/// # Errors
/// The first record that does not encode, as `FILE:LINE: ...`.
pub fn examples(
    records: &[Record],
    path: &Path,
    vocabs: &Vocabs,
    mode: OutputMode,
    policy: UnknownPolicy,
) -> Result<Vec<Example>> {
    records
        .iter()
        .map(|r| {
            let input = encode_input(&r.input, vocabs, policy)?;
            let Some(target) = &r.target else {
                bail!("expected a target, found none");
            };
            let target = encode_target(target, r.input.len(), vocabs, mode, policy)?;
            Ok(Example::new(input, target))
        })
        .enumerate()
        .map(|(i, e)| e.with_context(|| format!("{}:{}", path.display(), records[i].line)))
        .collect()
}

/// The model's outputs for `inputs`, decoded: symbols up to the first `</s>` at the valid
/// steps (the argmax of each), or the output vectors as JSON.
///
/// # Errors
/// As the model.
pub fn predict(
    trainer: &Trainer,
    inputs: Vec<InputSeq>,
    vocabs: &Vocabs,
    batch_size: usize,
) -> Result<Vec<String>> {
    let examples: Vec<Example> = inputs
        .into_iter()
        .map(|input| Example::new(input, TargetSeq::Labels(vec![0])))
        .collect();
    let options = trainer.batch_options(batch_size);
    let mut lines = Vec::with_capacity(examples.len());
    for batch in make_batches(&examples, &options, trainer.device())? {
        let output = trainer.predict(batch.inputs)?;
        lines.extend(decode(output, vocabs)?);
    }
    Ok(lines)
}

fn decode(output: Value, vocabs: &Vocabs) -> Result<Vec<String>> {
    let (values, mask) = match output {
        Value::Sequence { values, mask } => (values, mask),
        Value::Vector(values) => (values.unsqueeze_dim::<3>(1), None),
        Value::Tokens { .. } => bail!("expected a sequence or vector output, found token ids"),
    };
    let [batch, time, width] = values.dims();
    let valid = mask.map_or_else(|| vec![true; batch * time], |m| m.to_vec());
    let valid = &valid;
    let steps = |b: usize| (0..time).filter(move |&t| valid[b * time + t]);
    Ok(match &vocabs.target {
        Coding::Symbols { vocab } => {
            let classes = i64_vec(predicted_classes(values));
            (0..batch)
                .map(|b| {
                    let symbols: Vec<String> = steps(b)
                        .map(|t| classes[b * time + t])
                        .take_while(|&id| id != END_ID)
                        .map(|id| vocab.symbol(id).to_string())
                        .collect();
                    vocabs.tokens.join(&symbols)
                })
                .collect()
        }
        Coding::Numbers { .. } => {
            let values = f32_vec(values);
            (0..batch)
                .map(|b| {
                    let rows: Vec<&[f32]> = steps(b)
                        .map(|t| &values[(b * time + t) * width..(b * time + t + 1) * width])
                        .collect();
                    serde_json::to_string(&rows).expect("numbers serialise")
                })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_files::Tokens;
    use crate::vocab::Vocab;
    use padless::tensor_util::tensor_from;
    use padless::{Mask, Padding, default_device};

    fn vocabs(tokens: Tokens) -> Vocabs {
        let symbols = ["<pad>", "</s>", "<unk>", "a", "bb"]
            .map(String::from)
            .to_vec();
        Vocabs {
            format: "padless-vocab-1".into(),
            tokens,
            input: Coding::Numbers { features: 1 },
            target: Coding::Symbols {
                vocab: Vocab::from(symbols),
            },
        }
    }

    /// One-hot rows of 5 classes for the given ids.
    fn one_hot(ids: &[usize]) -> Vec<f32> {
        ids.iter()
            .flat_map(|&id| (0..5).map(move |c| if c == id { 0.9 } else { 0.025 }))
            .collect()
    }

    #[test]
    fn decoding_reads_valid_steps_and_stops_at_the_end_symbol() {
        let device = default_device();
        // Row 0: a bb </s> a (stops at </s>); row 1: bb a a bb with the last two steps masked.
        let values = [one_hot(&[3, 4, 1, 3]), one_hot(&[4, 3, 3, 4])].concat();
        let mask = Mask::from_lengths(&[4, 2], 4, Padding::Post, &device).unwrap();
        let output = Value::sequence(tensor_from(&values, [2, 4, 5], &device), Some(mask));
        let words = decode(output.clone(), &vocabs(Tokens::Words)).unwrap();
        assert_eq!(words, ["a bb", "bb a"]);
        assert_eq!(
            decode(output, &vocabs(Tokens::Chars)).unwrap(),
            ["abb", "bba"]
        );
        let vector = Value::Vector(tensor_from(&one_hot(&[4]), [1, 5], &device));
        assert_eq!(decode(vector, &vocabs(Tokens::Chars)).unwrap(), ["bb"]);
    }

    #[test]
    fn targets_line_up_with_the_output_mode() {
        let v = vocabs(Tokens::Chars);
        let seq = RawSeq::Symbols(vec!["a".into(), "bb".into()]);
        let fixed = encode_target(&seq, 5, &v, OutputMode::Fixed(3), UnknownPolicy::Error);
        assert_eq!(fixed.unwrap(), TargetSeq::Labels(vec![3, 4, END_ID]));
        let err = encode_target(&seq, 5, &v, OutputMode::Fixed(2), UnknownPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at most 2 steps") && err.contains("found 3"),
            "{err}"
        );
        let tagged = encode_target(&seq, 2, &v, OutputMode::PerStep, UnknownPolicy::Error);
        assert_eq!(tagged.unwrap(), TargetSeq::Labels(vec![3, 4]));
        let err = encode_target(&seq, 2, &v, OutputMode::Single, UnknownPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 step"), "{err}");
    }
}
