"""seq2seq-transformer in PyTorch (CPU, float32): nn.TransformerEncoder / nn.TransformerDecoder with
padding masks, as ../SPEC.md "Benchmark seq2seq-transformer" describes.

usage: python bench_transformer_torch.py [--variant eager|compile|eager-padded-encoder] [--threads 2]
                                         [--lengths 8:64] [--steps 20 --repeats 3 --warmup 3]
       python bench_transformer_torch.py --check

Model: embeddings + sinusoidal positions -> dropout -> 3 post-LN encoder layers (self-attention with
src_key_padding_mask) and 3 post-LN decoder layers (causal self-attention with tgt_key_padding_mask,
cross-attention with memory_key_padding_mask) -> Linear(d, V). PyTorch masks are True = ignore, the
opposite of the spec's (true = valid): they are built here as `~valid`.
Loss: sum over valid target steps of cross-entropy / number of valid target steps. Adam(1e-4, betas
(0.9, 0.98), eps 1e-9).

Variants (the train step and the decode differ only where named):
  eager                 eager autograd; at inference the encoder takes PyTorch's fast path
                        (enable_nested_tensor: padded steps dropped inside the encoder).
  eager-padded-encoder  as eager, enable_nested_tensor=False (the encoder computes every padded step).
  compile               torch.compile of the loss (forward + backward through AOTAutograd/Inductor)
                        and of one cached decoder step; the encoder as in eager.
Greedy decoding: the encoder once, the cross-attention keys/values once per layer, then
DECODE_STEPS decoder steps of one token per row with a key/value cache per layer (nn.Transformer
has none: `CachedDecoder` below reads the layers' own weights). --check compares it with the
uncached decode (the whole decoder re-run over the prefix at every step).
"""
import argparse
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import transformer_common as C

warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")


class Seq2SeqTransformer(nn.Module):
    def __init__(self, cfg=C.CONFIG, nested=True):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.src_emb = nn.Embedding(cfg.vocab, d)
        self.tgt_emb = nn.Embedding(cfg.vocab, d)
        self.register_buffer("pe", torch.tensor(C.sinusoidal_positions(C.T, d), dtype=torch.float32), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)

        def enc_layer():
            return nn.TransformerEncoderLayer(
                d, cfg.heads, cfg.d_ff, cfg.dropout, activation="relu", layer_norm_eps=cfg.ln_eps, batch_first=True, norm_first=False
            )

        def dec_layer():
            return nn.TransformerDecoderLayer(
                d, cfg.heads, cfg.d_ff, cfg.dropout, activation="relu", layer_norm_eps=cfg.ln_eps, batch_first=True, norm_first=False
            )

        # No final LayerNorm on either stack (nn.Transformer adds one; with post-LN it would be a
        # second normalisation of the last layer's output, which the spec's model does not have).
        self.encoder = nn.TransformerEncoder(enc_layer(), cfg.enc_layers, enable_nested_tensor=nested)
        self.decoder = nn.TransformerDecoder(dec_layer(), cfg.dec_layers)
        self.out = nn.Linear(d, cfg.vocab)

    def encode(self, src, src_pad):
        x = self.drop(self.src_emb(src) + self.pe[: src.size(1)])
        return self.encoder(x, src_key_padding_mask=src_pad)

    def forward(self, src, dec_in, src_pad, tgt_pad, causal):
        mem = self.encode(src, src_pad)
        y = self.drop(self.tgt_emb(dec_in) + self.pe[: dec_in.size(1)])
        y = self.decoder(
            y, mem, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True
        )
        return self.out(y)


def causal_mask(n):
    """Boolean, PyTorch's convention: True above the diagonal = a later step, not attended. Boolean
    like the key padding masks (mixing a float and a boolean mask is deprecated in PyTorch)."""
    return torch.ones(n, n, dtype=torch.bool).triu(1)


def masked_ce(logits, labels, tgt_mask):
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="none")
    m = tgt_mask.reshape(-1)
    return (nll * m).sum() / m.sum()


def tensors(d, dtype=torch.float32):
    src = torch.from_numpy(d["src"])
    dec_in = torch.from_numpy(d["dec_in"])
    labels = torch.from_numpy(d["labels"])
    src_mask = torch.from_numpy(d["src_mask"]).to(dtype)
    tgt_mask = torch.from_numpy(d["tgt_mask"]).to(dtype)
    return dict(
        src=src,
        dec_in=dec_in,
        labels=labels,
        src_pad=src_mask == 0,  # PyTorch: True = ignore
        tgt_pad=tgt_mask == 0,
        tgt_mask=tgt_mask,
        causal=causal_mask(src.size(1)),
    )


def loss_fn(model, t):
    logits = model(t["src"], t["dec_in"], t["src_pad"], t["tgt_pad"], t["causal"])
    return masked_ce(logits, t["labels"], t["tgt_mask"])


# ---------------------------------------------------------------- greedy decoding


class CachedDecoder:
    """Greedy decoding with a key/value cache, computed from the nn.TransformerDecoderLayer weights.
    Per layer: the self-attention keys/values of the steps decoded so far ([B, H, steps, dh],
    written one step at a time) and the cross-attention keys/values of the encoder output
    (computed once). All rows decode `steps` steps; only the source mask applies."""

    def __init__(self, model, steps=C.DECODE_STEPS, compile_step=False):
        self.m, self.steps = model, steps
        self.step_fn = torch.compile(self.step, dynamic=False) if compile_step else self.step

    def step(self, tok, i, kc, vc, ck, cv, attend):
        """One decoder step for all rows: tok [B] -> logits [B, V]. Attends over a fixed-size cache
        with keys > i masked (static shapes, so the compiled variant compiles once)."""
        m = self.m
        cfg = m.cfg
        d, H = cfg.d_model, cfg.heads
        dh = d // H
        Bn = tok.size(0)
        x = (m.tgt_emb(tok) + m.pe[i])[:, None]  # [B, 1, d]
        seen = (torch.arange(self.steps) <= i).view(1, 1, 1, self.steps)  # keys decoded so far
        for layer, kl, vl, ckl, cvl in zip(m.decoder.layers, kc, vc, ck, cv):
            sa = layer.self_attn
            q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).view(Bn, 1, 3, H, dh).transpose(1, 3).unbind(2)
            kl.index_copy_(2, i.view(1), k)
            vl.index_copy_(2, i.view(1), v)
            a = F.scaled_dot_product_attention(q, kl, vl, attn_mask=seen)
            x = layer.norm1(x + sa.out_proj(a.transpose(1, 2).reshape(Bn, 1, d)))
            ca = layer.multihead_attn
            q = F.linear(x, ca.in_proj_weight[:d], ca.in_proj_bias[:d]).view(Bn, 1, H, dh).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, ckl, cvl, attn_mask=attend)
            x = layer.norm2(x + ca.out_proj(a.transpose(1, 2).reshape(Bn, 1, d)))
            x = layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))
        return m.out(x[:, 0])

    @torch.inference_mode()
    def __call__(self, src, src_pad):
        m = self.m
        cfg = m.cfg
        d, H = cfg.d_model, cfg.heads
        dh = d // H
        Bn, S = src.shape
        mem = m.encode(src, src_pad)  # [B, S, d]; zeros at padded steps on the fast path
        ck, cv = [], []
        for layer in m.decoder.layers:
            ca = layer.multihead_attn
            kv = F.linear(mem, ca.in_proj_weight[d:], ca.in_proj_bias[d:]).view(Bn, S, 2, H, dh)
            ck.append(kv[:, :, 0].transpose(1, 2).contiguous())
            cv.append(kv[:, :, 1].transpose(1, 2).contiguous())
        kc = [mem.new_zeros(Bn, H, self.steps, dh) for _ in m.decoder.layers]
        vc = [mem.new_zeros(Bn, H, self.steps, dh) for _ in m.decoder.layers]
        attend = (~src_pad)[:, None, None, :]  # SDPA boolean mask: True = take part
        tok = torch.full((Bn,), C.BOS, dtype=torch.long)
        tokens, logits = [], []
        for i in range(self.steps):
            z = self.step_fn(tok, torch.tensor(i), kc, vc, ck, cv, attend)
            tok = z.argmax(-1)
            tokens.append(tok)
            logits.append(z)
        return torch.stack(tokens, 1), torch.stack(logits, 1)


@torch.inference_mode()
def greedy_uncached(model, src, src_pad, steps=C.DECODE_STEPS):
    """Reference: re-runs the whole decoder over the prefix at every step."""
    mem = model.encode(src, src_pad)
    buf = torch.full((src.size(0), steps), C.PAD, dtype=torch.long)
    buf[:, 0] = C.BOS
    causal = causal_mask(steps)
    tokens, logits = [], []
    for i in range(steps):
        y = model.tgt_emb(buf[:, : i + 1]) + model.pe[: i + 1]
        h = model.decoder(y, mem, tgt_mask=causal[: i + 1, : i + 1], memory_key_padding_mask=src_pad, tgt_is_causal=True)
        z = model.out(h[:, i])
        tok = z.argmax(-1)
        tokens.append(tok)
        logits.append(z)
        if i + 1 < steps:
            buf[:, i + 1] = tok
    return torch.stack(tokens, 1), torch.stack(logits, 1)


# ---------------------------------------------------------------- check


def canonical_weights(model):
    """The model's weights in transformer_common.numpy_logits's layout (float64 numpy)."""
    d = model.cfg.d_model
    n = lambda t: t.detach().double().numpy()  # noqa: E731
    p = dict(src_emb=n(model.src_emb.weight), tgt_emb=n(model.tgt_emb.weight), out_w=n(model.out.weight).T, out_b=n(model.out.bias))

    def attn(pre, mha):
        W, b = n(mha.in_proj_weight), n(mha.in_proj_bias)
        for j, name in enumerate("qkv"):
            p[f"{pre}w{name}"] = W[j * d : (j + 1) * d].T
            p[f"{pre}b{name}"] = b[j * d : (j + 1) * d]
        p[pre + "wo"] = n(mha.out_proj.weight).T
        p[pre + "bo"] = n(mha.out_proj.bias)

    def ln(pre, norm):
        p[pre + "g"], p[pre + "b"] = n(norm.weight), n(norm.bias)

    def ff(pre, layer):
        p[pre + "w1"], p[pre + "b1"] = n(layer.linear1.weight).T, n(layer.linear1.bias)
        p[pre + "w2"], p[pre + "b2"] = n(layer.linear2.weight).T, n(layer.linear2.bias)

    for i, layer in enumerate(model.encoder.layers):
        attn(f"enc{i}.sa.", layer.self_attn)
        ln(f"enc{i}.ln1.", layer.norm1)
        ff(f"enc{i}.ff.", layer)
        ln(f"enc{i}.ln2.", layer.norm2)
    for i, layer in enumerate(model.decoder.layers):
        attn(f"dec{i}.sa.", layer.self_attn)
        ln(f"dec{i}.ln1.", layer.norm1)
        attn(f"dec{i}.ca.", layer.multihead_attn)
        ln(f"dec{i}.ln2.", layer.norm2)
        ff(f"dec{i}.ff.", layer)
        ln(f"dec{i}.ln3.", layer.norm3)
    return p


def loss_and_grads(model, t):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, t)
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}


def max_grad_diff(ga, gb):
    return max((ga[k] - gb[k]).abs().max().item() for k in ga)


def check():
    """Exits non-zero if a check fails. Dropout off (eval mode) throughout, so results are
    deterministic. The loss and gradient checks run under autograd, where PyTorch's encoder fast
    path does not apply; the decode checks run under inference_mode, where it does."""
    failures = []

    def verdict(ok, text):
        print(("ok    " if ok else "FAIL  ") + text)
        if not ok:
            failures.append(text)

    d = C.make_batch()
    print(f"batch: B={C.B} T={C.T} valid fraction {d['valid_fraction']:.4f} (src {int(d['src_len'].sum())}, tgt {int(d['tgt_len'].sum())} valid steps)")

    # 1. float64 model against the numpy reference forward pass (architecture, masks, positions).
    torch.manual_seed(0)
    m64 = Seq2SeqTransformer(nested=False).double().eval()
    m64.pe = torch.tensor(C.sinusoidal_positions(C.T, m64.cfg.d_model))  # not the float32-rounded buffer
    t64 = tensors(d, torch.float64)
    with torch.no_grad():
        z = m64(t64["src"], t64["dec_in"], t64["src_pad"], t64["tgt_pad"], t64["causal"]).numpy()
    ref = C.numpy_logits(canonical_weights(m64), d["src"], d["dec_in"], d["src_mask"], d["tgt_mask"])
    valid = d["tgt_mask"] > 0
    diff = np.abs(z - ref)[valid].max()
    verdict(diff < 1e-9, f"float64 logits at valid target steps vs numpy reference: max |diff| {diff:.2e} (< 1e-9)")
    loss_t = loss_fn(m64, t64).item()
    loss_np = C.masked_mean_ce(ref, d["labels"], d["tgt_mask"])
    verdict(abs(loss_t - loss_np) < 1e-10, f"float64 loss {loss_t:.12f} vs numpy masked mean CE {loss_np:.12f}")

    # 2. float32 benchmark model: same weights, loss within float32 rounding of the reference.
    torch.manual_seed(0)
    m = Seq2SeqTransformer().eval()
    t = tensors(d)
    loss32, g = loss_and_grads(m, t)
    ref32 = C.numpy_logits(canonical_weights(m), d["src"], d["dec_in"], d["src_mask"], d["tgt_mask"])
    loss_np32 = C.masked_mean_ce(ref32, d["labels"], d["tgt_mask"])
    verdict(abs(loss32 - loss_np32) < 1e-5, f"float32 loss at step 0 {loss32:.7f} vs numpy float64 {loss_np32:.7f} (ln 32 = {np.log(32):.4f})")

    # 3. Padding invariance: other tokens at padded steps change neither the loss nor any gradient.
    ls, gs = loss_and_grads(m, tensors(C.scramble_padding(d)))
    gd = max_grad_diff(g, gs)
    verdict(ls == loss32 and gd < 1e-7, f"random tokens at padded steps: loss {ls:.7f} (was {loss32:.7f}), max |grad diff| {gd:.2e}")
    lc, gc = loss_and_grads(m, tensors(C.change_one_valid_token(d)))
    verdict(abs(lc - loss32) > 1e-6 and max_grad_diff(g, gc) > 1e-6, f"control, one valid source token changed: loss {lc:.7f}, max |grad diff| {max_grad_diff(g, gc):.2e}")

    # 4. Cached greedy decoding equals the uncached one (encoder fast path on, as in the benchmark).
    torch.manual_seed(0)
    mn = Seq2SeqTransformer(nested=True).eval()
    tok_c, z_c = CachedDecoder(mn)(t["src"], t["src_pad"])
    tok_u, z_u = greedy_uncached(mn, t["src"], t["src_pad"])
    zd = (z_c - z_u).abs().max().item()
    verdict(torch.equal(tok_c, tok_u) and zd < 1e-4, f"cached vs uncached greedy decode: tokens equal {torch.equal(tok_c, tok_u)}, max |logit diff| {zd:.2e}")
    with torch.inference_mode():
        mem_fast = mn.encode(t["src"], t["src_pad"])
        mn.encoder.use_nested_tensor = False
        mem_slow = mn.encode(t["src"], t["src_pad"])
        mn.encoder.use_nested_tensor = True
    vs = torch.from_numpy(d["src_mask"] > 0)
    ed = (mem_fast - mem_slow)[vs].abs().max().item()
    verdict(ed < 1e-4, f"encoder fast path (nested tensor) vs padded encoder at valid steps: max |diff| {ed:.2e}")

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


# ---------------------------------------------------------------- benchmark


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=["eager", "compile", "eager-padded-encoder"], default="eager")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", type=C.parse_lengths, default=C.LENGTHS, help="source length range lo:hi (8:64, or 4:32 for the half batch)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--decode-steps", type=int, default=5, help="timed decodes per repeat")
    ap.add_argument("--decode-warmup", type=int, default=2)
    ap.add_argument("--only", choices=["train", "decode"], help="run one phase (a fresh process per phase gives each its own memory peak)")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.check:
        return check()
    probe = C.MemoryProbe()
    d = C.make_batch(lengths=a.lengths)
    t = tensors(d)
    baseline = probe.rss()
    probe.reset_peak()
    torch.manual_seed(0)
    model = Seq2SeqTransformer(nested=(a.variant != "eager-padded-encoder"))
    opt = torch.optim.Adam(model.parameters(), lr=C.LR, betas=C.BETAS, eps=C.ADAM_EPS)
    lossf = torch.compile(loss_fn) if a.variant == "compile" else loss_fn
    losses = []

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model, t)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    tr = inf = None
    if a.only != "decode":
        model.train()
        tr = C.time_phase(train_step, probe, a.warmup, a.steps, a.repeats)
    timed_losses = losses[a.warmup :]
    if a.only != "train":
        model.eval()
        decoder = CachedDecoder(model, compile_step=(a.variant == "compile"))
        inf = C.time_phase(lambda: decoder(t["src"], t["src_pad"]), probe, a.decode_warmup, a.decode_steps, a.repeats)
    rec = C.record(
        "torch",
        a.variant,
        a.threads,
        C.CONFIG,
        d,
        tr,
        inf,
        timed_losses,
        baseline,
        extra=dict(torch_threads=torch.get_num_threads(), versions=dict(torch=torch.__version__, numpy=np.__version__)),
    )
    C.emit(rec)
    C.summarize(rec)


if __name__ == "__main__":
    main()
