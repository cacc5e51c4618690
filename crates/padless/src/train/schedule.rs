//! Learning-rate schedules per optimizer step: [`LrSchedule`], a [`Decay`] optionally preceded
//! by a linear warmup.
//!
//! A schedule sees the step (optimizer steps taken before this one) and the run's progress, the
//! larger of the elapsed fraction of the time budget and the fraction of the planned epochs
//! done (see [`FitConfig`](super::FitConfig)), so a run that ends on its time budget still
//! ends its decay. The trainer multiplies the scheduled rate by its plateau factor
//! ([`ReduceLrOnPlateau`](super::ReduceLrOnPlateau)).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Where a run is when a rate is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunProgress {
    /// Optimizer steps taken before this one.
    pub step: usize,
    /// The fraction of the run's budget used, in `[0, 1]` (larger values are read as 1).
    pub fraction: f64,
}

/// How the rate falls from the base rate `lr`. With warmup, step-based decays count the
/// steps after it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// `lr` at every step.
    Constant,
    /// `lr · rate^(step / decay_steps)`, with `floor(step / decay_steps)` when `staircase`
    /// (Keras' `ExponentialDecay`).
    Exponential {
        /// Factor per `decay_steps` steps.
        rate: f64,
        /// Steps per factor.
        decay_steps: usize,
        /// Whole periods only.
        #[serde(default)]
        staircase: bool,
    },
    /// `lr · factor^floor(step / every)`.
    Step {
        /// Steps per factor.
        every: usize,
        /// Factor per `every` steps.
        factor: f64,
    },
    /// `lr · max(1 − progress, floor)`: a linear fall to `floor · lr` at the end of the budget.
    Linear {
        /// The fraction of `lr` the rate never goes below.
        floor: f64,
    },
    /// `lr · (floor + (1 − floor) · (1 + cos(π · progress)) / 2)`: a half cosine from `lr` to
    /// `floor · lr` over the budget.
    Cosine {
        /// The fraction of `lr` reached at the end.
        floor: f64,
    },
    /// `lr · sqrt(steps / max(step, steps))`: constant for `steps` steps, then falling as one
    /// over the square root of the step (the Transformer's schedule, with a warmup of `steps`).
    InverseSqrt {
        /// The step where the fall starts.
        steps: usize,
    },
    /// `lr` for the first two thirds of the budget, then `lr · clamp(3 (1 − progress), floor,
    /// 1)`: a linear fall over the last third to `floor · lr`, where `lr` includes the plateau
    /// factor reached so far ("stable, then decay").
    Anneal {
        /// The fraction of the reached rate at the end.
        floor: f64,
    },
}

/// A learning-rate schedule: a [`Decay`] after an optional linear warmup of `warmup_steps`
/// steps, during which step `s` (from 0) runs at `(s + 1) / warmup_steps` of the rate.
///
/// ```
/// use padless::train::{Decay, LrSchedule, RunProgress};
/// let schedule = LrSchedule::from(Decay::Cosine { floor: 0.0 }).with_warmup(4);
/// let at = |step, fraction| schedule.rate(1.0, RunProgress { step, fraction });
/// assert_eq!(at(0, 0.0), 0.25); // warmup: 1/4
/// assert_eq!(at(3, 0.0), 1.0); // the last warmup step
/// assert!((at(10, 0.5) - 0.5).abs() < 1e-12); // half way down the cosine
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// How the rate falls.
    pub decay: Decay,
    /// Steps of linear warmup before it (0: none).
    #[serde(default)]
    pub warmup_steps: usize,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::from(Decay::Constant)
    }
}

impl From<Decay> for LrSchedule {
    fn from(decay: Decay) -> Self {
        LrSchedule {
            decay,
            warmup_steps: 0,
        }
    }
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant() -> Self {
        LrSchedule::default()
    }

    /// This schedule after a linear warmup of `steps` steps.
    pub fn with_warmup(mut self, steps: usize) -> Self {
        self.warmup_steps = steps;
        self
    }

    /// Checks the schedule's settings: factors finite and above 0, floors finite in
    /// `[0, 1]`, step counts at least 1.
    ///
    /// # Errors
    /// [`Error::Config`] naming the decay, the setting and the value found.
    pub fn validate(&self) -> Result<()> {
        let positive =
            |name: &str, value: f64| super::optimizer::positive("LrSchedule", name, value, false);
        let floor = |value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(Error::config(
                    "LrSchedule",
                    format!("expected a floor in [0, 1], found {value}"),
                ))
            }
        };
        let steps = |name: &str, value: usize| {
            if value == 0 {
                Err(Error::config(
                    "LrSchedule",
                    format!("expected {name} of at least 1, found 0"),
                ))
            } else {
                Ok(())
            }
        };
        match self.decay {
            Decay::Constant => Ok(()),
            Decay::Exponential {
                rate, decay_steps, ..
            } => {
                positive("rate", rate)?;
                steps("decay_steps", decay_steps)
            }
            Decay::Step { every, factor } => {
                positive("factor", factor)?;
                steps("every", every)
            }
            Decay::Linear { floor: f }
            | Decay::Cosine { floor: f }
            | Decay::Anneal { floor: f } => floor(f),
            Decay::InverseSqrt { steps: n } => steps("steps", n),
        }
    }

    /// The rate of a step at `at` for a base rate `lr`.
    pub fn rate(&self, lr: f64, at: RunProgress) -> f64 {
        let warm = self.warmup_steps;
        let factor = if at.step < warm {
            (at.step + 1) as f64 / warm as f64
        } else {
            1.0
        };
        let step = at.step.saturating_sub(warm);
        let p = at.fraction.clamp(0.0, 1.0);
        factor
            * match self.decay {
                Decay::Constant => lr,
                Decay::Exponential {
                    rate,
                    decay_steps,
                    staircase,
                } => {
                    let periods = step as f64 / decay_steps.max(1) as f64;
                    lr * rate.powf(if staircase { periods.floor() } else { periods })
                }
                Decay::Step { every, factor } => lr * factor.powi((step / every.max(1)) as i32),
                Decay::Linear { floor } => lr * (1.0 - p).max(floor),
                Decay::Cosine { floor } => {
                    lr * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
                }
                Decay::InverseSqrt { steps } => {
                    let steps = steps.max(1) as f64;
                    lr * (steps / (step as f64).max(steps)).sqrt()
                }
                Decay::Anneal { floor } => lr * (3.0 * (1.0 - p)).clamp(floor, 1.0),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: usize, fraction: f64) -> RunProgress {
        RunProgress { step, fraction }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }

    #[test]
    fn constant_exponential_and_step_decays_by_hand() {
        assert_eq!(LrSchedule::constant().rate(0.1, at(7, 0.9)), 0.1);
        // 0.1 · 0.5^2 after two periods of 10 steps; 0.1 · 0.5^2.5 without staircase at 25.
        let exponential = |staircase| {
            LrSchedule::from(Decay::Exponential {
                rate: 0.5,
                decay_steps: 10,
                staircase,
            })
        };
        close(exponential(true).rate(0.1, at(20, 0.0)), 0.025);
        close(exponential(true).rate(0.1, at(25, 0.0)), 0.025);
        close(
            exponential(false).rate(0.1, at(25, 0.0)),
            0.1 * 0.5f64.powf(2.5),
        );
        // factor 0.1 every 3 steps: step 7 is in the third period, 1.0 · 0.1^2.
        let step = LrSchedule::from(Decay::Step {
            every: 3,
            factor: 0.1,
        });
        close(step.rate(1.0, at(7, 0.0)), 0.01);
        close(step.rate(1.0, at(2, 0.0)), 1.0);
    }

    #[test]
    fn linear_falls_to_its_floor_and_cosine_follows_the_half_cosine() {
        let linear = LrSchedule::from(Decay::Linear { floor: 0.01 });
        close(linear.rate(2e-3, at(0, 0.0)), 2e-3);
        close(linear.rate(2e-3, at(0, 0.25)), 1.5e-3);
        close(linear.rate(2e-3, at(0, 0.995)), 2e-5);
        close(linear.rate(2e-3, at(0, 1.5)), 2e-5);
        let cosine = LrSchedule::from(Decay::Cosine { floor: 0.1 });
        close(cosine.rate(1.0, at(0, 0.0)), 1.0);
        // cos(π/2) = 0: 0.1 + 0.9 · 0.5.
        close(cosine.rate(1.0, at(0, 0.5)), 0.55);
        // cos(π/3) = 1/2: 0.1 + 0.9 · 0.75.
        assert!((cosine.rate(1.0, at(0, 1.0 / 3.0)) - 0.775).abs() < 1e-12);
        close(cosine.rate(1.0, at(0, 1.0)), 0.1);
    }

    #[test]
    fn inverse_square_root_holds_then_falls_as_one_over_the_root() {
        let schedule = LrSchedule::from(Decay::InverseSqrt { steps: 4 });
        close(schedule.rate(1.0, at(0, 0.0)), 1.0);
        close(schedule.rate(1.0, at(4, 0.0)), 1.0);
        close(schedule.rate(1.0, at(16, 0.0)), 0.5);
        close(schedule.rate(1.0, at(64, 0.0)), 0.25);
    }

    #[test]
    fn anneal_keeps_the_rate_for_two_thirds_then_falls_to_its_floor() {
        let schedule = LrSchedule::from(Decay::Anneal { floor: 0.01 });
        let rate = |p| schedule.rate(5e-4, at(0, p));
        close(rate(0.0), 5e-4);
        close(rate(0.6), 5e-4);
        // 3 (1 − 5/6) = 1/2 of the rate; 3 (1 − 0.9) = 0.3 of it.
        assert!((rate(5.0 / 6.0) - 2.5e-4).abs() < 1e-15);
        assert!((rate(0.9) - 1.5e-4).abs() < 1e-15);
        assert!((rate(0.999) - 5e-6).abs() < 1e-15);
        assert!((rate(1.2) - 5e-6).abs() < 1e-15);
    }

    #[test]
    fn warmup_ramps_linearly_and_step_decays_count_from_its_end() {
        let schedule = LrSchedule::from(Decay::Step {
            every: 2,
            factor: 0.5,
        })
        .with_warmup(4);
        let rates: Vec<f64> = (0..8).map(|s| schedule.rate(1.0, at(s, 0.0))).collect();
        assert_eq!(rates, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5, 0.5]);
        // A warmed-up linear decay: the warmup factor times the decay at the run's progress.
        let linear = LrSchedule::from(Decay::Linear { floor: 0.0 }).with_warmup(2);
        close(linear.rate(1.0, at(0, 0.5)), 0.25);
        close(linear.rate(1.0, at(5, 0.5)), 0.5);
    }

    #[test]
    fn schedules_read_from_json_and_reject_unknown_fields() {
        let schedule: LrSchedule = serde_json::from_str(
            r#"{"decay": {"kind": "cosine", "floor": 0.0}, "warmup_steps": 100}"#,
        )
        .unwrap();
        assert_eq!(
            schedule,
            LrSchedule::from(Decay::Cosine { floor: 0.0 }).with_warmup(100)
        );
        let err =
            serde_json::from_str::<LrSchedule>(r#"{"decay": {"kind": "constant"}, "warmup": 3}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `warmup`"), "{err}");
    }
}
