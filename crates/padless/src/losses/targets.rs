//! [`Targets`] and [`TargetMask`]: what a loss compares against, and which target steps are
//! real.

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};
use crate::mask::{Mask, Padding};
use crate::tensor_util::tensor_from;

/// The targets of a sequence loss.
#[derive(Debug, Clone)]
pub enum Targets {
    /// One-hot, probability or regression targets `[batch, time, features]`.
    Dense(Tensor<3>),
    /// Integer class labels `[batch, time]` (sparse losses). Labels at masked steps are never
    /// read: they may hold any value.
    Labels(Tensor<2, Int>),
}

impl Targets {
    /// `[batch, time]`.
    pub fn batch_time(&self) -> [usize; 2] {
        match self {
            Targets::Dense(y) => {
                let [b, t, _] = y.dims();
                [b, t]
            }
            Targets::Labels(y) => y.dims(),
        }
    }

    /// The device the targets are on.
    pub fn device(&self) -> burn::tensor::Device {
        match self {
            Targets::Dense(y) => y.device(),
            Targets::Labels(y) => y.device(),
        }
    }

    /// These targets on `device`.
    pub fn to_device(self, device: &burn::tensor::Device) -> Self {
        match self {
            Targets::Dense(y) => Targets::Dense(y.to_device(device)),
            Targets::Labels(y) => Targets::Labels(y.to_device(device)),
        }
    }

    /// The kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Targets::Dense(_) => "dense targets [batch, time, features]",
            Targets::Labels(_) => "integer labels [batch, time]",
        }
    }
}

/// A mask that comes with the targets, for outputs whose length differs from the inputs'
/// (translation, G2P) or whose mask was consumed on the way (an encoder, RepeatVector).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per batch; boxing `Explicit` would burden callers
pub enum TargetMask {
    /// Post-padded target lengths, one per row.
    Lengths(Vec<usize>),
    /// Valid where the label is not this padding label ([`Targets::Labels`]).
    PaddingLabel(i64),
    /// Valid where the target step is not exactly this vector, e.g. the one-hot `[0, 0, 1]`
    /// of a padding symbol ([`Targets::Dense`]).
    PaddingVector(Vec<f32>),
    /// An explicit mask.
    Explicit(Mask),
}

impl TargetMask {
    /// The mask for `targets`.
    ///
    /// # Errors
    /// A length over `time`, a padding kind that does not fit the targets, a padding vector
    /// of the wrong size, or an explicit mask of another shape.
    pub fn resolve(&self, targets: &Targets) -> Result<Mask> {
        let [batch, time] = targets.batch_time();
        let device = targets.device();
        match (self, targets) {
            (TargetMask::Lengths(lengths), _) => {
                if lengths.len() != batch {
                    return Err(Error::shape(
                        "target lengths",
                        format!("[{batch}]"),
                        &[lengths.len()],
                    ));
                }
                Mask::from_lengths(lengths, time, Padding::Post, &device)
            }
            (TargetMask::PaddingLabel(label), Targets::Labels(y)) => {
                Ok(Mask::from_padding_id(y, *label))
            }
            (TargetMask::PaddingVector(vector), Targets::Dense(y)) => {
                let features = y.dims()[2];
                if vector.len() != features {
                    return Err(Error::shape(
                        "padding vector",
                        format!("[{features}]"),
                        &[vector.len()],
                    ));
                }
                let pattern =
                    tensor_from(vector, [1, 1, features], &device).expand([batch, time, features]);
                let is_padding = y.clone().equal(pattern).all_dim(2).squeeze_dim::<2>(2);
                Ok(Mask::from_valid(is_padding.bool_not()))
            }
            (TargetMask::Explicit(mask), _) => {
                mask.check(batch, time, "target mask")?;
                Ok(mask.clone())
            }
            (kind, targets) => Err(Error::config(
                "TargetMask",
                format!("{kind:?} does not apply to {}", targets.kind()),
            )),
        }
    }
}

/// Checks that targets hold no NaN or inf at valid steps.
///
/// # Errors
/// Names the first offending `[row, step]`.
pub(crate) fn check_finite_targets(
    values: &[f32],
    [batch, time, features]: [usize; 3],
    valid: &[bool],
) -> Result<()> {
    // The values are read to the host once per loss (the fused loss reads the same copy): an
    // `is_finite` tensor and a second read cost more than the check.
    for b in 0..batch {
        for t in 0..time {
            let step = b * time + t;
            let row = &values[step * features..(step + 1) * features];
            if valid[step]
                && let Some(bad) = row.iter().find(|v| !v.is_finite())
            {
                return Err(Error::config(
                    "loss",
                    format!(
                        "target at [row {b}, step {t}] is {bad}, expected a finite value at a valid step"
                    ),
                ));
            }
        }
    }
    Ok(())
}
