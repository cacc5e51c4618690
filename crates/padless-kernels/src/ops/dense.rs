//! A dense layer over many rows (every step of a batch of sequences) on one or two threads:
//! [`dense_forward`] and [`dense_backward`] with the weight `[d_in, d_out]` (Keras' layout),
//! [`linear_forward`] and [`linear_backward`] with the weight `[d_out, d_in]` (PyTorch's).
//!
//! burn's CPU backend runs its matrix products on one thread; the dense layer after a
//! recurrent one multiplies `batch * time` rows, enough work for the kernels' thread pair. The
//! forward pass splits the rows (the output features when there are few rows, as in a decoding
//! step); the backward pass splits the rows for the input gradient, the
//! input features for the weight gradient (`X^T · dY` over all rows) and the output features
//! for the bias gradient. In PyTorch's layout the weight gradient `dY^T · X` is split over the
//! output features instead, so that each thread writes whole rows of it.

use crate::gemm::{View, matmul};
use crate::real::Real;
use crate::threads::{Shared, run_team};

/// Multiply-adds below which the product runs on one thread (a thread start costs more).
const TEAM_MIN_WORK: usize = 1 << 18;
/// Rows below which the forward pass splits the output features over the threads, not the
/// rows.
const FEATURE_SPLIT_ROWS: usize = 256;

/// `y = x W + b` for `x [rows, d_in]` and `W [d_in, d_out]` (row-major), `b [d_out]`:
/// `y [rows, d_out]`.
///
/// # Panics
/// If a buffer's length does not match its shape.
///
/// ```
/// // Two rows, two inputs, one output: y = 1 * x0 + 2 * x1 + 0.5.
/// let y = padless_kernels::dense_forward(&[1.0f32, 1.0, 3.0, -1.0], 2, 2, &[1.0, 2.0], 1, Some(&[0.5]), 2);
/// assert_eq!(y, [3.5, 1.5]);
/// ```
pub fn dense_forward<T: Real>(
    x: &[T],
    rows: usize,
    d_in: usize,
    w: &[T],
    d_out: usize,
    bias: Option<&[T]>,
    threads: usize,
) -> Vec<T> {
    forward(x, rows, d_in, w, WeightLayout::InOut, d_out, bias, threads)
}

/// `y = x W^T + b` for `x [rows, d_in]` and `W [d_out, d_in]` (PyTorch's `Linear` layout,
/// read as it is: no transposed copy), `b [d_out]`: `y [rows, d_out]`.
///
/// # Panics
/// If a buffer's length does not match its shape.
///
/// ```
/// // Two rows, two inputs, one output: y = 1 * x0 + 2 * x1 + 0.5.
/// let y = padless_kernels::linear_forward(&[1.0f32, 1.0, 3.0, -1.0], 2, 2, &[1.0, 2.0], 1, Some(&[0.5]), 2);
/// assert_eq!(y, [3.5, 1.5]);
/// ```
pub fn linear_forward<T: Real>(
    x: &[T],
    rows: usize,
    d_in: usize,
    w: &[T],
    d_out: usize,
    bias: Option<&[T]>,
    threads: usize,
) -> Vec<T> {
    forward(x, rows, d_in, w, WeightLayout::OutIn, d_out, bias, threads)
}

/// How a weight matrix is laid out, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeightLayout {
    /// `[d_in, d_out]` (Keras' `Dense` kernel).
    InOut,
    /// `[d_out, d_in]` (PyTorch's `Linear` weight).
    OutIn,
}

impl WeightLayout {
    /// `W` from output feature `first` on as the right operand of `x W`, `[d_in, d_out -
    /// first]`.
    fn as_rhs<T>(self, w: &[T], d_in: usize, d_out: usize, first: usize) -> View<T> {
        match self {
            WeightLayout::InOut => View::rows(w[first..].as_ptr(), d_out),
            WeightLayout::OutIn => View::transposed(w[first * d_in..].as_ptr(), d_in),
        }
    }

    /// `W^T` as the right operand of `dY W^T`, `[d_out, d_in]`.
    fn as_transposed_rhs<T>(self, w: &[T], d_in: usize, d_out: usize) -> View<T> {
        match self {
            WeightLayout::InOut => View::transposed(w.as_ptr(), d_out),
            WeightLayout::OutIn => View::rows(w.as_ptr(), d_in),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn forward<T: Real>(
    x: &[T],
    rows: usize,
    d_in: usize,
    w: &[T],
    layout: WeightLayout,
    d_out: usize,
    bias: Option<&[T]>,
    threads: usize,
) -> Vec<T> {
    assert_eq!(x.len(), rows * d_in, "dense: x must be [{rows}, {d_in}]");
    assert_eq!(
        w.len(),
        d_in * d_out,
        "dense: W must hold {d_in} x {d_out} values"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), d_out, "dense: b must be [{d_out}]");
    }
    let mut y = vec![T::ZERO; rows * d_out];
    let y_s = Shared::new(&mut y);
    // Few rows (a decoding step): each thread takes half of the output features, so that
    // each reads (and the product packs) only half of the weight.
    let by_features = rows < FEATURE_SPLIT_ROWS;
    run_team(team_size(rows * d_in * d_out, threads), |worker| {
        let ((r0, r1), (c0, c1)) = if by_features {
            ((0, rows), worker.part(d_out))
        } else {
            (worker.part(rows), (0, d_out))
        };
        if let Some(b) = bias {
            for r in r0..r1 {
                // SAFETY: columns `c0..c1` of rows `r0..r1` of `y` are this thread's.
                unsafe { y_s.write(r * d_out + c0, &b[c0..c1]) };
            }
        }
        // SAFETY: writes this thread's columns `c0..c1` of rows `r0..r1` of `y` (`rows x
        // d_out`); reads the same rows of `x` (`rows x d_in`) and those output features of
        // `W` (`d_in x d_out` values), shapes checked above.
        unsafe {
            matmul(
                r1 - r0,
                c1 - c0,
                d_in,
                y_s.ptr_at(r0 * d_out + c0),
                d_out,
                bias.is_some(),
                View::rows(x[r0 * d_in..].as_ptr(), d_in),
                layout.as_rhs(w, d_in, d_out, c0),
            )
        };
    });
    y
}

/// The gradients of [`dense_forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct DenseGradients<T> {
    /// `[rows, d_in]`: `dY · W^T`; empty when not asked for.
    pub d_x: Vec<T>,
    /// `[d_in, d_out]`: `X^T · dY`.
    pub d_w: Vec<T>,
    /// `[d_out]`: the column sums of `dY`, when the layer has a bias.
    pub d_bias: Option<Vec<T>>,
}

/// The backward pass of [`dense_forward`] from `d_y [rows, d_out]`; the input gradient only
/// with `input_gradient`, the bias gradient only with `with_bias`.
///
/// # Panics
/// If a buffer's length does not match its shape.
///
/// ```
/// // y = x W for one row x = (1, 2) and W = (3, 4)^T, with dL/dy = 1.
/// let g = padless_kernels::dense_backward(&[1.0f32, 2.0], 1, 2, &[3.0, 4.0], 1, &[1.0], true, true, 1);
/// assert_eq!(g.d_x, [3.0, 4.0]);
/// assert_eq!(g.d_w, [1.0, 2.0]);
/// assert_eq!(g.d_bias, Some(vec![1.0]));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn dense_backward<T: Real>(
    x: &[T],
    rows: usize,
    d_in: usize,
    w: &[T],
    d_out: usize,
    d_y: &[T],
    with_bias: bool,
    input_gradient: bool,
    threads: usize,
) -> DenseGradients<T> {
    let options = (with_bias, input_gradient, threads);
    backward(x, rows, d_in, w, WeightLayout::InOut, d_out, d_y, options)
}

/// The backward pass of [`linear_forward`] from `d_y [rows, d_out]`: as [`dense_backward`],
/// with the weight and its gradient `dY^T · X` in `[d_out, d_in]`.
///
/// # Panics
/// If a buffer's length does not match its shape.
///
/// ```
/// // y = x W^T for one row x = (1, 2) and W = (3, 4), with dL/dy = 1.
/// let g = padless_kernels::linear_backward(&[1.0f32, 2.0], 1, 2, &[3.0, 4.0], 1, &[1.0], true, true, 1);
/// assert_eq!(g.d_x, [3.0, 4.0]);
/// assert_eq!(g.d_w, [1.0, 2.0]);
/// assert_eq!(g.d_bias, Some(vec![1.0]));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Real>(
    x: &[T],
    rows: usize,
    d_in: usize,
    w: &[T],
    d_out: usize,
    d_y: &[T],
    with_bias: bool,
    input_gradient: bool,
    threads: usize,
) -> DenseGradients<T> {
    let options = (with_bias, input_gradient, threads);
    backward(x, rows, d_in, w, WeightLayout::OutIn, d_out, d_y, options)
}

#[allow(clippy::too_many_arguments)]
fn backward<T: Real>(
    x: &[T],
    rows: usize,
    d_in: usize,
    w: &[T],
    layout: WeightLayout,
    d_out: usize,
    d_y: &[T],
    (with_bias, input_gradient, threads): (bool, bool, usize),
) -> DenseGradients<T> {
    assert_eq!(
        x.len(),
        rows * d_in,
        "dense backward: x must be [{rows}, {d_in}]"
    );
    assert_eq!(
        w.len(),
        d_in * d_out,
        "dense backward: W must hold {d_in} x {d_out} values"
    );
    assert_eq!(
        d_y.len(),
        rows * d_out,
        "dense backward: dY must be [{rows}, {d_out}]"
    );
    let mut d_x = vec![T::ZERO; if input_gradient { rows * d_in } else { 0 }];
    let mut d_w = vec![T::ZERO; d_in * d_out];
    let mut d_bias = vec![T::ZERO; if with_bias { d_out } else { 0 }];
    let (d_x_s, d_w_s, d_bias_s) = (
        Shared::new(&mut d_x),
        Shared::new(&mut d_w),
        Shared::new(&mut d_bias),
    );
    let work = rows * d_in * d_out * if input_gradient { 2 } else { 1 };
    run_team(team_size(work, threads), |worker| {
        if input_gradient {
            let (r0, r1) = worker.part(rows);
            // SAFETY: writes this thread's rows `r0..r1` of `d_x` (`rows x d_in`); reads the
            // same rows of `dY` (`rows x d_out`) and all of `W`.
            unsafe {
                matmul(
                    r1 - r0,
                    d_in,
                    d_out,
                    d_x_s.ptr_at(r0 * d_in),
                    d_in,
                    false,
                    View::rows(d_y[r0 * d_out..].as_ptr(), d_out),
                    layout.as_transposed_rhs(w, d_in, d_out),
                )
            };
        }
        match layout {
            WeightLayout::InOut => {
                let (i0, i1) = worker.part(d_in);
                // SAFETY: writes this thread's rows `i0..i1` (input features) of `d_w`
                // (`d_in x d_out`); reads those columns of `x` (`rows x d_in`, read
                // transposed) and all of `dY` (`rows x d_out`).
                unsafe {
                    matmul(
                        i1 - i0,
                        d_out,
                        rows,
                        d_w_s.ptr_at(i0 * d_out),
                        d_out,
                        false,
                        View::transposed(x[i0.min(x.len())..].as_ptr(), d_in),
                        View::rows(d_y.as_ptr(), d_out),
                    )
                };
            }
            WeightLayout::OutIn => {
                let (o0, o1) = worker.part(d_out);
                // SAFETY: writes this thread's rows `o0..o1` (output features) of `d_w`
                // (`d_out x d_in`); reads those columns of `dY` (`rows x d_out`, read
                // transposed) and all of `x` (`rows x d_in`).
                unsafe {
                    matmul(
                        o1 - o0,
                        d_in,
                        rows,
                        d_w_s.ptr_at(o0 * d_in),
                        d_in,
                        false,
                        View::transposed(d_y[o0.min(d_y.len())..].as_ptr(), d_out),
                        View::rows(x.as_ptr(), d_in),
                    )
                };
            }
        }
        if with_bias {
            let (c0, c1) = worker.part(d_out);
            // SAFETY: entries `c0..c1` of the bias gradient are this thread's.
            let sums = unsafe { d_bias_s.slice_mut(c0, c1 - c0) };
            for row in d_y.chunks_exact(d_out) {
                for (s, &g) in sums.iter_mut().zip(&row[c0..c1]) {
                    *s += g;
                }
            }
        }
    });
    DenseGradients {
        d_x,
        d_w,
        d_bias: with_bias.then_some(d_bias),
    }
}

/// One thread for small products, else `threads` (at most 2).
fn team_size(work: usize, threads: usize) -> usize {
    if work < TEAM_MIN_WORK {
        1
    } else {
        threads.clamp(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_values as values;

    /// The textbook triple loops in f64 against both thread counts, on products large enough
    /// for the thread pair (split by rows, and with few rows by output features) and an odd
    /// one small enough for one thread; in f64 and, on
    /// each instruction set, in f32 (whose sums of up to 4096 terms round at a few 1e-6 of
    /// their size).
    #[test]
    fn forward_and_backward_match_the_triple_loops() {
        for (rows, d_in, d_out) in [(517, 33, 19), (3, 2, 5), (4096, 128, 32), (64, 256, 97)] {
            let (x, w, b, d_y) = (
                values(rows * d_in, 1),
                values(d_in * d_out, 2),
                values(d_out, 3),
                values(rows * d_out, 4),
            );
            let mut want_y = vec![0.0; rows * d_out];
            let mut want_dx = vec![0.0; rows * d_in];
            let mut want_dw = vec![0.0; d_in * d_out];
            let mut want_db = vec![0.0; d_out];
            for r in 0..rows {
                for o in 0..d_out {
                    let mut acc = b[o];
                    for i in 0..d_in {
                        acc += x[r * d_in + i] * w[i * d_out + o];
                        want_dx[r * d_in + i] += d_y[r * d_out + o] * w[i * d_out + o];
                        want_dw[i * d_out + o] += x[r * d_in + i] * d_y[r * d_out + o];
                    }
                    want_y[r * d_out + o] = acc;
                    want_db[o] += d_y[r * d_out + o];
                }
            }
            let want = [want_y, want_dx, want_dw, want_db];
            crate::isa::for_each_available(|isa| {
                for threads in [1, 2] {
                    let what = format!("{isa}, {threads} threads, {rows}x{d_in}x{d_out}");
                    check::<f64>(
                        &x,
                        &w,
                        &b,
                        &d_y,
                        (rows, d_in, d_out),
                        threads,
                        &want,
                        1e-9,
                        &what,
                    );
                    check::<f32>(
                        &x,
                        &w,
                        &b,
                        &d_y,
                        (rows, d_in, d_out),
                        threads,
                        &want,
                        2e-5,
                        &what,
                    );
                }
            });
        }
    }

    /// `dense_forward` and `dense_backward` in `T` against `want` (y, d_x, d_w, d_bias) within
    /// `tolerance` relative to each tensor's largest magnitude (at least 1).
    #[allow(clippy::too_many_arguments)]
    fn check<T: Real>(
        x: &[f64],
        w: &[f64],
        b: &[f64],
        d_y: &[f64],
        (rows, d_in, d_out): (usize, usize, usize),
        threads: usize,
        want: &[Vec<f64>; 4],
        tolerance: f64,
        what: &str,
    ) {
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
        let (x, w, b, d_y) = (cast(x), cast(w), cast(b), cast(d_y));
        let close = |got: &[T], want: &[f64], name: &str| {
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                let g = g.to_f64();
                assert!(
                    (g - w).abs() <= tolerance * scale,
                    "{name}[{i}] {g} vs {w} ({what})"
                );
            }
        };
        let y = dense_forward(&x, rows, d_in, &w, d_out, Some(&b), threads);
        close(&y, &want[0], "y");
        let g = dense_backward(&x, rows, d_in, &w, d_out, &d_y, true, true, threads);
        close(&g.d_x, &want[1], "d_x");
        close(&g.d_w, &want[2], "d_w");
        close(g.d_bias.as_deref().unwrap(), &want[3], "d_bias");
        let no_x = dense_backward(&x, rows, d_in, &w, d_out, &d_y, false, false, threads);
        assert!(no_x.d_x.is_empty() && no_x.d_bias.is_none());
        assert!(no_x.d_w == g.d_w, "d_w without d_x ({what})");
        // Without a bias the output is the bare product.
        let bare = dense_forward(&x, rows, d_in, &w, d_out, None, threads);
        let shifted: Vec<T> = bare
            .iter()
            .enumerate()
            .map(|(i, &v)| v + b[i % d_out])
            .collect();
        close(&shifted, &want[0], "y without bias + b");
        // The same layer with its weight stored `[d_out, d_in]`, its gradient likewise.
        let mut w_t = vec![T::ZERO; w.len()];
        for i in 0..d_in {
            for o in 0..d_out {
                w_t[o * d_in + i] = w[i * d_out + o];
            }
        }
        let y = linear_forward(&x, rows, d_in, &w_t, d_out, Some(&b), threads);
        close(&y, &want[0], "linear y");
        let g = linear_backward(&x, rows, d_in, &w_t, d_out, &d_y, true, true, threads);
        close(&g.d_x, &want[1], "linear d_x");
        let mut d_w = vec![T::ZERO; w.len()];
        for i in 0..d_in {
            for o in 0..d_out {
                d_w[i * d_out + o] = g.d_w[o * d_in + i];
            }
        }
        close(&d_w, &want[2], "linear d_w (transposed back)");
        close(g.d_bias.as_deref().unwrap(), &want[3], "linear d_bias");
    }
}
