"""seq2seq-transformer in Keras 3 on JAX (CPU, float32), layers built from keras.layers.MultiHeadAttention,
LayerNormalization, Dense and Dropout, as ../SPEC.md "Benchmark seq2seq-transformer" describes.

usage: python bench_transformer_keras.py [--variant jit-step|train-on-batch] [--threads 2] [--lengths 8:64]
                                         [--steps 20 --repeats 3 --warmup 3]
       python bench_transformer_keras.py --check

Model: embeddings + sinusoidal positions -> dropout -> 3 post-LN encoder layers and 3 post-LN decoder
layers -> Dense(V). Masks are passed explicitly as booleans (true = valid, Keras's convention):
encoder self-attention value_mask = source mask; decoder self-attention value_mask = target mask
with use_causal_mask=True; cross-attention value_mask = source mask. (No query_mask: Keras's
MultiHeadAttention.call replaces that argument by the query tensor's Keras mask, and rows of padded
queries never reach the loss.)
Loss: sum over valid target steps of cross-entropy / number of valid target steps. Adam(1e-4,
beta_1 0.9, beta_2 0.98, epsilon 1e-9).

Variants:
  jit-step        one jax.jit function: model.stateless_call + jax.value_and_grad +
                  optimizer.stateless_apply (the pattern of Keras's "training loop in JAX" guide);
                  loss computed in the step exactly as the spec states.
  train-on-batch  model.compile(jit_compile=True) + model.train_on_batch(x, labels,
                  sample_weight=target mask) with SparseCategoricalCrossentropy(from_logits=True,
                  reduction="mean_with_sample_weight") = the same masked mean.
Greedy decoding (both variants): one jax.jit function, the encoder once, the cross-attention
keys/values once per layer, then DECODE_STEPS steps of one token per row in a lax.fori_loop with a
key/value cache per layer (the MultiHeadAttention layers' own query/key/value/output projections).
--check compares it with the uncached decode.

Threads: JAX uses every core it may run on; at --threads 1 the XLA flags below are set, and the
process should also be pinned (`taskset -c 0`), since XLA's CPU client ignores thread-count flags.
"""
import argparse
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--variant", choices=["jit-step", "train-on-batch"], default="jit-step")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--lengths", default="8:64", help="source length range lo:hi (8:64, or 4:32 for the half batch)")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--decode-steps", type=int, default=5, help="timed decodes per repeat")
ap.add_argument("--decode-warmup", type=int, default=2)
ap.add_argument("--only", choices=["train", "decode"], help="run one phase (a fresh process per phase gives each its own memory peak)")
ap.add_argument("--check", action="store_true")
ap.add_argument(
    "--xla-flags",
    default="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    help="XLA_FLAGS used when --threads 1",
)
a = ap.parse_args()

os.environ["KERAS_BACKEND"] = "jax"
if a.threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + a.xla_flags).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402

if a.check:
    jax.config.update("jax_enable_x64", True)  # the check's reference model runs in float64

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

import transformer_common as C  # noqa: E402

assert keras.backend.backend() == "jax", keras.backend.backend()
VERSIONS = dict(keras=keras.__version__, jax=jax.__version__, jaxlib=jaxlib.__version__, numpy=np.__version__)


def seed_all(seed=0):
    """keras.utils.set_random_seed() without its tf.random.set_seed() (which would import TensorFlow
    where it is installed): seeds Keras's global RNG, Python's and numpy's."""
    import random

    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


class FeedForward(layers.Layer):
    """Dense(d_ff, relu) -> Dropout -> Dense(d)."""

    def __init__(self, cfg, **kw):
        super().__init__(**kw)
        self.w1 = layers.Dense(cfg.d_ff, activation="relu")
        self.w2 = layers.Dense(cfg.d_model)
        self.drop = layers.Dropout(cfg.dropout)

    def call(self, x, training=None):
        return self.w2(self.drop(self.w1(x), training=training))


def mha(cfg):
    return layers.MultiHeadAttention(num_heads=cfg.heads, key_dim=cfg.head_dim, dropout=cfg.dropout)


def norm(cfg):
    return layers.LayerNormalization(epsilon=cfg.ln_eps)


class EncoderLayer(layers.Layer):
    """Post-LN: x = LN(x + Dropout(SelfAttention(x))); x = LN(x + Dropout(FFN(x)))."""

    def __init__(self, cfg, **kw):
        super().__init__(**kw)
        self.sa, self.ln1, self.ff, self.ln2 = mha(cfg), norm(cfg), FeedForward(cfg), norm(cfg)
        self.drop = layers.Dropout(cfg.dropout)

    def call(self, x, src_valid, training=None):
        x = self.ln1(x + self.drop(self.sa(x, x, value_mask=src_valid, training=training), training=training))
        return self.ln2(x + self.drop(self.ff(x, training=training), training=training))


class DecoderLayer(layers.Layer):
    """Post-LN: causal self-attention, cross-attention over the encoder output, feed-forward."""

    def __init__(self, cfg, **kw):
        super().__init__(**kw)
        self.sa, self.ln1, self.ca, self.ln2, self.ff, self.ln3 = mha(cfg), norm(cfg), mha(cfg), norm(cfg), FeedForward(cfg), norm(cfg)
        self.drop = layers.Dropout(cfg.dropout)

    def call(self, y, mem, tgt_valid, src_valid, training=None):
        a = self.sa(y, y, value_mask=tgt_valid, use_causal_mask=True, training=training)
        y = self.ln1(y + self.drop(a, training=training))
        a = self.ca(y, mem, value_mask=src_valid, training=training)
        y = self.ln2(y + self.drop(a, training=training))
        return self.ln3(y + self.drop(self.ff(y, training=training), training=training))


class Seq2SeqTransformer(keras.Model):
    """inputs = (src [B,S] int, dec_in [B,T] int, src_valid [B,S] bool, tgt_valid [B,T] bool) -> logits."""

    def __init__(self, cfg=C.CONFIG, **kw):
        super().__init__(**kw)
        self.cfg = cfg
        init = keras.initializers.RandomNormal(stddev=1.0)  # N(0, 1), as PyTorch's nn.Embedding
        self.src_emb = layers.Embedding(cfg.vocab, cfg.d_model, embeddings_initializer=init)
        self.tgt_emb = layers.Embedding(cfg.vocab, cfg.d_model, embeddings_initializer=init)
        self.pe = C.sinusoidal_positions(C.T, cfg.d_model)  # cast to the compute dtype where used
        self.drop = layers.Dropout(cfg.dropout)
        self.enc = [EncoderLayer(cfg) for _ in range(cfg.enc_layers)]
        self.dec = [DecoderLayer(cfg) for _ in range(cfg.dec_layers)]
        self.out = layers.Dense(cfg.vocab)

    def positions(self, n):
        return ops.cast(self.pe[:n], self.compute_dtype)

    def encode(self, src, src_valid, training=None):
        x = self.drop(self.src_emb(src) + self.positions(src.shape[1]), training=training)
        for layer in self.enc:
            x = layer(x, src_valid, training=training)
        return x

    def decode(self, dec_in, mem, tgt_valid, src_valid, training=None):
        y = self.drop(self.tgt_emb(dec_in) + self.positions(dec_in.shape[1]), training=training)
        for layer in self.dec:
            y = layer(y, mem, tgt_valid, src_valid, training=training)
        return self.out(y)

    def call(self, inputs, training=None):
        src, dec_in, src_valid, tgt_valid = inputs
        mem = self.encode(src, src_valid, training=training)
        return self.decode(dec_in, mem, tgt_valid, src_valid, training=training)


def model_inputs(d):
    return (
        d["src"].astype(np.int32),
        d["dec_in"].astype(np.int32),
        d["src_mask"] > 0,
        d["tgt_mask"] > 0,
    )


def build(cfg=C.CONFIG):
    seed_all(0)
    m = Seq2SeqTransformer(cfg)
    m(model_inputs(C.make_batch(B=2)))  # creates the weights
    return m


def masked_ce(logits, labels, tgt_mask):
    nll = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    m = ops.cast(tgt_mask, nll.dtype)
    return ops.sum(nll * m) / ops.sum(m)


def adam():
    return keras.optimizers.Adam(learning_rate=C.LR, beta_1=C.BETAS[0], beta_2=C.BETAS[1], epsilon=C.ADAM_EPS)


class JitTrainer:
    """Variant jit-step: the whole step (forward, backward, Adam) in one jax.jit function over
    explicit state (trainable, non-trainable incl. dropout seeds, optimizer variables)."""

    def __init__(self, model):
        self.m = model
        self.opt = adam()
        self.opt.build(model.trainable_variables)

        def loss_fn(tv, ntv, x, labels, tmask):
            logits, ntv = model.stateless_call(tv, ntv, x, training=True)
            return masked_ce(logits, labels, tmask), ntv

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def step(state, x, labels, tmask):
            tv, ntv, ov = state
            (loss, ntv), grads = grad_fn(tv, ntv, x, labels, tmask)
            tv, ov = self.opt.stateless_apply(ov, grads, tv)
            return loss, (tv, ntv, ov)

        self.step = jax.jit(step, donate_argnums=0)
        self.state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in self.opt.variables],
        )

    def __call__(self, x, labels, tmask):
        loss, self.state = self.step(self.state, x, labels, tmask)
        return float(loss)

    def sync(self):
        """Writes the state back into the Keras variables (for decoding with the trained weights)."""
        tv, ntv, ov = self.state
        for v, val in zip(self.m.trainable_variables, tv):
            v.assign(val)
        for v, val in zip(self.m.non_trainable_variables, ntv):
            v.assign(val)
        for v, val in zip(self.opt.variables, ov):
            v.assign(val)


class KerasTrainer:
    """Variant train-on-batch: Keras's own compiled train step."""

    def __init__(self, model):
        self.m = model
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
        model.compile(optimizer=adam(), loss=loss, jit_compile=True)

    def __call__(self, x, labels, tmask):
        return float(self.m.train_on_batch(x, labels, sample_weight=tmask.astype(np.float32)))

    def sync(self):
        pass


# ---------------------------------------------------------------- greedy decoding


def _cached_greedy(model, src, src_valid, steps):
    cfg = model.cfg
    Bn = src.shape[0]
    H, dh = cfg.heads, cfg.head_dim
    dt = model.compute_dtype
    scale = 1.0 / np.sqrt(dh)
    mem = model.encode(src, src_valid, training=False)
    cross = [(layer.ca.key_dense(mem), layer.ca.value_dense(mem)) for layer in model.dec]  # [B, S, H, dh]
    src_keys = src_valid[:, None, None, :]  # [B, 1, 1, S]
    pe = model.positions(steps)

    def attend(q, k, v, allowed):
        s = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
        w = jax.nn.softmax(jnp.where(allowed, s, -jnp.inf), axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", w, v)

    def body(i, carry):
        tok, caches, tokens, logits = carry
        x = model.tgt_emb(tok[:, None]) + pe[i][None, None]  # [B, 1, d]
        seen = (jnp.arange(steps) <= i)[None, None, None, :]
        new_caches = []
        for layer, (kc, vc), (ck, cv) in zip(model.dec, caches, cross):
            sa = layer.sa
            kc = jax.lax.dynamic_update_slice(kc, sa.key_dense(x), (0, i, 0, 0))
            vc = jax.lax.dynamic_update_slice(vc, sa.value_dense(x), (0, i, 0, 0))
            new_caches.append((kc, vc))
            x = layer.ln1(x + sa.output_dense(attend(sa.query_dense(x), kc, vc, seen)))
            ca = layer.ca
            x = layer.ln2(x + ca.output_dense(attend(ca.query_dense(x), ck, cv, src_keys)))
            x = layer.ln3(x + layer.ff(x, training=False))
        z = model.out(x)[:, 0]  # [B, V]
        tok = jnp.argmax(z, axis=-1).astype(jnp.int32)
        return tok, new_caches, tokens.at[:, i].set(tok), logits.at[:, i].set(z)

    caches = [(jnp.zeros((Bn, steps, H, dh), dt), jnp.zeros((Bn, steps, H, dh), dt)) for _ in model.dec]
    init = (
        jnp.full((Bn,), C.BOS, jnp.int32),
        caches,
        jnp.zeros((Bn, steps), jnp.int32),
        jnp.zeros((Bn, steps, cfg.vocab), dt),
    )
    _, _, tokens, logits = jax.lax.fori_loop(0, steps, body, init)
    return tokens, logits


class CachedDecoder:
    """Greedy decoding with a key/value cache, one jax.jit function over the model's weights."""

    def __init__(self, model, steps=C.DECODE_STEPS):
        self.m = model

        def run(tv, ntv, src, src_valid):
            mapping = list(zip(model.trainable_variables, tv)) + list(zip(model.non_trainable_variables, ntv))
            with keras.StatelessScope(state_mapping=mapping):
                return _cached_greedy(model, src, src_valid, steps)

        self.run = jax.jit(run)

    def __call__(self, src, src_valid):
        tv = [v.value for v in self.m.trainable_variables]
        ntv = [v.value for v in self.m.non_trainable_variables]
        tokens, logits = self.run(tv, ntv, src, src_valid)
        return np.asarray(tokens), np.asarray(logits)


def greedy_uncached(model, src, src_valid, steps=C.DECODE_STEPS):
    """Reference: the whole decoder re-run over a [B, steps] buffer at every step (causal, so the
    not yet written steps after i do not reach step i)."""
    fwd = jax.jit(lambda s, sv, buf: model((s, buf, sv, jnp.ones(buf.shape, bool)), training=False))
    buf = np.full((src.shape[0], steps), C.PAD, np.int32)
    buf[:, 0] = C.BOS
    tokens, logits = [], []
    for i in range(steps):
        z = np.asarray(fwd(src, src_valid, buf))[:, i]
        tok = z.argmax(-1).astype(np.int32)
        tokens.append(tok)
        logits.append(z)
        if i + 1 < steps:
            buf[:, i + 1] = tok
    return np.stack(tokens, 1), np.stack(logits, 1)


# ---------------------------------------------------------------- check


def canonical_weights(model):
    """The model's weights in transformer_common.numpy_logits's layout (float64 numpy)."""
    d = model.cfg.d_model
    n = lambda v: np.asarray(v, np.float64)  # noqa: E731
    p = dict(
        src_emb=n(model.src_emb.embeddings),
        tgt_emb=n(model.tgt_emb.embeddings),
        out_w=n(model.out.kernel),
        out_b=n(model.out.bias),
    )

    def attn(pre, m):
        for name, dense in (("q", m.query_dense), ("k", m.key_dense), ("v", m.value_dense)):
            p[f"{pre}w{name}"] = n(dense.kernel).reshape(d, d)  # [d, H, dh] -> [d, H*dh]
            p[f"{pre}b{name}"] = n(dense.bias).reshape(d)
        p[pre + "wo"] = n(m.output_dense.kernel).reshape(d, d)  # [H, dh, d] -> [H*dh, d]
        p[pre + "bo"] = n(m.output_dense.bias)

    def ln(pre, layer):
        p[pre + "g"], p[pre + "b"] = n(layer.gamma), n(layer.beta)

    def ff(pre, f):
        p[pre + "w1"], p[pre + "b1"] = n(f.w1.kernel), n(f.w1.bias)
        p[pre + "w2"], p[pre + "b2"] = n(f.w2.kernel), n(f.w2.bias)

    for i, layer in enumerate(model.enc):
        attn(f"enc{i}.sa.", layer.sa)
        ln(f"enc{i}.ln1.", layer.ln1)
        ff(f"enc{i}.ff.", layer.ff)
        ln(f"enc{i}.ln2.", layer.ln2)
    for i, layer in enumerate(model.dec):
        attn(f"dec{i}.sa.", layer.sa)
        ln(f"dec{i}.ln1.", layer.ln1)
        attn(f"dec{i}.ca.", layer.ca)
        ln(f"dec{i}.ln2.", layer.ln2)
        ff(f"dec{i}.ff.", layer.ff)
        ln(f"dec{i}.ln3.", layer.ln3)
    return p


def loss_and_grads(model, d):
    """Loss and gradients without dropout (training=False), through the same stateless_call."""
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    x = model_inputs(d)

    def f(tv):
        logits, _ = model.stateless_call(tv, ntv, x, training=False)
        return masked_ce(logits, d["labels"].astype(np.int32), d["tgt_mask"])

    loss, g = jax.jit(jax.value_and_grad(f))(tv)
    return float(loss), [np.asarray(x) for x in g]


def max_grad_diff(ga, gb):
    return max(float(np.abs(x - y).max()) for x, y in zip(ga, gb))


def check():
    """Exits non-zero if a check fails. Dropout off (training=False) throughout."""
    failures = []

    def verdict(ok, text):
        print(("ok    " if ok else "FAIL  ") + text)
        if not ok:
            failures.append(text)

    d = C.make_batch()
    x = model_inputs(d)
    print(f"batch: B={C.B} T={C.T} valid fraction {d['valid_fraction']:.4f}; keras {keras.__version__}, jax {jax.__version__}")

    # 1. float64 model against the numpy reference forward pass (architecture, masks, positions).
    keras.config.set_floatx("float64")
    m64 = build()
    keras.config.set_floatx("float32")
    z = np.asarray(m64(x, training=False))
    ref = C.numpy_logits(canonical_weights(m64), d["src"], d["dec_in"], d["src_mask"], d["tgt_mask"])
    valid = d["tgt_mask"] > 0
    diff = np.abs(z - ref)[valid].max()
    # Keras's layer_normalization computes in result_type(x, "float32"), which Keras resolves to
    # float32 for float64 input: the float64 model carries float32 rounding from its LayerNorms
    # (about 1e-6 in the logits), so the bound is 1e-5, still far below what a wrong mask,
    # position or block order gives (1e-2 and more).
    verdict(z.dtype == np.float64 and diff < 1e-5, f"float64 logits at valid target steps vs numpy reference: max |diff| {diff:.2e} (< 1e-5)")
    l64 = float(masked_ce(z, d["labels"], d["tgt_mask"]))
    lnp = C.masked_mean_ce(ref, d["labels"], d["tgt_mask"])
    verdict(abs(l64 - lnp) < 1e-6, f"float64 loss {l64:.12f} vs numpy masked mean CE {lnp:.12f}")

    # 2. float32 benchmark model: loss within float32 rounding of the reference on its own weights.
    m = build()
    loss32, g = loss_and_grads(m, d)
    ref32 = C.numpy_logits(canonical_weights(m), d["src"], d["dec_in"], d["src_mask"], d["tgt_mask"])
    lnp32 = C.masked_mean_ce(ref32, d["labels"], d["tgt_mask"])
    verdict(abs(loss32 - lnp32) < 1e-5, f"float32 loss at step 0 {loss32:.7f} vs numpy float64 {lnp32:.7f} (ln 32 = {np.log(32):.4f})")
    tr = KerasTrainer(build())
    l_keras = float(tr.m.test_on_batch(x, d["labels"].astype(np.int32), sample_weight=d["tgt_mask"]))
    verdict(abs(l_keras - lnp32) < 1e-5, f"train-on-batch variant's Keras loss (mean_with_sample_weight) {l_keras:.7f} vs numpy {lnp32:.7f}")

    # 3. Padding invariance: other tokens at padded steps change neither the loss nor any gradient.
    ls, gs = loss_and_grads(m, C.scramble_padding(d))
    gd = max_grad_diff(g, gs)
    verdict(ls == loss32 and gd < 1e-7, f"random tokens at padded steps: loss {ls:.7f} (was {loss32:.7f}), max |grad diff| {gd:.2e}")
    lc, gc = loss_and_grads(m, C.change_one_valid_token(d))
    verdict(abs(lc - loss32) > 1e-6 and max_grad_diff(g, gc) > 1e-6, f"control, one valid source token changed: loss {lc:.7f}, max |grad diff| {max_grad_diff(g, gc):.2e}")

    # 4. Cached greedy decoding equals the uncached one.
    tok_c, z_c = CachedDecoder(m)(x[0], x[2])
    tok_u, z_u = greedy_uncached(m, x[0], x[2])
    zd = float(np.abs(z_c - z_u).max())
    same = bool((tok_c == tok_u).all())
    verdict(same and zd < 1e-4, f"cached vs uncached greedy decode: tokens equal {same}, max |logit diff| {zd:.2e}")

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


# ---------------------------------------------------------------- benchmark


def main():
    lengths = C.parse_lengths(a.lengths)
    probe = C.MemoryProbe()
    d = C.make_batch(lengths=lengths)
    x = model_inputs(d)
    labels = d["labels"].astype(np.int32)
    tmask = d["tgt_mask"]
    baseline = probe.rss()
    probe.reset_peak()
    model = build()
    trainer = JitTrainer(model) if a.variant == "jit-step" else KerasTrainer(model)
    losses = []
    tr = inf = None
    if a.only != "decode":
        tr = C.time_phase(lambda: losses.append(trainer(x, labels, tmask)), probe, a.warmup, a.steps, a.repeats)
        trainer.sync()
    timed_losses = losses[a.warmup :]
    if a.only != "train":
        decoder = CachedDecoder(model)
        inf = C.time_phase(lambda: decoder(x[0], x[2]), probe, a.decode_warmup, a.decode_steps, a.repeats)
    rec = C.record(
        "keras-jax",
        a.variant,
        a.threads,
        C.CONFIG,
        d,
        tr,
        inf,
        timed_losses,
        baseline,
        extra=dict(
            xla_flags=os.environ.get("XLA_FLAGS"),
            keras_params=int(model.count_params()),
            tensorflow_loaded="tensorflow" in sys.modules,
            versions=VERSIONS,
        ),
    )
    C.emit(rec)
    C.summarize(rec)


if __name__ == "__main__":
    check() if a.check else main()
