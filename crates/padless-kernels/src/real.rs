//! [`Real`]: the element types the kernels run on (`f32`, `f64`) and their fused activations.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// Elements per chunk of the vectorised loops (the cells, softmax, tanh): one AVX-512
/// register of `f32`, two AVX2 registers.
pub(crate) const LANES: usize = 16;

/// A floating-point element type of the kernels.
///
/// `f32` uses fast branch-free approximations of `exp`, the sigmoid and `tanh` (relative error
/// below 1e-6 over the whole range, so gates stay well inside the 1e-5 tolerance of the tests)
/// that vectorise with AVX-512; `f64` uses the standard library's functions, so float64 runs
/// are exact enough for finite-difference gradient checks.
pub trait Real:
    Copy
    + Send
    + Sync
    + 'static
    + Default
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64`.
    fn to_f64(self) -> f64;
    /// The logistic sigmoid `1 / (1 + e^-x)`.
    fn sigmoid(self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The square root (correctly rounded, as the standard library's).
    fn sqrt(self) -> Self;
    /// `e^x` (`f32`: the branch-free approximation, arguments clamped to `[-87, 88]`).
    fn exp(self) -> Self;
}

/// `e^x` for `f32`: Cody-Waite range reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`, and a
/// degree-7 Taylor polynomial for `e^r`; no branches and no library calls, so the gate
/// loops vectorise.
///
/// The polynomials and Newton steps use `mul_add`: inside the kernels' SIMD dispatch it is
/// one fused multiply-add instruction (half the arithmetic of a multiply and an add, and one
/// rounding); outside it, a correct but slower library call.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = shifted - ROUND;
    // ln 2 split in a part with few mantissa bits (exact product with n) and the rest.
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let mut p: f32 = 1.0 / 5040.0;
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // The low mantissa bits of `shifted` hold n; move n + 127 into the exponent field.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    scale * p
}

/// `1 / x` for `x` in `[1, 2^125]` without a division (a vector division is the slowest
/// instruction of the cells, one per gate activation): a guess from the exponent bits (within
/// 12.5%), then three Newton steps, each squaring the relative error.
#[inline(always)]
fn fast_recip(x: f32) -> f32 {
    let mut y = f32::from_bits(0x7ef3_11c3u32.wrapping_sub(x.to_bits()));
    for _ in 0..3 {
        // y + y (1 - x y), with `1 - x y` from one fused operation (exact near 1).
        y = y.mul_add((-x).mul_add(y, 1.0), y);
    }
    y
}

/// The largest argument of [`fast_exp`] whose `1 + exp` [`fast_recip`] takes.
const RECIP_EXP_MAX: f32 = 86.0;

/// `x` capped at [`RECIP_EXP_MAX`], NaN kept (`f32::min` would return the cap for NaN, so
/// a NaN activation would come out as a saturated value and hide a diverging run).
#[inline(always)]
fn capped(x: f32) -> f32 {
    if x > RECIP_EXP_MAX { RECIP_EXP_MAX } else { x }
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;

    #[inline(always)]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn sigmoid(self) -> f32 {
        fast_recip(1.0 + fast_exp(capped(-self)))
    }

    /// `1 - 2 / (e^{2x} + 1)` away from 0, and a Taylor polynomial for `|x| < 0.25`, where the
    /// subtraction would lose relative precision (selected without a branch).
    #[inline(always)]
    fn tanh(self) -> f32 {
        let x = self;
        let wide = (-2.0f32).mul_add(fast_recip(fast_exp(capped(2.0 * x)) + 1.0), 1.0);
        let x2 = x * x;
        let mut p: f32 = 62.0 / 2835.0;
        p = p.mul_add(x2, -17.0 / 315.0);
        p = p.mul_add(x2, 2.0 / 15.0);
        p = p.mul_add(x2, -1.0 / 3.0);
        let small = (x * x2).mul_add(p, x);
        if x.abs() < 0.25 { small } else { wide }
    }

    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }

    #[inline(always)]
    fn exp(self) -> f32 {
        fast_exp(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;

    #[inline(always)]
    fn from_f64(x: f64) -> f64 {
        x
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn sigmoid(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }

    #[inline(always)]
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }

    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }

    #[inline(always)]
    fn exp(self) -> f64 {
        f64::exp(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-30)
    }

    #[test]
    fn f32_activations_are_accurate_over_the_range() {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        for i in -40_000..=40_000 {
            let x = i as f64 * 1e-3;
            let xf = x as f32;
            let xd = xf as f64;
            worst.0 = worst.0.max(rel(fast_exp(xf) as f64, xd.exp()));
            worst.1 = worst
                .1
                .max(rel(xf.sigmoid() as f64, 1.0 / (1.0 + (-xd).exp())));
            if xd != 0.0 {
                worst.2 = worst.2.max(rel(Real::tanh(xf) as f64, xd.tanh()));
            }
        }
        assert!(worst.0 < 1e-6, "exp {}", worst.0);
        assert!(worst.1 < 1e-6, "sigmoid {}", worst.1);
        assert!(worst.2 < 1e-6, "tanh {}", worst.2);
    }

    #[test]
    fn f32_activations_saturate_without_overflow() {
        assert_eq!(1000.0f32.sigmoid(), 1.0);
        assert!((-1000.0f32).sigmoid() < 1e-37);
        assert_eq!(Real::tanh(1000.0f32), 1.0);
        assert_eq!(Real::tanh(-1000.0f32), -1.0);
        assert_eq!(Real::tanh(1e-30f32), 1e-30);
    }

    #[test]
    fn f32_activations_keep_nan() {
        assert!(fast_exp(f32::NAN).is_nan());
        assert!(f32::NAN.sigmoid().is_nan());
        assert!(Real::tanh(f32::NAN).is_nan());
        let mut x = vec![0.5f32; 19];
        x[3] = f32::NAN;
        x[17] = f32::NAN;
        crate::tanh_in_place(&mut x);
        for (i, v) in x.iter().enumerate() {
            assert_eq!(v.is_nan(), i == 3 || i == 17, "element {i}: {v}");
        }
    }
}
