//! The AVX2 + FMA microkernel: `C[m, n] (+)= A[m, k] · B` for `B` in panels of [`PANEL`]
//! columns ([`super::panels`]), up to [`MAX_ROWS`] rows of `A` per call.
//!
//! Register tile: 6 rows x 16 columns, 12 accumulators of the 16 `ymm` registers, two more
//! for the panel row and one for the broadcast of `A`; per step of `k`, two aligned loads
//! and six broadcasts (all on the load ports) feed twelve fused multiply-adds. The edges of
//! C are loaded and stored with lane masks (`vmaskmovps`).

use std::arch::x86_64::*;

use super::panels::row_chunks;

/// Registers of 8 `f32` per panel row.
const VECS: usize = 2;
/// Columns per panel.
pub(super) const PANEL: usize = 8 * VECS;
/// Rows per microkernel call: 6 rows x 2 registers = 12 accumulators.
pub(super) const MAX_ROWS: usize = 6;

/// The product with `n` columns of panels starting at `panels` (`k` rows of [`PANEL`]
/// floats each, 32-byte aligned), `A[r, i]` at `a + r * lda + i`, `C` row-major with `ldc`.
///
/// # Safety
/// AVX2 and FMA are available; the panels hold `n.div_ceil(PANEL) * k * PANEL` floats; `A`
/// holds `m` rows of `k`; `C` holds `m` rows of `n` that no other thread touches meanwhile.
#[target_feature(enable = "avx2,fma")]
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
        for (r0, r1) in row_chunks(m, MAX_ROWS) {
            let tile = Tile {
                k,
                a: a.wrapping_add(r0 * lda),
                lda,
                b: panels.wrapping_add(p * k * PANEL),
                c: c.wrapping_add(r0 * ldc + p * PANEL),
                ldc,
                accumulate,
                cols,
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
                    _ => tile.run::<6>(),
                }
            }
        }
    }
}

/// `lanes` (1 to 7) leading lanes set, for `vmaskmovps`: eight set words then eight clear
/// ones, read from `8 - lanes`.
const LANE_MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// One microkernel call: `ROWS` rows of A times one panel into `ROWS x PANEL` of C.
struct Tile {
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    /// The valid columns of the panel (1 to `PANEL`).
    cols: usize,
}

impl Tile {
    /// # Safety
    /// As [`multiply`], for this tile's rows and panel.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn run<const ROWS: usize>(&self) {
        let mut acc = [[_mm256_setzero_ps(); VECS]; ROWS];
        // One pointer per row of A and one index shared by all: each broadcast is a single
        // load addressed `row + 4 * i`, so the loop spends no integer work on row addresses.
        // (`black_box` keeps the compiler from deriving each row's address from the first
        // again inside the loop.)
        let rows: [*const f32; ROWS] =
            std::hint::black_box(std::array::from_fn(|r| self.a.wrapping_add(r * self.lda)));
        let b = self.b;
        for i in 0..self.k {
            let mut panel = [_mm256_setzero_ps(); VECS];
            for (v, value) in panel.iter_mut().enumerate() {
                // SAFETY: one panel row, inside the panel and 32-byte aligned (`PANEL`
                // floats per row from an aligned start).
                *value = unsafe { _mm256_load_ps(b.add(i * PANEL + 8 * v)) };
            }
            for (acc, row) in acc.iter_mut().zip(&rows) {
                // SAFETY: element `(r, i)` of A, inside its `ROWS` rows of `k`.
                let x = _mm256_broadcast_ss(unsafe { &*row.add(i) });
                for (acc, &column) in acc.iter_mut().zip(&panel) {
                    *acc = _mm256_fmadd_ps(x, column, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = self.c.wrapping_add(r * self.ldc);
            for (v, &value) in acc.iter().enumerate() {
                let lanes = self.cols.saturating_sub(8 * v).min(8);
                let at = row.wrapping_add(8 * v);
                if lanes == 8 {
                    // SAFETY: 8 valid columns of row `r` of this tile in C.
                    unsafe {
                        let value = if self.accumulate {
                            _mm256_add_ps(value, _mm256_loadu_ps(at))
                        } else {
                            value
                        };
                        _mm256_storeu_ps(at, value);
                    }
                } else if lanes > 0 {
                    // SAFETY: 8 words of the mask table from `8 - lanes <= 7`.
                    let mask =
                        unsafe { _mm256_loadu_si256(LANE_MASKS.as_ptr().add(8 - lanes).cast()) };
                    // SAFETY: the `lanes` valid columns of row `r` of this tile in C (masked).
                    unsafe {
                        let value = if self.accumulate {
                            _mm256_add_ps(value, _mm256_maskload_ps(at, mask))
                        } else {
                            value
                        };
                        _mm256_maskstore_ps(at, mask, value);
                    }
                }
            }
        }
    }
}
