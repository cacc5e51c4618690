//! [`WeightAverage`]: an exponential moving average of a model's weights (Polyak averaging,
//! Keras' `use_ema`, TensorFlow's `ExponentialMovingAverage`).
//!
//! Training moves the weights with the noise of each batch; the average of the last few
//! thousand steps usually predicts better than the last step alone. The average is a second
//! copy of the model, without autodiff, updated after each optimizer step and evaluated or
//! saved in place of the trained model.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// An exponential moving average of a model's float parameters.
///
/// After `n` updates the average moves towards the model's current weights `w` as
/// `avg = d * avg + (1 - d) * w` with `d = min(decay, (1 + n) / (10 + n))`: the warm-up
/// (TensorFlow's `num_updates`) lets the first updates forget the initial weights quickly.
/// Integer and boolean parameters are not averaged (they keep the value of the copy taken by
/// [`WeightAverage::new`]).
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
    average: M,
    decay: f64,
    updates: u64,
}

impl<M: Module> WeightAverage<M> {
    /// Starts the average at `model`'s current weights (a copy without autodiff).
    ///
    /// # Errors
    /// [`Error::Config`] when `decay` is not in `[0, 1)`.
    pub fn new(model: &M, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::Config {
                layer: "WeightAverage".into(),
                message: format!("decay must be in [0, 1), found {decay}"),
            });
        }
        Ok(WeightAverage {
            average: model.valid(),
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
        let mut current = CurrentWeights(HashMap::new());
        model.visit(&mut current);
        let mut blend = Blend {
            current: current.0,
            keep: self.next_decay(),
        };
        let average = self.average.clone();
        self.average = average.map(&mut blend);
        self.updates += 1;
    }

    /// The averaged model (no autodiff).
    pub fn model(&self) -> &M {
        &self.average
    }

    /// Number of updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }
}

/// Each float parameter's current value, flattened, without autodiff.
struct CurrentWeights(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for CurrentWeights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().inner();
        let n = value.shape().num_elements();
        self.0.insert(param.id, value.reshape([n]));
    }
}

/// `avg = keep * avg + (1 - keep) * current`, parameter by parameter.
struct Blend {
    current: HashMap<ParamId, Tensor<1>>,
    keep: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self.current.remove(&param.id).unwrap_or_else(|| {
            panic!(
                "WeightAverage::update: parameter {} is not in the model",
                param.id
            )
        });
        let keep = self.keep;
        param.map(|average| {
            let dims = average.dims();
            let n = average.shape().num_elements();
            assert_eq!(
                current.dims()[0],
                n,
                "WeightAverage::update: parameter {dims:?} changed size"
            );
            average.mul_scalar(keep) + current.reshape(dims).mul_scalar(1.0 - keep)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::DenseConfig;
    use crate::tensor_util::f32_vec;
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
        let first = kernel(average.model());
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
        let last = kernel(average.model());
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
