"""Shared pieces of the seq2seq-transformer benchmark (see ../SPEC.md, "Benchmark seq2seq-transformer").

Data: one fixed batch from numpy RandomState(SEED), identical in every framework (`make_batch`).
Model: post-LN encoder-decoder (`Config`), described once here as a float64 numpy forward pass
(`numpy_logits`) that each peer's --check compares its own model against, with the weights copied
into the canonical layout documented at `numpy_logits`.
Counting: `flops_per_train_step` and `flops_per_decode` on all (padded) tokens and on valid tokens.
Timing reuses s2s_common's harness; memory is the resident-set high-water mark (`MemoryProbe`).
"""
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from s2s_common import cpu_seconds, emit, system_busy_seconds  # noqa: F401  (emit re-exported)

SEED = 1234
B = 64
T = 64  # source and target batches are both padded to T steps (post-padding)
LENGTHS = (8, 64)  # each source length uniform in [8, 64]; the target length is a function of it
HALF_LENGTHS = (4, 32)  # "half" batch: same padded shape, half the valid tokens on average
V = 32  # source and target vocabularies
PAD, BOS, EOS = 0, 1, 2  # target ids; source ids are 0 = padding, 1..31 = symbols
FIRST_TARGET_SYMBOL = 3  # target symbols are 3..31
LR = 1e-4
BETAS = (0.9, 0.98)
ADAM_EPS = 1e-9
LN_EPS = 1e-5
DROPOUT = 0.1
DECODE_STEPS = T  # greedy decoding runs exactly this many steps for every row (no early stop)


@dataclass(frozen=True)
class Config:
    d_model: int = 256
    heads: int = 4
    d_ff: int = 1024
    enc_layers: int = 3
    dec_layers: int = 3
    vocab: int = V
    dropout: float = DROPOUT
    ln_eps: float = LN_EPS

    @property
    def head_dim(self):
        return self.d_model // self.heads


CONFIG = Config()


def parse_lengths(text):
    """'8:64' -> (8, 64); the benchmark's two settings are 8:64 and 4:32 (see SPEC.md)."""
    lo, hi = (int(v) for v in text.split(":"))
    if not 2 <= lo <= hi <= T:
        raise ValueError(f"--lengths expects lo:hi with 2 <= lo <= hi <= {T}, found {text!r}")
    return lo, hi


def target_length(src_len, lo, hi):
    """The target length as a function of the source length: a rotation of [lo, hi] by half its
    width, so target lengths are uniform in [lo, hi] whenever source lengths are, and never equal
    to the source length (when lo < hi)."""
    n = hi - lo + 1
    return lo + (src_len - lo + n // 2) % n


def target_symbols(src_row):
    """The target body as a function of the source symbols: the source reversed, each symbol s
    mapped to target id 3 + (s - 1) % 29 and written twice when s is odd, once when s is even."""
    out = []
    for s in src_row[::-1]:
        t = FIRST_TARGET_SYMBOL + (int(s) - 1) % (V - FIRST_TARGET_SYMBOL)
        out.extend([t, t] if s % 2 else [t])
    return out


def make_batch(seed=SEED, B=B, T=T, lengths=LENGTHS):
    """The benchmark batch. Source row b: L_s symbols 1..31 then padding 0. Target row b has
    L_t = target_length(L_s) steps: labels = the first L_t - 1 ids of target_symbols(source) read
    cyclically, then EOS; decoder input = BOS followed by labels[:-1]. Padded steps hold 0."""
    lo, hi = lengths
    rng = np.random.RandomState(seed)
    src_len = rng.randint(lo, hi + 1, size=B)
    sym = rng.randint(1, V, size=(B, T))
    tgt_len = np.array([target_length(int(L), lo, hi) for L in src_len])
    src = np.zeros((B, T), np.int64)
    dec_in = np.zeros((B, T), np.int64)
    labels = np.zeros((B, T), np.int64)
    for b in range(B):
        Ls, Lt = int(src_len[b]), int(tgt_len[b])
        src[b, :Ls] = sym[b, :Ls]
        body = target_symbols(src[b, :Ls])
        lab = [body[j % len(body)] for j in range(Lt - 1)] + [EOS]
        labels[b, :Lt] = lab
        dec_in[b, :Lt] = [BOS] + lab[:-1]
    steps = np.arange(T)
    src_mask = (steps[None, :] < src_len[:, None]).astype(np.float32)
    tgt_mask = (steps[None, :] < tgt_len[:, None]).astype(np.float32)
    return dict(
        src=src,
        dec_in=dec_in,
        labels=labels,
        src_len=src_len.astype(np.int64),
        tgt_len=tgt_len.astype(np.int64),
        src_mask=src_mask,
        tgt_mask=tgt_mask,
        valid_fraction=float((src_mask.sum() + tgt_mask.sum()) / (2 * B * T)),
        lengths=(lo, hi),
    )


def sinusoidal_positions(n, d):
    """Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d));
    p is the index among the row's valid steps (equal to the step index under post-padding)."""
    pos = np.arange(n, dtype=np.float64)[:, None]
    rate = 1.0 / np.power(10000.0, np.arange(0, d, 2, dtype=np.float64) / d)
    pe = np.zeros((n, d), np.float64)
    pe[:, 0::2] = np.sin(pos * rate)
    pe[:, 1::2] = np.cos(pos * rate)
    return pe


def count_params(cfg=CONFIG):
    d, f, V_ = cfg.d_model, cfg.d_ff, cfg.vocab
    attn = 4 * d * d + 4 * d
    ffn = d * f + f + f * d + d
    ln = 2 * d
    enc = cfg.enc_layers * (attn + ffn + 2 * ln)
    dec = cfg.dec_layers * (2 * attn + ffn + 3 * ln)
    return 2 * V_ * d + enc + dec + d * V_ + V_


# ---------------------------------------------------------------- FLOPs


def _forward_flops(cfg, src_len, tgt_len, causal_pairs):
    """Matrix-product FLOPs (2 per multiply-add) of one forward pass over rows of the given
    lengths. causal_pairs(L) is the number of (query, key) pairs the decoder self-attention
    computes for a row of L target steps."""
    d, f = cfg.d_model, cfg.d_ff
    src_len = np.asarray(src_len, np.float64)
    tgt_len = np.asarray(tgt_len, np.float64)
    Ns, Nt = src_len.sum(), tgt_len.sum()
    enc = cfg.enc_layers * (
        Ns * (2 * 4 * d * d + 2 * 2 * d * f)  # q, k, v, output projections; feed-forward
        + (2 * 2 * d * src_len * src_len).sum()  # scores QK^T and weights x V
    )
    dec = cfg.dec_layers * (
        Nt * (2 * 4 * d * d + 2 * 2 * d * f)  # self-attention projections; feed-forward
        + (2 * 2 * d * causal_pairs(tgt_len)).sum()
        + Nt * 2 * 2 * d * d  # cross-attention query and output projections
        + Ns * 2 * 2 * d * d  # cross-attention key and value projections of the encoder output
        + (2 * 2 * d * tgt_len * src_len).sum()
    )
    out = Nt * 2 * d * cfg.vocab
    return float(enc + dec + out)


def flops_per_train_step(src_len, tgt_len, cfg=CONFIG, T=T):
    """FLOPs of one training step = 3 x forward matrix products (backward costs two forward
    passes), embeddings, softmax, LayerNorm and the optimizer not counted.
    'all': every row padded to T source and T target steps, full T x T decoder self-attention
    (what a padded implementation computes); 'valid': each row's own lengths, causal
    self-attention counted as L(L+1)/2 pairs (what a packed, causal-aware implementation must
    compute)."""
    n = len(src_len)
    full = np.full(n, T)
    return dict(
        all=3 * _forward_flops(cfg, full, full, lambda L: L * L),
        valid=3 * _forward_flops(cfg, src_len, tgt_len, lambda L: L * (L + 1) / 2),
    )


def flops_per_decode(src_len, steps=DECODE_STEPS, cfg=CONFIG, T=T):
    """FLOPs of one cached greedy decode of the batch: the encoder once, the cross-attention keys
    and values once per decoder layer, then `steps` decoder steps of one token per row (step i
    attends over i + 1 cached keys). 'all' uses T source steps per row, 'valid' each row's own."""
    d, f = cfg.d_model, cfg.d_ff
    n = len(src_len)

    def total(sl):
        sl = np.asarray(sl, np.float64)
        Ns = sl.sum()
        enc = cfg.enc_layers * (Ns * (2 * 4 * d * d + 2 * 2 * d * f) + (2 * 2 * d * sl * sl).sum())
        cross_kv = cfg.dec_layers * Ns * 2 * 2 * d * d
        per_token = cfg.dec_layers * (2 * 4 * d * d + 2 * 2 * d * d + 2 * 2 * d * f) + 2 * d * cfg.vocab
        self_pairs = steps * (steps + 1) / 2  # keys seen by steps 0..steps-1
        attn = cfg.dec_layers * 2 * 2 * d * (n * self_pairs + steps * Ns)
        return float(enc + cross_kv + n * steps * per_token + attn)

    return dict(all=total(np.full(n, T)), valid=total(src_len))


# ---------------------------------------------------------------- reference forward pass


def _layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _attention(xq, xkv, p, prefix, allowed, heads):
    """Multi-head attention; allowed[b, q, k] is True where query q may read key k."""
    Bq, Tq, d = xq.shape
    dh = d // heads
    q = xq @ p[prefix + "wq"] + p[prefix + "bq"]
    k = xkv @ p[prefix + "wk"] + p[prefix + "bk"]
    v = xkv @ p[prefix + "wv"] + p[prefix + "bv"]
    split = lambda z: z.reshape(Bq, z.shape[1], heads, dh).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    s = np.where(allowed[:, None], s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    w = np.exp(s)
    w = w / w.sum(-1, keepdims=True)
    o = (w @ v).transpose(0, 2, 1, 3).reshape(Bq, Tq, d)
    return o @ p[prefix + "wo"] + p[prefix + "bo"]


def numpy_logits(p, src, dec_in, src_mask, tgt_mask, cfg=CONFIG):
    """Float64 forward pass of the benchmark model without dropout: logits [B, T, V].

    Canonical weights `p` (matrices are applied as x @ W, shape [in, out]):
      src_emb, tgt_emb [V, d]; out_w [d, V], out_b [V];
      enc{i}.sa.{wq,bq,wk,bk,wv,bv,wo,bo}, enc{i}.ln1.{g,b}, enc{i}.ff.{w1,b1,w2,b2}, enc{i}.ln2.{g,b};
      dec{i}.sa.*, dec{i}.ln1.*, dec{i}.ca.* (queries from the decoder, keys and values from the
      encoder output), dec{i}.ln2.*, dec{i}.ff.*, dec{i}.ln3.*.
    Post-LN blocks: x = LN(x + Attention(x)); x = LN(x + FFN(x)), FFN = ReLU(x W1 + b1) W2 + b2.
    Inputs: token embedding + sinusoidal position (no scaling). No final LayerNorm after the stacks."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    Bn, Tn = src.shape
    heads, eps = cfg.heads, cfg.ln_eps
    sm = np.asarray(src_mask) > 0
    tm = np.asarray(tgt_mask) > 0
    pe = sinusoidal_positions(Tn, cfg.d_model)
    causal = np.tril(np.ones((Tn, Tn), bool))

    def ffn(x, pre):
        h = np.maximum(x @ p[pre + "w1"] + p[pre + "b1"], 0.0)
        return h @ p[pre + "w2"] + p[pre + "b2"]

    x = p["src_emb"][src] + pe
    enc_allowed = np.broadcast_to(sm[:, None, :], (Bn, Tn, Tn))
    for i in range(cfg.enc_layers):
        e = f"enc{i}."
        x = _layer_norm(x + _attention(x, x, p, e + "sa.", enc_allowed, heads), p[e + "ln1.g"], p[e + "ln1.b"], eps)
        x = _layer_norm(x + ffn(x, e + "ff."), p[e + "ln2.g"], p[e + "ln2.b"], eps)
    mem = x
    y = p["tgt_emb"][dec_in] + pe
    self_allowed = causal[None] & tm[:, None, :]
    cross_allowed = np.broadcast_to(sm[:, None, :], (Bn, Tn, Tn))
    for i in range(cfg.dec_layers):
        e = f"dec{i}."
        y = _layer_norm(y + _attention(y, y, p, e + "sa.", self_allowed, heads), p[e + "ln1.g"], p[e + "ln1.b"], eps)
        y = _layer_norm(y + _attention(y, mem, p, e + "ca.", cross_allowed, heads), p[e + "ln2.g"], p[e + "ln2.b"], eps)
        y = _layer_norm(y + ffn(y, e + "ff."), p[e + "ln3.g"], p[e + "ln3.b"], eps)
    return y @ p["out_w"] + p["out_b"]


def masked_mean_ce(logits, labels, tgt_mask):
    """The spec loss in float64: sum over valid target steps of -log softmax(logits)[label],
    divided by the number of valid target steps."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.asarray(labels)[..., None], -1)[..., 0]
    m = np.asarray(tgt_mask, np.float64)
    return float((nll * m).sum() / m.sum())


def scramble_padding(d, seed=99):
    """A copy of batch `d` with random symbols at every padded step of src, dec_in and labels
    (the masks and lengths unchanged): a model that honours its masks computes the same loss and
    gradients on it."""
    rng = np.random.RandomState(seed)
    out = dict(d)
    for k, m in (("src", "src_mask"), ("dec_in", "tgt_mask"), ("labels", "tgt_mask")):
        pad = d[m] == 0
        v = d[k].copy()
        v[pad] = rng.randint(1, V, size=int(pad.sum()))
        out[k] = v
    return out


def change_one_valid_token(d):
    """A copy of batch `d` with the first source symbol of row 0 changed: the control that the
    padding-invariance comparison can detect a difference."""
    out = dict(d)
    s = d["src"].copy()
    s[0, 0] = 1 + s[0, 0] % (V - 1)
    out["src"] = s
    return out


# ---------------------------------------------------------------- memory


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


class MemoryProbe:
    """Resident-set figures of this process in MiB: rss() now, peak() = VmHWM (the high-water mark
    getrusage's ru_maxrss also reports); reset_peak() sets the high-water mark back to the current
    RSS (Linux: write 5 to /proc/self/clear_refs), so each phase gets its own peak."""

    def rss(self):
        return _status_kib("VmRSS") / 1024.0

    def peak(self):
        return _status_kib("VmHWM") / 1024.0

    def reset_peak(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError as e:
            print(f"warning: cannot reset the RSS high-water mark ({e}); peaks are process-wide", file=sys.stderr)
            return False


def time_phase(fn, probe, warmup=3, steps=20, repeats=3):
    """s2s_common.time_steps with the memory probe: the first call (which includes any tracing or
    compilation) is timed on its own, `warmup` calls in all precede the timed ones, the RSS
    high-water mark is reset after the warm-up and read after the timed repeats, so `peak_rss_mb`
    is the steady-state peak of this phase (weights, optimizer state, activations, framework
    caches), not the compiler's. Per repeat: mean ms per call, cpu/wall (busy cores of this
    process) and the cores kept busy by other processes ('foreign', 0 on an idle machine)."""
    if warmup < 1:
        raise ValueError(f"time_phase needs at least 1 warm-up call, found warmup={warmup}")
    t0 = time.perf_counter()
    fn()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup - 1):
        fn()
    probe.reset_peak()
    reps, cpu_ratio, foreign = [], [], []
    for _ in range(repeats):
        c0 = cpu_seconds()
        s0, _ = system_busy_seconds()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        s1, _ = system_busy_seconds()
        reps.append(wall / steps * 1e3)
        cpu_ratio.append(cpu / wall)
        foreign.append(max(0.0, (s1 - s0) - cpu) / wall)
    return dict(
        first_call_ms=first_ms,
        warmup=warmup,
        steps=steps,
        repeats=repeats,
        rep_ms=reps,
        median_ms=statistics.median(reps),
        cpu_per_wall=statistics.median(cpu_ratio),
        foreign_cores=foreign,
        peak_rss_mb=probe.peak(),
    )


def record(framework, variant, threads, cfg, data, tr, inf, losses, baseline_rss_mb, extra=None):
    """The JSON record every peer prints (one line). `tr` / `inf` are time_phase results, or None
    for a phase the run skipped (its fields are then null)."""
    n = len(data["src_len"])
    fl = flops_per_train_step(data["src_len"], data["tgt_len"], cfg)
    fd = flops_per_decode(data["src_len"], cfg=cfg)
    rec = dict(
        benchmark="seq2seq-transformer",
        framework=framework,
        variant=variant,
        threads=threads,
        config=asdict(cfg),
        B=n,
        T=T,
        lengths=list(data["lengths"]),
        valid_fraction=data["valid_fraction"],
        valid_tokens=dict(src=int(data["src_len"].sum()), tgt=int(data["tgt_len"].sum())),
        params=count_params(cfg),
        train_ms_median=tr and tr["median_ms"],
        train_ms_repeats=tr and tr["rep_ms"],
        train_seq_per_s=tr and n / (tr["median_ms"] / 1e3),
        train_gflops_all=fl["all"] / 1e9,
        train_gflops_valid=fl["valid"] / 1e9,
        decode_ms_median=inf and inf["median_ms"],
        decode_ms_repeats=inf and inf["rep_ms"],
        infer_seq_per_s=inf and n / (inf["median_ms"] / 1e3),
        decode_steps=DECODE_STEPS,
        decode_gflops_all=fd["all"] / 1e9,
        decode_gflops_valid=fd["valid"] / 1e9,
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        train=tr,
        infer=inf,
        rss_baseline_mb=baseline_rss_mb,
        peak_rss_train_mb=tr and tr["peak_rss_mb"],
        peak_rss_infer_mb=inf and inf["peak_rss_mb"],
        cpu_affinity=len(os.sched_getaffinity(0)),
    )
    rec.update(extra or {})
    return rec


def summarize(rec):
    """One line on stderr: ms, sequences/s and GFLOP/s (on all tokens) per phase, losses, peaks."""
    parts = []
    for name, key, ms_key, fl_key, mem_key in (
        ("train", "train", "train_ms_median", "train_gflops_all", "peak_rss_train_mb"),
        ("decode", "infer", "decode_ms_median", "decode_gflops_all", "peak_rss_infer_mb"),
    ):
        r = rec[key]
        if r is None:
            continue
        ms = rec[ms_key]
        parts.append(
            f"{name}: {ms:8.1f} ms ({rec['B'] / (ms / 1e3):7.1f} seq/s, {rec[fl_key] / (ms / 1e3):6.1f} GFLOP/s on all tokens,"
            f" cpu/wall {r['cpu_per_wall']:.2f}, foreign {max(r['foreign_cores']):.2f}, first call {r['first_call_ms']:.0f} ms,"
            f" peak RSS {rec[mem_key]:.0f} MB)"
        )
    if rec["loss_first"] is not None:
        parts.append(f"loss {rec['loss_first']:.4f} -> {rec['loss_last']:.4f}")
    print(
        f"[{rec['framework']} {rec['variant']} threads={rec['threads']} lengths={rec['lengths'][0]}:{rec['lengths'][1]}"
        f" valid {rec['valid_fraction']:.3f}, baseline RSS {rec['rss_baseline_mb']:.0f} MB] " + " | ".join(parts),
        file=sys.stderr,
        flush=True,
    )
