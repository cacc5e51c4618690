//! [`PackedRhs`]: the per-step products' right-hand matrix (a block of the recurrent weights)
//! packed once per kernel call, and multiplied by every step.
//!
//! The per-step products are small (a step's running rows) and many, by the same matrix:
//! packing it on every call, as a general matrix product does, would cost as much as the
//! product. Here it is laid out once per call in the panels of the instruction set's
//! microkernel ([`super::panels`]), or kept for the `gemm` crate (`f64`, [`Isa::Portable`]),
//! or in the bfloat16 layout while those products are on.
//!
//! [`Isa::Portable`]: crate::Isa::Portable

use super::bf16::{Bf16Rhs, Unit, bf16_path};
use super::panels::{Kernel, pack};
use super::{View, matmul};
use crate::real::Real;

/// A right-hand matrix `B[k, n]` ready for repeated products `C[m, n] (+)= A[m, k] · B`,
/// gathered from any layout (see [`PackedRhs::gather`]).
pub(crate) struct PackedRhs<T> {
    k: usize,
    n: usize,
    layout: Layout<T>,
}

/// How a [`PackedRhs`] holds its matrix.
enum Layout<T> {
    /// Panels for `kernel`, starting `offset` elements into `storage` (`f32` only).
    Panels {
        kernel: Kernel,
        offset: usize,
        storage: Vec<T>,
    },
    /// A row-major `k x n` copy for gemm (`f64`, [`crate::Isa::Portable`]).
    RowMajor(Vec<T>),
    /// The bfloat16 tile layout, while [`super::bf16::bf16_products`] is on (`f32` only).
    Bf16(Bf16Rhs),
}

impl<T: Real> PackedRhs<T> {
    /// `B[r, c] = src[row(r) + col(c)]` for `r < k`, `c < n`: the one pass over the weights
    /// per call, which also does any re-layout (a column map, a transpose) on the way, in the
    /// layout of the instruction set in effect ([`crate::isa()`]).
    ///
    /// # Panics
    /// If an index leaves `src`.
    pub fn gather(
        k: usize,
        n: usize,
        src: &[T],
        row: impl Fn(usize) -> usize,
        col: impl Fn(usize) -> usize,
    ) -> Self {
        let rows: Vec<usize> = (0..k).map(row).collect();
        let cols: Vec<usize> = (0..n).map(col).collect();
        let layout = if bf16_path::<T>() {
            // SAFETY: T is f32 (checked by `bf16_path`), so the cast reinterprets nothing.
            let src = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<f32>(), src.len()) };
            Layout::Bf16(Bf16Rhs::from_offsets(src, &rows, &cols))
        } else if let Some(kernel) = Kernel::for_type::<T>() {
            let mut storage = Vec::new();
            let offset = pack(kernel.panel(), src, &rows, &cols, &mut storage);
            Layout::Panels {
                kernel,
                offset,
                storage,
            }
        } else {
            let mut storage = Vec::with_capacity(k * n);
            for &base in &rows {
                storage.extend(cols.iter().map(|&c| src[base + c]));
            }
            Layout::RowMajor(storage)
        };
        PackedRhs { k, n, layout }
    }

    /// `C[m, n] = A[m, k] · B`, or `C += A · B` with `accumulate`; `A` and `C` row-major with
    /// the given row strides.
    ///
    /// # Safety
    /// As [`matmul`]: `A` and `C` must hold every addressed element and no other thread may
    /// touch the addressed part of `C` during the call.
    pub unsafe fn multiply(
        &self,
        m: usize,
        c: *mut T,
        c_row_stride: usize,
        accumulate: bool,
        a: *const T,
        a_row_stride: usize,
    ) {
        if m == 0 {
            return;
        }
        match &self.layout {
            // SAFETY: the caller's contract; T is f32 wherever `Bf16` was built.
            Layout::Bf16(bf16) => unsafe {
                bf16.multiply(
                    Unit::chosen(),
                    m,
                    c.cast::<f32>(),
                    c_row_stride,
                    accumulate,
                    a.cast::<f32>(),
                    a_row_stride,
                    1,
                )
            },
            // SAFETY: the caller's contract; the copy is `k x n` row-major.
            Layout::RowMajor(storage) => unsafe {
                matmul(
                    m,
                    self.n,
                    self.k,
                    c,
                    c_row_stride,
                    accumulate,
                    View::rows(a, a_row_stride),
                    View::rows(storage.as_ptr(), self.n),
                )
            },
            // SAFETY: panels exist only for f32, built by `kernel`'s `pack` (`k x n` from an
            // aligned offset); the rest is the caller's contract.
            Layout::Panels {
                kernel,
                offset,
                storage,
            } => unsafe {
                kernel.multiply(
                    self.k,
                    self.n,
                    storage[*offset..].as_ptr().cast::<f32>(),
                    m,
                    c.cast::<f32>(),
                    c_row_stride,
                    accumulate,
                    a.cast::<f32>(),
                    a_row_stride,
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with no pattern a wrong index could reproduce.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The plain triple loop, in f64.
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for r in 0..m {
            for col in 0..n {
                c[r * n + col] = (0..k)
                    .map(|i| a[r * lda + i] as f64 * b[i * ldb + col] as f64)
                    .sum();
            }
        }
        c
    }

    /// On each instruction set (the microkernels, or gemm on the portable path).
    #[test]
    fn packed_products_equal_the_triple_loop_for_ragged_shapes() {
        crate::isa::for_each_available(|isa| ragged_shapes(&format!("{isa}")));
    }

    fn ragged_shapes(isa: &str) {
        // Rows 1..=30 cover every microkernel height and uneven chunking; columns cover
        // partial registers of both widths, partial panels and several panels.
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 7, 3),
            (12, 16, 9),
            (13, 17, 33),
            (30, 70, 64),
            (25, 96, 5),
            (7, 41, 2),
            (6, 24, 17),
        ] {
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
            let a = values(m * lda, 1);
            let b = values(k * ldb, 2);
            let start = values(m * ldc, 3);
            let rhs = PackedRhs::gather(k, n, &b, |r| r * ldb, |c| c);
            let want = naive(m, n, k, &a, lda, &b, ldb);
            for accumulate in [false, true] {
                let mut c = start.clone();
                // SAFETY: C holds `m` rows of `ldc >= n` floats; A holds `m` rows of `lda`.
                unsafe { rhs.multiply(m, c.as_mut_ptr(), ldc, accumulate, a.as_ptr(), lda) };
                for r in 0..m {
                    for col in 0..ldc {
                        let got = c[r * ldc + col] as f64;
                        let base = if accumulate || col >= n {
                            start[r * ldc + col] as f64
                        } else {
                            0.0
                        };
                        let expected = if col < n {
                            base + want[r * n + col]
                        } else {
                            base
                        };
                        assert!(
                            (got - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
                            "{isa} m={m} n={n} k={k} acc={accumulate} ({r},{col}): {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_products_gather_a_column_map_with_breaks_inside_panels() {
        crate::isa::for_each_available(|_| column_map());
    }

    fn column_map() {
        // Columns 0..20 are a run, 20..32 in reverse order, the rest a run from an offset:
        // the panel that mixes a run with reversed columns (the first of 32 columns on
        // AVX-512, the second of 16 on AVX2) is copied element by element, the others a panel
        // row at a time.
        let (m, k, n, ld) = (5, 9, 45, 80);
        let map = |c: usize| match c {
            0..20 => c,
            20..32 => 79 - (c - 20),
            _ => c + 14,
        };
        let src = values(k * ld, 6);
        let b: Vec<f32> = (0..k * n).map(|i| src[(i / n) * ld + map(i % n)]).collect();
        let a = values(m * k, 7);
        let rhs = PackedRhs::gather(k, n, &src, |r| r * ld, map);
        let mut c = vec![0.0f32; m * n];
        // SAFETY: C is `m x n`, A is `m x k`, both row-major.
        unsafe { rhs.multiply(m, c.as_mut_ptr(), n, false, a.as_ptr(), k) };
        let want = naive(m, n, k, &a, k, &b, n);
        for (got, want) in c.iter().zip(&want) {
            assert!((*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn packed_products_gather_a_transpose() {
        crate::isa::for_each_available(|_| transpose());
    }

    fn transpose() {
        let (m, n, k) = (7, 19, 11);
        let a = values(m * k, 4);
        let bt = values(n * k, 5); // B^T stored row-major [n, k]
        let b: Vec<f32> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect();
        let rhs = PackedRhs::gather(k, n, &bt, |r| r, |c| c * k);
        let mut c = vec![0.0f32; m * n];
        // SAFETY: C is `m x n`, A is `m x k`, both row-major.
        unsafe { rhs.multiply(m, c.as_mut_ptr(), n, false, a.as_ptr(), k) };
        let want = naive(m, n, k, &a, k, &b, n);
        for (got, want) in c.iter().zip(&want) {
            assert!((*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
        }
    }
}
