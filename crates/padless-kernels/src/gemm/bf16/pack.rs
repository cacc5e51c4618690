//! Building a [`Bf16Rhs`] from `f32` data in any layout: the right-hand operands of the
//! kernels come row-major (the recurrent weights for the forward steps, the dense layer's
//! kernel), transposed (the recurrent weights for the backward steps, `K^T` for the input
//! gradients) or strided (the weight gradients' products). Each 16-column block of `B` is
//! gathered into a strip of `f32` rows, then rounded and interleaved in pairs of rows, 16
//! lanes at a time (AVX-512 on the machines that have the tiles): with the tiles this fast,
//! an element-by-element conversion would take a large part of a training step.

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
        // Transposed sources (the backward's `U^T`, `K^T`): where 32 rows of a block are one
        // run in `src`, each column's 32 rows are contiguous, read as two vectors and
        // transposed in registers instead of element by element through the strip.
        let row_runs: Vec<bool> = (0..half_k / 16)
            .map(|chunk| {
                let r0 = chunk * 32;
                r0 + 32 <= k && rows[r0..r0 + 32].windows(2).all(|w| w[1] == w[0] + 1)
            })
            .collect();
        #[cfg(target_arch = "x86_64")]
        let wide_transpose = std::arch::is_x86_feature_detected!("avx512bw");
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
                #[cfg(target_arch = "x86_64")]
                if !run && row_runs[chunk] && wide_transpose {
                    // SAFETY: AVX-512BW detected; the 32 rows from `rows[r0]` in every column
                    // of the block lie inside `src` (the last offset was asserted above).
                    unsafe { wide::transposed(out, src, rows[r0], block_cols) };
                    continue;
                }
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
/// rows of 16 floats; 16 lanes at a time with AVX-512.
fn pairs(out: &mut [u32], strip: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was detected.
        unsafe { wide::pairs(out, strip) };
        return;
    }
    for (dst, rows) in out.chunks_exact_mut(16).zip(strip.chunks_exact(32)) {
        let (even, odd) = rows.split_at(16);
        for q in 0..16 {
            dst[q] = u32::from(to_bf16(even[q])) | (u32::from(to_bf16(odd[q])) << 16);
        }
    }
}

/// Rounding to bfloat16 written with AVX-512 intrinsics: left to the compiler, the pair
/// loop above becomes gathers and scatters, where each 16 pairs need two loads, a few
/// integer operations and one store.
#[cfg(target_arch = "x86_64")]
pub(super) mod wide {
    use std::arch::x86_64::*;

    /// Each lane's `f32` bits rounded to the nearest bfloat16 (ties to even) in the high
    /// half, as [`super::to_bf16`] does (the low half is left over).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn rounded(bits: __m512i) -> __m512i {
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)))
    }

    /// See [`super::pairs`].
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pairs(out: &mut [u32], strip: &[f32]) {
        let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        for (dst, rows) in out.chunks_exact_mut(16).zip(strip.chunks_exact(32)) {
            // SAFETY: `rows` holds 32 floats and `dst` 16 words.
            unsafe {
                let even = rounded(_mm512_loadu_si512(rows.as_ptr().cast()));
                let odd = rounded(_mm512_loadu_si512(rows.as_ptr().add(16).cast()));
                let words =
                    _mm512_or_si512(_mm512_srli_epi32::<16>(even), _mm512_and_si512(odd, high));
                _mm512_storeu_si512(dst.as_mut_ptr().cast(), words);
            }
        }
    }

    /// One chunk (32 rows, 16 columns) of a block: `out[p * 16 + q]` pairs
    /// `src[row0 + cols[q] + 2p]` (low) and `src[row0 + cols[q] + 2p + 1]` (high), zero for
    /// `q >= cols.len()`.
    ///
    /// # Safety
    /// AVX-512F and AVX-512BW must be available; `src[row0 + c..row0 + c + 32]` inside `src`
    /// for every `c` of `cols` (at most 16); `out` holds 256 words.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn transposed(out: &mut [u32], src: &[f32], row0: usize, cols: &[usize]) {
        debug_assert!(cols.len() <= 16 && out.len() >= 256);
        // The high (bfloat16) halves of 32 rounded floats, in order: 16 pairs.
        const HIGH_HALVES: [u16; 32] = {
            let mut index = [0u16; 32];
            let mut i = 0;
            while i < 32 {
                index[i] = 2 * i as u16 + 1;
                i += 1;
            }
            index
        };
        // SAFETY (the block): the caller's contract.
        unsafe {
            let index = _mm512_loadu_si512(HIGH_HALVES.as_ptr().cast());
            let mut x = [_mm512_setzero_si512(); 16];
            for (column, &c) in x.iter_mut().zip(cols) {
                let at = src.as_ptr().add(row0 + c);
                let low = rounded(_mm512_loadu_si512(at.cast()));
                let high = rounded(_mm512_loadu_si512(at.add(16).cast()));
                // Column `q`'s 16 pairs: `x[q]`'s word `p`; the transpose makes it `x[p]`'s
                // word `q`.
                *column = _mm512_permutex2var_epi16(low, index, high);
            }
            transpose(&mut x);
            for (p, words) in x.iter().enumerate() {
                _mm512_storeu_si512(out.as_mut_ptr().add(p * 16).cast(), *words);
            }
        }
    }

    /// A 16 x 16 matrix of 32-bit words, one row per register, transposed in place: words
    /// interleaved within 128-bit lanes (32 then 64 bits), then the lanes exchanged twice.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(x: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
        }
        // u[4g + j]: column `4l + j` of rows `4g..4g + 4` in lane `l`.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let b = 4 * g;
            u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
            u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
            u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
            u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
        }
        for j in 0..4 {
            let even_lanes_top = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
            let odd_lanes_top = _mm512_shuffle_i32x4::<0xdd>(u[j], u[4 + j]);
            let even_lanes_bottom = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
            let odd_lanes_bottom = _mm512_shuffle_i32x4::<0xdd>(u[8 + j], u[12 + j]);
            x[j] = _mm512_shuffle_i32x4::<0x88>(even_lanes_top, even_lanes_bottom);
            x[8 + j] = _mm512_shuffle_i32x4::<0xdd>(even_lanes_top, even_lanes_bottom);
            x[4 + j] = _mm512_shuffle_i32x4::<0x88>(odd_lanes_top, odd_lanes_bottom);
            x[12 + j] = _mm512_shuffle_i32x4::<0xdd>(odd_lanes_top, odd_lanes_bottom);
        }
    }

    /// `dst[i] = to_bf16(src[i])` for the first `16 * (len / 16)` elements; returns how
    /// many it did.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn convert(dst: &mut [u16], src: &[f32]) -> usize {
        let len = dst.len().min(src.len()) / 16 * 16;
        for (d, s) in dst[..len]
            .chunks_exact_mut(16)
            .zip(src[..len].chunks_exact(16))
        {
            // SAFETY: 16 floats in, 16 halves out.
            unsafe {
                let bits = rounded(_mm512_loadu_si512(s.as_ptr().cast()));
                let halves = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(bits));
                _mm256_storeu_si256(d.as_mut_ptr().cast(), halves);
            }
        }
        len
    }
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
