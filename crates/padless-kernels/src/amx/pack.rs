//! Building a [`Bf16Rhs`] from `f32` data in any layout: the right-hand operands of the
//! kernels come row-major (the recurrent weights for the forward steps, the dense layer's
//! kernel), transposed (the recurrent weights for the backward steps, `K^T` for the input
//! gradients) or strided (the weight gradients' products). Each 16-column block of `B` is
//! gathered into a strip of `f32` rows, then rounded and interleaved in pairs of rows, 16
//! lanes at a time (AVX-512 on the machines that have the tiles).
//!
//! A first version read every element through a closure and rounded it alone: with the
//! tiles this fast it took about a quarter of a `--bf16` G2P training step (perf, one core).

use super::{Bf16Rhs, to_bf16};

impl Bf16Rhs {
    /// `B[r, c] = src[rows[r] + cols[c]]` for `r < k = rows.len()`, `c < n = cols.len()`,
    /// rounded to bfloat16.
    ///
    /// # Panics
    /// If an offset leaves `src`.
    pub(crate) fn from_offsets(src: &[f32], rows: &[usize], cols: &[usize]) -> Self {
        let (k, n) = (rows.len(), cols.len());
        let (k_padded, n_padded) = (k.div_ceil(32) * 32, n.div_ceil(32) * 32);
        if k > 0 && n > 0 {
            let last = rows.iter().max().unwrap_or(&0) + cols.iter().max().unwrap_or(&0);
            assert!(
                last < src.len(),
                "Bf16Rhs: offset {last} outside a source of {} floats",
                src.len()
            );
        }
        let half_k = k_padded / 2;
        // Pairs of bfloat16 values (`B[2p, c]` low, `B[2p + 1, c]` high), block by block.
        let mut data = vec![0u32; half_k * n_padded];
        // 32 rows of one block at a time (one tile's depth): 2 KB that stay in L1.
        let mut strip = [0f32; 32 * 16];
        for (block, out) in data.chunks_exact_mut(half_k * 16).enumerate() {
            let c0 = block * 16;
            let width = 16.min(n.saturating_sub(c0));
            if width == 0 {
                continue; // The zero columns past `n`.
            }
            let block_cols = &cols[c0..c0 + width];
            // Row-major sources: the block's columns are one run, copied row by row.
            let run = block_cols.windows(2).all(|w| w[1] == w[0] + 1);
            for (chunk, out) in out.chunks_exact_mut(16 * 16).enumerate() {
                let r0 = chunk * 32;
                for (i, line) in strip.chunks_exact_mut(16).enumerate() {
                    let Some(&row) = rows.get(r0 + i) else {
                        line.fill(0.0);
                        continue;
                    };
                    let start = row + block_cols[0];
                    if run && width == 16 {
                        // A fixed-size copy: two vector moves instead of a call to memmove.
                        line.copy_from_slice(&src[start..start + 16]);
                    } else if run {
                        line[..width].copy_from_slice(&src[start..start + width]);
                    } else {
                        for (value, &col) in line.iter_mut().zip(block_cols) {
                            // SAFETY: `row + col <= last < src.len()`, asserted above.
                            *value = unsafe { *src.get_unchecked(row + col) };
                        }
                    }
                    line[width..].fill(0.0);
                }
                pairs(out, &strip);
            }
        }
        Bf16Rhs {
            k,
            n,
            k_padded,
            n_padded,
            data,
        }
    }
}

/// `out[p * 16 + q] = bf16(strip[2p][q]) | bf16(strip[2p + 1][q]) << 16` for a strip of
/// rows of 16 floats; 16 lanes wide with AVX-512.
fn pairs(out: &mut [u32], strip: &[f32]) {
    #[inline(always)]
    fn each(out: &mut [u32], strip: &[f32]) {
        for (dst, rows) in out.chunks_exact_mut(16).zip(strip.chunks_exact(32)) {
            let (even, odd) = rows.split_at(16);
            for q in 0..16 {
                dst[q] = u32::from(to_bf16(even[q])) | (u32::from(to_bf16(odd[q])) << 16);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn wide(out: &mut [u32], strip: &[f32]) {
        each(out, strip);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the features were detected.
        unsafe { wide(out, strip) };
        return;
    }
    each(out, strip);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row offsets, column offsets and the element they should give.
    type Source<'a> = (
        Vec<usize>,
        Vec<usize>,
        Box<dyn Fn(usize, usize) -> f32 + 'a>,
    );

    /// Every element lands where the tiles read it (`data[block][pair][column][half]`), from
    /// a row-major, a transposed and a permuted-column source, with zeros past `k` and `n`.
    #[test]
    fn every_element_lands_in_its_pair() {
        let value = |i: usize| ((i * 7919) % 2003) as f32 / 1001.0 - 1.0;
        for &(k, n) in &[(1, 1), (5, 17), (32, 32), (70, 50), (33, 48)] {
            let src: Vec<f32> = (0..k * n).map(value).collect();
            let reversed: Vec<usize> = (0..n).rev().collect();
            let layouts: [Source; 3] = [
                (
                    (0..k).map(|r| r * n).collect(),
                    (0..n).collect(),
                    Box::new(|r, c| src[r * n + c]),
                ),
                (
                    (0..k).collect(),
                    (0..n).map(|c| c * k).collect(),
                    Box::new(|r, c| src[c * k + r]),
                ),
                (
                    (0..k).map(|r| r * n).collect(),
                    reversed.clone(),
                    Box::new(|r, c| src[r * n + reversed[c]]),
                ),
            ];
            for (rows, cols, want) in &layouts {
                let rhs = Bf16Rhs::from_offsets(&src, rows, cols);
                let (kp, np) = (rhs.k_padded, rhs.n_padded);
                assert_eq!((kp % 32, np % 32, kp >= k, np >= n), (0, 0, true, true));
                let halves = rhs.halves();
                for r in 0..kp {
                    for c in 0..np {
                        let got = halves[(c / 16) * kp * 16 + (r / 2) * 32 + (c % 16) * 2 + r % 2];
                        let expected = if r < k && c < n {
                            to_bf16(want(r, c))
                        } else {
                            0
                        };
                        assert_eq!(got, expected, "k={k} n={n} ({r}, {c})");
                    }
                }
            }
        }
    }
}
