//! [`OptimizerConfig`] (Adam, fused on the CPU backend as [`FusedAdam`]; burn's AdamW, SGD
//! with momentum, RMSprop; Keras defaults).

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, RmsPropConfig, SgdConfig};
use serde::{Deserialize, Serialize};

use super::FusedAdam;
use crate::error::{Error, Result};

/// An optimizer and its settings. Epsilons default to Keras' 1e-7 (burn's own default is
/// 1e-5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Adam.
    Adam {
        /// β₁ (0.9).
        #[serde(default = "beta_1")]
        beta_1: f32,
        /// β₂ (0.999).
        #[serde(default = "beta_2")]
        beta_2: f32,
        /// ε (1e-7).
        #[serde(default = "epsilon")]
        epsilon: f32,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        /// Weight decay (0.004, as Keras).
        #[serde(default = "weight_decay")]
        weight_decay: f32,
    },
    /// Stochastic gradient descent with optional momentum.
    Sgd {
        /// Momentum (0 = none).
        #[serde(default)]
        momentum: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
    },
    /// RMSprop.
    RmsProp {
        /// Decay of the squared-gradient average (0.9, as Keras `rho`).
        #[serde(default = "rho")]
        rho: f32,
    },
}

fn beta_1() -> f32 {
    0.9
}
fn beta_2() -> f32 {
    0.999
}
fn epsilon() -> f32 {
    1e-7
}
fn weight_decay() -> f32 {
    0.004
}
fn rho() -> f32 {
    0.9
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adam {
            beta_1: beta_1(),
            beta_2: beta_2(),
            epsilon: epsilon(),
        }
    }
}

/// `value` in `[0, 1)`, else an error naming the optimizer's setting.
fn unit_interval(optimizer: &str, name: &str, value: f64) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(
            optimizer,
            format!("expected {name} in [0, 1), found {value}"),
        ))
    }
}

/// `value` finite and above 0 (`or_zero`: at least 0), else an error naming the setting.
pub(crate) fn positive(what: &str, name: &str, value: f64, or_zero: bool) -> Result<()> {
    let fits = value.is_finite() && (value > 0.0 || (or_zero && value == 0.0));
    if fits {
        Ok(())
    } else {
        let range = if or_zero {
            "at least 0"
        } else {
            "greater than 0"
        };
        Err(Error::config(
            what,
            format!("expected a finite {name} {range}, found {value}"),
        ))
    }
}

impl OptimizerConfig {
    /// Checks the settings: betas, momentum and `rho` in `[0, 1)`, epsilon finite and above 0,
    /// weight decay finite and at least 0.
    ///
    /// # Errors
    /// [`Error::Config`] naming the optimizer, the setting, the range and the value found.
    pub fn validate(&self) -> Result<()> {
        match *self {
            OptimizerConfig::Adam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                unit_interval("Adam", "beta_1", f64::from(beta_1))?;
                unit_interval("Adam", "beta_2", f64::from(beta_2))?;
                positive("Adam", "epsilon", f64::from(epsilon), false)
            }
            OptimizerConfig::AdamW { weight_decay } => {
                positive("AdamW", "weight_decay", f64::from(weight_decay), true)
            }
            OptimizerConfig::Sgd { momentum, .. } => unit_interval("SGD", "momentum", momentum),
            OptimizerConfig::RmsProp { rho } => unit_interval("RMSprop", "rho", f64::from(rho)),
        }
    }

    /// The burn optimizer, clipping each parameter's gradient to `clip_norm` when given. Adam
    /// is [`FusedAdam`] (the same update as burn's `Adam`, one in-place pass per parameter on
    /// the CPU backend).
    pub fn init(&self, clip_norm: Option<f32>) -> ModuleOptimizer {
        let clip = clip_norm.map(GradientClippingConfig::Norm);
        match *self {
            OptimizerConfig::Adam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                // The norm clip runs inside the fused pass.
                ModuleOptimizer::from(
                    FusedAdam::new(beta_1, beta_2, epsilon).with_clip_norm(clip_norm),
                )
            }
            OptimizerConfig::AdamW { weight_decay } => AdamWConfig::new()
                .with_epsilon(epsilon())
                .with_weight_decay(weight_decay)
                .with_grad_clipping(clip)
                .init(),
            OptimizerConfig::Sgd { momentum, nesterov } => SgdConfig::new()
                .with_momentum((momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                        .with_nesterov(nesterov)
                }))
                .with_gradient_clipping(clip)
                .init(),
            OptimizerConfig::RmsProp { rho } => RmsPropConfig::new()
                .with_alpha(rho)
                .with_momentum(0.0)
                .with_epsilon(epsilon())
                .with_grad_clipping(clip)
                .init(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_configs_read_from_json_with_keras_defaults() {
        let json = r#"{"name": "sgd", "momentum": 0.9}"#;
        let sgd: OptimizerConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            sgd,
            OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false
            }
        );
    }
}
