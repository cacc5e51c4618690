//! The large `f32` products (input projections, weight gradients, the dense layer) on the
//! instruction set's microkernel ([`Kernel`], where [`Kernel::runs_large_products`]), blocked
//! for the caches: `B` is packed
//! in panels [`KC`] rows at a time (a panel of `KC` rows stays in L1 while every row chunk
//! of `A` passes over it), `A` taken [`MC`] rows at a time (a block of `MC x KC` stays in L2
//! while every panel passes under it), and copied row-major first where it is not (a
//! transposed operand, whose rows would be read a cache line per element).
//!
//! Each element of `C` is summed in the same order whatever the shape of the product it is
//! part of: `KC` terms at a time, each block's sum from zero in ascending order, added to
//! `C` (or written, for the first block without `accumulate`), so a product split by rows
//! or columns over threads gives the sums one thread gives.

use std::cell::RefCell;

use super::View;
use super::panels::{Kernel, pack};

/// Rows of `B` (terms of each sum) per packed block.
const KC: usize = 256;
/// Rows of `A` per block: a multiple of every kernel's row count (12, 6).
const MC: usize = 96;

thread_local! {
    /// Each thread's packed `B` block and row-major `A` block, kept between calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `C[m, n] = A[m, k] · B[k, n]`, or `C += A · B` with `accumulate`, on `kernel`; `C`
/// row-major with `ldc`. `k > 0`.
///
/// # Safety
/// As [`super::matmul`]; `kernel` comes from [`Kernel::for_type`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: View<f32>,
    b: View<f32>,
) {
    let extent = (k - 1) * b.row_stride + (n - 1) * b.col_stride + 1;
    // SAFETY: every element of B lies inside `extent` floats from its pointer (the caller's
    // contract), and nothing writes B during the call.
    let b_values = unsafe { std::slice::from_raw_parts(b.ptr, extent) };
    let cols: Vec<usize> = (0..n).map(|c| c * b.col_stride).collect();
    SCRATCH.with_borrow_mut(|(panels, lhs)| {
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let rows: Vec<usize> = (k0..k0 + kc).map(|r| r * b.row_stride).collect();
            let offset = pack(kernel.panel(), b_values, &rows, &cols, panels);
            let panels = panels[offset..].as_ptr();
            for m0 in (0..m).step_by(MC) {
                let mc = MC.min(m - m0);
                let (a_block, lda) = if a.col_stride == 1 {
                    (a.ptr.wrapping_add(m0 * a.row_stride + k0), a.row_stride)
                } else {
                    // SAFETY: rows `m0..m0 + mc`, columns `k0..k0 + kc` of A, inside it by
                    // the caller's contract.
                    unsafe { copy_rows(lhs, a, m0, mc, k0, kc) };
                    (lhs.as_ptr(), kc)
                };
                // SAFETY: the panels hold the packed `kc x n` block; `a_block` holds `mc` rows
                // of `kc` (A's own rows or the copy); rows `m0..m0 + mc` of C are the
                // caller's; the kernel's instruction set is available.
                unsafe {
                    kernel.multiply(
                        kc,
                        n,
                        panels,
                        mc,
                        c.wrapping_add(m0 * ldc),
                        ldc,
                        accumulate || k0 > 0,
                        a_block,
                        lda,
                    )
                };
            }
        }
    });
}

/// Copies `A[m0..m0 + mc, k0..k0 + kc]` row-major into `dst` (`mc x kc`), in tiles of 16 x
/// 16: a tile reads 16 cache lines of A and writes 16 of `dst`, which stay in L1 whatever
/// A's strides (an untiled copy of a transposed A reads or writes a line per element, at
/// strides that map many lines to the same L1 set).
///
/// # Safety
/// The block lies inside A's buffer.
unsafe fn copy_rows(dst: &mut Vec<f32>, a: View<f32>, m0: usize, mc: usize, k0: usize, kc: usize) {
    const TILE: usize = 16;
    dst.clear();
    dst.resize(mc * kc, 0.0);
    for r0 in (0..mc).step_by(TILE) {
        for i0 in (0..kc).step_by(TILE) {
            for i in i0..(i0 + TILE).min(kc) {
                for r in r0..(r0 + TILE).min(mc) {
                    let at = (m0 + r) * a.row_stride + (k0 + i) * a.col_stride;
                    // SAFETY: element `(m0 + r, k0 + i)`, inside A.
                    dst[r * kc + i] = unsafe { *a.ptr.add(at) };
                }
            }
        }
    }
}
