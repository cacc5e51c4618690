//! Random cases and the checks shared by the kernel tests.

use std::io::Write;
use std::sync::Once;

use padless_kernels::{
    CellKind, Isa, KernelConfig, Real, RecurrentKernel, Sequences, Weights, reference,
};

/// Every instruction set this CPU runs, best first; the first call notes on stderr (past the
/// test harness's capture, so that it shows) each one it lacks, whose path is then not
/// tested here.
pub fn isas() -> Vec<Isa> {
    static NOTE: Once = Once::new();
    NOTE.call_once(|| {
        for isa in Isa::ALL.into_iter().filter(|isa| !isa.is_available()) {
            let _ = writeln!(
                std::io::stderr(),
                "note: this CPU lacks the {isa} instruction set: its kernels are not tested here"
            );
        }
    });
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect()
}

/// `f()` with the kernels on `isa` (available: from [`isas`]).
pub fn on<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    padless_kernels::with_isa(isa, f).expect("an instruction set from isas()")
}

/// A deterministic generator (xorshift), so failures replay from the case alone.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f64) -> f64 {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
    }

    pub fn values(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }
}

/// One kernel call: options, data and the output gradient, in f64.
#[derive(Debug, Clone)]
pub struct Case {
    pub config: KernelConfig,
    pub batch: usize,
    pub n_steps: usize,
    pub mask: Option<Vec<bool>>,
    pub x: Vec<f64>,
    pub kernel: Vec<f64>,
    pub recurrent_kernel: Vec<f64>,
    pub bias: Option<Vec<f64>>,
    pub initial: Vec<Vec<f64>>,
    pub d_out: Vec<f64>,
}

impl Case {
    /// Random weights, inputs (NaN at masked steps, which must never be read), initial states
    /// and output gradient for these shapes and options.
    pub fn random<C: CellKind>(
        config: KernelConfig,
        batch: usize,
        n_steps: usize,
        mask: Option<Vec<bool>>,
        with_bias: bool,
        with_initial: bool,
        seed: u64,
    ) -> Case {
        let mut rng = Rng(seed | 1);
        let (d, h) = (config.d_input, config.d_hidden);
        let g = C::N_GATES * h;
        let mut x = rng.values(
            batch
                * if config.constant_input {
                    d
                } else {
                    n_steps * d
                },
            1.0,
        );
        if let (Some(mask), false) = (&mask, config.constant_input) {
            for (idx, &valid) in mask.iter().enumerate() {
                if !valid {
                    x[idx * d..(idx + 1) * d].fill(f64::NAN);
                }
            }
        }
        Case {
            config,
            batch,
            n_steps,
            mask,
            x,
            kernel: rng.values(d * g, 0.8),
            recurrent_kernel: rng.values(h * g, 0.8),
            bias: with_bias.then(|| rng.values(C::N_BIAS_ROWS * g, 0.5)),
            initial: if with_initial {
                (0..C::N_STATES)
                    .map(|_| rng.values(batch * h, 0.7))
                    .collect()
            } else {
                vec![]
            },
            d_out: rng.values(batch * (n_steps + C::N_STATES) * h, 1.0),
        }
    }

    fn cast<T: Real>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&x| T::from_f64(x)).collect()
    }

    /// Runs `f` with the case's buffers as `T`.
    pub fn with<T: Real, R>(&self, f: impl FnOnce(&Sequences<'_, T>, &Weights<'_, T>) -> R) -> R {
        let (x, kernel, rk) = (
            Self::cast::<T>(&self.x),
            Self::cast::<T>(&self.kernel),
            Self::cast::<T>(&self.recurrent_kernel),
        );
        let bias = self.bias.as_deref().map(Self::cast::<T>);
        let initial: Vec<Vec<T>> = self.initial.iter().map(|s| Self::cast::<T>(s)).collect();
        let initial_refs: Vec<&[T]> = initial.iter().map(Vec::as_slice).collect();
        let seq = Sequences {
            x: &x,
            batch: self.batch,
            n_steps: self.n_steps,
            mask: self.mask.as_deref(),
            initial: &initial_refs,
        };
        let weights = Weights {
            kernel: &kernel,
            recurrent_kernel: &rk,
            bias: bias.as_deref(),
        };
        f(&seq, &weights)
    }

    /// `Σ d_out · reference(out)`, the scalar whose gradient the backward pass computes.
    pub fn reference_loss<C: CellKind>(&self) -> f64 {
        let out = self.with::<f64, _>(|seq, w| reference::forward::<C, f64>(&self.config, seq, w));
        out.iter().zip(&self.d_out).map(|(o, d)| o * d).sum()
    }

    /// Every parameter of the case as `(name, buffer)`, for finite differences.
    pub fn parameters(&mut self) -> Vec<(&'static str, &mut Vec<f64>)> {
        let mut params: Vec<(&'static str, &mut Vec<f64>)> = vec![
            ("x", &mut self.x),
            ("kernel", &mut self.kernel),
            ("recurrent_kernel", &mut self.recurrent_kernel),
        ];
        if let Some(bias) = &mut self.bias {
            params.push(("bias", bias));
        }
        for state in &mut self.initial {
            params.push(("initial", state));
        }
        params
    }
}

/// The kernel's output and gradients (`x`, kernel, recurrent kernel, bias, initial states, in
/// the order of [`Case::parameters`]) as f64.
pub fn run_kernel<C: CellKind, T: Real>(case: &Case) -> (Vec<f64>, Vec<Vec<f64>>) {
    let kernel = RecurrentKernel::<C>::new(case.config);
    let d_out: Vec<T> = case.d_out.iter().map(|&v| T::from_f64(v)).collect();
    case.with::<T, _>(|seq, weights| {
        let mut out = vec![T::ZERO; kernel.output_len(case.batch, case.n_steps)];
        let ws = kernel.forward(seq, weights, &mut out);
        let grads = kernel.backward(ws, &d_out);
        let f = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
        let mut all = vec![
            f(&grads.d_x),
            f(&grads.d_kernel),
            f(&grads.d_recurrent_kernel),
        ];
        all.extend(grads.d_bias.as_deref().map(f));
        if !case.initial.is_empty() {
            all.extend(grads.d_initial.iter().map(|g| f(g)));
        }
        (f(&out), all)
    })
}

/// `max |a - b| / max(1, max |b|)`, ignoring positions where `b` is NaN in neither.
pub fn scaled_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}
