//! The `f32` microkernels ([`Kernel`]: one per instruction set that has one) and the layout
//! they multiply by: a right-hand matrix `B[k, n]` as panels of `panel` columns, each `k`
//! rows of `panel` contiguous floats, the first one 64-byte aligned, the last one
//! zero-padded ([`pack`]). A microkernel call multiplies up to `max_rows` rows of `A` by one
//! panel with the whole tile of `C` in registers; the panel loop is outermost, so that a
//! panel stays in cache across the row chunks.

use std::any::TypeId;

#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use crate::isa::{Isa, isa};

/// An `f32` microkernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// 12 x 32 on AVX-512 ([`avx512`]).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 6 x 16 on AVX2 and FMA ([`avx2`]).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The microkernel for products of `T` on the instruction set in effect ([`isa`]): `f32`
    /// on AVX-512 or AVX2; `None` for `f64` and [`Isa::Portable`] (the `gemm` crate's path).
    pub fn for_type<T: 'static>() -> Option<Kernel> {
        if TypeId::of::<T>() != TypeId::of::<f32>() {
            return None;
        }
        match isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(Kernel::Avx512),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(Kernel::Avx2),
            _ => None,
        }
    }

    /// Whether the large products ([`super::matmul`]) run on this kernel too: on AVX2, so
    /// that a forced AVX2 run executes no AVX-512 in its `f32` products; not on AVX-512, where
    /// the `gemm` crate's blocking of the large shapes is a little faster than
    /// [`super::blocked`]'s.
    pub fn runs_large_products(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => false,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => true,
        }
    }

    /// Columns per panel.
    pub fn panel(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::PANEL,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::PANEL,
        }
    }

    /// `C[m, n] = A[m, k] · B`, or `C += A · B` with `accumulate`, for `B` in this kernel's
    /// panels from `panels` ([`pack`]), `A[r, i]` at `a + r * lda + i`, `C` row-major with
    /// `ldc`. Each element of `C` is summed in the same order (`i` ascending, from zero, then
    /// added to `C` when accumulating) whatever `m` and whichever panel it lies in.
    ///
    /// # Safety
    /// This kernel's instruction set is available (a [`Kernel`] comes from
    /// [`Kernel::for_type`]); the panels hold `n.div_ceil(panel) * k * panel` floats; `A`
    /// holds `m` rows of `k`; `C` holds `m` rows of `n` that no other thread touches
    /// meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn multiply(
        self,
        k: usize,
        n: usize,
        panels: *const f32,
        m: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        a: *const f32,
        lda: usize,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        match self {
            // SAFETY: the caller's contract.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe {
                avx512::multiply(k, n, panels, m, c, ldc, accumulate, a, lda)
            },
            // SAFETY: the caller's contract.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::multiply(k, n, panels, m, c, ldc, accumulate, a, lda) },
        }
    }
}

/// `m` rows in near-equal chunks `(start, end)` of at most `max` (so that no call runs a
/// sliver of a tile).
pub(super) fn row_chunks(m: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = m.div_ceil(max);
    (0..count).map(move |i| (m * i / count, m * (i + 1) / count))
}

/// Lays `B[r, c] = src[rows[r] + cols[c]]` out in `storage` (its contents replaced) as panels
/// of `panel` columns from the first 64-byte boundary, and returns that offset. Where a
/// panel's columns are contiguous in `src` (a row-major source) each panel row is one copy;
/// the offsets are computed once per row and per column, not per element.
///
/// # Panics
/// If an offset leaves `src`, or `panel` is above 32.
pub(super) fn pack<T: Copy + Default>(
    panel: usize,
    src: &[T],
    rows: &[usize],
    cols: &[usize],
    storage: &mut Vec<T>,
) -> usize {
    assert!(panel <= 32, "panels of at most 32 columns");
    let (k, n) = (rows.len(), cols.len());
    let len = n.div_ceil(panel) * k * panel;
    let align = 64 / size_of::<T>();
    // No zero fill first: every element is written once (a fresh zeroed block of megabytes
    // costs page faults per call); the capacity never grows below, so the address the offset
    // is computed from stays.
    storage.clear();
    storage.reserve(len + align - 1);
    let offset = (64 - storage.as_ptr() as usize % 64) % 64 / size_of::<T>();
    storage.resize(offset, T::default());
    let mut offsets = [0usize; 32];
    for p in 0..n.div_ceil(panel) {
        let width = panel.min(n - p * panel);
        offsets[..width].copy_from_slice(&cols[p * panel..p * panel + width]);
        let first = offsets[0];
        let contiguous = offsets[..width]
            .iter()
            .enumerate()
            .all(|(c, &o)| o == first + c);
        for &base in rows {
            if contiguous {
                storage.extend_from_slice(&src[base + first..base + first + width]);
            } else {
                storage.extend(offsets[..width].iter().map(|&o| src[base + o]));
            }
            storage.resize(storage.len() + panel - width, T::default());
        }
    }
    debug_assert_eq!(storage.len(), offset + len);
    offset
}
