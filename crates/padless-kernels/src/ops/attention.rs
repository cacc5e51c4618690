//! Variable-length multi-head attention over packed valid tokens: [`attention_forward`] and
//! [`attention_backward`].
//!
//! The layout is FlashAttention's variable-length one: the valid tokens of every row are
//! packed one after the other (`q [n_valid_q, heads, d_head]`, `k`, `v [n_valid_k, heads,
//! d_head]`), and `cu_seqlens_q` / `cu_seqlens_k` (`[batch + 1]`, starting at 0) give where
//! each row starts. Padding is not in the buffers at all, so it can neither receive weight
//! nor cost work, and a row's result does not depend on how it was padded.
//!
//! Each (row, head) pair is one task. Its queries are taken a block of [`QUERY_BLOCK`] at a
//! time against blocks of [`KEY_BLOCK`] keys with an online softmax (FlashAttention-2): a
//! running maximum and sum per query, the accumulated output rescaled whenever the maximum
//! grows. No score matrix larger than one block is ever held. The forward pass keeps the
//! log-sum-exp of each query's scores; the backward pass recomputes each block's
//! probabilities from it, `P = exp(S - lse)`, and accumulates `dV += P^T dO`,
//! `dS = P ⊙ (dO V^T - rowsum(dO ⊙ O))`, `dQ += scale dS K`, `dK += scale dS^T Q` in the
//! task's own buffers. A query that sees no key (a row without keys) outputs zeros, gets
//! zero gradients and the log-sum-exp `-inf`.
//!
//! With [`AttentionConfig::with_dropout`] each attention weight is kept or dropped by a hash
//! of the seed, the head and the packed indices of its query and key
//! ([`AttentionDropout::keeps`]), and a kept one is scaled by `1 / (1 - rate)`: the same
//! weights whatever the blocks, threads or call, so the backward pass drops exactly what the
//! forward pass dropped without storing a mask. The softmax's sums and the log-sum-exp are
//! those of the undropped weights; the forward pass drops a block's probabilities before
//! multiplying them by `V`, and the backward pass uses the dropped ones for `dV` and scales
//! `dO V^T` by the same factors (`dS = P ⊙ (Z ⊙ dO V^T / (1 - rate) - rowsum(dO ⊙ O))`,
//! `Z` the keep mask).
//!
//! With two threads the tasks, largest first, are handed out one at a time to the kernels'
//! thread pair; a task's result does not depend on the thread that ran it, so one and two
//! threads give the same bits.
//!
//! The block products (`d_head` and the blocks are small: tens of columns) are plain loops
//! over 4-row by 32-column tiles of local arrays with fused multiply-adds, compiled for the
//! CPU's vector width inside the SIMD dispatch, on buffers padded to whole tiles. Through
//! `gemm` each block's product would be packed anew, and in `f32` it would follow the
//! process-wide bfloat16 switch, rounding the scores.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::real::Real;
use crate::threads::{Shared, run_team};

/// Queries per block of the online softmax.
pub const QUERY_BLOCK: usize = 64;
/// Keys per block of the online softmax.
pub const KEY_BLOCK: usize = 64;
/// Multiply-adds below which a call runs on one thread (the pair's start costs more).
const TEAM_MIN_WORK: usize = 1 << 17;

/// The shape and options of an attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Heads.
    pub heads: usize,
    /// Width of each head's queries, keys and values.
    pub d_head: usize,
    /// Query `i` of a row sees only that row's keys `j <= i` (counted among the row's valid
    /// tokens, aligned at the first token).
    pub causal: bool,
    /// Multiplies the scores `q · k` (default `1 / sqrt(d_head)`).
    pub scale: f64,
    /// Threads (1 or 2; more count as 2).
    pub threads: usize,
    /// Dropout on the attention weights (training), `None` for none.
    pub dropout: Option<AttentionDropout>,
}

/// Dropout on the attention weights: which weights are kept is a function of `seed`, the
/// head and the packed indices of the query and the key alone ([`AttentionDropout::keeps`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionDropout {
    /// The probability of dropping a weight, in `[0, 1)`.
    pub rate: f64,
    /// Selects the dropped weights.
    pub seed: u64,
}

impl AttentionDropout {
    /// Whether the weight of packed query `query` on packed key `key` in head `head` is kept:
    /// a 64-bit mix (murmur3's finaliser) of the seed and the three indices, its low 32 bits
    /// below `(1 - rate) 2^32`.
    #[inline(always)]
    pub fn keeps(&self, head: usize, query: usize, key: usize) -> bool {
        let mut x = self.seed
            ^ (head as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (query as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (key as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        x ^= x >> 33;
        (x & 0xFFFF_FFFF) < self.threshold()
    }

    /// `(1 - rate) 2^32`: a 32-bit draw below it keeps the weight.
    #[inline(always)]
    fn threshold(&self) -> u64 {
        ((1.0 - self.rate) * 4_294_967_296.0) as u64
    }

    /// The factor of a weight: `1 / (1 - rate)` when kept, else 0.
    #[inline(always)]
    fn factor<T: Real>(&self, head: usize, query: usize, key: usize, kept: T) -> T {
        if self.keeps(head, query, key) {
            kept
        } else {
            T::ZERO
        }
    }
}

impl AttentionConfig {
    /// `heads` heads of width `d_head`, not causal, scale `1 / sqrt(d_head)`, one thread.
    pub fn new(heads: usize, d_head: usize) -> Self {
        AttentionConfig {
            heads,
            d_head,
            causal: false,
            scale: 1.0 / (d_head as f64).sqrt(),
            threads: 1,
            dropout: None,
        }
    }

    /// With dropout of `rate` on the attention weights, the dropped ones selected by `seed`
    /// (none at rate 0).
    ///
    /// # Panics
    /// If `rate` is not in `[0, 1)`.
    pub fn with_dropout(mut self, rate: f64, seed: u64) -> Self {
        assert!(
            (0.0..1.0).contains(&rate),
            "attention: dropout rate must be in [0, 1), found {rate}"
        );
        self.dropout = (rate > 0.0).then_some(AttentionDropout { rate, seed });
        self
    }

    /// With or without the causal mask.
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// With another score scale.
    pub fn with_scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// On `threads` threads.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

/// The packed queries, keys and values of a batch.
///
/// Row `b`'s queries are tokens `cu_seqlens_q[b]..cu_seqlens_q[b + 1]` of `q`, its keys and
/// values tokens `cu_seqlens_k[b]..cu_seqlens_k[b + 1]` of `k` and `v`; each token holds
/// `heads * d_head` values, head by head. Tokens follow one another (the stride 0 means
/// `heads * d_head`), or `q_stride` / `kv_stride` values apart: the queries, keys and values
/// can then be read in place from the output of one fused projection (`[n, 3 heads d_head]`,
/// `k` and `v` starting `heads * d_head` and twice that into it).
#[derive(Debug, Clone, Copy)]
pub struct PackedQkv<'a, T> {
    /// `[n_valid_q, heads, d_head]`, tokens `q_stride` apart.
    pub q: &'a [T],
    /// `[n_valid_k, heads, d_head]`, tokens `kv_stride` apart.
    pub k: &'a [T],
    /// `[n_valid_k, heads, d_head]`, tokens `kv_stride` apart.
    pub v: &'a [T],
    /// `[batch + 1]`: 0, then the running total of each row's valid queries.
    pub cu_seqlens_q: &'a [usize],
    /// `[batch + 1]`: 0, then the running total of each row's valid keys.
    pub cu_seqlens_k: &'a [usize],
    /// Values from one query token to the next (0: `heads * d_head`).
    pub q_stride: usize,
    /// Values from one key token to the next, and from one value token to the next (0:
    /// `heads * d_head`).
    pub kv_stride: usize,
}

impl<'a, T> PackedQkv<'a, T> {
    /// Queries, keys and values each in a buffer of its own, tokens one after another.
    pub fn new(
        q: &'a [T],
        k: &'a [T],
        v: &'a [T],
        cu_seqlens_q: &'a [usize],
        cu_seqlens_k: &'a [usize],
    ) -> Self {
        PackedQkv {
            q,
            k,
            v,
            cu_seqlens_q,
            cu_seqlens_k,
            q_stride: 0,
            kv_stride: 0,
        }
    }

    /// The strides in effect for tokens of `width` values: `(queries, keys and values)`.
    fn strides(&self, width: usize) -> (usize, usize) {
        let or_width = |s: usize| if s == 0 { width } else { s };
        (or_width(self.q_stride), or_width(self.kv_stride))
    }
}

/// What [`attention_forward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionOutput<T> {
    /// `[n_valid_q, heads, d_head]`.
    pub out: Vec<T>,
    /// `[n_valid_q, heads]`: `log Σ_j exp(scale q · k_j)` over the keys each query sees;
    /// `-inf` for a query that sees none.
    pub lse: Vec<T>,
}

/// The gradients of [`attention_backward`], in the layout of their inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionGradients<T> {
    /// `[n_valid_q, heads, d_head]`.
    pub d_q: Vec<T>,
    /// `[n_valid_k, heads, d_head]`.
    pub d_k: Vec<T>,
    /// `[n_valid_k, heads, d_head]`.
    pub d_v: Vec<T>,
}

/// One (row, head) pair and its tokens.
#[derive(Debug, Clone, Copy)]
struct Task {
    head: usize,
    q0: usize,
    n_q: usize,
    k0: usize,
    n_k: usize,
}

/// Checks the shapes and lists the tasks that have queries and keys, largest first.
fn tasks<T>(config: &AttentionConfig, x: &PackedQkv<'_, T>) -> (usize, usize, Vec<Task>) {
    assert!(
        config.heads > 0 && config.d_head > 0,
        "attention: heads and d_head must be at least 1, found {} and {}",
        config.heads,
        config.d_head
    );
    let check_offsets = |cu: &[usize], what: &str| {
        assert!(
            cu.first() == Some(&0),
            "attention: {what} must start at 0, found {cu:?}"
        );
        assert!(
            cu.windows(2).all(|w| w[0] <= w[1]),
            "attention: {what} must not decrease, found {cu:?}"
        );
        *cu.last().expect("checked non-empty")
    };
    let n_q = check_offsets(x.cu_seqlens_q, "cu_seqlens_q");
    let n_k = check_offsets(x.cu_seqlens_k, "cu_seqlens_k");
    assert_eq!(
        x.cu_seqlens_q.len(),
        x.cu_seqlens_k.len(),
        "attention: cu_seqlens_q and cu_seqlens_k must both have batch + 1 entries"
    );
    let width = config.heads * config.d_head;
    let (q_stride, kv_stride) = x.strides(width);
    assert!(
        q_stride >= width && kv_stride >= width,
        "attention: tokens of {width} values cannot be {q_stride} (queries) or {kv_stride} \
         (keys and values) apart"
    );
    let buffers = [
        (x.q, n_q, q_stride, "q"),
        (x.k, n_k, kv_stride, "k"),
        (x.v, n_k, kv_stride, "v"),
    ];
    for (buffer, tokens, stride, what) in buffers {
        // A dense buffer holds exactly its tokens; a strided one reaches at least the last.
        let least = tokens.saturating_sub(1) * stride + if tokens > 0 { width } else { 0 };
        let fits = if stride == width {
            buffer.len() == tokens * width
        } else {
            buffer.len() >= least
        };
        assert!(
            fits,
            "attention: {what} must be [{tokens}, {}, {}] ({least} values, tokens {stride} \
             apart), found {} values",
            config.heads,
            config.d_head,
            buffer.len()
        );
    }
    let mut list = Vec::new();
    for (q, k) in x.cu_seqlens_q.windows(2).zip(x.cu_seqlens_k.windows(2)) {
        let (n_q, n_k) = (q[1] - q[0], k[1] - k[0]);
        if n_q > 0 && n_k > 0 {
            list.extend((0..config.heads).map(|head| Task {
                head,
                q0: q[0],
                n_q,
                k0: k[0],
                n_k,
            }));
        }
    }
    list.sort_by_key(|t| std::cmp::Reverse(t.n_q * t.n_k));
    (n_q, n_k, list)
}

/// The team size for `tasks`.
fn team_size(config: &AttentionConfig, tasks: &[Task]) -> usize {
    let work: usize = tasks.iter().map(|t| t.n_q * t.n_k * config.d_head).sum();
    if work < TEAM_MIN_WORK || tasks.len() < 2 {
        1
    } else {
        config.threads.clamp(1, 2)
    }
}

/// Multi-head attention of every row's queries over that row's keys (see the module docs):
/// `out = softmax(scale q k^T) v` per row and head, with the causal mask when configured.
///
/// # Panics
/// If `heads` or `d_head` is 0, the offsets do not start at 0, decrease, or differ in count,
/// or a buffer's length does not match its offsets.
///
/// ```
/// use padless_kernels::attention::{AttentionConfig, PackedQkv, attention_forward};
/// // One head of width 1; row 0 has two tokens, row 1 none.
/// let (q, k, v) = ([1.0f64, 1.0], [0.0f64, 2.0_f64.ln()], [3.0f64, 6.0]);
/// let packed = PackedQkv::new(&q, &k, &v, &[0, 2, 2], &[0, 2, 2]);
/// let config = AttentionConfig::new(1, 1).with_scale(1.0);
/// let result = attention_forward(&config, &packed);
/// // Weights 1/3 and 2/3 for both queries: 3/3 + 12/3 = 5.
/// assert!((result.out[0] - 5.0).abs() < 1e-12);
/// // Causal: the first query sees only the first key.
/// let causal = attention_forward(&config.with_causal(true), &packed);
/// assert_eq!(causal.out[0], 3.0);
/// assert!((causal.out[1] - 5.0).abs() < 1e-12);
/// ```
pub fn attention_forward<T: Real>(
    config: &AttentionConfig,
    inputs: &PackedQkv<'_, T>,
) -> AttentionOutput<T> {
    let (n_q, _, tasks) = tasks(config, inputs);
    let mut out = vec![T::ZERO; n_q * config.heads * config.d_head];
    let mut lse = vec![T::from_f64(f64::NEG_INFINITY); n_q * config.heads];
    let (out_s, lse_s) = (Shared::new(&mut out), Shared::new(&mut lse));
    let next = AtomicUsize::new(0);
    run_team(team_size(config, &tasks), |_| {
        let mut scratch = Scratch::default();
        while let Some(&task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
            pulp::Arch::new().dispatch(Forward {
                config,
                inputs,
                task,
                scratch: &mut scratch,
                out: out_s,
                lse: lse_s,
            });
        }
    });
    AttentionOutput { out, lse }
}

/// The gradients of [`attention_forward`] with respect to `q`, `k` and `v`, from the output
/// gradient `d_out [n_valid_q, heads, d_head]` and what the forward pass returned for the
/// same inputs and configuration.
///
/// # Panics
/// As [`attention_forward`], and if `d_out` or `forward` do not have the output's shape.
pub fn attention_backward<T: Real>(
    config: &AttentionConfig,
    inputs: &PackedQkv<'_, T>,
    forward: &AttentionOutput<T>,
    d_out: &[T],
) -> AttentionGradients<T> {
    let (n_q, n_k, tasks) = tasks(config, inputs);
    let width = config.heads * config.d_head;
    assert_eq!(
        d_out.len(),
        n_q * width,
        "attention backward: d_out must be [{n_q}, {}, {}], found {} values",
        config.heads,
        config.d_head,
        d_out.len()
    );
    assert!(
        forward.out.len() == n_q * width && forward.lse.len() == n_q * config.heads,
        "attention backward: the forward result must hold [{n_q}, {}, {}] outputs and [{n_q}, {}] \
         log-sum-exps, found {} and {}",
        config.heads,
        config.d_head,
        config.heads,
        forward.out.len(),
        forward.lse.len()
    );
    let mut d_q = vec![T::ZERO; n_q * width];
    let mut d_k = vec![T::ZERO; n_k * width];
    let mut d_v = vec![T::ZERO; n_k * width];
    let grads = [
        Shared::new(&mut d_q),
        Shared::new(&mut d_k),
        Shared::new(&mut d_v),
    ];
    let next = AtomicUsize::new(0);
    run_team(team_size(config, &tasks), |_| {
        let mut scratch = Scratch::default();
        while let Some(&task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
            pulp::Arch::new().dispatch(Backward {
                config,
                inputs,
                forward,
                d_out,
                task,
                scratch: &mut scratch,
                grads,
            });
        }
    });
    AttentionGradients { d_q, d_k, d_v }
}

/// A thread's buffers, kept from task to task. Rows of width `d` are stored `d_pad` apart and
/// rows of width `n_k` `n_k_pad` apart (both rounded up to a whole product tile, the padding
/// zero), so that every product tile is full width.
#[derive(Default)]
struct Scratch<T> {
    /// `[n_q, d_pad]`: the task's queries times the scale.
    q: Vec<T>,
    /// `[n_k, d_pad]`.
    k: Vec<T>,
    /// `[d, n_k_pad]`.
    k_t: Vec<T>,
    /// `[n_k, d_pad]`.
    v: Vec<T>,
    /// `[d, n_k_pad]` (backward).
    v_t: Vec<T>,
    /// `[n_q, d_pad]` (backward).
    d_o: Vec<T>,
    /// Forward: the output accumulator of a query block `[QUERY_BLOCK, d_pad]`; backward: `dQ`
    /// `[n_q, d_pad]`.
    acc: Vec<T>,
    /// `[n_k, d_pad]` (backward).
    d_k: Vec<T>,
    /// `[n_k, d_pad]` (backward).
    d_v: Vec<T>,
    /// Scores, then probabilities, of a block `[QUERY_BLOCK, KEY_BLOCK]` (and `TILE_ROWS` more
    /// for [`Lhs::Cols`]).
    s: Vec<T>,
    /// The block's `dP`, then `dS` (backward; as `s`).
    d_s: Vec<T>,
    /// The block's dropped probabilities (backward with dropout; as `s`).
    p_drop: Vec<T>,
    /// Per query of a block: running maximum (forward).
    max: Vec<T>,
    /// Per query of a block: running sum (forward).
    sum: Vec<T>,
    /// Per query of the task: `rowsum(dO ⊙ O)` (backward).
    delta: Vec<T>,
    /// Per query of the task: the forward's log-sum-exp (backward).
    lse: Vec<T>,
}

/// `n` rounded up to a whole number of product tile columns.
#[inline(always)]
fn padded(n: usize) -> usize {
    n.div_ceil(TILE_COLS) * TILE_COLS
}

/// `buffer` as `len` zeros.
#[inline(always)]
fn zeroed<T: Real>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    buffer.clear();
    buffer.resize(len, T::ZERO);
    buffer
}

/// `buffer` with room for `len` values, for a caller that writes each value before reading
/// it (what is there is left from an earlier task: finite, and never read).
#[inline(always)]
fn sized<T: Real>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::ZERO);
    }
    &mut buffer[..len]
}

/// Copies head `head` (of width `d`) of `count` tokens from token `first` of `src` (tokens
/// `stride` values apart) into `rows [count, d_pad]` (times `factor`), and into `cols [d,
/// padded(count)]` when given; the padding is zero.
#[inline(always)]
fn gather<T: Real>(
    src: &[T],
    stride: usize,
    (head, d): (usize, usize),
    (first, count): (usize, usize),
    factor: T,
    rows: &mut Vec<T>,
    cols: Option<&mut Vec<T>>,
) {
    let d_pad = padded(d);
    let rows = sized(rows, count * d_pad);
    for (i, row) in rows.chunks_exact_mut(d_pad).enumerate() {
        let from = &src[(first + i) * stride + head * d..][..d];
        let (values, padding) = row.split_at_mut(d);
        for (r, &x) in values.iter_mut().zip(from) {
            *r = x * factor;
        }
        padding.fill(T::ZERO);
    }
    if let Some(cols) = cols {
        let count_pad = padded(count);
        let cols = sized(cols, d * count_pad);
        for (c, col) in cols.chunks_exact_mut(count_pad).enumerate() {
            let (values, padding) = col.split_at_mut(count);
            for (x, row) in values.iter_mut().zip(rows.chunks_exact(d_pad)) {
                *x = row[c];
            }
            padding.fill(T::ZERO);
        }
    }
}

/// The keys query `query` sees among the `cols` keys of a block starting at key `kb` (all of
/// them unless causal).
#[inline(always)]
fn visible(causal: bool, query: usize, kb: usize, cols: usize) -> usize {
    if causal {
        (query + 1).saturating_sub(kb).min(cols)
    } else {
        cols
    }
}

/// The last key (exclusive) any query of the block `qb..qb + rows` sees.
#[inline(always)]
fn key_end(causal: bool, qb: usize, rows: usize, n_k: usize) -> usize {
    if causal { n_k.min(qb + rows) } else { n_k }
}

struct Forward<'a, T> {
    config: &'a AttentionConfig,
    inputs: &'a PackedQkv<'a, T>,
    task: Task,
    scratch: &'a mut Scratch<T>,
    out: Shared<'a, T>,
    lse: Shared<'a, T>,
}

impl<T: Real> pulp::WithSimd for Forward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Forward {
            config,
            inputs,
            task,
            scratch: w,
            out,
            lse,
        } = self;
        let (heads, d, causal) = (config.heads, config.d_head, config.causal);
        let (width, d_pad) = (heads * d, padded(d));
        let scale = T::from_f64(config.scale);
        let kept = T::from_f64(config.dropout.map_or(1.0, |drop| 1.0 / (1.0 - drop.rate)));
        let h = task.head;
        let (queries, keys) = ((task.q0, task.n_q), (task.k0, task.n_k));
        let (q_stride, kv_stride) = inputs.strides(width);
        gather(inputs.q, q_stride, (h, d), queries, scale, &mut w.q, None);
        gather(
            inputs.k,
            kv_stride,
            (h, d),
            keys,
            T::ONE,
            &mut w.k,
            Some(&mut w.k_t),
        );
        gather(inputs.v, kv_stride, (h, d), keys, T::ONE, &mut w.v, None);
        let (n_k, n_k_pad) = (task.n_k, padded(task.n_k));
        let s = sized(&mut w.s, QUERY_BLOCK * KEY_BLOCK + TILE_ROWS);
        let acc = sized(&mut w.acc, QUERY_BLOCK * d_pad);
        let max = sized(&mut w.max, QUERY_BLOCK);
        let sum = sized(&mut w.sum, QUERY_BLOCK);
        for qb in (0..task.n_q).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(task.n_q - qb);
            acc[..rows * d_pad].fill(T::ZERO);
            sum[..rows].fill(T::ZERO);
            for kb in (0..key_end(causal, qb, rows, n_k)).step_by(KEY_BLOCK) {
                let cols = KEY_BLOCK.min(n_k - kb);
                // S = (scale Q) K^T for the block.
                product(
                    [rows, padded(cols), d],
                    (s, KEY_BLOCK, false),
                    Lhs::Rows(&w.q[qb * d_pad..], d_pad),
                    (&w.k_t[kb..], n_k_pad),
                );
                for r in 0..rows {
                    let seen = visible(causal, qb + r, kb, cols);
                    let row = &mut s[r * KEY_BLOCK..r * KEY_BLOCK + cols];
                    if seen == 0 {
                        row.fill(T::ZERO);
                        continue;
                    }
                    let (scores, hidden) = row.split_at_mut(seen);
                    hidden.fill(T::ZERO);
                    let block_max = lane_max(scores);
                    // The first block a query sees sets its maximum; a later, larger one
                    // rescales what was accumulated.
                    let (new_max, alpha) = if sum[r] == T::ZERO {
                        (block_max, T::ZERO)
                    } else if block_max > max[r] {
                        (block_max, (max[r] - block_max).exp())
                    } else {
                        (max[r], T::ONE)
                    };
                    for x in scores.iter_mut() {
                        *x = (*x - new_max).exp();
                    }
                    sum[r] = alpha * sum[r] + lane_sum(scores);
                    max[r] = new_max;
                    // The sums are the undropped weights'; the product takes the dropped.
                    if let Some(drop) = &config.dropout {
                        let query = task.q0 + qb + r;
                        for (j, x) in scores.iter_mut().enumerate() {
                            *x = *x * drop.factor(h, query, task.k0 + kb + j, kept);
                        }
                    }
                    if alpha != T::ONE {
                        for a in &mut acc[r * d_pad..(r + 1) * d_pad] {
                            *a = *a * alpha;
                        }
                    }
                }
                // acc += P V for the block.
                product(
                    [rows, d_pad, cols],
                    (acc, d_pad, true),
                    Lhs::Rows(s, KEY_BLOCK),
                    (&w.v[kb * d_pad..], d_pad),
                );
            }
            for r in 0..rows {
                let token = task.q0 + qb + r;
                let inverse = T::ONE / sum[r];
                // SAFETY: token `token`, head `h` belongs to this task alone.
                let dst = unsafe { out.slice_mut(token * width + h * d, d) };
                for (o, &a) in dst.iter_mut().zip(&acc[r * d_pad..]) {
                    *o = a * inverse;
                }
                let log_sum = T::from_f64(max[r].to_f64() + sum[r].to_f64().ln());
                // SAFETY: as above.
                unsafe { lse.slice_mut(token * heads + h, 1)[0] = log_sum };
            }
        }
    }
}

struct Backward<'a, T> {
    config: &'a AttentionConfig,
    inputs: &'a PackedQkv<'a, T>,
    forward: &'a AttentionOutput<T>,
    d_out: &'a [T],
    task: Task,
    scratch: &'a mut Scratch<T>,
    /// `d_q`, `d_k`, `d_v`.
    grads: [Shared<'a, T>; 3],
}

impl<T: Real> pulp::WithSimd for Backward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Backward {
            config,
            inputs,
            forward,
            d_out,
            task,
            scratch: w,
            grads: [d_q, d_k, d_v],
        } = self;
        let (heads, d, causal) = (config.heads, config.d_head, config.causal);
        let (width, d_pad) = (heads * d, padded(d));
        let scale = T::from_f64(config.scale);
        let kept = T::from_f64(config.dropout.map_or(1.0, |drop| 1.0 / (1.0 - drop.rate)));
        let h = task.head;
        let (queries, keys) = ((task.q0, task.n_q), (task.k0, task.n_k));
        let (q_stride, kv_stride) = inputs.strides(width);
        gather(inputs.q, q_stride, (h, d), queries, scale, &mut w.q, None);
        gather(
            inputs.k,
            kv_stride,
            (h, d),
            keys,
            T::ONE,
            &mut w.k,
            Some(&mut w.k_t),
        );
        gather(
            inputs.v,
            kv_stride,
            (h, d),
            keys,
            T::ONE,
            &mut w.v,
            Some(&mut w.v_t),
        );
        gather(d_out, width, (h, d), queries, T::ONE, &mut w.d_o, None);
        let (n_q, n_k, n_k_pad) = (task.n_q, task.n_k, padded(task.n_k));
        let delta = sized(&mut w.delta, n_q);
        let lse = sized(&mut w.lse, n_q);
        for i in 0..n_q {
            let token = task.q0 + i;
            let o = &forward.out[token * width + h * d..][..d];
            delta[i] = lane_dot(o, &w.d_o[i * d_pad..][..d]);
            lse[i] = forward.lse[token * heads + h];
        }
        let d_q_acc = zeroed(&mut w.acc, n_q * d_pad);
        let d_k_acc = zeroed(&mut w.d_k, n_k * d_pad);
        let d_v_acc = zeroed(&mut w.d_v, n_k * d_pad);
        let p = sized(&mut w.s, QUERY_BLOCK * KEY_BLOCK + TILE_ROWS);
        let d_s = sized(&mut w.d_s, QUERY_BLOCK * KEY_BLOCK + TILE_ROWS);
        let p_drop = sized(&mut w.p_drop, QUERY_BLOCK * KEY_BLOCK + TILE_ROWS);
        for qb in (0..n_q).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(n_q - qb);
            for kb in (0..key_end(causal, qb, rows, n_k)).step_by(KEY_BLOCK) {
                let cols = KEY_BLOCK.min(n_k - kb);
                product(
                    [rows, padded(cols), d],
                    (p, KEY_BLOCK, false),
                    Lhs::Rows(&w.q[qb * d_pad..], d_pad),
                    (&w.k_t[kb..], n_k_pad),
                );
                for r in 0..rows {
                    let seen = visible(causal, qb + r, kb, cols);
                    let row = &mut p[r * KEY_BLOCK..r * KEY_BLOCK + cols];
                    let (scores, hidden) = row.split_at_mut(seen);
                    let l = lse[qb + r];
                    for x in scores.iter_mut() {
                        *x = (*x - l).exp();
                    }
                    hidden.fill(T::ZERO);
                }
                // With dropout, the block's dropped probabilities `Z ⊙ P / (1 - rate)`.
                if let Some(drop) = &config.dropout {
                    for r in 0..rows {
                        let at = r * KEY_BLOCK;
                        let query = task.q0 + qb + r;
                        for (j, (x, &pr)) in p_drop[at..at + cols]
                            .iter_mut()
                            .zip(&p[at..at + cols])
                            .enumerate()
                        {
                            *x = pr * drop.factor(h, query, task.k0 + kb + j, kept);
                        }
                    }
                }
                let dropped: &[T] = if config.dropout.is_some() {
                    &*p_drop
                } else {
                    &*p
                };
                // dV += P^T dO (the dropped P).
                product(
                    [cols, d_pad, rows],
                    (&mut d_v_acc[kb * d_pad..], d_pad, true),
                    Lhs::Cols(dropped, KEY_BLOCK),
                    (&w.d_o[qb * d_pad..], d_pad),
                );
                // dP = dO V^T, then dS = P ⊙ (dP - delta).
                product(
                    [rows, padded(cols), d],
                    (d_s, KEY_BLOCK, false),
                    Lhs::Rows(&w.d_o[qb * d_pad..], d_pad),
                    (&w.v_t[kb..], n_k_pad),
                );
                for r in 0..rows {
                    let at = r * KEY_BLOCK;
                    let dl = delta[qb + r];
                    let row = d_s[at..at + cols].iter_mut().zip(&p[at..at + cols]);
                    match &config.dropout {
                        None => {
                            for (g, &pr) in row {
                                *g = pr * (*g - dl);
                            }
                        }
                        Some(drop) => {
                            let query = task.q0 + qb + r;
                            for (j, (g, &pr)) in row.enumerate() {
                                let factor = drop.factor(h, query, task.k0 + kb + j, kept);
                                *g = pr * (*g * factor - dl);
                            }
                        }
                    }
                }
                // dQ += dS K (times the scale at the end); dK += dS^T (scale Q).
                product(
                    [rows, d_pad, cols],
                    (&mut d_q_acc[qb * d_pad..], d_pad, true),
                    Lhs::Rows(d_s, KEY_BLOCK),
                    (&w.k[kb * d_pad..], d_pad),
                );
                product(
                    [cols, d_pad, rows],
                    (&mut d_k_acc[kb * d_pad..], d_pad, true),
                    Lhs::Cols(d_s, KEY_BLOCK),
                    (&w.q[qb * d_pad..], d_pad),
                );
            }
        }
        for i in 0..n_q {
            let token = task.q0 + i;
            // SAFETY: token `token`, head `h` of the queries belongs to this task alone.
            let dst = unsafe { d_q.slice_mut(token * width + h * d, d) };
            for (g, &a) in dst.iter_mut().zip(&d_q_acc[i * d_pad..]) {
                *g = a * scale;
            }
        }
        for j in 0..n_k {
            let token = task.k0 + j;
            // SAFETY: token `token`, head `h` of the keys belongs to this task alone.
            unsafe {
                d_k.slice_mut(token * width + h * d, d)
                    .copy_from_slice(&d_k_acc[j * d_pad..][..d]);
                d_v.slice_mut(token * width + h * d, d)
                    .copy_from_slice(&d_v_acc[j * d_pad..][..d]);
            }
        }
    }
}

/// Lanes of the partial maxima and sums of a score row (vector code: a serial reduction
/// would not vectorise).
const LANES: usize = 16;

/// The maximum of a non-empty row.
#[inline(always)]
fn lane_max<T: Real>(row: &[T]) -> T {
    let mut lanes = [row[0]; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(row[0], |m, &x| if x > m { x } else { m })
}

/// The sum of a row.
#[inline(always)]
fn lane_sum<T: Real>(row: &[T]) -> T {
    let mut lanes = [T::ZERO; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (s, &x) in lanes.iter_mut().zip(chunk) {
            *s += x;
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(T::ZERO, |s, &x| s + x)
}

/// `Σ x y` over two rows of equal length.
#[inline(always)]
fn lane_dot<T: Real>(x: &[T], y: &[T]) -> T {
    let mut lanes = [T::ZERO; LANES];
    let (mut xs, mut ys) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    for (a, b) in (&mut xs).zip(&mut ys) {
        for ((s, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
            *s += a * b;
        }
    }
    let rest = xs.remainder().iter().zip(ys.remainder());
    rest.fold(lanes.iter().fold(T::ZERO, |s, &x| s + x), |s, (&a, &b)| {
        s + a * b
    })
}

/// Rows of a product's tile.
const TILE_ROWS: usize = 4;
/// Columns of a product's tile.
const TILE_COLS: usize = 32;

/// The left operand of a [`product`].
#[derive(Clone, Copy)]
enum Lhs<'a, T> {
    /// `A[i, p] = a[i * ld + p]`.
    Rows(&'a [T], usize),
    /// `A[i, p] = a[p * ld + i]`. A tile reads its rows' values at `p` as one run of
    /// `TILE_ROWS`, past `m` when `m` is not a multiple of it: `a` holds `TILE_ROWS` values
    /// more than the last element of `A`.
    Cols(&'a [T], usize),
}

/// `C[i, j] (+)= Σ_p A[i, p] · B[p, j]` for `[m, n, k]` with `n` a multiple of
/// [`TILE_COLS`]: `C` row-major with `ldc` values per row (`c = (values, ldc, accumulate)`),
/// `B[p, j] = b[p * ldb + j]`.
///
/// Each tile of `TILE_ROWS x TILE_COLS` accumulates in a local array over the whole inner
/// dimension: per step of `p`, one load of a `B` row part, one value of `A` per tile row and
/// the multiply-adds. A tile's rows past `m` read valid rows of `A` and are not stored.
#[inline(always)]
fn product<T: Real>(
    [m, n, k]: [usize; 3],
    (c, ldc, accumulate): (&mut [T], usize, bool),
    lhs: Lhs<'_, T>,
    (b, ldb): (&[T], usize),
) {
    debug_assert!(n.is_multiple_of(TILE_COLS));
    for i0 in (0..m).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(m - i0);
        match lhs {
            Lhs::Rows(a, ld) => {
                let a: [&[T]; TILE_ROWS] =
                    std::array::from_fn(|r| &a[(i0 + r.min(rows - 1)) * ld..][..k]);
                tile_row(
                    [i0, rows, n, k],
                    (&mut *c, ldc, accumulate),
                    |p| std::array::from_fn(|r| a[r][p]),
                    (b, ldb),
                );
            }
            Lhs::Cols(a, ld) => tile_row(
                [i0, rows, n, k],
                (&mut *c, ldc, accumulate),
                |p| {
                    a[p * ld + i0..][..TILE_ROWS]
                        .try_into()
                        .expect("a tile's run of A")
                },
                (b, ldb),
            ),
        }
    }
}

/// The tiles of rows `i0..i0 + rows` of a [`product`], `a(p)` giving the tile rows' values of
/// `A` at `p`.
#[inline(always)]
fn tile_row<T: Real>(
    [i0, rows, n, k]: [usize; 4],
    (c, ldc, accumulate): (&mut [T], usize, bool),
    a: impl Fn(usize) -> [T; TILE_ROWS],
    (b, ldb): (&[T], usize),
) {
    for j0 in (0..n).step_by(TILE_COLS) {
        let mut tile = [[T::ZERO; TILE_COLS]; TILE_ROWS];
        if accumulate {
            for (r, t) in tile.iter_mut().enumerate().take(rows) {
                t.copy_from_slice(&c[(i0 + r) * ldc + j0..][..TILE_COLS]);
            }
        }
        for p in 0..k {
            let b_row: &[T; TILE_COLS] = b[p * ldb + j0..][..TILE_COLS]
                .try_into()
                .expect("a tile row of B");
            for (t, x) in tile.iter_mut().zip(a(p)) {
                multiply_add(t, x, b_row);
            }
        }
        for (r, t) in tile.iter().enumerate().take(rows) {
            c[(i0 + r) * ldc + j0..][..TILE_COLS].copy_from_slice(t);
        }
    }
}

/// `t += x · row` with one fused multiply-add per element for `f32` and `f64` (one rounding,
/// one vector instruction inside the SIMD dispatch), else a product and a sum: Rust never
/// fuses them itself. The type test is resolved when the function is compiled for `T`.
#[inline(always)]
fn multiply_add<T: Real>(t: &mut [T; TILE_COLS], x: T, row: &[T; TILE_COLS]) {
    use std::any::TypeId;
    fn fused<F: Copy + 'static>(
        t: &mut [F; TILE_COLS],
        x: F,
        row: &[F; TILE_COLS],
        fma: impl Fn(F, F, F) -> F,
    ) {
        for (acc, &y) in t.iter_mut().zip(row) {
            *acc = fma(x, y, *acc);
        }
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32: the casts reinterpret each value as its own type.
        let (t, row) = unsafe {
            (
                &mut *(t as *mut [T; TILE_COLS] as *mut [f32; TILE_COLS]),
                &*(row as *const [T; TILE_COLS] as *const [f32; TILE_COLS]),
            )
        };
        fused(t, x.to_f64() as f32, row, f32::mul_add);
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: T is f64, as above.
        let (t, row) = unsafe {
            (
                &mut *(t as *mut [T; TILE_COLS] as *mut [f64; TILE_COLS]),
                &*(row as *const [T; TILE_COLS] as *const [f64; TILE_COLS]),
            )
        };
        fused(t, x.to_f64(), row, f64::mul_add);
    } else {
        for (acc, &y) in t.iter_mut().zip(row) {
            *acc += x * y;
        }
    }
}

/// One decoding step's attention over a key/value cache: for each of the `groups = batch *
/// heads` (row, head) pairs, its query `q [groups, d_head]` against its `t_key` keys `keys
/// [groups, t_key, d_head]`, `softmax(scale q · k)` over the keys that `key_valid [batch,
/// t_key]` marks valid (all of them without it), times its values `values [groups, t_key,
/// d_head]`: `[groups, d_head]`, zeros for a row without a valid key. Forward only (decoding
/// runs without gradients); the pairs are split over `threads` (1 or 2).
///
/// # Panics
/// If a buffer's length does not match `heads` and `d_head`.
///
/// ```
/// // One row, one head of width 1, two keys with scores 0 and ln 2: weights 1/3 and 2/3.
/// let out = padless_kernels::attention::cached_attention_step(
///     &[1.0f64], &[0.0, 2.0_f64.ln()], &[3.0, 6.0], None, (1, 1), 1.0, 1,
/// );
/// assert!((out[0] - 5.0).abs() < 1e-12);
/// ```
pub fn cached_attention_step<T: Real>(
    q: &[T],
    keys: &[T],
    values: &[T],
    key_valid: Option<&[bool]>,
    (heads, d_head): (usize, usize),
    scale: f64,
    threads: usize,
) -> Vec<T> {
    assert!(
        heads > 0 && d_head > 0 && q.len().is_multiple_of(heads * d_head),
        "attention step: the queries must be [batch · {heads}, {d_head}], found {} values",
        q.len()
    );
    let groups = q.len() / d_head;
    let t_key = if groups == 0 {
        0
    } else {
        keys.len() / (groups * d_head)
    };
    assert!(
        keys.len() == groups * t_key * d_head && values.len() == keys.len(),
        "attention step: keys and values must both be [{groups}, t_key, {d_head}], found {} \
         and {} values",
        keys.len(),
        values.len()
    );
    if let Some(valid) = key_valid {
        assert_eq!(
            valid.len(),
            groups / heads * t_key,
            "attention step: the key mask must be [{}, {t_key}]",
            groups / heads
        );
    }
    let mut out = vec![T::ZERO; q.len()];
    let out_s = Shared::new(&mut out);
    let team = if keys.len() * 2 < TEAM_MIN_WORK {
        1
    } else {
        threads.clamp(1, 2)
    };
    run_team(team, |worker| {
        let (g0, g1) = worker.part(groups);
        crate::isa::dispatch(CachedStep {
            q,
            keys,
            values,
            key_valid,
            heads,
            d_head,
            t_key,
            scale: T::from_f64(scale),
            groups: (g0, g1),
            out: out_s,
        });
    });
    out
}

/// [`cached_attention_step`] for the pairs `groups.0..groups.1`.
struct CachedStep<'a, T> {
    q: &'a [T],
    keys: &'a [T],
    values: &'a [T],
    key_valid: Option<&'a [bool]>,
    heads: usize,
    d_head: usize,
    t_key: usize,
    scale: T,
    groups: (usize, usize),
    out: Shared<'a, T>,
}

impl<T: Real> pulp::WithSimd for CachedStep<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (d, t_key) = (self.d_head, self.t_key);
        let mut weights = vec![T::ZERO; t_key];
        for g in self.groups.0..self.groups.1 {
            let q = &self.q[g * d..(g + 1) * d];
            let keys = &self.keys[g * t_key * d..(g + 1) * t_key * d];
            let values = &self.values[g * t_key * d..(g + 1) * t_key * d];
            let valid = self
                .key_valid
                .map(|v| &v[g / self.heads * t_key..(g / self.heads + 1) * t_key]);
            let mut max = T::from_f64(f64::NEG_INFINITY);
            let mut any = false;
            for (j, (w, key)) in weights.iter_mut().zip(keys.chunks_exact(d)).enumerate() {
                if valid.is_some_and(|v| !v[j]) {
                    continue;
                }
                *w = lane_dot(q, key) * self.scale;
                if !any || *w > max {
                    max = *w;
                }
                any = true;
            }
            // SAFETY: the pairs `groups.0..groups.1` of `out` are this thread's.
            let out = unsafe { self.out.slice_mut(g * d, d) };
            if !any {
                continue;
            }
            let mut sum = T::ZERO;
            for (j, w) in weights.iter_mut().enumerate() {
                *w = if valid.is_some_and(|v| !v[j]) {
                    T::ZERO
                } else {
                    (*w - max).exp()
                };
                sum += *w;
            }
            let inverse = T::ONE / sum;
            for (&w, value) in weights.iter().zip(values.chunks_exact(d)) {
                let w = w * inverse;
                for (o, &v) in out.iter_mut().zip(value) {
                    *o += w * v;
                }
            }
        }
    }
}
