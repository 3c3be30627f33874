#!/usr/bin/env python
"""Plain-NumPy reference forward passes for the HF golden fixtures (no torch!).

This is executable documentation of the conventions described in
``tests/fixtures/hf/README.md``: for every family it loads ``model.safetensors``
with a tiny pure-NumPy safetensors reader, runs a straightforward float64
forward pass, and compares with the outputs stored in ``io.npz``
(logits / last_hidden_state / pooler_output / encoder_last_hidden_state, and the
per-step ``greedy_logits`` by re-running the full sequence prompt+greedy tokens).

Usage::

    python scripts/check_fixtures_numpy.py            # all families present
    python scripts/check_fixtures_numpy.py gpt2 llama

Exit status is non-zero if any comparison exceeds ``ATOL``.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"
ATOL = 1e-4

# --------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Minimal safetensors reader: u64-LE header size, JSON header, raw little-endian data."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a : base + b], dtype=_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = arr.astype(np.float64)
    return out


def load_fixture(family: str):
    d = FIXTURES / family
    cfg = json.loads((d / "config.json").read_text())
    w = load_safetensors(d / "model.safetensors")
    io = dict(np.load(d / "io.npz"))
    return cfg, w, io


# --------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------

NEG = -1e30  # additive mask value (HF uses finfo(float32).min; identical after softmax here)
_erf = np.vectorize(math.erf)


def linear(x, w, b=None):  # nn.Linear: weight (out, in)
    y = x @ w.T
    return y if b is None else y + b


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance
    return (x - mu) / np.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):  # Llama/Mistral/Mixtral RMSNorm and T5LayerNorm (no mean subtraction, no bias)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis, keepdims=True)


def gelu(x):  # exact erf gelu ("gelu")
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_new(x):  # tanh approximation ("gelu_new", GPT-2 / T5 v1.1)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


ACT = {"gelu": lambda x: gelu(x), "gelu_new": lambda x: gelu_new(x), "silu": silu, "relu": relu}


def split_heads(x, n_heads):  # (B,T,n*D) -> (B,n,T,D), head h = columns [h*D:(h+1)*D]
    B, T, HD = x.shape
    return x.reshape(B, T, n_heads, HD // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):  # (B,H,T,D) -> (B,T,H*D)
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def attend(q, k, v, scale, bias=None):
    """q (B,H,Tq,D); k,v (B,Hk,Tk,D) with H % Hk == 0 (GQA/MQA: query head h uses kv head h // (H//Hk))."""
    H, Hk = q.shape[1], k.shape[1]
    if Hk != H:
        k = np.repeat(k, H // Hk, axis=1)
        v = np.repeat(v, H // Hk, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if bias is not None:
        s = s + bias
    return np.einsum("bhqk,bhkd->bhqd", softmax(s), v)


def causal_bias(T, window=None):
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    ok = j <= i
    if window is not None:  # Mistral: key j visible from query i iff i - window < j <= i
        ok &= j > i - window
    return np.where(ok, 0.0, NEG)[None, None]


def padding_bias(mask2d):  # (B,Tk) 1 = keep -> (B,1,1,Tk)
    return np.where(mask2d[:, None, None, :] > 0, 0.0, NEG)


def rope(x, pos, theta, rot_dim):
    """HF 'rotate_half' RoPE on the first rot_dim dims of each head.  x (B,H,T,D)."""
    inv = 1.0 / theta ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim)  # (rot_dim/2,)
    f = pos[:, None] * inv[None, :]
    emb = np.concatenate([f, f], -1)  # (T, rot_dim): frequencies repeated, NOT interleaved
    cos, sin = np.cos(emb), np.sin(emb)
    xr, xp = x[..., :rot_dim], x[..., rot_dim:]
    h = rot_dim // 2
    rot = np.concatenate([-xr[..., h:], xr[..., :h]], -1)  # rotate_half
    return np.concatenate([xr * cos + rot * sin, xp], -1)


# --------------------------------------------------------------------------------------
# decoder-only families: f(cfg, w, ids) -> (last_hidden_state, logits)
# --------------------------------------------------------------------------------------


def gpt2_forward(cfg, w, ids):
    B, T = ids.shape
    H, eps = cfg["n_head"], cfg["layer_norm_epsilon"]
    p = "transformer."
    x = w[p + "wte.weight"][ids] + w[p + "wpe.weight"][np.arange(T)]
    for i in range(cfg["n_layer"]):
        L = f"{p}h.{i}."
        a = layer_norm(x, w[L + "ln_1.weight"], w[L + "ln_1.bias"], eps)
        qkv = a @ w[L + "attn.c_attn.weight"] + w[L + "attn.c_attn.bias"]  # Conv1D: (in, out)
        q, k, v = np.split(qkv, 3, axis=-1)  # [q | k | v] blocks of n_embd columns
        q, k, v = (split_heads(t, H) for t in (q, k, v))
        o = merge_heads(attend(q, k, v, q.shape[-1] ** -0.5, causal_bias(T)))
        x = x + o @ w[L + "attn.c_proj.weight"] + w[L + "attn.c_proj.bias"]
        m = layer_norm(x, w[L + "ln_2.weight"], w[L + "ln_2.bias"], eps)
        m = gelu_new(m @ w[L + "mlp.c_fc.weight"] + w[L + "mlp.c_fc.bias"])
        x = x + m @ w[L + "mlp.c_proj.weight"] + w[L + "mlp.c_proj.bias"]
    h = layer_norm(x, w[p + "ln_f.weight"], w[p + "ln_f.bias"], eps)
    return h, h @ w[p + "wte.weight"].T  # lm_head tied to wte


def _llama_like(cfg, w, ids, moe=False):
    B, T = ids.shape
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    theta = cfg["rope_parameters"]["rope_theta"]
    pos = np.arange(T, dtype=np.float64)
    bias = causal_bias(T, cfg.get("sliding_window"))
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        L = f"model.layers.{i}."
        a = rms_norm(x, w[L + "input_layernorm.weight"], eps)
        q = split_heads(linear(a, w[L + "self_attn.q_proj.weight"]), H)
        k = split_heads(linear(a, w[L + "self_attn.k_proj.weight"]), KV)
        v = split_heads(linear(a, w[L + "self_attn.v_proj.weight"]), KV)
        q, k = rope(q, pos, theta, D), rope(k, pos, theta, D)
        x = x + linear(merge_heads(attend(q, k, v, D**-0.5, bias)), w[L + "self_attn.o_proj.weight"])
        m = rms_norm(x, w[L + "post_attention_layernorm.weight"], eps)
        if not moe:
            g = silu(linear(m, w[L + "mlp.gate_proj.weight"])) * linear(m, w[L + "mlp.up_proj.weight"])
            x = x + linear(g, w[L + "mlp.down_proj.weight"])
        else:
            x = x + mixtral_moe(cfg, w, L + "block_sparse_moe.", m)
    h = rms_norm(x, w["model.norm.weight"], eps)
    return h, linear(h, w["lm_head.weight"])


def mixtral_moe(cfg, w, P, m):
    E, k = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    probs = softmax(linear(m, w[P + "gate.weight"]))  # (B,T,E), softmax over ALL experts
    top = np.argsort(-probs, axis=-1)[..., :k]
    topw = np.take_along_axis(probs, top, -1)
    topw = topw / topw.sum(-1, keepdims=True)  # renormalise the k selected probs
    out = np.zeros_like(m)
    for e in range(E):
        Q = P + f"experts.{e}."
        y = linear(silu(linear(m, w[Q + "w1.weight"])) * linear(m, w[Q + "w3.weight"]), w[Q + "w2.weight"])
        we = (topw * (top == e)).sum(-1, keepdims=True)  # 0 if e not selected
        out += we * y
    return out


def llama_forward(cfg, w, ids):
    return _llama_like(cfg, w, ids)


mistral_forward = llama_forward  # sliding_window taken from config


def mixtral_forward(cfg, w, ids):
    return _llama_like(cfg, w, ids, moe=True)


def gpt_neox_forward(cfg, w, ids):
    B, T = ids.shape
    H, hid, eps = cfg["num_attention_heads"], cfg["hidden_size"], cfg["layer_norm_eps"]
    D = hid // H
    rp = cfg["rope_parameters"]
    rot = int(D * rp["partial_rotary_factor"])
    pos = np.arange(T, dtype=np.float64)
    p = "gpt_neox."
    x = w[p + "embed_in.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        L = f"{p}layers.{i}."
        a = layer_norm(x, w[L + "input_layernorm.weight"], w[L + "input_layernorm.bias"], eps)
        qkv = linear(a, w[L + "attention.query_key_value.weight"], w[L + "attention.query_key_value.bias"])
        qkv = qkv.reshape(B, T, H, 3 * D).transpose(0, 2, 1, 3)  # per head: [q_h | k_h | v_h]
        q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
        q, k = rope(q, pos, rp["rope_theta"], rot), rope(k, pos, rp["rope_theta"], rot)
        att = linear(merge_heads(attend(q, k, v, D**-0.5, causal_bias(T))), w[L + "attention.dense.weight"],
                     w[L + "attention.dense.bias"])
        m = layer_norm(x, w[L + "post_attention_layernorm.weight"], w[L + "post_attention_layernorm.bias"], eps)
        m = linear(gelu(linear(m, w[L + "mlp.dense_h_to_4h.weight"], w[L + "mlp.dense_h_to_4h.bias"])),
                   w[L + "mlp.dense_4h_to_h.weight"], w[L + "mlp.dense_4h_to_h.bias"])
        assert cfg["use_parallel_residual"]
        x = x + att + m  # parallel residual
    h = layer_norm(x, w[p + "final_layer_norm.weight"], w[p + "final_layer_norm.bias"], eps)
    return h, linear(h, w["embed_out.weight"])


def falcon_forward(cfg, w, ids):
    B, T = ids.shape
    H, hid, eps = cfg["num_attention_heads"], cfg["hidden_size"], cfg["layer_norm_epsilon"]
    D = hid // H
    assert cfg["multi_query"] and not cfg["new_decoder_architecture"] and cfg["parallel_attn"] and not cfg["alibi"]
    theta = cfg["rope_parameters"]["rope_theta"]
    pos = np.arange(T, dtype=np.float64)
    p = "transformer."
    x = w[p + "word_embeddings.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        L = f"{p}h.{i}."
        a = layer_norm(x, w[L + "input_layernorm.weight"], w[L + "input_layernorm.bias"], eps)
        qkv = linear(a, w[L + "self_attention.query_key_value.weight"]).reshape(B, T, H + 2, D)
        q = qkv[:, :, :H].transpose(0, 2, 1, 3)  # rows [0, H*D): the H query heads
        k = qkv[:, :, H : H + 1].transpose(0, 2, 1, 3)  # next D rows: the single shared key head
        v = qkv[:, :, H + 1 :].transpose(0, 2, 1, 3)  # last D rows: the single shared value head
        q, k = rope(q, pos, theta, D), rope(k, pos, theta, D)
        att = linear(merge_heads(attend(q, k, v, D**-0.5, causal_bias(T))), w[L + "self_attention.dense.weight"])
        m = linear(gelu(linear(a, w[L + "mlp.dense_h_to_4h.weight"])), w[L + "mlp.dense_4h_to_h.weight"])
        x = x + att + m  # parallel attention, single layernorm
    h = layer_norm(x, w[p + "ln_f.weight"], w[p + "ln_f.bias"], eps)
    return h, linear(h, w[p + "word_embeddings.weight"])  # lm_head tied


# --------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------


def bert_forward(cfg, w, ids, mask, tt):
    B, T = ids.shape
    H, eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][np.arange(T)]
    x = x + w["embeddings.token_type_embeddings.weight"][tt]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    bias = padding_bias(mask)
    for i in range(cfg["num_hidden_layers"]):
        L = f"encoder.layer.{i}."
        q, k, v = (split_heads(linear(x, w[L + f"attention.self.{n}.weight"], w[L + f"attention.self.{n}.bias"]), H)
                   for n in ("query", "key", "value"))
        o = merge_heads(attend(q, k, v, q.shape[-1] ** -0.5, bias))
        o = linear(o, w[L + "attention.output.dense.weight"], w[L + "attention.output.dense.bias"])
        x = layer_norm(x + o, w[L + "attention.output.LayerNorm.weight"], w[L + "attention.output.LayerNorm.bias"],
                       eps)  # post-LN
        m = gelu(linear(x, w[L + "intermediate.dense.weight"], w[L + "intermediate.dense.bias"]))
        m = linear(m, w[L + "output.dense.weight"], w[L + "output.dense.bias"])
        x = layer_norm(x + m, w[L + "output.LayerNorm.weight"], w[L + "output.LayerNorm.bias"], eps)
    pooled = np.tanh(linear(x[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"]))
    return x, pooled


def longformer_forward(cfg, w, ids, mask, gmask):
    B, T = ids.shape
    H, eps, pad = cfg["num_attention_heads"], cfg["layer_norm_eps"], cfg["pad_token_id"]
    hid = cfg["hidden_size"]
    D = hid // H
    P = "longformer."
    pos = np.cumsum(ids != pad, axis=1) * (ids != pad) + pad  # RoBERTa-style positions: pad+1, pad+2, ...
    x = w[P + "embeddings.word_embeddings.weight"][ids] + w[P + "embeddings.position_embeddings.weight"][pos]
    x = x + w[P + "embeddings.token_type_embeddings.weight"][np.zeros_like(ids)]
    x = layer_norm(x, w[P + "embeddings.LayerNorm.weight"], w[P + "embeddings.LayerNorm.bias"], eps)
    keep = mask > 0
    glob = (gmask > 0) & keep
    i_idx, j_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    for li in range(cfg["num_hidden_layers"]):
        L = f"{P}encoder.layer.{li}.attention.self."
        wdw = cfg["attention_window"][li] // 2  # one-sided window
        lin = lambda n, z: linear(z, w[L + n + ".weight"], w[L + n + ".bias"])  # noqa: E731
        q = split_heads(lin("query", x) / math.sqrt(D), H)
        k, v = split_heads(lin("key", x), H), split_heads(lin("value", x), H)
        # non-global queries: local band over NON-global keys + every global key (each key counted once)
        local = (np.abs(i_idx - j_idx) <= wdw)[None] & ~glob[:, None, :]
        allowed = (local | glob[:, None, :]) & keep[:, None, :]
        out = attend(q, k, v, 1.0, np.where(allowed, 0.0, NEG)[:, None])
        # global queries: separate *_global projections, attend to every non-padded key
        qg = split_heads(lin("query_global", x) / math.sqrt(D), H)
        kg, vg = split_heads(lin("key_global", x), H), split_heads(lin("value_global", x), H)
        outg = attend(qg, kg, vg, 1.0, padding_bias(mask))
        out = np.where(glob[:, None, :, None], outg, out)
        o = merge_heads(out)
        A = f"{P}encoder.layer.{li}."
        o = linear(o, w[A + "attention.output.dense.weight"], w[A + "attention.output.dense.bias"])
        x = layer_norm(x + o, w[A + "attention.output.LayerNorm.weight"], w[A + "attention.output.LayerNorm.bias"],
                       eps)
        m = gelu(linear(x, w[A + "intermediate.dense.weight"], w[A + "intermediate.dense.bias"]))
        m = linear(m, w[A + "output.dense.weight"], w[A + "output.dense.bias"])
        x = layer_norm(x + m, w[A + "output.LayerNorm.weight"], w[A + "output.LayerNorm.bias"], eps)
    z = gelu(linear(x, w["lm_head.dense.weight"], w["lm_head.dense.bias"]))
    z = layer_norm(z, w["lm_head.layer_norm.weight"], w["lm_head.layer_norm.bias"], eps)
    logits = z @ w[P + "embeddings.word_embeddings.weight"].T + w["lm_head.bias"]
    return x, logits


# --------------------------------------------------------------------------------------
# T5 / Switch
# --------------------------------------------------------------------------------------


def t5_bucket(rel, bidirectional, num_buckets, max_distance):
    ret = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        ret += (rel > 0) * num_buckets
        n = np.abs(rel)
    else:
        n = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    nn_ = np.maximum(n, 1).astype(np.float64)
    large = max_exact + (np.log(nn_ / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(np.int64)  # truncation toward zero
    large = np.minimum(large, num_buckets - 1)
    return ret + np.where(n < max_exact, n, large)


def t5_position_bias(w, prefix, cfg, Tq, Tk, bidirectional, offset=0):
    ctx = np.arange(Tq)[:, None] + offset
    mem = np.arange(Tk)[None, :]
    b = t5_bucket(mem - ctx, bidirectional, cfg["relative_attention_num_buckets"],
                  cfg["relative_attention_max_distance"])
    table = w[prefix + "block.0.layer.0.SelfAttention.relative_attention_bias.weight"]  # (num_buckets, H)
    return table[b].transpose(2, 0, 1)[None]  # (1,H,Tq,Tk)


def t5_attn(w, A, x, kv, H, bias):
    q, k, v = (split_heads(linear(z, w[A + n + ".weight"]), H) for n, z in (("q", x), ("k", kv), ("v", kv)))
    return linear(merge_heads(attend(q, k, v, 1.0, bias)), w[A + "o.weight"])  # NO 1/sqrt(d) scaling


def t5_ffn(cfg, w, F, x, switch_sparse=False):
    if switch_sparse:
        return switch_moe(cfg, w, F + "mlp.", x)
    pre = "mlp." if "num_experts" in cfg else "DenseReluDense."
    act = ACT[cfg["dense_act_fn"]]  # T5Config maps feed_forward_proj "gated-gelu" to dense_act_fn "gelu_new"
    if cfg.get("is_gated_act"):
        h = act(linear(x, w[F + pre + "wi_0.weight"])) * linear(x, w[F + pre + "wi_1.weight"])
    else:
        h = act(linear(x, w[F + pre + "wi.weight"]))
    return linear(h, w[F + pre + "wo.weight"])


def switch_moe(cfg, w, P, x):
    """Top-1 routing, capacity counted per sequence (batch row) in position order."""
    E, cap = cfg["num_experts"], cfg["expert_capacity"]
    probs = softmax(linear(x, w[P + "router.classifier.weight"]))  # (B,T,E)
    choice = probs.argmax(-1)
    onehot = np.eye(E)[choice]  # (B,T,E)
    kept = (np.cumsum(onehot, axis=1) <= cap) * onehot  # cumsum over positions of the same row
    gate = probs.max(-1, keepdims=True)  # router prob of the chosen expert
    out = np.zeros_like(x)
    for e in range(E):
        Q = P + f"experts.expert_{e}."
        y = linear(np.maximum(linear(x, w[Q + "wi.weight"]), 0.0), w[Q + "wo.weight"])
        out += kept[..., e : e + 1] * gate * y  # dropped tokens: 0 (only the residual survives)
    return out


def t5_forward(cfg, w, ids, mask, dec_ids):
    H, eps = cfg["num_heads"], cfg["layer_norm_epsilon"]
    emb = w["shared.weight"]
    sparse_enc = sparse_dec = set()
    if "num_experts" in cfg:
        se = cfg["num_layers"] // cfg["num_sparse_encoder_layers"]
        sd = cfg["num_decoder_layers"] // cfg["num_sparse_decoder_layers"]
        sparse_enc = {i for i in range(cfg["num_layers"]) if i % se == 1 or se == 1}
        sparse_dec = {i for i in range(cfg["num_decoder_layers"]) if i % sd == 1 or sd == 1}
    # encoder
    B, T = ids.shape
    x = emb[ids]
    bias = t5_position_bias(w, "encoder.", cfg, T, T, True) + padding_bias(mask)
    for i in range(cfg["num_layers"]):
        L = f"encoder.block.{i}.layer."
        a = rms_norm(x, w[L + "0.layer_norm.weight"], eps)
        x = x + t5_attn(w, L + "0.SelfAttention.", a, a, H, bias)
        x = x + t5_ffn(cfg, w, L + "1.", rms_norm(x, w[L + "1.layer_norm.weight"], eps), i in sparse_enc)
    enc = rms_norm(x, w["encoder.final_layer_norm.weight"], eps)
    # decoder
    Td = dec_ids.shape[1]
    y = emb[dec_ids]
    sbias = t5_position_bias(w, "decoder.", cfg, Td, Td, False) + causal_bias(Td)
    xbias = padding_bias(mask)  # cross attention: no position bias
    for i in range(cfg["num_decoder_layers"]):
        L = f"decoder.block.{i}.layer."
        a = rms_norm(y, w[L + "0.layer_norm.weight"], eps)
        y = y + t5_attn(w, L + "0.SelfAttention.", a, a, H, sbias)
        a = rms_norm(y, w[L + "1.layer_norm.weight"], eps)
        y = y + t5_attn(w, L + "1.EncDecAttention.", a, enc, H, xbias)
        y = y + t5_ffn(cfg, w, L + "2.", rms_norm(y, w[L + "2.layer_norm.weight"], eps), i in sparse_dec)
    h = rms_norm(y, w["decoder.final_layer_norm.weight"], eps)
    if "lm_head.weight" in w:  # untied (T5 v1.1): no rescale
        logits = linear(h, w["lm_head.weight"])
    else:  # tied: rescale by d_model**-0.5 before the shared embedding
        logits = linear(h * cfg["d_model"] ** -0.5, emb)
    if "scale_decoder_outputs" in cfg:
        assert cfg["scale_decoder_outputs"] == ("lm_head.weight" not in w)
    return h, enc, logits


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------

CAUSAL = {
    "gpt2": gpt2_forward,
    "llama": llama_forward,
    "mistral": mistral_forward,
    "gpt_neox": gpt_neox_forward,
    "falcon": falcon_forward,
    "mixtral": mixtral_forward,
}


def check_family(fam: str) -> dict[str, float]:
    cfg, w, io = load_fixture(fam)
    errs = {}

    def cmp(name, got, ref):
        errs[name] = float(np.abs(got - ref.astype(np.float64)).max())

    if fam in CAUSAL:
        f = CAUSAL[fam]
        h, logits = f(cfg, w, io["input_ids"])
        cmp("last_hidden_state", h, io["last_hidden_state"])
        cmp("logits", logits, io["logits"])
        seq = np.concatenate([io["input_ids"][0], io["greedy_ids"][:-1]])[None]
        T = io["input_ids"].shape[1]
        _, lg = f(cfg, w, seq)
        cmp("greedy_logits", lg[0, T - 1 :], io["greedy_logits"])
        errs["greedy_argmax_mismatch"] = float((lg[0, T - 1 :].argmax(-1) != io["greedy_ids"]).sum())
    elif fam == "bert":
        h, pooled = bert_forward(cfg, w, io["input_ids"], io["attention_mask"], io["token_type_ids"])
        cmp("last_hidden_state", h, io["last_hidden_state"])
        cmp("pooler_output", pooled, io["pooler_output"])
    elif fam == "longformer":
        h, logits = longformer_forward(cfg, w, io["input_ids"], io["attention_mask"], io["global_attention_mask"])
        cmp("last_hidden_state", h, io["last_hidden_state"])
        cmp("logits", logits, io["logits"])
    elif fam in ("t5", "t5_gated", "switch"):
        h, enc, logits = t5_forward(cfg, w, io["input_ids"], io["attention_mask"], io["decoder_input_ids"])
        cmp("last_hidden_state", h, io["last_hidden_state"])
        cmp("encoder_last_hidden_state", enc, io["encoder_last_hidden_state"])
        cmp("logits", logits, io["logits"])
        if "greedy_ids" in io:
            dec = np.concatenate([[cfg["decoder_start_token_id"]], io["greedy_ids"][:-1]])[None]
            ids0 = io["input_ids"][:1]
            _, _, lg = t5_forward(cfg, w, ids0, np.ones_like(ids0), dec)
            cmp("greedy_logits", lg[0], io["greedy_logits"])
            errs["greedy_argmax_mismatch"] = float((lg[0].argmax(-1) != io["greedy_ids"]).sum())
    else:
        raise KeyError(fam)
    return errs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fams = argv or sorted(p.name for p in FIXTURES.iterdir() if (p / "io.npz").exists())
    bad = 0
    for fam in fams:
        errs = check_family(fam)
        ok = all(v <= ATOL for v in errs.values())
        bad += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {fam:11s} " + "  ".join(f"{k}={v:.2e}" for k, v in errs.items()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
