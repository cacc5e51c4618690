//! The AVX-512 microkernel: `C[m, n] (+)= A[m, k] · B` for `B` in panels of [`PANEL`]
//! columns ([`super::panels`]), up to [`MAX_ROWS`] rows of `A` per call.
//!
//! Register tile: 12 rows x 32 columns, 24 accumulators of the 32 `zmm` registers; per step
//! of `k`, two aligned loads of the panel row and one broadcast of `A` per row, each feeding
//! two fused multiply-adds. Columns past the panel's valid ones are neither loaded nor
//! stored (masked).

use std::arch::x86_64::*;

use super::panels::row_chunks;

/// Columns per panel: two registers of 16 `f32`.
pub(super) const PANEL: usize = 32;
/// Rows per microkernel call: 12 rows x 2 registers = 24 accumulators.
pub(super) const MAX_ROWS: usize = 12;

/// The product with `n` columns of panels starting at `panels` (`k` rows of [`PANEL`]
/// floats each, 64-byte aligned), `A[r, i]` at `a + r * lda + i`, `C` row-major with `ldc`.
///
/// # Safety
/// AVX-512F is available; the panels hold `n.div_ceil(PANEL) * k * PANEL` floats; `A` holds
/// `m` rows of `k`; `C` holds `m` rows of `n` that no other thread touches meanwhile.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn multiply(
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
        for (r0, r1) in row_chunks(m, MAX_ROWS) {
            let tile = Tile {
                k,
                a: a.wrapping_add(r0 * lda),
                lda,
                b: panels.wrapping_add(p * k * PANEL),
                c: c.wrapping_add(r0 * ldc + p * PANEL),
                ldc,
                accumulate,
                masks: [low, high],
            };
            // SAFETY: panel `p` is `k * PANEL` floats inside the panels; rows `r0..r1` of A
            // and C and the columns `p * PANEL..+cols` of C are the caller's.
            unsafe {
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
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    /// The valid columns of C in each of the panel's two registers.
    masks: [u16; 2],
}

impl Tile {
    /// # Safety
    /// As [`multiply`], for this tile's rows and panel.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const ROWS: usize>(&self) {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        let (mut a, mut b) = (self.a, self.b);
        for _ in 0..self.k {
            // SAFETY: one panel row, inside the panel and 64-byte aligned (`PANEL` floats
            // per row from an aligned start).
            let (b0, b1) = unsafe { (_mm512_load_ps(b), _mm512_load_ps(b.add(16))) };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: element `(r, i)` of A, inside its `ROWS` rows of `k`.
                let x = _mm512_set1_ps(unsafe { *a.add(r * self.lda) });
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
            a = a.wrapping_add(1);
            b = b.wrapping_add(PANEL);
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = self.c.wrapping_add(r * self.ldc);
            for (half, &value) in acc.iter().enumerate() {
                let mask = self.masks[half];
                if mask == 0 {
                    continue;
                }
                let at = row.wrapping_add(16 * half);
                // SAFETY: the valid columns of row `r` of this tile in C (masked).
                unsafe {
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
