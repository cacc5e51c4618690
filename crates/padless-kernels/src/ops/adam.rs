//! [`adam_update`]: one Adam step of a parameter, in place, in one pass over its slices.
//!
//! A tensor library runs Adam as about a dozen element-wise operations per parameter, each
//! writing a new tensor (burn's CPU backend also zero-fills and realigns each one): at 4
//! million parameters that is hundreds of megabytes of memory traffic per step. Here the
//! parameter, both moments and the gradient are read once and the first three written once,
//! in place, on two threads for large parameters.
//!
//! The arithmetic is burn's `Adam` (`burn::optim::Adam`) operation by operation, with the
//! same scalars rounded the same way, so the two agree to the last bit on IEEE hardware:
//!
//! ```text
//! m <- m b1 + g (1 - b1)
//! v <- v b2 + g^2 (1 - b2)
//! p <- p - lr (m c) / (sqrt(v) + eps s)     s = sqrt(1 - b2^t), c = s / (1 - b1^t)
//! ```

use crate::real::Real;
use crate::threads::{Shared, run_team};

/// The settings of one Adam step. `time` is the step's number, from 1 (bias correction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// β₁, the decay of the first moment.
    pub beta_1: f32,
    /// β₂, the decay of the second moment.
    pub beta_2: f32,
    /// ε, added to `sqrt(v)` (scaled by the bias correction, as burn does).
    pub epsilon: f32,
    /// The step's number, 1 for the first step.
    pub time: u32,
    /// Clip the gradient's L2 norm to this first (scaled by [`norm_clip_scale`], as burn's
    /// `GradientClipping::Norm`); `None` uses it as it is.
    pub clip_norm: Option<f32>,
}

/// The factor that clips a gradient's L2 norm to `threshold`: `min(threshold / (‖g‖ + τ),
/// 1)` with τ the smallest positive normal `f32`, as burn's `GradientClipping::Norm`
/// computes it (the squares summed in `f64` here, 16 lanes apart, so the factor can differ
/// from burn's in its last bits).
///
/// ```
/// // ‖(3, 4)‖ = 5: clipped to 1 the gradient is scaled by 1/5; below the threshold, by 1.
/// assert!((padless_kernels::norm_clip_scale(&[3.0f32, 4.0], 1.0) - 0.2).abs() < 1e-7);
/// assert_eq!(padless_kernels::norm_clip_scale(&[3.0f32, 4.0], 10.0), 1.0);
/// ```
pub fn norm_clip_scale<T: Real>(grad: &[T], threshold: f32) -> f32 {
    let mut lanes = [0f64; 16];
    let chunks = grad.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &g) in lanes.iter_mut().zip(chunk) {
            let g = g.to_f64();
            *lane += g * g;
        }
    }
    let squares: f64 =
        lanes.iter().sum::<f64>() + rest.iter().map(|&g| g.to_f64() * g.to_f64()).sum::<f64>();
    let norm = squares.sqrt() as f32;
    (threshold / (norm + f32::MIN_POSITIVE)).min(1.0)
}

/// Parameters from this size on are updated by two threads (when allowed two), each owning
/// half of the slices.
const TWO_THREADS_FROM: usize = 1 << 18;

/// The step's scalars in the element type, computed as burn computes them (in `f32`).
#[derive(Clone, Copy)]
struct Scalars<T> {
    beta_1: T,
    one_minus_beta_1: T,
    beta_2: T,
    one_minus_beta_2: T,
    combined: T,
    epsilon: T,
    lr: T,
    /// The gradient's factor ([`AdamStep::clip_norm`]); exactly 1 where it is not clipped.
    grad_scale: T,
}

impl<T: Real> Scalars<T> {
    fn new(step: &AdamStep, grad_scale: f32) -> Self {
        let time = step.time.min(i32::MAX as u32) as i32;
        let correction_2 = (1.0 - step.beta_2.powi(time)).sqrt();
        let combined = correction_2 / (1.0 - step.beta_1.powi(time));
        let t = |x: f32| T::from_f64(x as f64);
        Scalars {
            beta_1: t(step.beta_1),
            one_minus_beta_1: t(1.0 - step.beta_1),
            beta_2: t(step.beta_2),
            one_minus_beta_2: t(1.0 - step.beta_2),
            combined: t(combined),
            epsilon: t(step.epsilon * correction_2),
            lr: T::from_f64(step.lr),
            grad_scale: t(grad_scale),
        }
    }
}

/// One Adam step of a parameter: updates `param`, the first moment `m` and the second moment
/// `v` in place from the gradient `grad` (all of one length, any shape flattened). The
/// moments of a parameter's first step are zeros. Large parameters are split over `threads`
/// threads (1, or 2 for the thread pair), each owning a part of the slices; the result does
/// not depend on the split.
///
/// # Panics
/// If the slices differ in length or `step.time` is 0.
///
/// ```
/// use padless_kernels::{AdamStep, adam_update};
///
/// let step = AdamStep { lr: 0.1, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, time: 1, clip_norm: None };
/// let (mut p, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.0; 2], vec![0.0; 2]);
/// adam_update(&step, &mut p, &[0.5, -4.0], &mut m, &mut v, 1);
/// // The first step moves each weight by about lr against the gradient's sign.
/// assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6);
/// // (1 - 0.999 in f32 is 0.00099998713, as burn rounds it.)
/// assert!((m[0] - 0.05).abs() < 1e-7 && (v[1] - 0.016).abs() < 1e-6);
/// ```
pub fn adam_update<T: Real>(
    step: &AdamStep,
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
    threads: usize,
) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adam: parameter of {n} values, gradient {}, moments {} and {}",
        grad.len(),
        m.len(),
        v.len()
    );
    assert!(step.time >= 1, "adam: steps are numbered from 1, got 0");
    let scale = step
        .clip_norm
        .map_or(1.0, |threshold| norm_clip_scale(grad, threshold));
    let s = Scalars::<T>::new(step, scale);
    if n < TWO_THREADS_FROM || threads < 2 {
        update_part(s, param, grad, m, v);
        return;
    }
    let (param_s, m_s, v_s) = (Shared::new(param), Shared::new(m), Shared::new(v));
    run_team(2, |worker| {
        let (a, b) = worker.part(n);
        let len = b - a;
        // SAFETY: each thread updates its own half `a..b` of the three buffers (lengths
        // checked above).
        let (param, m, v) = unsafe {
            (
                param_s.slice_mut(a, len),
                m_s.slice_mut(a, len),
                v_s.slice_mut(a, len),
            )
        };
        update_part(s, param, &grad[a..b], m, v);
    });
}

fn update_part<T: Real>(s: Scalars<T>, param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T]) {
    crate::isa::dispatch(Update {
        s,
        param,
        grad,
        m,
        v,
    });
}

struct Update<'a, T> {
    s: Scalars<T>,
    param: &'a mut [T],
    grad: &'a [T],
    m: &'a mut [T],
    v: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for Update<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        // Two loops, so the common unclipped one has no multiply and no branch.
        if self.s.grad_scale == T::from_f64(1.0) {
            self.run::<false>();
        } else {
            self.run::<true>();
        }
    }
}

impl<T: Real> Update<'_, T> {
    #[inline(always)]
    fn run<const SCALED: bool>(self) {
        let s = self.s;
        let moments = self.m.iter_mut().zip(self.v.iter_mut());
        for ((p, &g), (m, v)) in self.param.iter_mut().zip(self.grad).zip(moments) {
            // burn's clipping multiplies the gradient by the factor, in its own type.
            let g = if SCALED { g * s.grad_scale } else { g };
            let m_new = *m * s.beta_1 + g * s.one_minus_beta_1;
            let v_new = *v * s.beta_2 + (g * g) * s.one_minus_beta_2;
            let update = (m_new * s.combined) / (v_new.sqrt() + s.epsilon);
            *p = *p - update * s.lr;
            *m = m_new;
            *v = v_new;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam written out in f64 from the paper's formulas (bias-corrected moments).
    fn reference(steps: &[Vec<f64>], p0: &[f64], lr: f64, b1: f64, b2: f64, eps: f64) -> Vec<f64> {
        let n = p0.len();
        let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; n], vec![0.0; n]);
        for (t, g) in steps.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..n {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let m_hat = m[i] / (1.0 - b1.powi(t));
                let v_hat = v[i] / (1.0 - b2.powi(t));
                // burn's epsilon is scaled by sqrt(1 - b2^t): the same as eps outside v_hat.
                p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
        p
    }

    fn gradients(n: usize, steps: usize) -> Vec<Vec<f64>> {
        (0..steps)
            .map(|t| {
                (0..n)
                    .map(|i| ((i * 7 + t * 13) % 23) as f64 * 0.1 - 1.1)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_the_textbook_formulas_over_several_steps() {
        crate::isa::for_each_available(|_| {
            // 2^18 + 3 values: the two-thread split with an odd half.
            for n in [1, 17, TWO_THREADS_FROM + 3] {
                let steps = gradients(n, 5);
                let p0: Vec<f64> = (0..n).map(|i| (i % 11) as f64 * 0.3 - 1.5).collect();
                let want = reference(&steps, &p0, 0.01, 0.9, 0.999, 1e-7);
                let run = |threads: usize| {
                    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
                    for (t, g) in steps.iter().enumerate() {
                        let step = AdamStep {
                            lr: 0.01,
                            beta_1: 0.9,
                            beta_2: 0.999,
                            epsilon: 1e-7,
                            time: t as u32 + 1,
                            clip_norm: None,
                        };
                        adam_update(&step, &mut p, g, &mut m, &mut v, threads);
                    }
                    p
                };
                let p = run(2);
                // The split over threads changes no value.
                assert!(run(1) == p, "n {n}");
                for i in [0, n / 2, n - 1] {
                    // The scalars are rounded to f32 as burn rounds them: 1 - 0.999^t loses about
                    // 1e-5 relative to cancellation, so the five updates of at most lr = 0.01
                    // each may differ by a few 1e-7 (measured: 9e-8).
                    assert!(
                        (p[i] - want[i]).abs() < 1e-6,
                        "n {n}, p[{i}]: {} vs {}",
                        p[i],
                        want[i]
                    );
                }
            }
        });
    }

    #[test]
    #[should_panic(expected = "gradient 2")]
    fn rejects_slices_of_different_lengths() {
        let step = AdamStep {
            lr: 0.1,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            time: 1,
            clip_norm: None,
        };
        adam_update(
            &step,
            &mut [0.0f32; 3],
            &[0.0; 2],
            &mut [0.0; 3],
            &mut [0.0; 3],
            1,
        );
    }

    /// A clipped step is the unclipped step of the gradient times the clipping factor (bit
    /// for bit, as burn's clipping and then its Adam), the factor brings the norm (summed
    /// here in f64, in order) to a third of itself when the threshold is a third, and a
    /// gradient under the threshold is left alone.
    #[test]
    fn a_clipped_step_is_the_step_of_the_scaled_gradient() {
        crate::isa::for_each_available(|_| {
            for n in [5, 40, TWO_THREADS_FROM + 3] {
                let grad: Vec<f32> = (0..n).map(|i| ((i * 7) % 23) as f32 * 0.1 - 1.1).collect();
                let norm: f64 = grad
                    .iter()
                    .map(|&g| f64::from(g) * f64::from(g))
                    .sum::<f64>()
                    .sqrt();
                let threshold = (norm / 3.0) as f32;
                let scale = norm_clip_scale(&grad, threshold);
                assert!(
                    (f64::from(scale) - 1.0 / 3.0).abs() < 1e-6,
                    "n {n}: {scale}"
                );
                assert_eq!(norm_clip_scale(&grad, (norm * 2.0) as f32), 1.0);
                let p0: Vec<f32> = (0..n).map(|i| (i % 11) as f32 * 0.3 - 1.5).collect();
                let (m0, v0): (Vec<f32>, Vec<f32>) =
                    (0..n).map(|i| (0.01 * (i % 3) as f32, 0.02)).unzip();
                let step = |clip_norm| AdamStep {
                    lr: 0.01,
                    beta_1: 0.9,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                    time: 3,
                    clip_norm,
                };
                let run = |clip_norm, grad: &[f32]| {
                    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                    adam_update(&step(clip_norm), &mut p, grad, &mut m, &mut v, 2);
                    (p, m, v)
                };
                let scaled: Vec<f32> = grad.iter().map(|&g| g * scale).collect();
                assert!(run(Some(threshold), &grad) == run(None, &scaled), "n {n}");
                assert!(
                    run(Some((norm * 2.0) as f32), &grad) == run(None, &grad),
                    "n {n}"
                );
                assert!(
                    run(Some(threshold), &grad) != run(None, &grad),
                    "n {n}: clipping changed nothing"
                );
            }
        });
    }
}
