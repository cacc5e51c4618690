//! The softmax over the rows of a row-major matrix and its gradient, vectorised through
//! run-time SIMD dispatch: [`softmax_rows_in_place`] and [`softmax_backward_rows_in_place`].
//!
//! A layer's softmax activation (`Dense(V, softmax)`, Keras' usual output layer) runs here on
//! the CPU backend: one pass per row forward and one backward, against the five tensor
//! operations forward (maximum, difference, `exp` one element at a time, sum, quotient) and
//! about as many again backward that a composite softmax costs.

use crate::real::LANES;
use crate::real::Real;

/// Replaces each row `x` of `width` values by `softmax(x)`: `e^(x_i - max x) / Σ_j
/// e^(x_j - max x)`. The maximum is subtracted first, so large scores cannot overflow; a row
/// holding NaN gives NaN.
///
/// # Panics
/// If `width` is 0 or does not divide the length.
///
/// ```
/// let mut x = vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0];
/// padless_kernels::softmax_rows_in_place(&mut x, 3);
/// let total = 1.0 + 1f32.exp() + 2f32.exp();
/// assert!((x[2] - 2f32.exp() / total).abs() < 1e-6);
/// assert!((x[3] - 1.0 / 3.0).abs() < 1e-6);
/// ```
pub fn softmax_rows_in_place<T: Real>(x: &mut [T], width: usize) {
    check_rows(x.len(), width, "softmax");
    crate::isa::dispatch(Softmax { x, width });
}

/// The gradient through `y = softmax(x)` row by row: replaces every row of `d_y` by
/// `y ⊙ (d_y - Σ_j d_y_j y_j)`.
///
/// # Panics
/// If the slices differ in length, or `width` is 0 or does not divide it.
///
/// ```
/// // y = (0.25, 0.75), d_y = (1, 0): Σ d_y y = 0.25, d_x = (0.25 · 0.75, 0.75 · -0.25).
/// let y = [0.25f32, 0.75];
/// let mut d = vec![1.0f32, 0.0];
/// padless_kernels::softmax_backward_rows_in_place(&y, &mut d, 2);
/// assert_eq!(d, [0.1875, -0.1875]);
/// ```
pub fn softmax_backward_rows_in_place<T: Real>(y: &[T], d_y: &mut [T], width: usize) {
    assert_eq!(
        y.len(),
        d_y.len(),
        "softmax backward: {} outputs but {} gradients",
        y.len(),
        d_y.len()
    );
    check_rows(y.len(), width, "softmax backward");
    crate::isa::dispatch(SoftmaxBackward { y, d_y, width });
}

fn check_rows(len: usize, width: usize, what: &str) {
    assert!(
        width > 0 && len.is_multiple_of(width),
        "{what}: rows of {width} values, but {len} values"
    );
}

struct Softmax<'a, T> {
    x: &'a mut [T],
    width: usize,
}

impl<T: Real> pulp::WithSimd for Softmax<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for row in self.x.chunks_exact_mut(self.width) {
            // Lane-wise maximum and sum (a serial float reduction would not vectorise).
            let mut lanes = [row[0]; LANES];
            let mut chunks = row.chunks_exact(LANES);
            for chunk in &mut chunks {
                for (m, &v) in lanes.iter_mut().zip(chunk) {
                    *m = if v > *m { v } else { *m };
                }
            }
            let max = chunks
                .remainder()
                .iter()
                .chain(&lanes)
                .fold(row[0], |m, &v| if v > m { v } else { m });
            for v in row.iter_mut() {
                *v = (*v - max).exp();
            }
            let total = lane_sum(row.iter().copied());
            let scale = T::ONE / total;
            for v in row.iter_mut() {
                *v = *v * scale;
            }
        }
    }
}

/// The sum of `values` through [`LANES`] partial sums.
#[inline(always)]
fn lane_sum<T: Real>(values: impl ExactSizeIterator<Item = T>) -> T {
    let mut lanes = [T::ZERO; LANES];
    for (i, v) in values.enumerate() {
        lanes[i % LANES] += v;
    }
    lanes.iter().fold(T::ZERO, |s, &v| s + v)
}

struct SoftmaxBackward<'a, T> {
    y: &'a [T],
    d_y: &'a mut [T],
    width: usize,
}

impl<T: Real> pulp::WithSimd for SoftmaxBackward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let rows = self.y.chunks_exact(self.width);
        for (y, d) in rows.zip(self.d_y.chunks_exact_mut(self.width)) {
            let dot = lane_sum(y.iter().zip(d.iter()).map(|(&y, &d)| y * d));
            for (d, &y) in d.iter_mut().zip(y) {
                *d = y * (*d - dot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook softmax in f64.
    fn reference(row: &[f64]) -> Vec<f64> {
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }

    #[test]
    fn rows_match_the_textbook_softmax_at_odd_widths_and_large_scores() {
        crate::isa::for_each_available(|_| {
            for width in [1, 3, 16, 17, 40] {
                let rows = 5;
                let x: Vec<f64> = (0..rows * width)
                    .map(|i| {
                        ((i * 7919) % 97) as f64 * 0.31 - 15.0 + if i % 5 == 0 { 80.0 } else { 0.0 }
                    })
                    .collect();
                let mut got: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                softmax_rows_in_place(&mut got, width);
                let mut got64 = x.clone();
                softmax_rows_in_place(&mut got64, width);
                for (r, row) in x.chunks(width).enumerate() {
                    // The f32 run against the softmax of its own (rounded) inputs.
                    let rounded: Vec<f64> = row.iter().map(|&v| v as f32 as f64).collect();
                    let (want, want32) = (reference(row), reference(&rounded));
                    let sum: f32 = got[r * width..(r + 1) * width].iter().sum();
                    assert!((sum - 1.0).abs() < 1e-6, "row {r} sums to {sum}");
                    for i in 0..width {
                        let (g, w) = (got[r * width + i] as f64, want32[i]);
                        assert!((g - w).abs() <= 1e-6 * w.max(1e-3), "{g} vs {w}");
                        assert!((got64[r * width + i] - want[i]).abs() <= 1e-15, "f64 {i}");
                    }
                }
            }
        });
    }

    #[test]
    fn backward_is_the_jacobian_product() {
        crate::isa::for_each_available(|_| {
            // J[i][j] = y_i (δ_ij - y_j), so d_x_i = Σ_j d_y_j J[j][i] = y_i (d_y_i - Σ_j d_y_j y_j).
            let width = 6;
            let x: Vec<f64> = (0..2 * width)
                .map(|i| (i as f64 * 0.7).sin() * 3.0)
                .collect();
            let mut y = x.clone();
            softmax_rows_in_place(&mut y, width);
            let d_y: Vec<f64> = (0..2 * width).map(|i| i as f64 - 4.0).collect();
            let mut got = d_y.clone();
            softmax_backward_rows_in_place(&y, &mut got, width);
            for r in 0..2 {
                for i in 0..width {
                    let yi = y[r * width + i];
                    let want: f64 = (0..width)
                        .map(|j| {
                            let yj = y[r * width + j];
                            let delta = if i == j { 1.0 } else { 0.0 };
                            d_y[r * width + j] * yj * (delta - yi)
                        })
                        .sum();
                    assert!((got[r * width + i] - want).abs() < 1e-12, "row {r} {i}");
                }
            }
        });
    }

    #[test]
    #[should_panic(expected = "rows of 4 values, but 6 values")]
    fn a_width_that_does_not_divide_the_length_panics() {
        softmax_rows_in_place(&mut [0.0f32; 6], 4);
    }
}
