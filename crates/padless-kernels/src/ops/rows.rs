//! The element-wise ends of a Transformer block over rows of packed tokens, each one pass on
//! one or two threads: dropout drawn from a hash ([`ElementDropout`]), alone or after a ReLU
//! ([`dropout_forward`], [`dropout_backward`]), and the residual sum `x + dropout(y)`
//! followed by layer normalisation ([`add_norm_forward`], [`add_norm_backward`]).
//!
//! Composed from tensor operations, `LayerNorm(x + dropout(y))` is a random mask drawn into
//! a tensor of its own, a product, a sum, and the normalisation's passes, each writing a new
//! tensor, and as many again backward. Here the forward pass reads `x` and `y` once and
//! writes the output and each row's mean and inverse standard deviation; the backward pass
//! recomputes the sum from `x` and `y` and writes both gradients. Which elements dropout
//! keeps is a hash of a seed and the element's index, so the backward pass drops the same
//! elements without a stored mask, and one or two threads give the same bits.

use crate::real::{LANES, Real};
use crate::threads::{Shared, run_team};

/// Elements below which a call runs on one thread (a thread start costs more).
const TEAM_MIN_ELEMENTS: usize = 1 << 15;

/// Inverted dropout over the elements of a buffer: element `i` is kept, and scaled by
/// `1 / (1 - rate)`, when a 32-bit hash of `seed` and `i` falls below `(1 - rate) 2^32`, else
/// set to 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElementDropout {
    /// The probability of dropping an element, in `[0, 1)`.
    pub rate: f64,
    /// Selects the dropped elements.
    pub seed: u64,
}

impl ElementDropout {
    /// Dropout at `rate` with the elements selected by `seed`.
    ///
    /// # Panics
    /// If `rate` is outside `[0, 1)`.
    pub fn new(rate: f64, seed: u64) -> Self {
        assert!(
            (0.0..1.0).contains(&rate),
            "dropout: the rate must be in [0, 1), found {rate}"
        );
        ElementDropout { rate, seed }
    }

    /// Whether element `index` is kept.
    ///
    /// ```
    /// let d = padless_kernels::ElementDropout::new(0.25, 7);
    /// let kept = (0..100_000).filter(|&i| d.keeps(i)).count();
    /// assert!((kept as f64 / 100_000.0 - 0.75).abs() < 0.01);
    /// ```
    #[inline(always)]
    pub fn keeps(&self, index: usize) -> bool {
        draw(self.seed, index) < self.threshold()
    }

    /// A kept element's factor, `1 / (1 - rate)`.
    pub fn scale(&self) -> f64 {
        1.0 / (1.0 - self.rate)
    }

    #[inline(always)]
    fn threshold(&self) -> u64 {
        ((1.0 - self.rate) * 4_294_967_296.0) as u64
    }

    /// The factors (`scale` or 0) of elements `start..start + out.len()`.
    #[inline(always)]
    fn factors<T: Real>(&self, start: usize, out: &mut [T]) {
        let (threshold, scale) = (self.threshold(), T::from_f64(self.scale()));
        for (i, f) in out.iter_mut().enumerate() {
            *f = if draw(self.seed, start + i) < threshold {
                scale
            } else {
                T::ZERO
            };
        }
    }
}

/// 32 uniform bits from `seed` and `index` (SplitMix64's finaliser of their mix).
#[inline(always)]
fn draw(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 32
}

/// One thread for small buffers, else `threads` (at most 2).
fn team_size(elements: usize, threads: usize) -> usize {
    if elements < TEAM_MIN_ELEMENTS {
        1
    } else {
        threads.clamp(1, 2)
    }
}

/// `dropout(relu(x))` with `relu`, else `dropout(x)`, element by element.
///
/// ```
/// use padless_kernels::{ElementDropout, dropout_forward};
/// let d = ElementDropout::new(0.5, 3);
/// let y = dropout_forward(&[1.0f32, -2.0, 3.0, 4.0], &d, true, 1);
/// for (i, (&y, x)) in y.iter().zip([1.0f32, 0.0, 3.0, 4.0]).enumerate() {
///     assert_eq!(y, if d.keeps(i) { 2.0 * x } else { 0.0 });
/// }
/// ```
pub fn dropout_forward<T: Real>(
    x: &[T],
    dropout: &ElementDropout,
    relu: bool,
    threads: usize,
) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    let out_s = Shared::new(&mut out);
    run_team(team_size(x.len(), threads), |worker| {
        let (i0, i1) = worker.part(x.len());
        // SAFETY: elements `i0..i1` of `out` are this thread's.
        let out = unsafe { out_s.slice_mut(i0, i1 - i0) };
        crate::isa::dispatch(Elementwise {
            x: &x[i0..i1],
            d: None,
            out,
            start: i0,
            dropout,
            relu,
        });
    });
    out
}

/// The gradient of [`dropout_forward`] with respect to `x`, from `d_out`: `d_out` times each
/// element's dropout factor (and, with `relu`, zero where `x <= 0`).
///
/// # Panics
/// If `x` and `d_out` differ in length.
pub fn dropout_backward<T: Real>(
    x: &[T],
    dropout: &ElementDropout,
    relu: bool,
    d_out: &[T],
    threads: usize,
) -> Vec<T> {
    assert_eq!(
        x.len(),
        d_out.len(),
        "dropout backward: {} inputs but {} gradients",
        x.len(),
        d_out.len()
    );
    let mut d_x = vec![T::ZERO; x.len()];
    let d_x_s = Shared::new(&mut d_x);
    run_team(team_size(x.len(), threads), |worker| {
        let (i0, i1) = worker.part(x.len());
        // SAFETY: elements `i0..i1` of `d_x` are this thread's.
        let out = unsafe { d_x_s.slice_mut(i0, i1 - i0) };
        crate::isa::dispatch(Elementwise {
            x: &x[i0..i1],
            d: Some(&d_out[i0..i1]),
            out,
            start: i0,
            dropout,
            relu,
        });
    });
    d_x
}

/// [`dropout_forward`] (without `d`) or [`dropout_backward`] (with `d`) over elements
/// `start..start + x.len()`.
struct Elementwise<'a, T> {
    x: &'a [T],
    d: Option<&'a [T]>,
    out: &'a mut [T],
    start: usize,
    dropout: &'a ElementDropout,
    relu: bool,
}

impl<T: Real> pulp::WithSimd for Elementwise<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let mut factors = [T::ZERO; LANES];
        for (c, out) in self.out.chunks_mut(LANES).enumerate() {
            let i0 = c * LANES;
            let n = out.len();
            let f = &mut factors[..n];
            self.dropout.factors(self.start + i0, f);
            let x = &self.x[i0..i0 + n];
            match self.d {
                None => {
                    for ((o, &x), &f) in out.iter_mut().zip(x).zip(f.iter()) {
                        let v = if !self.relu || x > T::ZERO {
                            x
                        } else {
                            T::ZERO
                        };
                        *o = v * f;
                    }
                }
                Some(d) => {
                    let d = &d[i0..i0 + n];
                    for (((o, &x), &d), &f) in out.iter_mut().zip(x).zip(d).zip(f.iter()) {
                        let pass = !self.relu || x > T::ZERO;
                        *o = if pass { d * f } else { T::ZERO };
                    }
                }
            }
        }
    }
}

/// The affine part of a layer normalisation over rows of width `weight.len()`.
#[derive(Debug, Clone, Copy)]
pub struct RowNorm<'a, T> {
    /// `[d]`.
    pub weight: &'a [T],
    /// `[d]`.
    pub bias: &'a [T],
    /// Added to each row's variance.
    pub epsilon: f64,
}

/// What [`add_norm_forward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct AddNormOutput<T> {
    /// `[rows, d]`.
    pub out: Vec<T>,
    /// `[rows, 2]`: each row's mean and `1 / sqrt(var + epsilon)` of `x + dropout(y)`.
    pub stats: Vec<T>,
}

/// `LayerNorm(x + dropout(y))` over each row of width `d = norm.weight.len()`: `z = x +
/// dropout(y)` (`x + y` without dropout), then `(z - mean) / sqrt(var + epsilon) * weight +
/// bias` with the row's biased variance (as PyTorch's `LayerNorm`). Dropout's element indices
/// count over the whole buffer, row-major.
///
/// # Panics
/// If `x` and `y` differ in length, or it is not a whole number of rows.
///
/// ```
/// use padless_kernels::{RowNorm, add_norm_forward};
/// let norm = RowNorm { weight: &[1.0f64, 1.0], bias: &[0.0, 0.5], epsilon: 0.0 };
/// let r = add_norm_forward(&[1.0, 2.0], &[1.0, 4.0], None, &norm, 1);
/// // z = (2, 6): mean 4, standard deviation 2.
/// assert_eq!(r.out, [-1.0, 1.5]);
/// assert_eq!(r.stats, [4.0, 0.5]);
/// ```
pub fn add_norm_forward<T: Real>(
    x: &[T],
    y: &[T],
    dropout: Option<&ElementDropout>,
    norm: &RowNorm<'_, T>,
    threads: usize,
) -> AddNormOutput<T> {
    let d = norm.weight.len();
    assert_eq!(
        norm.bias.len(),
        d,
        "add_norm: the weight and bias must both be [d], found {d} and {} values",
        norm.bias.len()
    );
    let rows = check_rows(x, y, d, "add_norm");
    let mut out = vec![T::ZERO; rows * d];
    let mut stats = vec![T::ZERO; rows * 2];
    let (out_s, stats_s) = (Shared::new(&mut out), Shared::new(&mut stats));
    run_team(team_size(rows * d, threads), |worker| {
        let (r0, r1) = worker.part(rows);
        // SAFETY: rows `r0..r1` of `out` and of `stats` are this thread's.
        let (out, stats) = unsafe {
            (
                out_s.slice_mut(r0 * d, (r1 - r0) * d),
                stats_s.slice_mut(r0 * 2, (r1 - r0) * 2),
            )
        };
        crate::isa::dispatch(NormForward {
            x: &x[r0 * d..r1 * d],
            y: &y[r0 * d..r1 * d],
            start: r0 * d,
            dropout,
            norm,
            out,
            stats,
        });
    });
    AddNormOutput { out, stats }
}

/// The gradients of [`add_norm_forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct AddNormGradients<T> {
    /// `[rows, d]`: the gradient of the sum `z`, which is `x`'s.
    pub d_x: Vec<T>,
    /// `[rows, d]`: `d_x` times each element's dropout factor; empty when not asked for.
    pub d_y: Vec<T>,
    /// `[d]`.
    pub d_weight: Vec<T>,
    /// `[d]`.
    pub d_bias: Vec<T>,
}

/// The backward pass of [`add_norm_forward`] from `d_out [rows, d]`, with the forward pass's
/// `stats` and the norm's `weight [d]` (the backward pass reads neither the bias nor
/// epsilon); `y`'s gradient only with `y_gradient`. With `x̂ = (z - mean) inverse` and `g =
/// d_out ⊙ weight`: `dz = inverse (g - mean(g) - x̂ mean(g ⊙ x̂))` per row, `d weight =
/// Σ_rows d_out ⊙ x̂`, `d bias = Σ_rows d_out`.
///
/// # Panics
/// As [`add_norm_forward`], and if `stats` or `d_out` do not match the rows.
#[allow(clippy::too_many_arguments)]
pub fn add_norm_backward<T: Real>(
    x: &[T],
    y: &[T],
    dropout: Option<&ElementDropout>,
    weight: &[T],
    stats: &[T],
    d_out: &[T],
    y_gradient: bool,
    threads: usize,
) -> AddNormGradients<T> {
    let d = weight.len();
    let rows = check_rows(x, y, d, "add_norm backward");
    assert!(
        stats.len() == rows * 2 && d_out.len() == rows * d,
        "add_norm backward: stats must be [{rows}, 2] and d_out [{rows}, {d}], found {} and {} \
         values",
        stats.len(),
        d_out.len()
    );
    let mut d_x = vec![T::ZERO; rows * d];
    let mut d_y = vec![T::ZERO; if y_gradient { rows * d } else { 0 }];
    // Each thread's column sums: weight then bias, `2 d` per thread.
    let mut sums = vec![T::ZERO; 2 * 2 * d];
    let (d_x_s, d_y_s, sums_s) = (
        Shared::new(&mut d_x),
        Shared::new(&mut d_y),
        Shared::new(&mut sums),
    );
    run_team(team_size(rows * d, threads), |worker| {
        let (r0, r1) = worker.part(rows);
        let n = (r1 - r0) * d;
        // SAFETY: rows `r0..r1` of `d_x` and `d_y`, and the `worker.index`-th column sums,
        // are this thread's.
        let (d_x, d_y, sums) = unsafe {
            (
                d_x_s.slice_mut(r0 * d, n),
                y_gradient.then(|| d_y_s.slice_mut(r0 * d, n)),
                sums_s.slice_mut(worker.index * 2 * d, 2 * d),
            )
        };
        crate::isa::dispatch(NormBackward {
            x: &x[r0 * d..r1 * d],
            y: &y[r0 * d..r1 * d],
            stats: &stats[r0 * 2..r1 * 2],
            d_out: &d_out[r0 * d..r1 * d],
            start: r0 * d,
            dropout,
            weight,
            d_x,
            d_y,
            sums,
        });
    });
    let (first, second) = sums.split_at(2 * d);
    let total: Vec<T> = first.iter().zip(second).map(|(&a, &b)| a + b).collect();
    AddNormGradients {
        d_x,
        d_y,
        d_weight: total[..d].to_vec(),
        d_bias: total[d..].to_vec(),
    }
}

/// The rows of `x` and `y` (checked to match each other and rows of `d > 0` values).
fn check_rows<T>(x: &[T], y: &[T], d: usize, what: &str) -> usize {
    assert!(d > 0, "{what}: the weight must have at least one value");
    assert!(
        x.len() == y.len() && x.len().is_multiple_of(d),
        "{what}: x and y must both be [rows, {d}], found {} and {} values",
        x.len(),
        y.len()
    );
    x.len() / d
}

/// `z = x + f y` for one row, `f` the dropout factors (all 1 without dropout).
#[inline(always)]
fn residual_sum<T: Real>(
    x: &[T],
    y: &[T],
    start: usize,
    dropout: Option<&ElementDropout>,
    factors: &mut [T],
    z: &mut [T],
) {
    match dropout {
        Some(dropout) => {
            dropout.factors(start, factors);
            for (((z, &x), &y), &f) in z.iter_mut().zip(x).zip(y).zip(factors.iter()) {
                *z = x + f * y;
            }
        }
        None => {
            for ((z, &x), &y) in z.iter_mut().zip(x).zip(y) {
                *z = x + y;
            }
        }
    }
}

struct NormForward<'a, T> {
    x: &'a [T],
    y: &'a [T],
    start: usize,
    dropout: Option<&'a ElementDropout>,
    norm: &'a RowNorm<'a, T>,
    out: &'a mut [T],
    stats: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for NormForward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (weight, bias) = (self.norm.weight, self.norm.bias);
        let d = weight.len();
        let n = T::from_f64(d as f64);
        let epsilon = T::from_f64(self.norm.epsilon);
        let mut factors = vec![T::ZERO; d];
        let rows = self.x.chunks_exact(d).zip(self.y.chunks_exact(d));
        let outs = self
            .out
            .chunks_exact_mut(d)
            .zip(self.stats.chunks_exact_mut(2));
        for (r, ((x, y), (z, stats))) in rows.zip(outs).enumerate() {
            residual_sum(x, y, self.start + r * d, self.dropout, &mut factors, z);
            let mean = z.iter().fold(T::ZERO, |s, &v| s + v) / n;
            let var = z.iter().fold(T::ZERO, |s, &v| s + (v - mean) * (v - mean)) / n;
            let inverse = T::ONE / (var + epsilon).sqrt();
            for ((z, &w), &b) in z.iter_mut().zip(weight).zip(bias) {
                *z = (*z - mean) * inverse * w + b;
            }
            stats[0] = mean;
            stats[1] = inverse;
        }
    }
}

struct NormBackward<'a, T> {
    x: &'a [T],
    y: &'a [T],
    stats: &'a [T],
    d_out: &'a [T],
    start: usize,
    dropout: Option<&'a ElementDropout>,
    weight: &'a [T],
    d_x: &'a mut [T],
    d_y: Option<&'a mut [T]>,
    /// `[2, d]`: this thread's column sums of the weight's and the bias's gradients.
    sums: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for NormBackward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let weight = self.weight;
        let d = weight.len();
        let n = T::from_f64(d as f64);
        let (d_weight, d_bias) = self.sums.split_at_mut(d);
        let mut factors = vec![T::ZERO; d];
        let mut normed = vec![T::ZERO; d];
        let mut g = vec![T::ZERO; d];
        let mut d_y = self.d_y;
        let rows = self.x.chunks_exact(d).zip(self.y.chunks_exact(d));
        let grads = self.d_out.chunks_exact(d).zip(self.d_x.chunks_exact_mut(d));
        for (r, (((x, y), stats), (dy, dz))) in
            rows.zip(self.stats.chunks_exact(2)).zip(grads).enumerate()
        {
            let (mean, inverse) = (stats[0], stats[1]);
            residual_sum(
                x,
                y,
                self.start + r * d,
                self.dropout,
                &mut factors,
                &mut normed,
            );
            let (mut sum_g, mut sum_g_normed) = (T::ZERO, T::ZERO);
            for j in 0..d {
                let v = (normed[j] - mean) * inverse;
                normed[j] = v;
                d_weight[j] += dy[j] * v;
                d_bias[j] += dy[j];
                g[j] = dy[j] * weight[j];
                sum_g += g[j];
                sum_g_normed += g[j] * v;
            }
            let (mean_g, mean_g_normed) = (sum_g / n, sum_g_normed / n);
            for j in 0..d {
                dz[j] = inverse * (g[j] - mean_g - normed[j] * mean_g_normed);
            }
            if let Some(d_y) = d_y.as_deref_mut() {
                let d_y = &mut d_y[r * d..(r + 1) * d];
                match self.dropout {
                    Some(_) => {
                        for ((o, &z), &f) in d_y.iter_mut().zip(dz.iter()).zip(&factors) {
                            *o = z * f;
                        }
                    }
                    None => d_y.copy_from_slice(dz),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_values as values;

    fn close(got: &[f64], want: &[f64], tolerance: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tolerance * scale,
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// The drop rate over many elements is the configured one, and two seeds drop different
    /// elements.
    #[test]
    fn dropout_keeps_the_configured_share() {
        for rate in [0.1, 0.5, 0.9] {
            let d = ElementDropout::new(rate, 11);
            let n = 200_000;
            let dropped = (0..n).filter(|&i| !d.keeps(i)).count() as f64 / n as f64;
            assert!(
                (dropped - rate).abs() < 0.005,
                "rate {rate}: dropped {dropped}"
            );
        }
        let (a, b) = (ElementDropout::new(0.5, 1), ElementDropout::new(0.5, 2));
        let same = (0..10_000).filter(|&i| a.keeps(i) == b.keeps(i)).count();
        assert!((4_500..5_500).contains(&same), "{same} of 10000 agree");
    }

    /// Element-wise dropout (with and without ReLU) by the definition, and its gradient as
    /// the same factors; one and two threads give the same bits.
    #[test]
    fn dropout_forward_and_backward_follow_the_definition() {
        let n = 70_001;
        let (x, g) = (values(n, 1), values(n, 2));
        let d = ElementDropout::new(0.3, 99);
        for relu in [false, true] {
            let factor = |i: usize| if d.keeps(i) { 1.0 / 0.7 } else { 0.0 };
            let want: Vec<f64> = (0..n)
                .map(|i| factor(i) * if relu { x[i].max(0.0) } else { x[i] })
                .collect();
            let want_d: Vec<f64> = (0..n)
                .map(|i| {
                    if relu && x[i] <= 0.0 {
                        0.0
                    } else {
                        factor(i) * g[i]
                    }
                })
                .collect();
            crate::isa::for_each_available(|isa| {
                let one = dropout_forward(&x, &d, relu, 1);
                close(&one, &want, 1e-15, &format!("forward ({isa}, relu {relu})"));
                assert!(
                    one == dropout_forward(&x, &d, relu, 2),
                    "two threads ({isa})"
                );
                let d_one = dropout_backward(&x, &d, relu, &g, 1);
                close(
                    &d_one,
                    &want_d,
                    1e-15,
                    &format!("backward ({isa}, relu {relu})"),
                );
                assert!(
                    d_one == dropout_backward(&x, &d, relu, &g, 2),
                    "two threads"
                );
            });
        }
    }

    /// `LayerNorm(x + dropout(y))` and its gradients against the textbook formulas in f64 and
    /// central differences of `sum(w ⊙ out)`, with and without dropout, on one and two
    /// threads; f32 within its rounding.
    #[test]
    fn add_norm_matches_the_definition_and_finite_differences() {
        let (rows, d) = (300, 37);
        let (x, y, w_out) = (
            values(rows * d, 1),
            values(rows * d, 2),
            values(rows * d, 3),
        );
        let weight: Vec<f64> = values(d, 4).iter().map(|v| 1.0 + v).collect();
        let bias = values(d, 5);
        let epsilon = 1e-5;
        let norm = RowNorm {
            weight: &weight,
            bias: &bias,
            epsilon,
        };
        // The loss sum(w_out ⊙ LayerNorm(x + f ⊙ y)) by the definition.
        let loss =
            |x: &[f64], y: &[f64], weight: &[f64], bias: &[f64], f: &dyn Fn(usize) -> f64| {
                let mut total = 0.0;
                for r in 0..rows {
                    let z: Vec<f64> = (0..d)
                        .map(|j| x[r * d + j] + f(r * d + j) * y[r * d + j])
                        .collect();
                    let mean = z.iter().sum::<f64>() / d as f64;
                    let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
                    for j in 0..d {
                        let out = (z[j] - mean) / (var + epsilon).sqrt() * weight[j] + bias[j];
                        total += w_out[r * d + j] * out;
                    }
                }
                total
            };
        for dropout in [None, Some(ElementDropout::new(0.2, 5))] {
            let f = |i: usize| dropout.map_or(1.0, |d| if d.keeps(i) { 1.25 } else { 0.0 });
            let forward = add_norm_forward(&x, &y, dropout.as_ref(), &norm, 1);
            let g = add_norm_backward(
                &x,
                &y,
                dropout.as_ref(),
                &weight,
                &forward.stats,
                &w_out,
                true,
                1,
            );
            // The loss's value from the output, and the gradients by central differences at
            // a few elements of each input.
            let value: f64 = forward.out.iter().zip(&w_out).map(|(o, w)| o * w).sum();
            let base = loss(&x, &y, &weight, &bias, &f);
            assert!(
                (value - base).abs() < 1e-9 * base.abs().max(1.0),
                "{value} vs {base}"
            );
            // The loss's derivative in element `i` of input `k` (x, y, weight, bias) by
            // central differences.
            let h = 1e-6;
            let slope = |k: usize, i: usize| {
                let at = |by: f64| {
                    let mut v = [&x, &y, &weight, &bias].map(|v| v.to_vec());
                    v[k][i] += by;
                    loss(&v[0], &v[1], &v[2], &v[3], &f)
                };
                (at(h) - at(-h)) / (2.0 * h)
            };
            for i in [0, 5, d + 3, rows * d - 1, 4321] {
                for (k, got, what) in [(0, &g.d_x, "d_x"), (1, &g.d_y, "d_y")] {
                    let want = slope(k, i);
                    assert!(
                        (got[i] - want).abs() < 1e-6,
                        "{what}[{i}] {} vs {want}",
                        got[i]
                    );
                }
            }
            for j in [0, d / 2, d - 1] {
                for (k, got, what) in [(2, &g.d_weight, "d_weight"), (3, &g.d_bias, "d_bias")] {
                    let want = slope(k, j);
                    assert!(
                        (got[j] - want).abs() < 1e-5,
                        "{what}[{j}] {} vs {want}",
                        got[j]
                    );
                }
            }
            crate::isa::for_each_available(|isa| {
                // Two threads: the same rows, column sums added in another order.
                let two = add_norm_forward(&x, &y, dropout.as_ref(), &norm, 2);
                assert!(two == forward, "two threads' forward ({isa})");
                let g2 = add_norm_backward(
                    &x,
                    &y,
                    dropout.as_ref(),
                    &weight,
                    &two.stats,
                    &w_out,
                    true,
                    2,
                );
                close(&g2.d_x, &g.d_x, 1e-14, &format!("two threads' d_x ({isa})"));
                close(&g2.d_y, &g.d_y, 1e-14, "two threads' d_y");
                close(&g2.d_weight, &g.d_weight, 1e-12, "two threads' d_weight");
                close(&g2.d_bias, &g.d_bias, 1e-12, "two threads' d_bias");
                let without_y = add_norm_backward(
                    &x,
                    &y,
                    dropout.as_ref(),
                    &weight,
                    &two.stats,
                    &w_out,
                    false,
                    2,
                );
                assert!(without_y.d_y.is_empty() && without_y.d_x == g2.d_x);
                // f32: within its rounding of the f64 results.
                let cast = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                let back = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
                let (w32, b32) = (cast(&weight), cast(&bias));
                let norm32 = RowNorm {
                    weight: &w32,
                    bias: &b32,
                    epsilon,
                };
                let (x32, y32, o32) = (cast(&x), cast(&y), cast(&w_out));
                let f32_out = add_norm_forward(&x32, &y32, dropout.as_ref(), &norm32, 2);
                close(
                    &back(&f32_out.out),
                    &forward.out,
                    1e-5,
                    &format!("f32 out ({isa})"),
                );
                let g32 = add_norm_backward(
                    &x32,
                    &y32,
                    dropout.as_ref(),
                    &w32,
                    &f32_out.stats,
                    &o32,
                    true,
                    2,
                );
                close(&back(&g32.d_x), &g.d_x, 1e-5, "f32 d_x");
                close(&back(&g32.d_y), &g.d_y, 1e-5, "f32 d_y");
                close(&back(&g32.d_weight), &g.d_weight, 1e-4, "f32 d_weight");
            });
        }
    }
}
