//! [`Mask`]: which steps of a padded batch are real.
//!
//! A mask is a `[batch, time]` boolean tensor where **true means valid**. It is a type of
//! its own so that its polarity never has to be guessed from a bare bool tensor.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::tensor_util::bool_vec;

/// Which side of a sequence the padding is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    /// Valid steps first, padding after them (`[a, b, c, 0, 0]`).
    #[default]
    Post,
    /// Padding first, valid steps at the end (`[0, 0, a, b, c]`).
    Pre,
}

/// A `[batch, time]` mask, true = valid step.
///
/// # Example
/// ```
/// use padless::{Mask, Padding, default_device};
/// let device = default_device();
/// let mask = Mask::from_lengths(&[3, 1], 4, Padding::Post, &device).unwrap();
/// assert_eq!(mask.to_vec(), vec![true, true, true, false, true, false, false, false]);
/// assert_eq!(mask.lengths(), vec![3, 1]);
/// ```
#[derive(Debug, Clone)]
pub struct Mask {
    valid: Tensor<2, Bool>,
}

impl Mask {
    /// A mask from a bool tensor `[batch, time]` where **true = valid**.
    pub fn from_valid(valid: Tensor<2, Bool>) -> Self {
        Mask { valid }
    }

    /// A mask from row-major booleans (true = valid) of shape `[batch, time]`.
    ///
    /// # Errors
    /// When `values.len() != batch * time`.
    pub fn from_bools(values: &[bool], batch: usize, time: usize, device: &Device) -> Result<Self> {
        if values.len() != batch * time {
            return Err(Error::shape(
                "Mask::from_bools",
                format!("{} values for [{batch}, {time}]", batch * time),
                &[values.len()],
            ));
        }
        let data = TensorData::new(values.to_vec(), [batch, time]);
        Ok(Mask {
            valid: Tensor::from_data(data, device),
        })
    }

    /// A mask from the length of each row: the first `len` steps are valid with
    /// [`Padding::Post`], the last `len` steps with [`Padding::Pre`].
    ///
    /// # Errors
    /// [`Error::Length`] when a length exceeds `max_time`.
    pub fn from_lengths(
        lengths: &[usize],
        max_time: usize,
        padding: Padding,
        device: &Device,
    ) -> Result<Self> {
        let mut values = Vec::with_capacity(lengths.len() * max_time);
        for (row, &length) in lengths.iter().enumerate() {
            if length > max_time {
                return Err(Error::Length {
                    row,
                    length,
                    max_time,
                });
            }
            let first_valid = match padding {
                Padding::Post => 0,
                Padding::Pre => max_time - length,
            };
            values.extend((0..max_time).map(|t| t >= first_valid && t < first_valid + length));
        }
        Self::from_bools(&values, lengths.len(), max_time, device)
    }

    /// The Keras `Masking` rule: a step of `x [batch, time, features]` is masked iff **every**
    /// feature equals `padding_value` (so `-0.0` equals `0.0`; NaN never equals anything).
    pub fn from_padding_value(x: &Tensor<3>, padding_value: f32) -> Self {
        let [batch, time, features] = x.dims();
        if crate::cpu::on_flex(&x.device()) && x.dtype() == burn::tensor::DType::F32 && features > 0
        {
            // On the CPU backend one pass over the values on the host (the tensor form is
            // four operations over `[batch, time, features]` booleans).
            let values = crate::tensor_util::f32_vec(x.clone());
            let valid: Vec<bool> = values
                .chunks_exact(features)
                .map(|step| step.iter().any(|&v| v != padding_value))
                .collect();
            return Mask::from_bools(&valid, batch, time, &x.device())
                .expect("one value per step of [batch, time]");
        }
        let is_padding = x
            .clone()
            .equal_elem(padding_value)
            .all_dim(2)
            .squeeze_dim::<2>(2);
        Mask {
            valid: is_padding.bool_not(),
        }
    }

    /// A mask from token ids `[batch, time]`: valid where `ids != padding_id`
    /// (`Embedding(mask_zero)` uses `padding_id = 0`).
    pub fn from_padding_id(ids: &Tensor<2, Int>, padding_id: i64) -> Self {
        Mask {
            valid: ids.clone().not_equal_elem(padding_id),
        }
    }

    /// All steps valid.
    pub fn all_valid(batch: usize, time: usize, device: &Device) -> Self {
        Mask {
            valid: Tensor::<2, Int>::ones([batch, time], device).bool(),
        }
    }

    /// This mask on `device`.
    pub fn to_device(&self, device: &Device) -> Self {
        Mask {
            valid: self.valid.clone().to_device(device),
        }
    }

    /// `[batch, time]`.
    pub fn dims(&self) -> [usize; 2] {
        self.valid.dims()
    }

    /// The bool tensor, true = valid.
    pub fn valid(&self) -> Tensor<2, Bool> {
        self.valid.clone()
    }

    /// The bool tensor, true = padding (the complement of [`Mask::valid`]).
    pub fn padding(&self) -> Tensor<2, Bool> {
        self.valid.clone().bool_not()
    }

    /// The mask as `1.0` (valid) and `0.0` (padding), `[batch, time]`.
    pub fn to_float(&self) -> Tensor<2> {
        self.valid.clone().float()
    }

    /// Row-major booleans, true = valid.
    pub fn to_vec(&self) -> Vec<bool> {
        bool_vec(self.valid.clone())
    }

    /// The number of valid steps of each row (its length for post- or pre-padding).
    pub fn lengths(&self) -> Vec<usize> {
        let [batch, time] = self.dims();
        let values = self.to_vec();
        (0..batch)
            .map(|b| {
                values[b * time..(b + 1) * time]
                    .iter()
                    .filter(|&&v| v)
                    .count()
            })
            .collect()
    }

    /// Valid where both masks are valid.
    ///
    /// # Errors
    /// When the shapes differ.
    pub fn and(&self, other: &Mask) -> Result<Mask> {
        self.check_same(other, "Mask::and")?;
        Ok(Mask {
            valid: self.valid.clone().bool_and(other.valid.clone()),
        })
    }

    /// Valid where either mask is valid.
    ///
    /// # Errors
    /// When the shapes differ.
    pub fn or(&self, other: &Mask) -> Result<Mask> {
        self.check_same(other, "Mask::or")?;
        Ok(Mask {
            valid: self.valid.clone().bool_or(other.valid.clone()),
        })
    }

    /// The mask with its time axis reversed (the output mask of a `go_backwards` layer).
    pub fn reverse_time(&self) -> Mask {
        Mask {
            valid: self.valid.clone().flip([1]),
        }
    }

    /// Checks that this mask is `[batch, time]`.
    ///
    /// # Errors
    /// [`Error::MaskShape`] naming both shapes.
    pub fn check(&self, batch: usize, time: usize, what: &str) -> Result<()> {
        let found = self.dims();
        if found != [batch, time] {
            return Err(Error::MaskShape {
                what: what.to_string(),
                expected: [batch, time],
                found,
            });
        }
        Ok(())
    }

    /// Whether every step is valid.
    pub fn is_all_valid(&self) -> bool {
        self.to_vec().into_iter().all(|v| v)
    }

    fn check_same(&self, other: &Mask, what: &str) -> Result<()> {
        let [batch, time] = self.dims();
        other.check(batch, time, what)
    }

    /// The padding as `[batch, time, width]` booleans, true = padding: what `mask_fill`
    /// selects out of a `[batch, time, width]` tensor.
    pub(crate) fn padding_expanded(&self, width: usize) -> Tensor<3, Bool> {
        let [batch, time] = self.dims();
        self.padding()
            .unsqueeze_dim::<3>(2)
            .expand([batch, time, width])
    }
}

/// Combines two optional masks with AND; a missing mask counts as all-valid.
pub fn and_masks(a: Option<&Mask>, b: Option<&Mask>) -> Result<Option<Mask>> {
    match (a, b) {
        (Some(a), Some(b)) => a.and(b).map(Some),
        (Some(m), None) | (None, Some(m)) => Ok(Some(m.clone())),
        (None, None) => Ok(None),
    }
}

/// `x [batch, time, width]` with every step that `mask` marks as padding set to exactly 0
/// (selected, not multiplied, so NaN or inf there is gone); `x` itself without a mask.
pub(crate) fn zero_masked(x: Tensor<3>, mask: Option<&Mask>) -> Tensor<3> {
    match mask {
        Some(mask) => {
            let width = x.dims()[2];
            x.mask_fill(mask.padding_expanded(width), 0.0)
        }
        None => x,
    }
}

/// Checks `[batch, time]` of an optional mask against a sequence tensor's dims.
pub(crate) fn check_mask_for(mask: Option<&Mask>, dims: &[usize], what: &str) -> Result<()> {
    if let Some(mask) = mask {
        let [batch, time] = [dims[0], dims[1]];
        mask.check(batch, time, what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_device;

    #[test]
    fn lengths_post_and_pre_round_trip() {
        let device = default_device();
        let post = Mask::from_lengths(&[2, 0, 3], 3, Padding::Post, &device).unwrap();
        assert_eq!(
            post.to_vec(),
            vec![true, true, false, false, false, false, true, true, true]
        );
        let pre = Mask::from_lengths(&[2, 0, 3], 3, Padding::Pre, &device).unwrap();
        assert_eq!(
            pre.to_vec(),
            vec![false, true, true, false, false, false, true, true, true]
        );
        assert_eq!(post.lengths(), vec![2, 0, 3]);
        assert_eq!(pre.lengths(), vec![2, 0, 3]);
    }

    #[test]
    fn length_longer_than_time_is_an_error() {
        let err = Mask::from_lengths(&[2, 5], 4, Padding::Post, &default_device()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "length 5 of row 1 does not fit in 4 time steps"
        );
    }

    #[test]
    fn padding_value_needs_every_feature_and_treats_negative_zero_as_zero() {
        let device = default_device();
        let x = Tensor::<3>::from_data(
            TensorData::new(
                vec![0.0f32, 0.0, -0.0, 0.0, 0.0, 1.0, f32::NAN, 0.0],
                [1, 4, 2],
            ),
            &device,
        );
        let mask = Mask::from_padding_value(&x, 0.0);
        assert_eq!(mask.to_vec(), vec![false, false, true, true]);
    }

    #[test]
    fn padding_id_masks_only_that_id() {
        let device = default_device();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 0, 1, 0], [2, 2]), &device);
        assert_eq!(
            Mask::from_padding_id(&ids, 0).to_vec(),
            vec![true, false, true, false]
        );
    }

    #[test]
    fn and_or_reverse() {
        let device = default_device();
        let a = Mask::from_bools(&[true, true, false, false], 1, 4, &device).unwrap();
        let b = Mask::from_bools(&[false, true, true, false], 1, 4, &device).unwrap();
        assert_eq!(a.and(&b).unwrap().to_vec(), vec![false, true, false, false]);
        assert_eq!(a.or(&b).unwrap().to_vec(), vec![true, true, true, false]);
        assert_eq!(a.reverse_time().to_vec(), vec![false, false, true, true]);
        let c = Mask::all_valid(2, 4, &device);
        assert!(c.is_all_valid());
        let err = a.and(&c).unwrap_err();
        assert!(
            err.to_string().contains("[1, 4]") && err.to_string().contains("[2, 4]"),
            "{err}"
        );
        assert_eq!(
            and_masks(Some(&a), None).unwrap().unwrap().to_vec(),
            a.to_vec()
        );
    }

    #[test]
    fn from_bools_rejects_wrong_count() {
        let err = Mask::from_bools(&[true; 5], 2, 3, &default_device()).unwrap_err();
        assert!(err.to_string().contains("6 values for [2, 3]"), "{err}");
    }
}
