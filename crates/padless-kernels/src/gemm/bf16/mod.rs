//! Opt-in bfloat16 products on Intel AMX tiles, or where a CPU has none, on AVX512-BF16
//! (`vdpbf16ps`, AMD Zen 4 and later: [`dot`]) ([`set_bf16_products`]): each `f32` operand is
//! rounded to bfloat16 (8 bits of mantissa, round to nearest even) and the products are summed
//! in `f32`. Off by default; while on, every `f32` product of the kernels (the per-step
//! products, the input projections, the weight gradients and the dense layer's) runs on the
//! tiles (or the dot products); `f64` never does. Both units take the same operands and give
//! the same sums up to the order of the `f32` additions.
//!
//! The tiles run several times the `f32` rate; the price is precision: a product's relative
//! error grows from about 1e-7 to about 1e-3 (bfloat16 inputs), as in mixed-precision
//! training on GPUs. They run only under [`Isa::Avx512`] ([`crate::isa()`]).
//!
//! Tiles: Linux on x86-64 only: the process asks the kernel for the tile state once
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). Dot products: any x86-64 OS.
//! Elsewhere [`bf16_products_available`] is `false`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::isa::{Isa, isa, process_isa};

mod dot;
mod pack;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The unit that runs the bfloat16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// AMX tiles ([`imp::tiles`]).
    Tiles,
    /// AVX512-BF16 dot products ([`dot::products`]).
    Dot,
}

impl Unit {
    /// Whether this CPU (and OS) can run this unit. Checked once per process.
    fn available(self) -> bool {
        static TILES: OnceLock<bool> = OnceLock::new();
        static DOT: OnceLock<bool> = OnceLock::new();
        match self {
            Unit::Tiles => *TILES.get_or_init(imp::probe),
            Unit::Dot => *DOT.get_or_init(dot::available),
        }
    }

    /// The tiles where there are, else the dot products where there are.
    fn best() -> Option<Unit> {
        [Unit::Tiles, Unit::Dot].into_iter().find(|u| u.available())
    }

    /// [`Unit::best`], for the kernels' products, which run on a unit only while the switch
    /// is on ([`set_bf16_products`] refuses it where there is none).
    ///
    /// # Panics
    /// Where this CPU has neither unit.
    pub fn chosen() -> Unit {
        Unit::best().expect("bfloat16 products run only where a unit is available")
    }
}

/// Whether this CPU and OS can run the bfloat16 products: on AMX tiles (AMX-TILE and AMX-BF16
/// in CPUID, and the OS granted the tile state) or on AVX512-BF16, with the kernels on
/// [`Isa::Avx512`] (not forced to another instruction set, [`crate::set_isa`]). The CPU is
/// checked once per process.
pub fn bf16_products_available() -> bool {
    Unit::best().is_some() && process_isa() == Isa::Avx512
}

/// Turns the bfloat16 tile products on or off for the whole process (every thread, every
/// later kernel call; a thread under [`crate::with_isa`] with another instruction set than
/// [`Isa::Avx512`] keeps `f32` products).
///
/// # Errors
/// Turning them on where [`bf16_products_available`] is `false`: the message says what is
/// missing.
pub fn set_bf16_products(on: bool) -> Result<(), String> {
    if on && Unit::best().is_none() {
        return Err(
            "bfloat16 products need an x86-64 CPU with AMX-TILE and AMX-BF16 (Intel Xeon \
             4th generation or later, on Linux) or with AVX512-BF16 (AMD Zen 4 or later); \
             this machine has neither"
                .to_string(),
        );
    }
    if on && process_isa() != Isa::Avx512 {
        return Err(format!(
            "bfloat16 products run on avx512 only, and the kernels are forced to {} \
             (PADLESS_ISA or set_isa)",
            process_isa()
        ));
    }
    ENABLED.store(on, Ordering::Relaxed);
    Ok(())
}

/// Whether the bfloat16 tile products are on ([`set_bf16_products`]).
pub fn bf16_products() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether products of `T` go to the tiles now: `f32` while the switch is on, on
/// [`Isa::Avx512`].
pub(crate) fn bf16_path<T: 'static>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && bf16_products()
        && isa() == Isa::Avx512
}

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// `dst[i] = to_bf16(src[i])`, 16 lanes at a time with AVX-512.
fn convert(dst: &mut [u16], src: &[f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was detected.
        done = unsafe { pack::wide::convert(dst, src) };
    }
    for (d, &x) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = to_bf16(x);
    }
}

/// A right-hand matrix `B[k, n]` in the tiles' layout: blocks of 16 columns, each `k / 2`
/// rows of 16 column pairs `(B[2r, c], B[2r + 1, c])` (one `u32` each, the even row in the
/// low half); `k` padded to 32 and `n` to 32 with zeros. Built by [`Bf16Rhs::from_offsets`].
pub(crate) struct Bf16Rhs {
    k: usize,
    n: usize,
    k_padded: usize,
    n_padded: usize,
    data: Vec<u32>,
}

impl Bf16Rhs {
    /// `B[r, c] = get(r, c)`, through [`Bf16Rhs::from_offsets`] (the tests' plain builder).
    #[cfg(test)]
    pub fn gather(k: usize, n: usize, get: impl Fn(usize, usize) -> f32) -> Self {
        let values: Vec<f32> = (0..k * n).map(|i| get(i / n, i % n)).collect();
        let rows: Vec<usize> = (0..k).map(|r| r * n).collect();
        let cols: Vec<usize> = (0..n).collect();
        Bf16Rhs::from_offsets(&values, &rows, &cols)
    }

    /// The layout as bfloat16 values, two per pair.
    fn halves(&self) -> &[u16] {
        // SAFETY: a `u32` is two `u16` with a stricter alignment.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<u16>(), 2 * self.data.len()) }
    }

    /// `C[m, n] = A[m, k] · B` (or `+=` with `accumulate`) on `unit` (the kernels pass
    /// [`Unit::chosen`]; the tests each available unit), `A[r, i]` at
    /// `a + r * a_row_stride + i * a_col_stride`, `C` row-major with `c_row_stride`.
    ///
    /// # Safety
    /// As [`crate::gemm::matmul`]; and `unit` must be available on this CPU.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn multiply(
        &self,
        unit: Unit,
        m: usize,
        c: *mut f32,
        c_row_stride: usize,
        accumulate: bool,
        a: *const f32,
        a_row_stride: usize,
        a_col_stride: usize,
    ) {
        if m == 0 || self.n == 0 {
            return;
        }
        let (k, kp) = (self.k, self.k_padded);
        let m_padded = m.div_ceil(16) * 16;
        LHS.with_borrow_mut(|lhs| {
            // Every element is written below (values, then the zero padding), so the scratch
            // is not cleared first.
            lhs.resize(m_padded * kp, 0);
            // SAFETY (both loops): inside A by the caller's contract. The loop order follows
            // A's contiguous dimension.
            if a_col_stride == 1 {
                for r in 0..m {
                    // SAFETY: row `r` of A is `k` contiguous floats.
                    let src = unsafe { std::slice::from_raw_parts(a.add(r * a_row_stride), k) };
                    convert(&mut lhs[r * kp..r * kp + k], src);
                }
            } else if a_row_stride == 1 {
                // A transposed: each column of A is contiguous; converted whole, then spread.
                let mut column = vec![0u16; m];
                for i in 0..k {
                    // SAFETY: column `i` of A is `m` contiguous floats.
                    let src = unsafe { std::slice::from_raw_parts(a.add(i * a_col_stride), m) };
                    convert(&mut column, src);
                    for (r, &v) in column.iter().enumerate() {
                        lhs[r * kp + i] = v;
                    }
                }
            } else {
                for r in 0..m {
                    for i in 0..k {
                        lhs[r * kp + i] =
                            to_bf16(unsafe { *a.add(r * a_row_stride + i * a_col_stride) });
                    }
                }
            }
            for r in 0..m {
                lhs[r * kp + k..(r + 1) * kp].fill(0);
            }
            lhs[m * kp..m_padded * kp].fill(0);
            let out = Out {
                c,
                c_row_stride,
                m,
                n: self.n,
                accumulate,
            };
            // SAFETY: `lhs` holds `m_padded x kp`, `data` the padded B; C is the caller's;
            // availability is the caller's.
            unsafe {
                match unit {
                    Unit::Tiles => {
                        imp::tiles(m_padded, self.n_padded, kp, lhs, self.halves(), &out)
                    }
                    Unit::Dot => {
                        dot::products(m_padded, self.n_padded, kp, lhs, self.halves(), &out)
                    }
                }
            };
        });
    }
}

thread_local! {
    /// Each thread's bfloat16 copy of the left operand, kept between calls.
    static LHS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The destination of a tile product: `m x n` of row-major `f32` at `c`.
pub(crate) struct Out {
    c: *mut f32,
    c_row_stride: usize,
    m: usize,
    n: usize,
    accumulate: bool,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::asm;
    use std::cell::Cell;

    use super::Out;

    /// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (bit 24); then the permission.
    pub fn probe() -> bool {
        let leaf0 = std::arch::x86_64::__cpuid(0);
        if leaf0.eax < 7 {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
            return false;
        }
        let ret: i64;
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18) only asks
        // the kernel to let this process use the tile state; it touches no memory of ours.
        unsafe {
            asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") 0x1023i64,
                 in("rsi") 18i64, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    /// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    thread_local! {
        static CONFIGURED: Cell<bool> = const { Cell::new(false) };
    }

    /// Loads the tile configuration on this thread once.
    fn configure() {
        if CONFIGURED.with(Cell::get) {
            return;
        }
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            config.bytes_per_row[t] = 64;
            config.rows[t] = 16;
        }
        // SAFETY: a valid palette-1 configuration (the process has the tile permission).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config as *const TileConfig, options(nostack)) };
        CONFIGURED.with(|c| c.set(true));
    }

    /// One 16 x 16 block of the destination: C itself where the block lies inside it, else a
    /// scratch block whose valid part is copied in (to accumulate) and out.
    struct Block {
        ptr: *mut f32,
        stride: usize,
        inside: bool,
        row: usize,
        col: usize,
    }

    impl Block {
        /// The block at rows `row..row + 16`, columns `col..col + 16` of `out`.
        ///
        /// # Safety
        /// `out` as in [`tiles`].
        unsafe fn new(out: &Out, row: usize, col: usize, scratch: *mut f32) -> Block {
            let inside = row + 16 <= out.m && col + 16 <= out.n;
            if inside {
                return Block {
                    // SAFETY: inside C (the block lies inside `m x n`).
                    ptr: unsafe { out.c.add(row * out.c_row_stride + col) },
                    stride: out.c_row_stride * 4,
                    inside,
                    row,
                    col,
                };
            }
            for r in 0..16 {
                for q in 0..16 {
                    let (rr, cc) = (row + r, col + q);
                    let value = if out.accumulate && rr < out.m && cc < out.n {
                        // SAFETY: inside C.
                        unsafe { *out.c.add(rr * out.c_row_stride + cc) }
                    } else {
                        0.0
                    };
                    // SAFETY: the scratch block holds 16 x 16.
                    unsafe { *scratch.add(r * 16 + q) = value };
                }
            }
            Block {
                ptr: scratch,
                stride: 64,
                inside,
                row,
                col,
            }
        }

        /// Copies a scratch block's valid part back to C.
        ///
        /// # Safety
        /// As [`Block::new`], after the block was stored.
        unsafe fn finish(&self, out: &Out) {
            if self.inside {
                return;
            }
            for r in 0..16.min(out.m.saturating_sub(self.row)) {
                for q in 0..16.min(out.n.saturating_sub(self.col)) {
                    // SAFETY: inside C and the scratch block.
                    unsafe {
                        *out.c.add((self.row + r) * out.c_row_stride + self.col + q) =
                            *self.ptr.add(r * 16 + q)
                    };
                }
            }
        }
    }

    /// `out[m_padded, n_padded] (+)= lhs · rhs` on the tiles, for the valid `out.m x out.n`
    /// part; `m_padded` a multiple of 16, `n_padded` and `k` of 32; `rhs` in
    /// [`super::Bf16Rhs`]'s layout, `lhs` row-major bfloat16.
    ///
    /// # Safety
    /// The tile permission was granted ([`probe`] returned `true`); the slices hold the
    /// shapes; `out` addresses live memory no other thread touches.
    pub unsafe fn tiles(m: usize, n: usize, k: usize, lhs: &[u16], rhs: &[u16], out: &Out) {
        assert!(lhs.len() >= m * k && rhs.len() >= k * n);
        configure();
        let lhs_stride = k * 2;
        let (lhs, rhs) = (lhs.as_ptr(), rhs.as_ptr());
        let mut scratch = [[0f32; 256]; 4];
        // Every tile load and store below stays inside the asserted extents of `lhs` and
        // `rhs`, inside C (a block inside it) or inside a scratch block; the tiles are
        // configured and the permission granted (the caller's contract). Each `asm!` is its
        // own `unsafe` block under this argument.
        let mut i = 0;
        while i < m {
            let two = i + 32 <= m;
            let mut j = 0;
            while j < n {
                // SAFETY: `out` as in this function's contract; the scratch blocks hold
                // 16 x 16 each.
                let blocks = unsafe {
                    [
                        Block::new(out, i, j, scratch[0].as_mut_ptr()),
                        Block::new(out, i, j + 16, scratch[1].as_mut_ptr()),
                        Block::new(out, i + 16, j, scratch[2].as_mut_ptr()),
                        Block::new(out, i + 16, j + 16, scratch[3].as_mut_ptr()),
                    ]
                };
                let zero = !out.accumulate;
                macro_rules! start {
                    ($tile:literal, $block:expr) => {
                        if zero && $block.inside {
                            // SAFETY: see above.
                            unsafe { asm!(concat!("tilezero tmm", $tile), options(nostack)) };
                        } else {
                            // SAFETY: see above.
                            unsafe {
                                asm!(concat!("tileloadd tmm", $tile, ", [{p} + {s}*1]"),
                                     p = in(reg) $block.ptr, s = in(reg) $block.stride,
                                     options(nostack))
                            };
                        }
                    };
                }
                macro_rules! store {
                    ($tile:literal, $block:expr) => {
                        // SAFETY: see above.
                        unsafe {
                            asm!(concat!("tilestored [{p} + {s}*1], tmm", $tile),
                                 p = in(reg) $block.ptr, s = in(reg) $block.stride,
                                 options(nostack))
                        };
                    };
                }
                macro_rules! load {
                    ($tile:literal, $ptr:expr, $stride:expr) => {
                        // SAFETY: see above.
                        unsafe {
                            asm!(concat!("tileloadd tmm", $tile, ", [{p} + {s}*1]"),
                                 p = in(reg) $ptr, s = in(reg) $stride, options(nostack))
                        };
                    };
                }
                macro_rules! dot {
                    ($c:literal, $a:literal, $b:literal) => {
                        // SAFETY: tile registers only.
                        unsafe {
                            asm!(
                                concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
                                options(nostack)
                            )
                        };
                    };
                }
                start!("0", blocks[0]);
                start!("1", blocks[1]);
                if two {
                    start!("2", blocks[2]);
                    start!("3", blocks[3]);
                }
                let mut kk = 0;
                while kk < k {
                    let a0 = lhs.wrapping_add(i * k + kk);
                    let b0 = rhs.wrapping_add((j / 16) * k * 16 + (kk / 2) * 32);
                    let b1 = rhs.wrapping_add((j / 16 + 1) * k * 16 + (kk / 2) * 32);
                    load!("4", a0, lhs_stride);
                    load!("6", b0, 64usize);
                    load!("7", b1, 64usize);
                    dot!("0", "4", "6");
                    dot!("1", "4", "7");
                    if two {
                        let a1 = lhs.wrapping_add((i + 16) * k + kk);
                        load!("5", a1, lhs_stride);
                        dot!("2", "5", "6");
                        dot!("3", "5", "7");
                    }
                    kk += 32;
                }
                store!("0", blocks[0]);
                store!("1", blocks[1]);
                // SAFETY: the blocks were stored; `out` as above.
                unsafe {
                    blocks[0].finish(out);
                    blocks[1].finish(out);
                }
                if two {
                    store!("2", blocks[2]);
                    store!("3", blocks[3]);
                    // SAFETY: as above.
                    unsafe {
                        blocks[2].finish(out);
                        blocks[3].finish(out);
                    }
                }
                j += 32;
            }
            i += if two { 32 } else { 16 };
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    pub fn probe() -> bool {
        false
    }

    /// Never called: [`super::bf16_products_available`] is `false` here.
    pub unsafe fn tiles(_: usize, _: usize, _: usize, _: &[u16], _: &[u16], _: &super::Out) {
        unreachable!("no AMX tiles on this platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` rounded to bfloat16 and back.
    fn rounded(x: f32) -> f64 {
        f64::from(f32::from_bits(u32::from(to_bf16(x)) << 16))
    }

    #[test]
    fn rounding_to_bfloat16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to the even upper one.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
    }

    /// The vectorised conversion equals the scalar rounding bit for bit, ties included, for
    /// lengths that leave a partial vector.
    #[test]
    fn converting_a_slice_rounds_every_element_as_to_bf16() {
        let ties = [
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -2.5,
            0.0,
            -0.0,
            f32::MAX,
            1e-40,
        ];
        for len in [0, 1, 15, 16, 17, 40, 100] {
            let src: Vec<f32> = (0..len)
                .map(|i| {
                    if i % 5 == 0 {
                        ties[i / 5 % ties.len()]
                    } else {
                        ((i * 7919) % 2003) as f32 / 7.0 - 140.0
                    }
                })
                .collect();
            let mut dst = vec![0u16; len];
            convert(&mut dst, &src);
            let want: Vec<u16> = src.iter().map(|&x| to_bf16(x)).collect();
            assert_eq!(dst, want, "len {len}");
        }
    }

    /// The tiles and the AVX512-BF16 dot products (each where this CPU has it) equal the f64
    /// product of the bfloat16-rounded operands (summed in f32: a relative 1e-5), for shapes
    /// that leave partial tiles and register blocks in every dimension, with a strided
    /// (transposed) left operand, written and accumulated.
    #[test]
    fn bf16_products_equal_the_product_of_the_rounded_operands() {
        let units: Vec<Unit> = [Unit::Tiles, Unit::Dot]
            .into_iter()
            .filter(|u| u.available())
            .collect();
        if units.is_empty() {
            eprintln!("neither AMX tiles nor AVX512-BF16 here: skipped");
            return;
        }
        for unit in units {
            products_on(unit);
        }
    }

    fn products_on(unit: Unit) {
        let value =
            |i: usize, seed: usize| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0;
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 33, 17),
            (16, 32, 32),
            (37, 70, 50),
            (48, 64, 96),
            (9, 40, 33),
            (70, 130, 100),
        ] {
            // A stored transposed: A[r, i] at a[i * m + r].
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
            let start: Vec<f32> = (0..m * (n + 3)).map(|i| value(i, 3)).collect();
            let rhs = Bf16Rhs::gather(k, n, |r, c| b[r * n + c]);
            for accumulate in [false, true] {
                let mut c = start.clone();
                // SAFETY: C is m rows of n + 3; A is k x m (read transposed); `unit` available.
                unsafe {
                    rhs.multiply(unit, m, c.as_mut_ptr(), n + 3, accumulate, a.as_ptr(), 1, m)
                };
                for r in 0..m {
                    for col in 0..n + 3 {
                        let base = f64::from(start[r * (n + 3) + col]);
                        let want = if col >= n {
                            base
                        } else {
                            let sum: f64 = (0..k)
                                .map(|i| rounded(a[i * m + r]) * rounded(b[i * n + col]))
                                .sum();
                            if accumulate { base + sum } else { sum }
                        };
                        let got = f64::from(c[r * (n + 3) + col]);
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{unit:?}: m={m} k={k} n={n} acc={accumulate} ({r},{col}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
