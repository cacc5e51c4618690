//! [`Concatenate`] and [`Add`]: merge several sequences and their masks.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::mask::{Mask, check_mask_for};

/// The mask of a merge: valid where **any** input is valid; an input with no mask counts as
/// all-valid, so then the result has no mask.
///
/// # Errors
/// When the masks' shapes differ.
pub fn merge_masks(masks: &[Option<&Mask>]) -> Result<Option<Mask>> {
    let mut merged: Option<Mask> = None;
    for mask in masks {
        match mask {
            None => return Ok(None),
            Some(m) => {
                merged = Some(match merged {
                    None => (*m).clone(),
                    Some(acc) => acc.or(m)?,
                })
            }
        }
    }
    Ok(merged)
}

fn check_inputs(layer: &str, inputs: &[(Tensor<3>, Option<Mask>)]) -> Result<[usize; 2]> {
    let first = inputs
        .first()
        .ok_or_else(|| Error::config(layer, "needs at least one input"))?;
    let [batch, time, _] = first.0.dims();
    for (values, mask) in inputs {
        let dims = values.dims();
        if dims[0] != batch || dims[1] != time {
            return Err(Error::shape(
                layer,
                format!("[{batch}, {time}, features]"),
                &dims,
            ));
        }
        check_mask_for(mask.as_ref(), &dims, layer)?;
    }
    Ok([batch, time])
}

/// Concatenates sequences on the feature axis.
///
/// # Shapes
/// `[batch, time, f_i]` each -> `[batch, time, sum f_i]`.
///
/// # Masking
/// Valid where any input is valid ([`merge_masks`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Concatenate;

impl Concatenate {
    /// Merges `inputs` (values with their masks).
    ///
    /// # Errors
    /// When batch or time differ, or a mask does not fit.
    pub fn forward(
        &self,
        inputs: Vec<(Tensor<3>, Option<Mask>)>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        check_inputs("Concatenate", &inputs)?;
        let mask = merge_masks(&inputs.iter().map(|(_, m)| m.as_ref()).collect::<Vec<_>>())?;
        let values = Tensor::cat(inputs.into_iter().map(|(v, _)| v).collect(), 2);
        Ok((values, mask))
    }
}

/// Adds sequences element-wise.
///
/// # Shapes
/// `[batch, time, features]` each, all equal -> the same shape.
///
/// # Masking
/// Valid where any input is valid ([`merge_masks`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Add;

impl Add {
    /// Merges `inputs` (values with their masks).
    ///
    /// # Errors
    /// When shapes differ, or a mask does not fit.
    pub fn forward(
        &self,
        inputs: Vec<(Tensor<3>, Option<Mask>)>,
    ) -> Result<(Tensor<3>, Option<Mask>)> {
        check_inputs("Add", &inputs)?;
        let dims = inputs[0].0.dims();
        for (values, _) in &inputs {
            if values.dims() != dims {
                return Err(Error::shape("Add", format!("{dims:?}"), &values.dims()));
            }
        }
        let mask = merge_masks(&inputs.iter().map(|(_, m)| m.as_ref()).collect::<Vec<_>>())?;
        let mut iter = inputs.into_iter().map(|(v, _)| v);
        let first = iter.next().expect("checked non-empty");
        Ok((iter.fold(first, |acc, v| acc + v), mask))
    }
}
