//! The fused gate arithmetic of each cell type, one row of one unit block at a time:
//! [`CellKind`] and its implementations [`Lstm`], [`Gru`] and [`SimpleRnn`].
//!
//! Each function is branch-free over the units and works on slices re-cut to one length, so
//! it compiles to vector code when the driver calls it inside a SIMD dispatch.

use crate::real::Real;

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
        for j in 0..w {
            let i = gi[j].sigmoid();
            let f = gf[j].sigmoid();
            let g = gg[j].tanh();
            let o = go[j].sigmoid();
            let c_new = f * c_prev[j] + i * g;
            (gi[j], gf[j], gg[j], go[j]) = (i, f, g, o);
            c[j] = c_new;
            h[j] = o * c_new.tanh();
        }
    }

    #[inline(always)]
    fn backward_row<T: Real>(row: BackwardRow<'_, T>) {
        let w = row.h.len();
        let (gi, gf, gg, go) = split4(row.gates, w);
        let (c_prev, c) = (&row.c_prev[..w], &row.c[..w]);
        let (d_ext, d_h, d_c) = (&row.d_h_ext[..w], &mut row.d_h[..w], &mut row.d_c[..w]);
        let one = T::ONE;
        for j in 0..w {
            let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
            let tc = c[j].tanh();
            let dh = d_ext[j] + d_h[j];
            let dc = d_c[j] + dh * o * (one - tc * tc);
            gi[j] = dc * g * i * (one - i);
            gf[j] = dc * c_prev[j] * f * (one - f);
            gg[j] = dc * i * (one - g * g);
            go[j] = dh * tc * o * (one - o);
            d_c[j] = dc * f;
            d_h[j] = T::ZERO;
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
        let one = T::ONE;
        for j in 0..w {
            let z = (gz[j] + rec[j]).sigmoid();
            let r = (gr[j] + rec[w + j]).sigmoid();
            let cand = (gh[j] + r * rec[2 * w + j]).tanh();
            (gz[j], gr[j], gh[j]) = (z, r, cand);
            h[j] = z * h_prev[j] + (one - z) * cand;
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
        for j in 0..w {
            let (z, r, cand) = (gz[j], gr[j], gh[j]);
            let dh = d_ext[j] + d_h[j];
            let dz = dh * (h_prev[j] - cand) * z * (one - z);
            let da = dh * (one - z) * (one - cand * cand);
            let dr = da * rec_h[j] * r * (one - r);
            (gz[j], gr[j], gh[j]) = (dz, dr, da);
            (dz_rec[j], dr_rec[j], dh_rec[j]) = (dz, dr, da * r);
            d_h[j] = dh * z;
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
        for j in 0..w {
            let value = gates[j].tanh();
            gates[j] = value;
            h[j] = value;
        }
    }

    #[inline(always)]
    fn backward_row<T: Real>(row: BackwardRow<'_, T>) {
        let w = row.h.len();
        let gates = &mut row.gates[..w];
        let (d_ext, d_h) = (&row.d_h_ext[..w], &mut row.d_h[..w]);
        for j in 0..w {
            let value = gates[j];
            gates[j] = (d_ext[j] + d_h[j]) * (T::ONE - value * value);
            d_h[j] = T::ZERO;
        }
    }
}
