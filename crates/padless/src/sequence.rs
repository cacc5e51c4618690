//! Helpers users ask for in every masking thread: `sequence_mask`, padding to a length
//! (pre or post, truncating pre or post) and one-hot encoding.

use burn::tensor::{Device, Int, Tensor};

use crate::error::{Error, Result};
use crate::mask::{Mask, Padding};

/// Sequences padded to one length, row-major, with each row's kept length.
#[derive(Debug, Clone, PartialEq)]
pub struct Padded<T> {
    /// `[batch * time]` values.
    pub values: Vec<T>,
    /// Rows.
    pub batch: usize,
    /// Steps per row.
    pub time: usize,
    /// Valid steps per row (after truncation).
    pub lengths: Vec<usize>,
    /// Where the padding went.
    pub padding: Padding,
}

impl<T> Padded<T> {
    /// The mask of the padded batch.
    ///
    /// # Errors
    /// Never in practice (lengths are at most `time` by construction).
    pub fn mask(&self, device: &Device) -> Result<Mask> {
        Mask::from_lengths(&self.lengths, self.time, self.padding, device)
    }
}

/// Which end of a too-long sequence is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncating {
    /// Drop steps from the start (keep the end).
    Pre,
    /// Drop steps from the end (keep the start).
    Post,
}

/// Pads (or truncates) every sequence to `max_len` steps (the longest sequence when `None`)
/// with `value`, on the `padding` side (Keras `pad_sequences`).
pub fn pad_sequences<T: Clone>(
    sequences: &[Vec<T>],
    max_len: Option<usize>,
    value: T,
    padding: Padding,
    truncating: Truncating,
) -> Padded<T> {
    let time = max_len.unwrap_or_else(|| sequences.iter().map(Vec::len).max().unwrap_or(0));
    let mut values = Vec::with_capacity(sequences.len() * time);
    let mut lengths = Vec::with_capacity(sequences.len());
    for seq in sequences {
        let kept = match truncating {
            _ if seq.len() <= time => &seq[..],
            Truncating::Pre => &seq[seq.len() - time..],
            Truncating::Post => &seq[..time],
        };
        let fill = std::iter::repeat_n(value.clone(), time - kept.len());
        match padding {
            Padding::Post => values.extend(kept.iter().cloned().chain(fill)),
            Padding::Pre => values.extend(fill.chain(kept.iter().cloned())),
        }
        lengths.push(kept.len());
    }
    Padded {
        values,
        batch: sequences.len(),
        time,
        lengths,
        padding,
    }
}

/// `tf.sequence_mask`: the first `length` of `max_len` steps of each row are valid (the
/// longest length when `max_len` is `None`).
///
/// # Errors
/// A length over `max_len`.
pub fn sequence_mask(lengths: &[usize], max_len: Option<usize>, device: &Device) -> Result<Mask> {
    let time = max_len.unwrap_or_else(|| lengths.iter().copied().max().unwrap_or(0));
    Mask::from_lengths(lengths, time, Padding::Post, device)
}

/// One-hot vectors `[batch, time, n_classes]` from labels `[batch, time]`.
///
/// # Errors
/// A label outside `0..n_classes`, naming it.
pub fn one_hot(labels: &Tensor<2, Int>, n_classes: usize) -> Result<Tensor<3>> {
    if let Some(bad) = crate::tensor_util::i64_vec(labels.clone())
        .into_iter()
        .find(|&l| l < 0 || l as usize >= n_classes)
    {
        return Err(Error::config(
            "one_hot",
            format!("label {bad} is outside 0..{n_classes}"),
        ));
    }
    Ok(labels.clone().one_hot::<3>(n_classes).float())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_device;
    use crate::tensor_util::{f32_vec, int_tensor_from};

    #[test]
    fn pad_and_truncate_both_sides() {
        let seqs = vec![vec![1, 2, 3, 4], vec![5]];
        let p = pad_sequences(&seqs, Some(3), 0, Padding::Post, Truncating::Pre);
        assert_eq!(p.values, vec![2, 3, 4, 5, 0, 0]);
        assert_eq!(p.lengths, vec![3, 1]);
        let p = pad_sequences(&seqs, Some(3), 0, Padding::Pre, Truncating::Post);
        assert_eq!(p.values, vec![1, 2, 3, 0, 0, 5]);
        assert_eq!(
            p.mask(&default_device()).unwrap().to_vec(),
            vec![true, true, true, false, false, true]
        );
        let p = pad_sequences(&seqs, None, -1, Padding::Post, Truncating::Post);
        assert_eq!((p.batch, p.time), (2, 4));
        assert_eq!(p.values, vec![1, 2, 3, 4, 5, -1, -1, -1]);
    }

    #[test]
    fn sequence_mask_like_tensorflow() {
        let m = sequence_mask(&[1, 3, 2], Some(5), &default_device()).unwrap();
        assert_eq!(m.lengths(), vec![1, 3, 2]);
        assert_eq!(&m.to_vec()[..5], &[true, false, false, false, false]);
        let err = sequence_mask(&[6], Some(5), &default_device()).unwrap_err();
        assert!(err.to_string().contains("length 6"), "{err}");
    }

    #[test]
    fn one_hot_and_its_range_check() {
        let labels = int_tensor_from(&[2, 0], [1, 2], &default_device());
        assert_eq!(
            f32_vec(one_hot(&labels, 3).unwrap()),
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
        );
        let err = one_hot(&labels, 2).unwrap_err().to_string();
        assert_eq!(err, "one_hot: label 2 is outside 0..2");
    }
}
