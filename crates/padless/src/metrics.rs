//! Masked metrics: token accuracy, whole-sequence accuracy and edit-distance error rates.
//!
//! They use the same mask and weights as the losses: masked steps are never counted.

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::tensor_util::{f32_vec, i64_vec};

/// `Σ_valid w·[prediction == label] / Σ_valid w` (with no weights, correct valid steps over
/// valid steps); 0 when nothing is valid.
///
/// # Shapes
/// `predicted` and `labels` `[batch, time]`; `weights` `[batch, time]`.
///
/// # Errors
/// When shapes differ.
pub fn token_accuracy(
    predicted: &Tensor<2, Int>,
    labels: &Tensor<2, Int>,
    mask: Option<&Mask>,
    weights: Option<&Tensor<2>>,
) -> Result<f64> {
    let dims = labels.dims();
    check("predictions", &predicted.dims(), &dims)?;
    if let Some(w) = weights {
        check("weights", &w.dims(), &dims)?;
    }
    let valid = valid_bits(mask, dims)?;
    let (p, l) = (i64_vec(predicted.clone()), i64_vec(labels.clone()));
    let w = weights.map(|w| f32_vec(w.clone()));
    let (mut correct, mut total) = (0.0f64, 0.0f64);
    for i in (0..p.len()).filter(|&i| valid[i]) {
        let weight = w.as_ref().map_or(1.0, |w| f64::from(w[i]));
        total += weight;
        if p[i] == l[i] {
            correct += weight;
        }
    }
    Ok(if total == 0.0 { 0.0 } else { correct / total })
}

/// The fraction of sequences whose valid steps are all correct (a row with no valid step
/// counts as correct); 0 for an empty batch.
///
/// # Errors
/// When shapes differ.
pub fn sequence_accuracy(
    predicted: &Tensor<2, Int>,
    labels: &Tensor<2, Int>,
    mask: Option<&Mask>,
) -> Result<f64> {
    let [batch, time] = labels.dims();
    check("predictions", &predicted.dims(), &[batch, time])?;
    let valid = valid_bits(mask, [batch, time])?;
    let (p, l) = (i64_vec(predicted.clone()), i64_vec(labels.clone()));
    if batch == 0 {
        return Ok(0.0);
    }
    let right = (0..batch)
        .filter(|b| (0..time).all(|t| !valid[b * time + t] || p[b * time + t] == l[b * time + t]))
        .count();
    Ok(right as f64 / batch as f64)
}

/// The predicted class of every step: the argmax over the last axis, `[batch, time, C] ->
/// [batch, time]`.
pub fn predicted_classes(y_pred: Tensor<3>) -> Tensor<2, Int> {
    y_pred.argmax(2).squeeze_dim(2)
}

/// The Levenshtein distance (insertions, deletions and substitutions, each 1).
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(x != y);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Symbol error rate over a corpus: `Σ min_r edit(prediction, r) / Σ len(closest r)`, where
/// for each input the closest of its references counts (ties: the shorter reference). With
/// words as symbols this is the word error rate of speech recognition; with phonemes, PER.
///
/// # Errors
/// When the number of inputs differs, or an input has no reference.
pub fn error_rate<T: PartialEq>(predictions: &[Vec<T>], references: &[Vec<Vec<T>>]) -> Result<f64> {
    if predictions.len() != references.len() {
        return Err(Error::shape(
            "references",
            format!("[{}] (one list per prediction)", predictions.len()),
            &[references.len()],
        ));
    }
    let (mut errors, mut length) = (0usize, 0usize);
    for (i, (prediction, refs)) in predictions.iter().zip(references).enumerate() {
        let (distance, len) = refs
            .iter()
            .map(|r| (edit_distance(prediction, r), r.len()))
            .min()
            .ok_or_else(|| Error::config("error_rate", format!("input {i} has no reference")))?;
        errors += distance;
        length += len;
    }
    Ok(if length == 0 {
        0.0
    } else {
        errors as f64 / length as f64
    })
}

/// The fraction of inputs whose prediction equals none of its references (sequence error
/// rate; "word error rate" in G2P papers).
///
/// # Errors
/// When the number of inputs differs.
pub fn sequence_error_rate<T: PartialEq>(
    predictions: &[Vec<T>],
    references: &[Vec<Vec<T>>],
) -> Result<f64> {
    if predictions.len() != references.len() {
        return Err(Error::shape(
            "references",
            format!("[{}] (one list per prediction)", predictions.len()),
            &[references.len()],
        ));
    }
    if predictions.is_empty() {
        return Ok(0.0);
    }
    let wrong = predictions
        .iter()
        .zip(references)
        .filter(|(p, refs)| !refs.iter().any(|r| r == *p))
        .count();
    Ok(wrong as f64 / predictions.len() as f64)
}

/// Each row's valid steps in order (`[batch, time]` in, one vector per row out): turns padded
/// predictions or labels into the sequences that edit distances compare.
pub fn valid_steps(values: &Tensor<2, Int>, mask: Option<&Mask>) -> Result<Vec<Vec<i64>>> {
    let [batch, time] = values.dims();
    let valid = valid_bits(mask, [batch, time])?;
    let v = i64_vec(values.clone());
    Ok((0..batch)
        .map(|b| {
            (0..time)
                .filter(|t| valid[b * time + t])
                .map(|t| v[b * time + t])
                .collect()
        })
        .collect())
}

fn valid_bits(mask: Option<&Mask>, [batch, time]: [usize; 2]) -> Result<Vec<bool>> {
    match mask {
        Some(m) => {
            m.check(batch, time, "metric")?;
            Ok(m.to_vec())
        }
        None => Ok(vec![true; batch * time]),
    }
}

fn check(what: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found != expected {
        return Err(Error::shape(what, format!("{expected:?}"), found));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_device;
    use crate::tensor_util::int_tensor_from;

    #[test]
    fn edit_distance_by_hand() {
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
        assert_eq!(edit_distance::<u8>(b"", b"abc"), 3);
        assert_eq!(edit_distance(b"abc", b"abc"), 0);
        assert_eq!(edit_distance(b"ab", b"ba"), 2);
    }

    #[test]
    fn error_rates_use_the_closest_reference() {
        let predictions = vec![vec!["K", "AE1", "T"], vec!["D", "AO1", "G"]];
        let references = vec![
            vec![vec!["K", "AE1", "T"]],
            vec![vec!["D", "AA1", "G"], vec!["D", "AO1", "G", "Z"]],
        ];
        // Input 0: 0 errors of 3. Input 1: 1 of 3 vs 1 of 4: the shorter wins at a tie.
        assert!((error_rate(&predictions, &references).unwrap() - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(sequence_error_rate(&predictions, &references).unwrap(), 0.5);
    }

    #[test]
    fn accuracies_count_valid_steps_only() {
        let device = default_device();
        let labels = int_tensor_from(&[1, 2, 3, 4, 5, 6], [2, 3], &device);
        let scores = crate::tensor_util::tensor_from(
            &[
                0., 1., 0., 0., 0., 0., 0., 0., 2., 1., 0., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0.,
                0., 5., 0., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 1.,
            ],
            [2, 3, 6],
            &device,
        );
        let predicted = predicted_classes(scores);
        assert_eq!(i64_vec(predicted), vec![1, 2, 4, 4, 0, 5]);
        let predicted = int_tensor_from(&[1, 2, 0, 4, 0, 6], [2, 3], &device);
        let mask =
            Mask::from_bools(&[true, true, false, true, false, true], 2, 3, &device).unwrap();
        assert_eq!(
            token_accuracy(&predicted, &labels, Some(&mask), None).unwrap(),
            1.0
        );
        assert!(
            (token_accuracy(&predicted, &labels, None, None).unwrap() - 4.0 / 6.0).abs() < 1e-12
        );
        let w = crate::tensor_util::tensor_from(&[1.0, 1.0, 9.0, 2.0, 9.0, 0.0], [2, 3], &device);
        let all = Mask::all_valid(2, 3, &device);
        // Σ w·correct = 1 + 1 + 2 + 0 = 4 over Σ w = 22.
        assert!(
            (token_accuracy(&predicted, &labels, Some(&all), Some(&w)).unwrap() - 4.0 / 22.0).abs()
                < 1e-12
        );
        assert_eq!(
            sequence_accuracy(&predicted, &labels, Some(&mask)).unwrap(),
            1.0
        );
        assert_eq!(sequence_accuracy(&predicted, &labels, None).unwrap(), 0.0);
        assert_eq!(
            valid_steps(&predicted, Some(&mask)).unwrap(),
            vec![vec![1, 2], vec![4, 6]]
        );
    }
}
