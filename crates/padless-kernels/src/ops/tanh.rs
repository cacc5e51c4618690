//! Element-wise `tanh` and its gradient over whole slices, vectorised through run-time SIMD
//! dispatch: [`tanh_in_place`] and [`tanh_backward_in_place`].
//!
//! The same branch-free `tanh` as the fused cells ([`Real::tanh`]), for a layer's `tanh`
//! activation on the CPU backend (the standard library's `tanhf` is a scalar call per
//! element).

use crate::real::LANES;
use crate::real::Real;

/// Replaces every `x` by `tanh(x)`.
///
/// ```
/// let mut x = vec![0.0f32, 0.5, -3.0];
/// padless_kernels::tanh_in_place(&mut x);
/// assert_eq!(x[0], 0.0);
/// assert!((x[1] - 0.5f32.tanh()).abs() < 1e-6);
/// assert!((x[2] - (-3.0f32).tanh()).abs() < 1e-6);
/// ```
pub fn tanh_in_place<T: Real>(x: &mut [T]) {
    crate::isa::dispatch(Tanh { x });
}

/// The gradient through `y = tanh(x)`: replaces every `d_y` by `d_y (1 - y^2)`.
///
/// # Panics
/// If the slices differ in length.
///
/// ```
/// let y = [0.5f32, 0.0];
/// let mut d = vec![2.0f32, 1.0];
/// padless_kernels::tanh_backward_in_place(&y, &mut d);
/// assert_eq!(d, [1.5, 1.0]);
/// ```
pub fn tanh_backward_in_place<T: Real>(y: &[T], d_y: &mut [T]) {
    assert_eq!(
        y.len(),
        d_y.len(),
        "tanh backward: {} outputs but {} gradients",
        y.len(),
        d_y.len()
    );
    crate::isa::dispatch(TanhBackward { y, d_y });
}

struct Tanh<'a, T> {
    x: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for Tanh<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        // Chunks of LANES through a local array (as in the cells): full-width vector code.
        let mut chunks = self.x.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            let mut a = [T::ZERO; LANES];
            a.copy_from_slice(chunk);
            for v in a.iter_mut() {
                *v = v.tanh();
            }
            chunk.copy_from_slice(&a);
        }
        for v in chunks.into_remainder() {
            *v = v.tanh();
        }
    }
}

struct TanhBackward<'a, T> {
    y: &'a [T],
    d_y: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for TanhBackward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (d, &y) in self.d_y.iter_mut().zip(self.y) {
            *d = *d * (T::ONE - y * y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_matches_std_over_a_range_and_odd_lengths() {
        crate::isa::for_each_available(|_| {
            for n in [0, 1, 15, 16, 17, 100] {
                let mut x: Vec<f32> = (0..n).map(|i| (i as f32 - 50.0) * 0.173).collect();
                let expected: Vec<f64> = x.iter().map(|&v| (v as f64).tanh()).collect();
                tanh_in_place(&mut x);
                for (got, want) in x.iter().zip(&expected) {
                    assert!(
                        (*got as f64 - want).abs() <= 2e-7 * want.abs().max(1e-3),
                        "{got} vs {want}"
                    );
                }
            }
        });
    }

    #[test]
    fn tanh_saturates_and_keeps_sign_of_zero() {
        crate::isa::for_each_available(|_| {
            let mut x = vec![100.0f32, -100.0, 0.0, -0.0, 1e-30];
            tanh_in_place(&mut x);
            assert_eq!(&x[..3], &[1.0, -1.0, 0.0]);
            assert!(x[3] == 0.0);
            assert_eq!(x[4], 1e-30);
        });
    }

    #[test]
    fn backward_is_one_minus_y_squared_times_the_gradient() {
        crate::isa::for_each_available(|_| {
            let y: Vec<f64> = (0..37).map(|i| (i as f64 / 37.0) * 1.8 - 0.9).collect();
            let mut d: Vec<f64> = (0..37).map(|i| i as f64 - 3.0).collect();
            let expected: Vec<f64> = y.iter().zip(&d).map(|(y, d)| d * (1.0 - y * y)).collect();
            tanh_backward_in_place(&y, &mut d);
            assert_eq!(d, expected);
        });
    }
}
