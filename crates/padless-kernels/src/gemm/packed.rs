//! [`PackedRhs`]: the per-step products' right-hand matrix (a block of the recurrent weights)
//! packed once per kernel call, and the AVX-512 microkernel that multiplies by it every step.
//!
//! Measured before this existed (gemm 0.19, `k = 512`, `n = 1024`, one thread): the per-step
//! product `h · U` ran at 64 to 89 GFLOP/s for 8 to 64 rows, against a one-thread peak near
//! 150, because gemm packs the 2 MB weight block again on every call. Here the block is laid
//! out once per call in panels of [`PANEL`] columns (`k` rows of `PANEL` contiguous floats,
//! 64-byte aligned, the last panel zero-padded), and each step runs a register-blocked
//! microkernel over it: up to [`MAX_ROWS`] rows x [`PANEL`] columns of accumulators in
//! registers, one broadcast of the left operand per row and two loads of the panel per inner
//! step. The panel loop is outermost so that a panel stays in cache across the row chunks.
//!
//! Only `f32` on CPUs with AVX-512F takes this path; `f64` and other CPUs keep gemm through
//! the same interface (chosen at run time, so one binary serves both).

use std::any::TypeId;

use crate::gemm::bf16::{Bf16Rhs, Unit, bf16_path};
use crate::gemm::{View, matmul};
use crate::real::Real;

/// Columns per panel: two AVX-512 registers of `f32`.
const PANEL: usize = 32;
/// Rows per microkernel call: 12 rows x 2 registers = 24 accumulators of the 32 registers.
const MAX_ROWS: usize = 12;

/// A right-hand matrix `B[k, n]` ready for repeated products `C[m, n] (+)= A[m, k] · B`,
/// gathered from any layout (see [`PackedRhs::gather`]).
pub(crate) struct PackedRhs<T> {
    k: usize,
    n: usize,
    layout: Layout<T>,
}

/// How a [`PackedRhs`] holds its matrix.
enum Layout<T> {
    /// Panels for the AVX-512 microkernel, starting `offset` floats into `storage` (64-byte
    /// aligned).
    Panels { offset: usize, storage: Vec<T> },
    /// A row-major `k x n` copy for gemm (`f64`, other CPUs).
    RowMajor(Vec<T>),
    /// The bfloat16 tile layout, while [`crate::gemm::bf16::bf16_products`] is on (`f32` only).
    Bf16(Bf16Rhs),
}

/// Whether this CPU runs the packed `f32` microkernel.
fn packed_path<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl<T: Real> PackedRhs<T> {
    /// `B[r, c] = src[row(r) + col(c)]` for `r < k`, `c < n`: the one pass over the weights
    /// per call, which also does any re-layout (a column map, a transpose) on the way. Where
    /// a panel's columns are contiguous in `src` (the forward's recurrent weights) each panel
    /// row is one copy; the offsets are computed once per row and per column, not per element.
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
        if bf16_path::<T>() {
            let cols: Vec<usize> = (0..n).map(col).collect();
            // SAFETY: T is f32 (checked by `bf16_path`), so the cast reinterprets nothing.
            let src = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<f32>(), src.len()) };
            let bf16 = Bf16Rhs::from_offsets(src, &rows, &cols);
            return PackedRhs {
                k,
                n,
                layout: Layout::Bf16(bf16),
            };
        }
        if !(packed_path::<T>() && k > 0 && n > 0) {
            let cols: Vec<usize> = (0..n).map(col).collect();
            let mut storage = Vec::with_capacity(k * n);
            for &base in &rows {
                storage.extend(cols.iter().map(|&c| src[base + c]));
            }
            return PackedRhs {
                k,
                n,
                layout: Layout::RowMajor(storage),
            };
        }
        let len = n.div_ceil(PANEL) * k * PANEL;
        // Up to 15 leading floats put the panels on a 64-byte boundary; the capacity never
        // grows, so the address the offset is computed from stays. No zero fill first: every
        // float is written once (a fresh zeroed block of megabytes cost page faults per call).
        let mut storage = Vec::with_capacity(len + 15);
        let offset = (16 - (storage.as_ptr() as usize / 4) % 16) % 16;
        storage.resize(offset, T::ZERO);
        let mut offsets = [0usize; PANEL];
        for p in 0..n.div_ceil(PANEL) {
            let cols = PANEL.min(n - p * PANEL);
            for (c, o) in offsets[..cols].iter_mut().enumerate() {
                *o = col(p * PANEL + c);
            }
            let first = offsets[0];
            let contiguous = offsets[..cols]
                .iter()
                .enumerate()
                .all(|(c, &o)| o == first + c);
            for &base in &rows {
                if contiguous {
                    storage.extend_from_slice(&src[base + first..base + first + cols]);
                } else {
                    storage.extend(offsets[..cols].iter().map(|&o| src[base + o]));
                }
                storage.resize(storage.len() + PANEL - cols, T::ZERO);
            }
        }
        debug_assert_eq!(storage.len(), offset + len);
        PackedRhs {
            k,
            n,
            layout: Layout::Panels { offset, storage },
        }
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
                    c as *mut f32,
                    c_row_stride,
                    accumulate,
                    a as *const f32,
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
            #[cfg(target_arch = "x86_64")]
            // SAFETY: panels exist only where `packed_path` found AVX-512F and T is f32; the
            // shapes are the caller's contract.
            Layout::Panels { offset, storage } => unsafe {
                avx512::multiply(
                    self.k,
                    self.n,
                    storage[*offset..].as_ptr() as *const f32,
                    m,
                    c as *mut f32,
                    c_row_stride,
                    accumulate,
                    a as *const f32,
                    a_row_stride,
                )
            },
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Panels { .. } => unreachable!("panels are built only on x86-64"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MAX_ROWS, PANEL};

    /// The row chunks: `m` rows in near-equal chunks of at most [`MAX_ROWS`].
    fn chunks(m: usize) -> impl Iterator<Item = (usize, usize)> {
        let count = m.div_ceil(MAX_ROWS);
        (0..count).map(move |i| (m * i / count, m * (i + 1) / count))
    }

    /// The product with `n` columns of panels starting at `panels`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn multiply(
        k: usize,
        n: usize,
        panels: *const f32,
        m: usize,
        c: *mut f32,
        c_row_stride: usize,
        accumulate: bool,
        a: *const f32,
        a_row_stride: usize,
    ) {
        for p in 0..n.div_ceil(PANEL) {
            let cols = PANEL.min(n - p * PANEL);
            let low = if cols >= 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            };
            let high = if cols >= PANEL {
                0xffff
            } else {
                ((1u32 << cols.saturating_sub(16)) - 1) as u16
            };
            // SAFETY (this block): panel `p` is `k * PANEL` floats inside the storage; rows
            // `r0..r1` of A and C and the columns `p * PANEL..+cols` of C are the caller's.
            unsafe {
                let b = panels.add(p * k * PANEL);
                for (r0, r1) in chunks(m) {
                    let tile = Tile {
                        k,
                        a: a.add(r0 * a_row_stride),
                        a_row_stride,
                        b,
                        c: c.add(r0 * c_row_stride + p * PANEL),
                        c_row_stride,
                        accumulate,
                        masks: [low, high],
                    };
                    match r1 - r0 {
                        1 => tile.run::<1>(),
                        2 => tile.run::<2>(),
                        3 => tile.run::<3>(),
                        4 => tile.run::<4>(),
                        5 => tile.run::<5>(),
                        6 => tile.run::<6>(),
                        7 => tile.run::<7>(),
                        8 => tile.run::<8>(),
                        9 => tile.run::<9>(),
                        10 => tile.run::<10>(),
                        11 => tile.run::<11>(),
                        _ => tile.run::<12>(),
                    }
                }
            }
        }
    }

    /// One microkernel call: `ROWS` rows of A times one panel into `ROWS x PANEL` of C.
    struct Tile {
        k: usize,
        a: *const f32,
        a_row_stride: usize,
        b: *const f32,
        c: *mut f32,
        c_row_stride: usize,
        accumulate: bool,
        /// The valid columns of C in each of the panel's two registers.
        masks: [u16; 2],
    }

    impl Tile {
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn run<const ROWS: usize>(&self) {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            // SAFETY (whole body): the pointers and extents are `multiply`'s; C's columns past
            // the panel's valid ones are never loaded or stored (masked), and the panel is
            // 64-byte aligned with `PANEL` floats per row.
            unsafe {
                for kk in 0..self.k {
                    let b0 = _mm512_load_ps(self.b.add(kk * PANEL));
                    let b1 = _mm512_load_ps(self.b.add(kk * PANEL + 16));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*self.a.add(r * self.a_row_stride + kk));
                        acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let row = self.c.add(r * self.c_row_stride);
                    for (half, &value) in acc.iter().enumerate() {
                        let mask = self.masks[half];
                        if mask == 0 {
                            continue;
                        }
                        let at = row.wrapping_add(16 * half);
                        let value = if self.accumulate {
                            _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, at))
                        } else {
                            value
                        };
                        _mm512_mask_storeu_ps(at, mask, value);
                    }
                }
            }
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

    #[test]
    fn packed_products_equal_the_triple_loop_for_ragged_shapes() {
        // Rows 1..=30 cover every microkernel height and uneven chunking; columns cover a
        // partial first register, a partial second one and several panels.
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 7, 3),
            (12, 16, 9),
            (13, 17, 33),
            (30, 70, 64),
            (25, 96, 5),
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
                            "m={m} n={n} k={k} acc={accumulate} ({r},{col}): {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_products_gather_a_column_map_with_breaks_inside_panels() {
        // The first panel of 32 columns mixes a contiguous run (0..20) with columns in
        // reverse order, so it is copied element by element; the second, partial one (13
        // columns) is contiguous from an offset, so each of its rows is one copy.
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
