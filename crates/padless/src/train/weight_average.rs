//! [`WeightAverage`]: an exponential moving average of a model's weights (Polyak averaging,
//! Keras' `use_ema`, TensorFlow's `ExponentialMovingAverage`).
//!
//! Training moves the weights with the noise of each batch; the average of the last few
//! thousand steps usually predicts better than the last step alone. The average is a second
//! copy of the weights, updated after each optimizer step; the model built from it is
//! evaluated or saved in place of the trained model.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::tensor_util::f32_vec;

/// An exponential moving average of a model's float parameters.
///
/// After `n` updates the average moves towards the model's current weights `w` as
/// `avg = d * avg + (1 - d) * w` with `d = min(decay, (1 + n) / (10 + n))`: the warm-up
/// (TensorFlow's `num_updates`) lets the first updates forget the initial weights quickly.
/// The average lives on the host in float32 and is updated in one pass per parameter;
/// [`WeightAverage::model`] builds a model from it. Integer and boolean parameters are not
/// averaged (they keep the value of the copy taken by [`WeightAverage::new`]).
///
/// # Example
/// ```
/// use burn::tensor::Device;
/// use padless::layers::DenseConfig;
/// use padless::train::WeightAverage;
///
/// let device = Device::flex().autodiff();
/// let dense = DenseConfig::new(3, 2).init(&device);
/// let mut average = WeightAverage::new(&dense, 0.999).unwrap();
/// // ... after each optimizer step:
/// average.update(&dense);
/// let smoothed = average.model(); // a plain (no autodiff) copy to evaluate or save
/// assert_eq!(smoothed.kernel.val().dims(), [3, 2]);
/// ```
#[derive(Debug, Clone)]
pub struct WeightAverage<M: Module> {
    /// The model as it was at the start, without autodiff: structure, ids and non-float
    /// parameters of [`WeightAverage::model`].
    template: M,
    /// The averaged values of each float parameter, row-major.
    values: HashMap<ParamId, Vec<f32>>,
    decay: f64,
    updates: u64,
}

impl<M: Module> WeightAverage<M> {
    /// Starts the average at `model`'s current weights.
    ///
    /// # Errors
    /// [`Error::Config`] when `decay` is not in `[0, 1)`.
    pub fn new(model: &M, decay: f64) -> Result<Self> {
        check_decay(decay)?;
        let mut values = Start(HashMap::new());
        model.visit(&mut values);
        Ok(WeightAverage {
            template: model.valid(),
            values: values.0,
            decay,
            updates: 0,
        })
    }

    /// The decay the next update uses: `min(decay, (1 + n) / (10 + n))` after `n` updates.
    pub fn next_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Moves the average towards `model`'s current weights. `model` must be the model the
    /// average was started from, after any number of optimizer steps (parameters are matched
    /// by their [`ParamId`], which optimizers keep).
    ///
    /// # Panics
    /// When `model` has a float parameter the average does not have, or of another size.
    pub fn update(&mut self, model: &M) {
        let step = (1.0 - self.next_decay()) as f32;
        let mut blend = Blend {
            values: &mut self.values,
            step,
        };
        model.visit(&mut blend);
        self.updates += 1;
    }

    /// The averaged model, on the device of the model the average was started from, without
    /// autodiff.
    pub fn model(&self) -> M {
        self.template.clone().map(&mut Fill {
            values: &self.values,
        })
    }

    /// `model` with each float parameter set to its average, on the parameter's own device,
    /// keeping its id and whether it requires a gradient (training goes on from the average;
    /// Keras overwrites the weights so at the end of `fit` with `use_ema`).
    pub fn copy_into(&self, model: M) -> M {
        model.map(&mut Fill {
            values: &self.values,
        })
    }

    /// Number of updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// An average saved after `updates` updates, whose values are `model`'s weights (a
    /// checkpoint's): it goes on exactly as the saved one would.
    ///
    /// # Errors
    /// As [`WeightAverage::new`].
    pub(crate) fn restored(model: &M, decay: f64, updates: u64) -> Result<Self> {
        let mut average = WeightAverage::new(model, decay)?;
        average.updates = updates;
        Ok(average)
    }
}

/// Checks a decay for [`WeightAverage::new`].
///
/// # Errors
/// [`Error::Config`] when `decay` is not in `[0, 1)`.
pub(crate) fn check_decay(decay: f64) -> Result<()> {
    if (0.0..1.0).contains(&decay) {
        Ok(())
    } else {
        Err(Error::Config {
            layer: "WeightAverage".into(),
            message: format!("decay must be in [0, 1), found {decay}"),
        })
    }
}

/// Each float parameter's starting value.
struct Start(HashMap<ParamId, Vec<f32>>);

impl ModuleVisitor for Start {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(param.id, f32_vec(param.val().inner()));
    }
}

/// `avg += step * (current - avg)`, parameter by parameter.
struct Blend<'a> {
    values: &'a mut HashMap<ParamId, Vec<f32>>,
    step: f32,
}

impl ModuleVisitor for Blend<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let current = f32_vec(param.val().inner());
        let average = self.values.get_mut(&param.id).unwrap_or_else(|| {
            panic!(
                "WeightAverage::update: parameter {} is not in the average",
                param.id
            )
        });
        assert_eq!(
            average.len(),
            current.len(),
            "WeightAverage::update: parameter {} changed size",
            param.id
        );
        let step = self.step;
        for (a, c) in average.iter_mut().zip(&current) {
            *a += step * (c - *a);
        }
    }
}

/// Replaces each float parameter's value by its average.
struct Fill<'a> {
    values: &'a HashMap<ParamId, Vec<f32>>,
}

impl ModuleMapper for Fill<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let values = self.values[&param.id].clone();
        param.map(|template| {
            let data = TensorData::new(values, template.shape());
            let value = Tensor::from_data(data, &template.device());
            if template.is_require_grad() {
                value.require_grad()
            } else {
                value
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::DenseConfig;
    use burn::tensor::{Device, TensorData};

    fn set(dense: &mut crate::layers::Dense, kernel: [f32; 2], device: &Device) {
        let id = dense.kernel.id;
        dense.kernel = Param::initialized(
            id,
            Tensor::from_data(TensorData::new(kernel.to_vec(), [2, 1]), device).require_grad(),
        );
    }

    fn kernel(dense: &crate::layers::Dense) -> Vec<f32> {
        f32_vec(dense.kernel.val())
    }

    #[test]
    fn average_follows_the_warm_up_then_the_decay() {
        let device = Device::flex().autodiff();
        let mut dense = DenseConfig::new(2, 1).init(&device);
        set(&mut dense, [1.0, -2.0], &device);
        let mut average = WeightAverage::new(&dense, 0.5).unwrap();
        // First update: d = min(0.5, 1/10) = 0.1.
        set(&mut dense, [11.0, 8.0], &device);
        average.update(&dense);
        let first = kernel(&average.model());
        assert!(
            (first[0] - (0.1 * 1.0 + 0.9 * 11.0)).abs() < 1e-5,
            "{first:?}"
        );
        assert!(
            (first[1] - (0.1 * -2.0 + 0.9 * 8.0)).abs() < 1e-5,
            "{first:?}"
        );
        // Updates 2..: d = min(0.5, (1+n)/(10+n)) = 2/11, 3/12, 4/13, 5/14, then 0.5 from n = 8.
        let mut expected = first[0] as f64;
        for n in 1..12u32 {
            let d = f64::min(0.5, (1.0 + n as f64) / (10.0 + n as f64));
            assert!((average.next_decay() - d).abs() < 1e-12);
            let w = n as f32;
            set(&mut dense, [w, 0.0], &device);
            average.update(&dense);
            expected = d * expected + (1.0 - d) * w as f64;
        }
        assert_eq!(average.updates(), 12);
        let last = kernel(&average.model());
        assert!(
            (last[0] as f64 - expected).abs() < 1e-4,
            "{last:?} vs {expected}"
        );
        // The average has no autodiff and the trained model is untouched.
        assert!(!average.model().kernel.val().is_require_grad());
        assert_eq!(kernel(&dense), vec![11.0, 0.0]);
        // The bias (zeros throughout) stays zero.
        let bias = f32_vec(average.model().bias.as_ref().unwrap().val());
        assert_eq!(bias, vec![0.0]);
    }

    #[test]
    fn decay_outside_zero_one_is_refused() {
        let device = Device::flex();
        let dense = DenseConfig::new(2, 1).init(&device);
        for decay in [1.0, -0.1, f64::NAN] {
            let err = WeightAverage::new(&dense, decay).unwrap_err().to_string();
            assert!(err.contains("decay must be in [0, 1)"), "{err}");
        }
    }
}
