//! [`Isa`]: the instruction set the kernels' own SIMD code runs on, detected once per process
//! or forced.
//!
//! The `f32` matrix products run on a register-tile microkernel written for the instruction
//! set ([`Isa::Avx512`]: 12 x 32, [`Isa::Avx2`]: 6 x 16) over right-hand operands packed in
//! panels (see below for the large products under AVX-512); the gate loops, the softmax, `tanh` and Adam are compiled for it through `pulp`'s
//! dispatch. [`Isa::Portable`] is the path of CPUs with neither (other architectures, x86-64
//! before AVX2): every product through the `gemm` crate, the loops as the compiler vectorises
//! them for the baseline target.
//!
//! Which one runs: the best this CPU has, unless forced, in this order of precedence:
//! [`with_isa`] (the calling thread and the kernel threads it starts, for the length of a
//! closure), [`set_isa`] (the process), the environment variable `PADLESS_ISA`
//! (`avx512`, `avx2` or `portable`, read once, at the first kernel call). Forcing lets one
//! machine test and measure every path it can run; a path the CPU lacks cannot be forced.
//!
//! What is not forced: the `gemm` crate picks its own instruction set for the products that
//! still go through it (every `f64` product, the [`Isa::Portable`] path, and under
//! [`Isa::Avx512`] the large `f32` products: input projections, weight gradients, the dense
//! layer); the bfloat16 products ([`crate::set_bf16_products`]) run only under
//! [`Isa::Avx512`]. Under [`Isa::Avx2`] every `f32` product runs on the AVX2 microkernel.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set of the kernels' own SIMD code (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// AVX-512 F, BW, CD, DQ and VL (x86-64-v4): the 12 x 32 `f32` microkernel (24 of the 32
    /// vector registers hold the tile), and the bfloat16 products where the CPU has them.
    Avx512,
    /// AVX2 and FMA (x86-64-v3): the 6 x 16 `f32` microkernel (12 of the 16 vector registers
    /// hold the tile).
    Avx2,
    /// No SIMD of the kernels' own: the products through the `gemm` crate.
    Portable,
}

impl Isa {
    /// Every instruction set, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `PADLESS_ISA` takes and [`fmt::Display`] prints: `avx512`, `avx2`,
    /// `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Whether this CPU runs it ([`Isa::Portable`]: always). Checked once per process.
    pub fn is_available(self) -> bool {
        static AVX512: OnceLock<bool> = OnceLock::new();
        static AVX2: OnceLock<bool> = OnceLock::new();
        match self {
            Isa::Avx512 => *AVX512.get_or_init(detect::avx512),
            Isa::Avx2 => *AVX2.get_or_init(detect::avx2),
            Isa::Portable => true,
        }
    }

    /// The best instruction set this CPU runs.
    pub fn detected() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    fn code(self) -> u8 {
        match self {
            Isa::Avx512 => 1,
            Isa::Avx2 => 2,
            Isa::Portable => 3,
        }
    }

    fn from_code(code: u8) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.code() == code)
    }

    /// `Ok` where this CPU runs it, else the error that says so.
    fn check(self) -> Result<(), String> {
        if self.is_available() {
            return Ok(());
        }
        let has: Vec<&str> = Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .map(Isa::name)
            .collect();
        Err(format!(
            "instruction set {self} is not available on this CPU (it runs: {})",
            has.join(", ")
        ))
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;

    /// One of the names of [`Isa::name`], in any case.
    fn from_str(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown instruction set {s:?}: expected avx512, avx2 or portable")
            })
    }
}

/// The process-wide choice of [`set_isa`]; 0 while none was made.
static PROCESS: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// The choice of [`with_isa`] on this thread, if any.
    static THREAD: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The instruction set of `PADLESS_ISA`, or the detected one; read once.
///
/// # Panics
/// If `PADLESS_ISA` names no instruction set, or one this CPU lacks: a forced path that
/// silently ran another would make a test or a measurement claim what it did not run.
fn from_environment() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var("PADLESS_ISA") {
        Err(_) => Isa::detected(),
        Ok(name) => {
            let isa: Isa = name.parse().unwrap_or_else(|e| panic!("PADLESS_ISA: {e}"));
            isa.check().unwrap_or_else(|e| panic!("PADLESS_ISA: {e}"));
            isa
        }
    })
}

/// The instruction set the kernels run on in the process, [`with_isa`] aside: that of
/// [`set_isa`], else of `PADLESS_ISA`, else the best this CPU has.
pub(crate) fn process_isa() -> Isa {
    Isa::from_code(PROCESS.load(Ordering::Relaxed)).unwrap_or_else(from_environment)
}

/// The instruction set the kernels run on when called from this thread (see the module
/// docs for the order of precedence).
///
/// # Panics
/// If `PADLESS_ISA` is set to a name that is not an instruction set, or to one this CPU
/// lacks.
pub fn isa() -> Isa {
    THREAD.with(Cell::get).unwrap_or_else(process_isa)
}

/// Forces the instruction set for the whole process (every thread without a [`with_isa`],
/// every later kernel call), over `PADLESS_ISA`.
///
/// # Errors
/// Where this CPU lacks `isa`; or for an instruction set other than [`Isa::Avx512`] while
/// the bfloat16 products are on (they run on AVX-512 only: turn them off first).
pub fn set_isa(isa: Isa) -> Result<(), String> {
    isa.check()?;
    if isa != Isa::Avx512 && crate::bf16_products() {
        return Err(format!(
            "the bfloat16 products are on and run on avx512 only: turn them off before \
             forcing {isa}"
        ));
    }
    PROCESS.store(isa.code(), Ordering::Relaxed);
    Ok(())
}

/// Runs `f` with the kernels on `isa` for the calling thread and the kernel threads its
/// calls start (the thread pair, [`crate::side_by_side`]), whatever the process uses: for
/// tests of each path side by side. Under an instruction set other than [`Isa::Avx512`]
/// the products are `f32` even while the bfloat16 products are on.
///
/// # Errors
/// Where this CPU lacks `isa` (nothing runs).
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> Result<R, String> {
    isa.check()?;
    Ok(with_thread_isa(Some(isa), f))
}

/// This thread's [`with_isa`] choice, for a kernel thread to take over
/// ([`with_thread_isa`]).
pub(crate) fn thread_isa() -> Option<Isa> {
    THREAD.with(Cell::get)
}

/// Runs `f` with `choice` as this thread's [`with_isa`] choice, restoring the previous one
/// after it (also when `f` panics).
pub(crate) fn with_thread_isa<R>(choice: Option<Isa>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(THREAD.with(|t| t.replace(choice)));
    f()
}

/// Runs `op` compiled for the instruction set in effect ([`isa`]): `pulp`'s AVX-512 (v4) or
/// AVX2 (v3) code, or its scalar code under [`Isa::Portable`] on x86-64 (elsewhere, `pulp`'s
/// own choice, such as NEON).
#[inline(always)]
pub(crate) fn dispatch<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    {
        use pulp::Simd;
        match isa() {
            Isa::Avx512 => {
                if let Some(simd) = pulp::x86::V4::try_new() {
                    return Simd::vectorize(simd, op);
                }
            }
            Isa::Avx2 => {
                if let Some(simd) = pulp::x86::V3::try_new() {
                    return Simd::vectorize(simd, op);
                }
            }
            Isa::Portable => return Simd::vectorize(pulp::Scalar::new(), op),
        }
        unreachable!("an instruction set is in effect only where pulp finds it")
    }
    #[cfg(not(target_arch = "x86_64"))]
    pulp::Arch::new().dispatch(op)
}

mod detect {
    /// AVX-512 as `pulp`'s x86-64-v4 level needs it (F, BW, CD, DQ, VL and the v3 set).
    pub fn avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            pulp::x86::V4::try_new().is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// AVX2 and FMA as `pulp`'s x86-64-v3 level needs them (with F16C, BMI, LZCNT, ...).
    pub fn avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            pulp::x86::V3::try_new().is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Runs `f` under each instruction set this CPU runs (for the unit tests of each path; a
/// note on stderr, past the test harness's capture, names those it lacks).
#[cfg(test)]
pub(crate) fn for_each_available(mut f: impl FnMut(Isa)) {
    use std::io::Write;
    for isa in Isa::ALL {
        if isa.is_available() {
            with_isa(isa, || f(isa)).expect("available");
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "note: this CPU lacks the {isa} instruction set: its path is not tested here"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_are_refused() {
        for isa in Isa::ALL {
            assert_eq!(isa.to_string().parse::<Isa>(), Ok(isa));
            assert_eq!(isa.name().to_uppercase().parse::<Isa>(), Ok(isa));
        }
        let error = "avx3".parse::<Isa>().unwrap_err();
        assert!(error.contains("avx512, avx2 or portable"), "{error}");
    }

    #[test]
    fn with_isa_sets_this_thread_and_the_kernel_threads_and_restores() {
        let outside = isa();
        for forced in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let (here, helper) = with_isa(forced, || {
                crate::side_by_side(isa, || (isa(), crate::side_by_side(isa, isa)))
            })
            .unwrap();
            assert_eq!(here, forced);
            assert_eq!(helper, (forced, (forced, forced)));
            assert_eq!(isa(), outside);
        }
        let panicked = std::panic::catch_unwind(|| {
            with_isa(Isa::Portable, || panic!("inside")).unwrap();
        });
        assert!(panicked.is_err());
        assert_eq!(isa(), outside, "restored after a panic");
    }

    #[test]
    fn a_missing_instruction_set_cannot_be_forced() {
        for missing in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
            let error = with_isa(missing, || ()).unwrap_err();
            assert!(error.contains("not available"), "{error}");
            assert!(set_isa(missing).is_err());
        }
        assert!(Isa::Portable.is_available());
        assert!(Isa::detected().is_available());
    }
}
