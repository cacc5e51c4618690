//! [`PositionalEmbedding`]: position vectors indexed by a step's place among its row's valid
//! steps, learned or sinusoidal.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mask::{Mask, check_mask_for, zero_masked};
use crate::tensor_util::int_tensor_from;

/// How positions become vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PositionKind {
    /// The fixed encodings of "Attention is all you need": `sin(p / 10000^(2i / d_model))`
    /// at feature `2i`, `cos` of the same at `2i + 1`; no weights, any position.
    #[default]
    Sinusoidal,
    /// A learned vector per position `0..max_len` (`weight [max_len, d_model]`).
    Learned {
        /// The number of positions.
        max_len: usize,
    },
}

/// Adds a position vector to each valid step.
///
/// # Shapes
/// `[batch, time, d_model]` in and out.
///
/// # Masking
/// A step's position is its index among its row's valid steps, so the same row gives the same
/// output whatever padding surrounds it: before it, after it, in holes inside it, of any
/// length. Masked steps are selected out and output exactly 0.
///
/// # Example
/// ```
/// use padless::transformer::{PositionKind, PositionalEmbedding};
/// use padless::{Mask, default_device};
///
/// let device = default_device();
/// // Row 0 is pre-padded, row 1 has a hole: the valid steps of both are at positions 0, 1, 2
/// // (masked steps get 0).
/// let mask = Mask::from_bools(&[false, true, true, true, true, false, true, true], 2, 4, &device).unwrap();
/// assert_eq!(PositionalEmbedding::positions(Some(&mask), 2, 4), [0, 0, 1, 2, 0, 0, 1, 2]);
/// ```
#[derive(Module, Debug)]
pub struct PositionalEmbedding {
    /// `[max_len, d_model]` for learned positions.
    pub weight: Option<Param<Tensor<2>>>,
    /// Learned or sinusoidal.
    #[module(skip)]
    pub kind: PositionKind,
    /// Features of each vector.
    #[module(skip)]
    pub d_model: usize,
}

impl PositionalEmbedding {
    /// A positional embedding; learned vectors are drawn from `N(0, 1 / d_model)`.
    ///
    /// # Errors
    /// `d_model` or `max_len` zero.
    pub fn new(kind: PositionKind, d_model: usize, device: &Device) -> Result<Self> {
        if d_model == 0 || kind == (PositionKind::Learned { max_len: 0 }) {
            return Err(Error::config(
                "PositionalEmbedding",
                format!(
                    "d_model and max_len must be at least 1, found d_model {d_model}, {kind:?}"
                ),
            ));
        }
        let weight = match kind {
            PositionKind::Sinusoidal => None,
            PositionKind::Learned { max_len } => Some(
                Initializer::Normal {
                    mean: 0.0,
                    std: 1.0 / (d_model as f64).sqrt(),
                }
                .init([max_len, d_model], device),
            ),
        };
        Ok(PositionalEmbedding {
            weight,
            kind,
            d_model,
        })
    }

    /// Each step's index among its row's valid steps (0 at masked steps), row-major `[batch,
    /// time]`; the step index itself without a mask.
    pub fn positions(mask: Option<&Mask>, batch: usize, time: usize) -> Vec<usize> {
        match mask {
            None => (0..batch).flat_map(|_| 0..time).collect(),
            Some(mask) => {
                let valid = mask.to_vec();
                valid
                    .chunks(time.max(1))
                    .flat_map(|row| {
                        let mut seen = 0;
                        row.iter()
                            .map(move |&v| {
                                let position = if v { seen } else { 0 };
                                seen += usize::from(v);
                                position
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            }
        }
    }

    /// The vectors of `positions`, `[positions.len(), d_model]`.
    ///
    /// # Errors
    /// A position at or beyond `max_len` of learned positions.
    pub fn encodings(&self, positions: &[usize], device: &Device) -> Result<Tensor<2>> {
        let n = positions.len();
        let last = positions.iter().copied().max().unwrap_or(0);
        let index = int_tensor_from(
            &positions.iter().map(|&p| p as i64).collect::<Vec<_>>(),
            [n],
            device,
        );
        match self.kind {
            PositionKind::Learned { max_len } => {
                if last >= max_len {
                    return Err(Error::config(
                        "PositionalEmbedding",
                        format!(
                            "learned positions cover 0..{max_len}, found a row with {} valid steps",
                            last + 1
                        ),
                    ));
                }
                let weight = self
                    .weight
                    .as_ref()
                    .expect("learned positions have weights");
                Ok(weight.val().select(0, index))
            }
            PositionKind::Sinusoidal => {
                Ok(sinusoidal_table(last + 1, self.d_model, device).select(0, index))
            }
        }
    }

    /// Adds to each valid step of `x [batch, time, d_model]` the vector of its position among
    /// its row's valid steps; masked steps become 0.
    ///
    /// # Errors
    /// A feature size other than `d_model`, a mask of the wrong shape, or more valid steps in
    /// a row than learned positions.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Mask>) -> Result<Tensor<3>> {
        let [batch, time, d] = x.dims();
        if d != self.d_model {
            return Err(Error::shape(
                "PositionalEmbedding input",
                format!("[batch, time, {}]", self.d_model),
                &[batch, time, d],
            ));
        }
        check_mask_for(mask, &[batch, time], "PositionalEmbedding")?;
        let positions = Self::positions(mask, batch, time);
        let vectors = self
            .encodings(&positions, &x.device())?
            .reshape([batch, time, d]);
        Ok(zero_masked(x + vectors, mask))
    }
}

/// The sinusoidal encodings of positions `0..n`, `[n, d_model]`, computed in `f64`.
fn sinusoidal_table(n: usize, d_model: usize, device: &Device) -> Tensor<2> {
    let mut values = Vec::with_capacity(n * d_model);
    for position in 0..n {
        for feature in 0..d_model {
            let pair = (feature / 2) as f64;
            let angle = position as f64 / 10000f64.powf(2.0 * pair / d_model as f64);
            values.push(if feature % 2 == 0 {
                angle.sin()
            } else {
                angle.cos()
            });
        }
    }
    Tensor::from_data(TensorData::new(values, [n, d_model]), device)
}
