//! The bfloat16 products on AVX512-BF16 (`vdpbf16ps`: AMD Zen 4 and later, Intel Cooper Lake)
//! for CPUs without AMX tiles. Same operands as the tiles: the left one row-major bfloat16, the
//! right one in [`super::Bf16Rhs`]'s layout, whose 16 column pairs of one row pair are exactly
//! one `vdpbf16ps` operand. Each call of the register kernel keeps 8 rows x 32 columns of the
//! destination in 16 registers; every row pair of the right operand is loaded once (two
//! registers) and multiplied by each of the 8 rows' broadcast left pair, summing in `f32`.
//!
//! Loop order: 32 columns of the right operand (`k x 32` bfloat16, L1/L2-resident) against
//! every 8-row block of the left one, so the right operand is read from memory once.

use super::Out;

/// Rows of the destination per register block.
const ROWS: usize = 8;
/// Columns of the destination per register block (two 16-lane registers).
const COLS: usize = 32;

/// Whether this CPU has AVX512-F and AVX512-BF16 (checked by the caller once per process).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out (+)= lhs · rhs` for the valid `out.m x out.n` part: `lhs` row-major bfloat16 with `m`
/// rows (a multiple of 16, at least `out.m`) of `k` (even) values, `rhs` in
/// [`super::Bf16Rhs`]'s layout with `n` columns (a multiple of 32, at least `out.n`).
///
/// # Safety
/// [`available`] returned `true`; `out` addresses live memory no other thread touches.
pub unsafe fn products(m: usize, n: usize, k: usize, lhs: &[u16], rhs: &[u16], out: &Out) {
    assert!(
        lhs.len() >= m * k
            && rhs.len() >= k * n
            && m.is_multiple_of(16)
            && n.is_multiple_of(COLS)
            && k.is_multiple_of(2)
            && out.m <= m
            && out.n <= n,
        "bfloat16 dot products: m {m}, n {n}, k {k} do not fit the operands or the destination"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features are the caller's; the extents were asserted.
    unsafe {
        wide::products(k, lhs.as_ptr(), rhs.as_ptr(), out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no AVX512-BF16 on this platform")
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    use super::{COLS, Out, ROWS};

    /// 16 bfloat16 pairs as `vdpbf16ps` takes them.
    #[inline(always)]
    fn pairs(bits: __m512i) -> __m512bh {
        // SAFETY: both are 512 plain bits.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(bits) }
    }

    /// See [`super::products`]; rows past `out.m` rounded up to 8 and columns past `out.n`
    /// rounded up to 32 are not computed.
    ///
    /// # Safety
    /// As [`super::products`], after its checks.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn products(k: usize, lhs: *const u16, rhs: *const u16, out: &Out) {
        let mut j = 0;
        while j < out.n {
            // Blocks of 16 columns: `k / 2` rows of 16 pairs (`k * 16` halves each).
            let b0 = unsafe { rhs.add((j / 16) * k * 16) };
            let b1 = unsafe { b0.add(k * 16) };
            let mut i = 0;
            while i < out.m {
                // SAFETY: rows `i..i + 8` are inside `lhs` (`m` is a multiple of 16 and at
                // least `out.m`), the two column blocks inside `rhs`.
                unsafe { block(k, lhs.add(i * k), b0, b1, out, i, j) };
                i += ROWS;
            }
            j += COLS;
        }
    }

    /// Rows `i..i + 8` and columns `j..j + 32` of `out` from the left rows at `a` (stride `k`)
    /// and the right column blocks at `b0`, `b1`.
    ///
    /// # Safety
    /// As [`products`], for these rows and columns.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn block(
        k: usize,
        a: *const u16,
        b0: *const u16,
        b1: *const u16,
        out: &Out,
        i: usize,
        j: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for p in 0..k / 2 {
            // SAFETY (the loop): pair row `p` of both blocks, pair `p` of each left row.
            let (r0, r1) = unsafe {
                (
                    pairs(_mm512_loadu_si512(b0.add(p * 32).cast())),
                    pairs(_mm512_loadu_si512(b1.add(p * 32).cast())),
                )
            };
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = unsafe { a.add(r * k + 2 * p).cast::<i32>().read_unaligned() };
                let left = pairs(_mm512_set1_epi32(pair));
                row[0] = _mm512_dpbf16_ps(row[0], left, r0);
                row[1] = _mm512_dpbf16_ps(row[1], left, r1);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            if i + r >= out.m {
                break;
            }
            for (h, &sum) in row.iter().enumerate() {
                let col = j + 16 * h;
                if col >= out.n {
                    break;
                }
                let lanes = (out.n - col).min(16);
                let mask: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
                // SAFETY: row `i + r`, columns `col..col + lanes` are inside C.
                unsafe {
                    let c = out.c.add((i + r) * out.c_row_stride + col);
                    let value = if out.accumulate {
                        _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, c))
                    } else {
                        sum
                    };
                    _mm512_mask_storeu_ps(c, mask, value);
                }
            }
        }
    }
}
