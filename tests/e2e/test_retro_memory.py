"""RETRO and the memory-layer model have no Hugging Face implementation: each example, at a
tiny size with perturbed random weights, is checked against an independent NumPy
transcription of the papers written here (not calling archc's kernels)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import archc

ROOT = Path(__file__).resolve().parents[2]


def perturbed(model, seed: int) -> dict:
    # away from ones/zeros so a dropped bias or norm cannot still match
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in model.params.items():
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or \
                name.endswith("ln_3.weight") or name.endswith("ln_f.weight"):
            out[name] = (1 + 0.2 * rng.standard_normal(p.shape)).astype(np.float32)
        elif name.endswith("bias"):
            out[name] = (0.1 * rng.standard_normal(p.shape)).astype(np.float32)
        else:
            out[name] = (0.3 * rng.standard_normal(p.shape)).astype(np.float32)
    model.params = out
    return {k: v.astype(np.float64) for k, v in out.items()}


def layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def heads_attend(q, k, v, H, visible=None):
    """q (Tq, C), k/v (S, C) for one sequence; visible (Tq, S) bool."""
    D = q.shape[-1] // H
    out = np.zeros_like(q)
    for h in range(H):
        sl = slice(h * D, (h + 1) * D)
        s = q[:, sl] @ k[:, sl].T / math.sqrt(D)
        if visible is not None:
            s = np.where(visible, s, -np.inf)
        out[:, sl] = softmax(s) @ v[:, sl]
    return out


def lin(P, prefix, x, bias=True):
    y = x @ P[f"{prefix}.weight"]
    return y + P[f"{prefix}.bias"] if bias else y


def self_attention(P, prefix, x, H, causal=False, memory=False):
    q, k, v = (lin(P, f"{prefix}.{n}", x) for n in "qkv")
    T = x.shape[0]
    vis = np.tril(np.ones((T, T), bool)) if causal else np.ones((T, T), bool)
    if memory:   # persistent slots: before the keys, visible from every query
        k = np.concatenate([P[f"{prefix}.memory.k"], k])
        v = np.concatenate([P[f"{prefix}.memory.v"], v])
        vis = np.concatenate([np.ones((T, len(P[f"{prefix}.memory.k"])), bool), vis], 1)
    return lin(P, f"{prefix}.o", heads_attend(q, k, v, H, vis))


def ffn(P, prefix, x):
    return lin(P, f"{prefix}.down", gelu(lin(P, f"{prefix}.up", x)))


def ln(P, prefix, x):
    return layernorm(x, P[f"{prefix}.weight"], P[f"{prefix}.bias"])


# ---- RETRO ------------------------------------------------------------------------------

RETRO = dict(n_layers=2, n_enc_layers=1, n_heads=2, d_model=8, d_ff=16, vocab=40, n_ctx=16,
             chunk=4)


def retro_numpy(P, ids, nbrs, cfg):
    H, m, d = cfg["n_heads"], cfg["chunk"], cfg["d_model"]
    out = []
    for b in range(ids.shape[0]):
        C, K, R = nbrs.shape[1:]
        enc = np.zeros((C, K, R, d))
        for c in range(C):
            for j in range(K):
                h = P["wte"][nbrs[b, c, j]] + P["encoder.wpe.weight"][:R]
                for i in range(cfg["n_enc_layers"]):
                    p = f"encoder.layers.{i}"
                    h = h + self_attention(P, f"{p}.attn", ln(P, f"{p}.ln_1", h), H)
                    h = h + ffn(P, f"{p}.mlp", ln(P, f"{p}.ln_2", h))
                enc[c, j] = ln(P, "encoder.ln_f", h)
        T = ids.shape[1]
        x = P["wte"][ids[b]] + P["wpe.weight"][:T]
        for i in range(cfg["n_layers"]):
            p = f"layers.{i}"
            x = x + self_attention(P, f"{p}.attn", ln(P, f"{p}.ln_1", x), H, causal=True)
            # chunked cross-attention, as in the paper: the window starting at the last
            # token of chunk u (u*m + m - 1) and m long reads the neighbours of chunk u
            hq = ln(P, f"{p}.ln_2", x)
            cca = np.zeros_like(x)
            for u in range(C):
                lo, hi = u * m + m - 1, min((u + 1) * m + m - 1, T)
                if lo >= T:
                    break
                e = enc[u].reshape(K * R, d)
                q = lin(P, f"{p}.cca.q", hq[lo:hi], bias=False)
                k = lin(P, f"{p}.cca.k", e, bias=False)
                v = lin(P, f"{p}.cca.v", e, bias=False)
                cca[lo:hi] = lin(P, f"{p}.cca.o", heads_attend(q, k, v, H), bias=False)
            x = x + cca
            x = x + ffn(P, f"{p}.mlp", ln(P, f"{p}.ln_3", x))
        out.append(ln(P, "ln_f", x))
    hidden = np.stack(out)
    return hidden, hidden @ P["wte"].T


def test_retro_matches_an_independent_numpy_transcription():
    model = archc.load(ROOT / "examples" / "retro.arch", config=RETRO)
    P = perturbed(model, 1)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 40, (2, 10))                 # T = 10: the last chunk is partial
    nbrs = rng.integers(0, 40, (2, 3, 2, 5))           # C = ceil(10 / 4) = 3, K = 2, R = 5
    out = model.run(ids=ids, neighbours=nbrs, executor="reference")
    hidden, logits = retro_numpy(P, ids, nbrs, RETRO)
    assert np.max(np.abs(out["hidden"] - hidden)) < 1e-4
    assert np.max(np.abs(out["logits"] - logits)) < 1e-4


def test_retro_first_tokens_do_not_see_neighbours_and_later_ones_do():
    model = archc.load(ROOT / "examples" / "retro.arch", config=RETRO)
    perturbed(model, 3)
    rng = np.random.default_rng(4)
    ids, nbrs = rng.integers(0, 40, (1, 10)), rng.integers(0, 40, (1, 3, 2, 5))
    other = nbrs.copy()
    other[0, 1] = (other[0, 1] + 7) % 40               # change the neighbours of chunk 1 only
    a = model.run(ids=ids, neighbours=nbrs, executor="reference")["hidden"]
    b = model.run(ids=ids, neighbours=other, executor="reference")["hidden"]
    changed = np.abs(a - b).max(-1)[0] > 1e-6
    # chunk 1's neighbours are read from its last token, position 2*4 - 1 = 7, onwards
    assert changed.tolist() == [False] * 7 + [True] * 3


# ---- persistent memory + product-key memory ---------------------------------------------

MEMORY = dict(n_layers=2, n_heads=2, d_model=8, n_mem=3, n_keys=5, topk=3, pkm_heads=2,
              vocab=40, n_ctx=16)


def pkm_numpy(P, prefix, x, n, topk, H):
    # brute force over all n*n product keys: the paper's top-k over sub-keys is exact
    q = lin(P, f"{prefix}.query", x)
    keys, values = P[f"{prefix}.keys"], P[f"{prefix}.values"]
    half = keys.shape[-1]
    out = np.zeros((x.shape[0], values.shape[1]))
    for t in range(x.shape[0]):
        for h in range(H):
            qh = q[t, h * 2 * half:(h + 1) * 2 * half]
            scores = np.array([[qh[:half] @ keys[h, 0, i] + qh[half:] @ keys[h, 1, j]
                                for j in range(n)] for i in range(n)]).ravel()
            best = np.argsort(-scores)[:topk]
            out[t] += softmax(scores[best]) @ values[best]
    return out


def test_memory_model_matches_an_independent_numpy_transcription():
    model = archc.load(ROOT / "examples" / "memory.arch", config=MEMORY)
    P = perturbed(model, 5)
    ids = np.random.default_rng(6).integers(0, 40, (2, 7))
    out = model.run(ids=ids, executor="reference")
    cfg = MEMORY
    for b in range(2):
        x = P["wte"][ids[b]] + P["wpe.weight"][:7]
        for i in range(cfg["n_layers"]):
            p = f"layers.{i}"
            x = x + self_attention(P, f"{p}.attn", ln(P, f"{p}.ln_1", x), cfg["n_heads"],
                                   causal=True, memory=True)
            x = x + pkm_numpy(P, f"{p}.pkm", ln(P, f"{p}.ln_2", x), cfg["n_keys"],
                              cfg["topk"], cfg["pkm_heads"])
        hidden = ln(P, "ln_f", x)
        assert np.max(np.abs(out["hidden"][b] - hidden)) < 1e-4
        assert np.max(np.abs(out["logits"][b] - hidden @ P["wte"].T)) < 1e-4
