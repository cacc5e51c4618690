//! The fused gate arithmetic of each cell type, one row of one unit block at a time:
//! [`CellKind`] and its implementations [`Lstm`], [`Gru`] and [`SimpleRnn`].
//!
//! Each function works on chunks of [`LANES`] units copied into local arrays: the slices
//! come from raw pointers into shared buffers, so LLVM cannot prove that they do not alias
//! and would compile a loop over them to scalar code. On local arrays the branch-free
//! arithmetic compiles to full-width vector code inside the driver's SIMD dispatch. A last partial chunk is padded with zeros, which every activation maps to a
//! finite value, and only its valid part is written back.

use crate::real::{LANES, Real};

type Chunk<T> = [T; LANES];

/// Units `j..j + m` of `s` (`m <= LANES`), zero-padded to a full chunk.
#[inline(always)]
fn load<T: Real>(s: &[T], j: usize, m: usize) -> Chunk<T> {
    let mut a = [T::ZERO; LANES];
    if m == LANES {
        a.copy_from_slice(&s[j..j + LANES]);
    } else {
        a[..m].copy_from_slice(&s[j..j + m]);
    }
    a
}

/// Writes the first `m` units of `a` to `s[j..j + m]`.
#[inline(always)]
fn store<T: Real>(a: &Chunk<T>, s: &mut [T], j: usize, m: usize) {
    if m == LANES {
        s[j..j + LANES].copy_from_slice(a);
    } else {
        s[j..j + m].copy_from_slice(&a[..m]);
    }
}

/// The slices of one row's forward step, for `w` units of one block. Gate `q` of unit `j` is
/// at `q * w + j` in `gates` and `recurrent`.
pub struct ForwardRow<'a, T> {
    /// In: pre-activations (input projection plus bias, plus the recurrent product unless
    /// [`CellKind::SEPARATE_RECURRENT`]); out: the activated gates, kept for backward.
    pub gates: &'a mut [T],
    /// The recurrent product plus recurrent bias, for a cell that keeps it apart; else empty.
    pub recurrent: &'a [T],
    /// The previous `h`.
    pub h_prev: &'a [T],
    /// The previous `c` (LSTM; else empty).
    pub c_prev: &'a [T],
    /// Out: the new `h`.
    pub h: &'a mut [T],
    /// Out: the new `c` (LSTM; else empty).
    pub c: &'a mut [T],
}

/// The slices of one row's backward step (same layout as [`ForwardRow`]).
pub struct BackwardRow<'a, T> {
    /// In: the activated gates; out: the gradient of the input-side pre-activations.
    pub gates: &'a mut [T],
    /// Out: the gradient of the recurrent part, for a cell that keeps it apart; else empty.
    pub d_recurrent: &'a mut [T],
    /// The recurrent part saved by forward (GRU; else empty).
    pub recurrent: &'a [T],
    /// The previous `h`.
    pub h_prev: &'a [T],
    /// The previous `c` (LSTM; else empty).
    pub c_prev: &'a [T],
    /// The new `c` (LSTM; else empty).
    pub c: &'a [T],
    /// The new `h`.
    pub h: &'a [T],
    /// The gradient reaching the new `h` from outside (outputs, final state).
    pub d_h_ext: &'a [T],
    /// In: the gradient reaching the new `h` from later steps; out: the part of the gradient
    /// of the previous `h` that does not go through the recurrent product.
    pub d_h: &'a mut [T],
    /// In: the gradient reaching the new `c`; out: the gradient of the previous `c` (LSTM).
    pub d_c: &'a mut [T],
}

/// The arithmetic of one recurrent cell type (Keras gate order and layout).
pub trait CellKind: Copy + Send + Sync + 'static {
    /// The cell's name (`"Lstm"`).
    const NAME: &'static str;
    /// Gate blocks in the kernel's columns (`4` for an LSTM).
    const N_GATES: usize;
    /// States per row (`[h, c]` for an LSTM, `[h]` otherwise).
    const N_STATES: usize;
    /// Bias rows (`2` for the GRU's input and recurrent biases).
    const N_BIAS_ROWS: usize;
    /// Whether the recurrent product is kept apart from the input projection (GRU with
    /// `reset_after`, where the reset gate multiplies the recurrent candidate only).
    const SEPARATE_RECURRENT: bool;

    /// One forward step of one row.
    fn forward_row<T: Real>(row: ForwardRow<'_, T>);

    /// One backward step of one row.
    fn backward_row<T: Real>(row: BackwardRow<'_, T>);
}

/// Keras `LSTM`: gates i, f, c (candidate g), o; `c' = σ(f) c + σ(i) tanh(g)`,
/// `h' = σ(o) tanh(c')`.
#[derive(Debug, Clone, Copy)]
pub struct Lstm;

/// Keras `GRU(reset_after=True)`: gates z, r, h; `ĥ = tanh(x_h + r (h U_h + c_h))`,
/// `h' = z h + (1 - z) ĥ`.
#[derive(Debug, Clone, Copy)]
pub struct Gru;

/// Keras `SimpleRNN` with tanh: `h' = tanh(x K + b + h U)`.
#[derive(Debug, Clone, Copy)]
pub struct SimpleRnn;

fn split4<T>(s: &mut [T], w: usize) -> (&mut [T], &mut [T], &mut [T], &mut [T]) {
    let (a, rest) = s.split_at_mut(w);
    let (b, rest) = rest.split_at_mut(w);
    let (c, d) = rest.split_at_mut(w);
    (a, b, c, &mut d[..w])
}

fn split3<T>(s: &mut [T], w: usize) -> (&mut [T], &mut [T], &mut [T]) {
    let (a, rest) = s.split_at_mut(w);
    let (b, c) = rest.split_at_mut(w);
    (a, b, &mut c[..w])
}

impl CellKind for Lstm {
    const NAME: &'static str = "Lstm";
    const N_GATES: usize = 4;
    const N_STATES: usize = 2;
    const N_BIAS_ROWS: usize = 1;
    const SEPARATE_RECURRENT: bool = false;

    #[inline(always)]
    fn forward_row<T: Real>(row: ForwardRow<'_, T>) {
        let w = row.h.len();
        let (gi, gf, gg, go) = split4(row.gates, w);
        let (c_prev, c, h) = (&row.c_prev[..w], &mut row.c[..w], &mut row.h[..w]);
        // A plain loop, not a closure: a closure is compiled as its own function, outside the
        // driver's target features (baseline vector code instead of the dispatched width).
        let mut j = 0;
        while j < w {
            let m = LANES.min(w - j);
            let (mut i, mut f) = (load(gi, j, m), load(gf, j, m));
            let (mut g, mut o) = (load(gg, j, m), load(go, j, m));
            let cp = load(c_prev, j, m);
            let (mut c_new, mut h_new) = ([T::ZERO; LANES], [T::ZERO; LANES]);
            for l in 0..LANES {
                i[l] = i[l].sigmoid();
                f[l] = f[l].sigmoid();
                g[l] = g[l].tanh();
                o[l] = o[l].sigmoid();
                c_new[l] = f[l] * cp[l] + i[l] * g[l];
                h_new[l] = o[l] * c_new[l].tanh();
            }
            store(&i, gi, j, m);
            store(&f, gf, j, m);
            store(&g, gg, j, m);
            store(&o, go, j, m);
            store(&c_new, c, j, m);
            store(&h_new, h, j, m);
            j += m;
        }
    }

    #[inline(always)]
    fn backward_row<T: Real>(row: BackwardRow<'_, T>) {
        let w = row.h.len();
        let (gi, gf, gg, go) = split4(row.gates, w);
        let (c_prev, c) = (&row.c_prev[..w], &row.c[..w]);
        let (d_ext, d_h, d_c) = (&row.d_h_ext[..w], &mut row.d_h[..w], &mut row.d_c[..w]);
        let one = T::ONE;
        // A plain loop, not a closure: a closure is compiled as its own function, outside the
        // driver's target features (baseline vector code instead of the dispatched width).
        let mut j = 0;
        while j < w {
            let m = LANES.min(w - j);
            let (mut i, mut f) = (load(gi, j, m), load(gf, j, m));
            let (mut g, mut o) = (load(gg, j, m), load(go, j, m));
            let (cp, cn) = (load(c_prev, j, m), load(c, j, m));
            let (de, dhl, mut dcl) = (load(d_ext, j, m), load(d_h, j, m), load(d_c, j, m));
            for l in 0..LANES {
                let (il, fl, gl, ol) = (i[l], f[l], g[l], o[l]);
                let tc = cn[l].tanh();
                let dh = de[l] + dhl[l];
                let dc = dcl[l] + dh * ol * (one - tc * tc);
                i[l] = dc * gl * il * (one - il);
                f[l] = dc * cp[l] * fl * (one - fl);
                g[l] = dc * il * (one - gl * gl);
                o[l] = dh * tc * ol * (one - ol);
                dcl[l] = dc * fl;
            }
            store(&i, gi, j, m);
            store(&f, gf, j, m);
            store(&g, gg, j, m);
            store(&o, go, j, m);
            store(&dcl, d_c, j, m);
            d_h[j..j + m].fill(T::ZERO);
            j += m;
        }
    }
}

impl CellKind for Gru {
    const NAME: &'static str = "Gru";
    const N_GATES: usize = 3;
    const N_STATES: usize = 1;
    const N_BIAS_ROWS: usize = 2;
    const SEPARATE_RECURRENT: bool = true;

    #[inline(always)]
    fn forward_row<T: Real>(row: ForwardRow<'_, T>) {
        let w = row.h.len();
        let (gz, gr, gh) = split3(row.gates, w);
        let rec = &row.recurrent[..3 * w];
        let (h_prev, h) = (&row.h_prev[..w], &mut row.h[..w]);
        let (rec_z, rec_r, rec_h) = (&rec[..w], &rec[w..2 * w], &rec[2 * w..3 * w]);
        let one = T::ONE;
        // A plain loop, not a closure: a closure is compiled as its own function, outside the
        // driver's target features (baseline vector code instead of the dispatched width).
        let mut j = 0;
        while j < w {
            let m = LANES.min(w - j);
            let (mut z, mut r, mut cand) = (load(gz, j, m), load(gr, j, m), load(gh, j, m));
            let (az, ar, ah) = (load(rec_z, j, m), load(rec_r, j, m), load(rec_h, j, m));
            let hp = load(h_prev, j, m);
            let mut h_new = [T::ZERO; LANES];
            for l in 0..LANES {
                z[l] = (z[l] + az[l]).sigmoid();
                r[l] = (r[l] + ar[l]).sigmoid();
                cand[l] = (cand[l] + r[l] * ah[l]).tanh();
                h_new[l] = z[l] * hp[l] + (one - z[l]) * cand[l];
            }
            store(&z, gz, j, m);
            store(&r, gr, j, m);
            store(&cand, gh, j, m);
            store(&h_new, h, j, m);
            j += m;
        }
    }

    #[inline(always)]
    fn backward_row<T: Real>(row: BackwardRow<'_, T>) {
        let w = row.h.len();
        let (gz, gr, gh) = split3(row.gates, w);
        let (dz_rec, dr_rec, dh_rec) = split3(row.d_recurrent, w);
        let rec_h = &row.recurrent[2 * w..3 * w];
        let h_prev = &row.h_prev[..w];
        let (d_ext, d_h) = (&row.d_h_ext[..w], &mut row.d_h[..w]);
        let one = T::ONE;
        // A plain loop, not a closure: a closure is compiled as its own function, outside the
        // driver's target features (baseline vector code instead of the dispatched width).
        let mut j = 0;
        while j < w {
            let m = LANES.min(w - j);
            let (mut z, mut r, mut cand) = (load(gz, j, m), load(gr, j, m), load(gh, j, m));
            let (ah, hp) = (load(rec_h, j, m), load(h_prev, j, m));
            let (de, mut dhl) = (load(d_ext, j, m), load(d_h, j, m));
            let mut dh_rec_l = [T::ZERO; LANES];
            for l in 0..LANES {
                let (zl, rl, cl) = (z[l], r[l], cand[l]);
                let dh = de[l] + dhl[l];
                let dz = dh * (hp[l] - cl) * zl * (one - zl);
                let da = dh * (one - zl) * (one - cl * cl);
                let dr = da * ah[l] * rl * (one - rl);
                (z[l], r[l], cand[l]) = (dz, dr, da);
                dh_rec_l[l] = da * rl;
                dhl[l] = dh * zl;
            }
            store(&z, gz, j, m);
            store(&r, gr, j, m);
            store(&cand, gh, j, m);
            store(&z, dz_rec, j, m);
            store(&r, dr_rec, j, m);
            store(&dh_rec_l, dh_rec, j, m);
            store(&dhl, d_h, j, m);
            j += m;
        }
    }
}

impl CellKind for SimpleRnn {
    const NAME: &'static str = "SimpleRnn";
    const N_GATES: usize = 1;
    const N_STATES: usize = 1;
    const N_BIAS_ROWS: usize = 1;
    const SEPARATE_RECURRENT: bool = false;

    #[inline(always)]
    fn forward_row<T: Real>(row: ForwardRow<'_, T>) {
        let w = row.h.len();
        let (gates, h) = (&mut row.gates[..w], &mut row.h[..w]);
        // A plain loop, not a closure: a closure is compiled as its own function, outside the
        // driver's target features (baseline vector code instead of the dispatched width).
        let mut j = 0;
        while j < w {
            let m = LANES.min(w - j);
            let mut a = load(gates, j, m);
            for v in a.iter_mut() {
                *v = v.tanh();
            }
            store(&a, gates, j, m);
            store(&a, h, j, m);
            j += m;
        }
    }

    #[inline(always)]
    fn backward_row<T: Real>(row: BackwardRow<'_, T>) {
        let w = row.h.len();
        let gates = &mut row.gates[..w];
        let (d_ext, d_h) = (&row.d_h_ext[..w], &mut row.d_h[..w]);
        // A plain loop, not a closure: a closure is compiled as its own function, outside the
        // driver's target features (baseline vector code instead of the dispatched width).
        let mut j = 0;
        while j < w {
            let m = LANES.min(w - j);
            let (mut a, de, dhl) = (load(gates, j, m), load(d_ext, j, m), load(d_h, j, m));
            for l in 0..LANES {
                a[l] = (de[l] + dhl[l]) * (T::ONE - a[l] * a[l]);
            }
            store(&a, gates, j, m);
            d_h[j..j + m].fill(T::ZERO);
            j += m;
        }
    }
}
