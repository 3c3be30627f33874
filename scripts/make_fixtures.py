#!/usr/bin/env python
"""Build tiny random-init Hugging Face models and save golden fixtures.

Usage::

    python scripts/make_fixtures.py            # all families
    python scripts/make_fixtures.py gpt2 llama # a subset

Requires ``torch`` (CPU build, e.g. ``pip install torch==2.13.0``) and
``transformers``.  They are imported inside :func:`main`, so importing this
module (e.g. from a test collector) does not need torch.

For every family a directory ``tests/fixtures/hf/<family>/`` is (re)written with

* ``config.json``        -- ``model.config`` as written by ``save_pretrained``
* ``model.safetensors``  -- exactly what ``save_pretrained`` writes (HF tensor names)
* ``io.npz``             -- inputs and reference outputs (see tests/fixtures/hf/README.md)
* ``meta.json``          -- family, class, versions, seed, shapes, sanity statistics, notes

The fixtures are designed to be able to FAIL: every norm weight is perturbed
away from 1, every norm bias / linear bias away from 0, and weights are
re-initialised with a large std so attention is peaked, MoE routing and greedy
decoding are far from ties.  Seeds are advanced until the tie checks pass.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "fixtures" / "hf"

FAMILIES = [
    "gpt2",
    "bert",
    "t5",
    "t5_gated",
    "llama",
    "mistral",
    "gpt_neox",
    "falcon",
    "longformer",
    "switch",
    "mixtral",
    # variants: the same family's .arch (meta.json "example") on a config flag's other value
    "llama_tied",
    "mistral_nowindow",
    "qwen2",
]

BASE_SEED = {name: 1000 + 100 * i for i, name in enumerate(FAMILIES)}
MAX_TRIES = 200
N_NEW = 32  # greedy tokens
GREEDY_GAP_MIN = 5e-3
MIN_DISTINCT = 8  # distinct tokens among the 32 greedy tokens (avoid degenerate repetition)  # best - second best logit at every greedy step
ROUTER_GAP_MIN = 1e-3  # prob gap at the routing decision boundary (all decisions)
NORM_W_STD = 0.2
NORM_B_STD = 0.1
BIAS_STD = 0.1

# populated in main()
torch = None
transformers = None


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _is_norm(module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or "Norm" in type(module).__name__


def reinit(model, std: float, emb_std: float, overrides: dict | None = None) -> None:
    """Re-initialise all parameters with the (already seeded) global torch RNG.

    * norm weights  -> 1 + NORM_W_STD * N(0, 1); norm biases -> NORM_B_STD * N(0, 1)
    * nn.Embedding  -> N(0, emb_std)
    * other >=2-D   -> N(0, std)          (Linear / Conv1D / fused expert tensors)
    * other 1-D     -> N(0, BIAS_STD)     (every linear bias, lm-head bias, ...)
    * ``overrides``: {regex on parameter name: std} checked first for non-norm params.
    Tied parameters (same object) are initialised once.
    """
    overrides = overrides or {}
    seen: set[int] = set()
    names = {id(p): n for n, p in model.named_parameters()}
    with torch.no_grad():
        for _, m in model.named_modules():
            if _is_norm(m):
                for pn, p in m.named_parameters(recurse=False):
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                    if pn == "weight":
                        p.copy_(1.0 + NORM_W_STD * torch.randn(p.shape))
                    else:
                        p.copy_(NORM_B_STD * torch.randn(p.shape))
        for _, m in model.named_modules():
            if isinstance(m, torch.nn.Embedding):
                p = m.weight
                if id(p) in seen:
                    continue
                seen.add(id(p))
                s = emb_std
                for pat, o in overrides.items():
                    if re.search(pat, names[id(p)]):
                        s = o
                        break
                p.copy_(s * torch.randn(p.shape))
        for n, p in model.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            s = None
            for pat, o in overrides.items():
                if re.search(pat, n):
                    s = o
                    break
            if s is None:
                s = std if p.ndim >= 2 else BIAS_STD
            p.copy_(s * torch.randn(p.shape))


def npf(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def top2_gap(x) -> float:
    v = torch.topk(x.float(), 2, dim=-1).values
    return float((v[..., 0] - v[..., 1]).min())


class RouterRecorder:
    """Forward hooks on MoE routers: records decision-boundary probability gaps and drops."""

    def __init__(self, model, kind: str, top_k: int):
        self.kind, self.top_k = kind, top_k
        self.gaps: list[float] = []  # one per routing decision (token x layer)
        self.handles = []
        self.record_events = True  # routing events are recorded only while this is set
        self.events: list[dict] = []
        for name, m in model.named_modules():
            cls = type(m).__name__
            if (kind == "switch" and cls == "SwitchTransformersTop1Router") or (
                kind == "mixtral" and cls == "MixtralTopKRouter"
            ):
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(mod, inputs, output):
            if self.kind == "switch":
                expert_index, _, router_logits = output  # (B,T,E) masked one-hot, (B,T,E) logits
                probs = torch.softmax(router_logits.float(), dim=-1)
                v = torch.topk(probs, 2, dim=-1).values
                self.gaps.extend((v[..., 0] - v[..., 1]).flatten().tolist())
                choice = probs.argmax(-1)  # (B,T)
                kept = expert_index.sum(-1) > 0
                dropped = [[int(b), int(t)] for b, t in zip(*torch.where(~kept))]
                if self.record_events:
                    self.events.append(
                        {
                            "module": name,
                            "shape": list(choice.shape),
                            "expert_choice": choice.tolist(),
                            "dropped_tokens_batch_pos": dropped,
                            "n_dropped": len(dropped),
                        }
                    )
            else:
                router_logits = output[0]  # (N, E)
                probs = torch.softmax(router_logits.float(), dim=-1)
                v = torch.topk(probs, self.top_k + 1, dim=-1).values
                self.gaps.extend((v[..., self.top_k - 1] - v[..., self.top_k]).flatten().tolist())

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def attention_peakiness(attentions) -> dict:
    """Mean over (layer, batch, head, query) of max attention prob and of uniform prob 1/n_valid."""
    maxp, unif = [], []
    for a in attentions:
        if a is None:
            continue
        a = a.float()
        valid = (a > 0).sum(-1).clamp(min=1).float()  # allowed keys per row
        maxp.append(a.max(-1).values.flatten())
        unif.append((1.0 / valid).flatten())
    if not maxp:
        return {}
    mp, un = torch.cat(maxp), torch.cat(unif)
    return {"mean_max_prob": round(float(mp.mean()), 4), "mean_uniform_prob": round(float(un.mean()), 4)}


def dumps_compact(obj) -> str:
    """json.dumps with indent=1, but flat lists of scalars kept on one line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
                  if m.group(1).strip() else "[]", text)


def tensor_table(path: Path) -> dict:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="np") as f:
        for k in sorted(f.keys()):
            out[k] = list(f.get_slice(k).get_shape())
    return out


# --------------------------------------------------------------------------------------
# family specs
# --------------------------------------------------------------------------------------

V = 128
EAGER = {"attn_implementation": "eager"}


def spec_gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=128,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **EAGER,
    )
    return dict(cls=transformers.GPT2LMHeadModel, config=cfg, kind="causal", T=10, std=0.15, emb_std=0.5,
                notes=["lm_head.weight is tied to transformer.wte.weight and is NOT stored in model.safetensors",
                       "Conv1D weights are stored (in_features, out_features); y = x @ W + b",
                       "activation gelu_new (tanh approximation)"])


def spec_bert():
    cfg = transformers.BertConfig(
        vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=0, **EAGER,
    )
    return dict(cls=transformers.BertModel, config=cfg, kind="bert", T=10, std=0.15, emb_std=0.5,
                notes=["BertModel (no MLM head): outputs last_hidden_state + pooler_output",
                       "row 1 of the batch is right-padded: attention_mask[1, -3:] == 0 (input_ids there = 0 = pad)",
                       "outputs at padded query positions are still computed by HF and saved; they attend only to "
                       "non-padded keys, like every other query",
                       "activation exact (erf) gelu; post-LayerNorm blocks"])


def _t5_cfg(gated: bool, switch: bool = False):
    common = dict(vocab_size=V, d_model=32, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                  dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **EAGER)
    if switch:
        return transformers.SwitchTransformersConfig(
            d_ff=64, num_experts=4, expert_capacity=3, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
            router_jitter_noise=0.01, router_dtype="float32", router_bias=False, router_ignore_padding_tokens=False,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, **common)
    if gated:
        return transformers.T5Config(d_ff=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                     relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                     **common)
    return transformers.T5Config(d_ff=64, feed_forward_proj="relu", relative_attention_num_buckets=16,
                                 relative_attention_max_distance=20, **common)


def spec_t5():
    return dict(cls=transformers.T5ForConditionalGeneration, config=_t5_cfg(False), kind="seq2seq", T=10, T_dec=7,
                std=0.25, emb_std=0.6, overrides={r"relative_attention_bias": 1.0, r"\.(o|wo)\.weight$": 0.5},
                post_scale={"decoder.final_layer_norm.weight": 4.0},
                notes=["T5 v1.0: ReLU FFN (wi, wo); lm_head tied to shared.weight (not stored)",
                       "logits = lm_head(decoder_last_hidden_state * d_model**-0.5)  (config.scale_decoder_outputs)",
                       "non-default relative_attention_num_buckets=16, relative_attention_max_distance=20 "
                       "(so both the log-bucket region and the clamp are exercised)",
                       "decoder.final_layer_norm.weight was multiplied by 4 after init to enlarge logit gaps"])


def spec_t5_gated():
    return dict(cls=transformers.T5ForConditionalGeneration, config=_t5_cfg(True), kind="seq2seq", T=10, T_dec=7,
                std=0.2, emb_std=1.0, overrides={r"relative_attention_bias": 1.0, r"^lm_head\.": 0.5},
                untie_lm_head=True,
                notes=["T5 v1.1 style: gated-gelu FFN: wo(gelu_new(wi_0 x) * wi_1 x)",
                       "untied lm_head.weight IS stored; logits = lm_head(decoder_last_hidden_state) with NO "
                       "d_model**-0.5 rescale (config scale_decoder_outputs=false)",
                       "transformers 5.x always declares tie_word_embeddings=true for T5; untying is detected on "
                       "load because shared.weight and lm_head.weight are both present and differ"])


def spec_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, **EAGER,
    )
    return dict(cls=transformers.LlamaForCausalLM, config=cfg, kind="causal", T=10, std=0.15, emb_std=0.5,
                overrides={r"^lm_head\.": 0.5},
                notes=["GQA: 4 query heads, 2 KV heads; query head h uses KV head h // 2",
                       "untied lm_head (stored)", "RoPE rotate_half convention, theta 10000"])


def spec_mistral():
    cfg = transformers.MistralConfig(
        vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, sliding_window=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, **EAGER,
    )
    return dict(cls=transformers.MistralForCausalLM, config=cfg, kind="causal", T=12, std=0.15, emb_std=0.5,
                overrides={r"^lm_head\.": 0.5},
                notes=["sliding_window=4: query i attends keys j with i-4 < j <= i (4 keys incl. itself)",
                       "GQA 4 query / 2 KV heads; untied lm_head"])


def spec_gpt_neox():
    cfg = transformers.GPTNeoXConfig(
        vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, rotary_pct=0.5, rotary_emb_base=10000, use_parallel_residual=True,
        hidden_act="gelu", layer_norm_eps=1e-5, attention_bias=True, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, **EAGER,
    )
    return dict(cls=transformers.GPTNeoXForCausalLM, config=cfg, kind="causal", T=10, std=0.15, emb_std=0.5,
                overrides={r"embed_out|lm_head": 0.5},
                notes=["parallel residual: x + attn(ln1(x)) + mlp(ln2(x))",
                       "partial rotary 0.5: first 8 of 16 head dims rotated (rotate_half within those 8)",
                       "fused query_key_value rows are per-head interleaved [q_h, k_h, v_h] for each head h",
                       "untied output embedding (stored)"])


def spec_falcon():
    cfg = transformers.FalconConfig(
        vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
        new_decoder_architecture=False, parallel_attn=True, alibi=False, bias=False, ffn_hidden_size=128,
        max_position_embeddings=64, layer_norm_epsilon=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None, eos_token_id=None, **EAGER,
    )
    return dict(cls=transformers.FalconForCausalLM, config=cfg, kind="causal", T=10, std=0.15, emb_std=0.5,
                notes=["multi-query (1 shared K/V head), parallel attention with a single input_layernorm:",
                       "x + attn(ln(x)) + mlp(ln(x)); rotary (rotate_half) over the full head_dim",
                       "bias=False (falcon-7b style): no linear biases exist",
                       "lm_head tied to transformer.word_embeddings (not stored)"])


def spec_longformer():
    cfg = transformers.LongformerConfig(
        vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=66, attention_window=4, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, sep_token_id=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **EAGER,
    )
    return dict(cls=transformers.LongformerForMaskedLM, config=cfg, kind="longformer", T=12, std=0.25,
                emb_std=0.5,
                notes=["attention_window=4 -> one-sided window w=2 (|i-j| <= 2)",
                       "global_attention_mask: row 0 global at {0}, row 1 global at {0, 7}",
                       "position ids start at pad_token_id+1 = 2 (RoBERTa style); input ids never equal pad (1)",
                       "lm_head.decoder.weight tied to word embeddings, lm_head.decoder.bias tied to lm_head.bias"])


def spec_switch():
    return dict(cls=transformers.SwitchTransformersForConditionalGeneration, config=_t5_cfg(False, switch=True),
                kind="seq2seq", T=10, T_dec=7, std=0.2, emb_std=1.0, overrides={r"relative_attention_bias": 1.0},
                greedy=False,
                notes=["top-1 routing over 4 experts, expert_capacity=3 per expert PER SEQUENCE (batch row), "
                       "first-come by position; overflowing tokens get a zero FFN output (residual only)",
                       "sparse layer = block 1 of encoder and of decoder (encoder/decoder_sparse_step = 2)",
                       "tie_word_embeddings -> logits = lm_head(h * d_model**-0.5), lm_head tied to shared (not stored)",
                       "no greedy fixture: capacity is per forward call, so incremental decoding (T=1 per step) "
                       "routes differently from a full re-forward"])


def spec_mixtral():
    cfg = transformers.MixtralConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, num_local_experts=4,
        num_experts_per_tok=2, router_jitter_noise=0.0, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, **EAGER,
    )
    return dict(cls=transformers.MixtralForCausalLM, config=cfg, kind="causal", T=10, std=0.21, emb_std=0.7,
                overrides={r"^lm_head\.": 0.7}, router="mixtral", top_k=2,
                notes=["top-2 of 4 experts; the two selected softmax probs are renormalised to sum to 1",
                       "GQA 4 query / 2 KV heads; untied lm_head",
                       "save_pretrained writes the ORIGINAL per-expert layout (block_sparse_moe.experts.E.w1/w2/w3, "
                       "block_sparse_moe.gate); in memory transformers 5 uses fused mlp.experts.gate_up_proj / down_proj"])


def spec_llama_tied():
    # Llama-3.2 / Qwen2 / Gemma style: the LM head is the embedding (tie_word_embeddings)
    spec = spec_llama()
    spec["config"].tie_word_embeddings = True
    spec["overrides"] = {}
    spec["example"] = "llama"
    spec["notes"] = ["as llama, but tie_word_embeddings=true: lm_head.weight is model.embed_tokens.weight "
                     "and is NOT stored"]
    return spec


def spec_mistral_nowindow():
    # Mistral v0.2/v0.3: `"sliding_window": null` turns the window off
    spec = spec_mistral()
    spec["config"].sliding_window = None
    spec["example"] = "mistral"
    spec["notes"] = ["as mistral, but sliding_window=null (v0.2/v0.3): full causal attention, T=12"]
    return spec


def spec_qwen2():
    cfg = transformers.Qwen2Config(
        vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None, **EAGER,
    )
    return dict(cls=transformers.Qwen2ForCausalLM, config=cfg, kind="causal", T=10, std=0.15, emb_std=0.5,
                notes=["biases on q/k/v projections only (none on o_proj, none in the MLP)",
                       "GQA 4 query / 2 KV heads; lm_head tied to model.embed_tokens (not stored)",
                       "RoPE rotate_half convention, theta 1e6"])


SPECS = {
    "gpt2": spec_gpt2, "bert": spec_bert, "t5": spec_t5, "t5_gated": spec_t5_gated, "llama": spec_llama,
    "mistral": spec_mistral, "gpt_neox": spec_gpt_neox, "falcon": spec_falcon, "longformer": spec_longformer,
    "switch": spec_switch, "mixtral": spec_mixtral, "llama_tied": spec_llama_tied,
    "mistral_nowindow": spec_mistral_nowindow, "qwen2": spec_qwen2,
}


# --------------------------------------------------------------------------------------
# building and running
# --------------------------------------------------------------------------------------


def build(name: str, spec: dict, seed: int):
    import copy

    torch.manual_seed(seed)
    model = spec["cls"](copy.deepcopy(spec["config"]))
    if spec.get("untie_lm_head"):
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
        model.all_tied_weights_keys.pop("lm_head.weight", None)
    model = model.float()
    reinit(model, spec["std"], spec["emb_std"], spec.get("overrides"))
    with torch.no_grad():
        for pname, gain in spec.get("post_scale", {}).items():
            model.get_parameter(pname).mul_(gain)
    model.eval()
    impl = model.config._attn_implementation
    assert impl == "eager", f"{name}: attn implementation is {impl!r}, wanted eager"
    return model


def make_inputs(name: str, spec: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    B, T = 2, spec["T"]
    lo = 3  # never emit special ids 0/1/2 in the inputs
    ids = rng.integers(lo, V, size=(B, T), dtype=np.int64)
    inp = {"input_ids": ids, "attention_mask": np.ones((B, T), dtype=np.int64)}
    if spec["kind"] == "bert":
        inp["attention_mask"][1, -3:] = 0
        ids[1, -3:] = 0
        tt = np.zeros((B, T), dtype=np.int64)
        tt[0, 4:] = 1
        tt[1, 3:7] = 1
        inp["token_type_ids"] = tt
    if spec["kind"] == "longformer":
        g = np.zeros((B, T), dtype=np.int64)
        g[:, 0] = 1
        g[1, 7] = 1
        inp["global_attention_mask"] = g
    if spec["kind"] == "seq2seq":
        dec = rng.integers(lo, V, size=(B, spec["T_dec"]), dtype=np.int64)
        dec[:, 0] = spec["config"].decoder_start_token_id
        inp["decoder_input_ids"] = dec
    return inp


def to_t(inp: dict) -> dict:
    return {k: torch.from_numpy(v) for k, v in inp.items()}


def forward_outputs(model, spec: dict, inp: dict, rec: "RouterRecorder | None" = None) -> tuple[dict, dict]:
    """Full forward; returns (arrays for io.npz, stats).

    If ``rec`` is given, routing events are recorded only during the first (main) forward call."""
    kind = spec["kind"]
    if rec is not None:
        rec.events.clear()
        rec.record_events = True
    t = to_t(inp)
    out, stats = {}, {}
    with torch.no_grad():
        if kind == "causal":
            o = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True,
                      use_cache=False)
            if rec is not None:
                rec.record_events = False
            base = model.base_model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], use_cache=False)
            torch.testing.assert_close(o.hidden_states[-1], base.last_hidden_state, rtol=0, atol=0)
            out["last_hidden_state"] = npf(o.hidden_states[-1])
            out["all_hidden_states"] = np.stack([npf(h) for h in o.hidden_states])
            out["logits"] = npf(o.logits)
        elif kind == "bert":
            o = model(**t, output_hidden_states=True)
            out["last_hidden_state"] = npf(o.last_hidden_state)
            out["pooler_output"] = npf(o.pooler_output)
            out["all_hidden_states"] = np.stack([npf(h) for h in o.hidden_states])
        elif kind == "longformer":
            o = model(**t, output_hidden_states=True)
            base = model.longformer(**t)
            out["last_hidden_state"] = npf(base.last_hidden_state)
            out["all_hidden_states"] = np.stack([npf(h) for h in o.hidden_states])
            torch.testing.assert_close(o.hidden_states[-1], base.last_hidden_state, rtol=0, atol=0)
            out["logits"] = npf(o.logits)
        elif kind == "seq2seq":
            o = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                      decoder_input_ids=t["decoder_input_ids"], output_hidden_states=True, use_cache=False)
            if rec is not None:
                rec.record_events = False
            enc = model.get_encoder()(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
            dec = model.get_decoder()(input_ids=t["decoder_input_ids"], encoder_hidden_states=enc.last_hidden_state,
                                      encoder_attention_mask=t["attention_mask"], use_cache=False)
            torch.testing.assert_close(o.decoder_hidden_states[-1], dec.last_hidden_state, rtol=0, atol=0)
            torch.testing.assert_close(o.encoder_last_hidden_state, enc.last_hidden_state, rtol=0, atol=0)
            out["last_hidden_state"] = npf(dec.last_hidden_state)
            out["encoder_last_hidden_state"] = npf(o.encoder_last_hidden_state)
            out["encoder_all_hidden_states"] = np.stack([npf(h) for h in o.encoder_hidden_states])
            out["decoder_all_hidden_states"] = np.stack([npf(h) for h in o.decoder_hidden_states])
            out["logits"] = npf(o.logits)
        # attention peakiness (eager attentions)
        try:
            if kind == "seq2seq":
                oa = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                           decoder_input_ids=t["decoder_input_ids"], output_attentions=True, use_cache=False)
                stats["attention_encoder_self"] = attention_peakiness(oa.encoder_attentions)
                stats["attention_decoder_self"] = attention_peakiness(oa.decoder_attentions)
                stats["attention_cross"] = attention_peakiness(oa.cross_attentions)
            elif kind in ("causal", "bert"):
                kw = dict(use_cache=False) if kind == "causal" else {}
                oa = model(**t, output_attentions=True, **kw)
                stats["attention"] = attention_peakiness(oa.attentions)
            elif kind == "longformer":
                oa = model(**t, output_attentions=True)
                stats["attention_local"] = attention_peakiness(oa.attentions)
        except Exception as e:  # pragma: no cover - diagnostics only
            stats["attention_error"] = repr(e)
    return out, stats


def greedy(model, spec: dict, inp: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Greedy 32 tokens from row 0's prompt, by full re-forward each step (no cache).

    Cross-checked against ``model.generate`` (which uses the KV cache)."""
    kind = spec["kind"]
    prompt = torch.from_numpy(inp["input_ids"][0:1])
    step_logits, new = [], []
    with torch.no_grad():
        if kind == "causal":
            ids = prompt
            for _ in range(N_NEW):
                lg = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0, -1]
                nxt = int(lg.argmax())
                step_logits.append(lg)
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        else:
            start = spec["config"].decoder_start_token_id
            enc = model.get_encoder()(input_ids=prompt, attention_mask=torch.ones_like(prompt))
            dec = torch.tensor([[start]])
            for _ in range(N_NEW):
                lg = model(encoder_outputs=enc, attention_mask=torch.ones_like(prompt), decoder_input_ids=dec,
                           use_cache=False).logits[0, -1]
                nxt = int(lg.argmax())
                step_logits.append(lg)
                new.append(nxt)
                dec = torch.cat([dec, torch.tensor([[nxt]])], dim=1)
        logits = torch.stack(step_logits)
        gaps = [top2_gap(l) for l in step_logits]

        # cross-check with HF generate (KV cache path)
        gc = model.generation_config
        gc.eos_token_id = None
        gc.bos_token_id = None
        gc.forced_eos_token_id = None
        gc.pad_token_id = 0
        kw = dict(do_sample=False, num_beams=1, max_new_tokens=N_NEW, min_new_tokens=N_NEW, eos_token_id=None,
                  pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        if kind == "seq2seq":
            kw["decoder_start_token_id"] = spec["config"].decoder_start_token_id
        g = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)
        seq = g.sequences[0, -N_NEW:].tolist()
        glog = torch.stack([x[0] for x in g.logits])
    info = {
        "min_greedy_logit_gap": round(min(gaps), 6),
        "generate_tokens_match": seq == new,
        "generate_max_abs_logit_diff": float((glog - logits).abs().max()),
    }
    return np.asarray(new, dtype=np.int64), npf(logits), info


def run_family(name: str, verbose: bool = True) -> dict:
    spec = SPECS[name]()
    seed0 = BASE_SEED[name]
    want_greedy = spec["kind"] in ("causal", "seq2seq") and spec.get("greedy", True)
    router_kind = "switch" if name == "switch" else spec.get("router")
    last_reason = None
    for attempt in range(MAX_TRIES):
        seed = seed0 + attempt
        model = build(name, spec, seed)
        inp = make_inputs(name, spec, seed)
        rec = RouterRecorder(model, router_kind, spec.get("top_k", 1)) if router_kind else None
        arrays, stats = forward_outputs(model, spec, inp, rec)
        events_forward = list(rec.events) if rec else []
        ok, reason = True, None
        ginfo = None
        if want_greedy:
            gids, glogits, ginfo = greedy(model, spec, inp)
            if ginfo["min_greedy_logit_gap"] < GREEDY_GAP_MIN:
                ok, reason = False, f"greedy gap {ginfo['min_greedy_logit_gap']}"
            elif len(set(gids.tolist())) < MIN_DISTINCT:
                ok, reason = False, f"degenerate greedy output ({len(set(gids.tolist()))} distinct tokens)"
            elif not ginfo["generate_tokens_match"]:
                ok, reason = False, "generate() tokens differ from no-cache loop"
            arrays["greedy_ids"] = gids
            arrays["greedy_logits"] = glogits
        if rec:
            rec.remove()
            mg = min(rec.gaps)
            stats["router_min_gap"] = round(mg, 6)
            stats["router_frac_gap_gt_1e-3"] = round(float(np.mean(np.asarray(rec.gaps) > 1e-3)), 4)
            stats["router_n_decisions"] = len(rec.gaps)
            if ok and mg < ROUTER_GAP_MIN:
                ok, reason = False, f"router gap {mg}"
            if ok and name == "switch" and not all(e["n_dropped"] > 0 for e in events_forward):
                ok, reason = False, "switch: want dropped tokens in both encoder and decoder sparse layers"
        if ok:
            break
        last_reason = reason
        if verbose:
            print(f"  [{name}] seed {seed} rejected: {reason}")
    else:
        raise RuntimeError(f"{name}: no acceptable seed in {MAX_TRIES} tries (last: {last_reason})")

    if ginfo is not None:
        assert ginfo["generate_max_abs_logit_diff"] < 1e-4, ginfo
        stats["greedy"] = ginfo
    if name == "switch":
        n_drop = sum(e["n_dropped"] for e in events_forward)
        assert n_drop > 0, "switch: expected at least one dropped (overflowing) token"
        stats["switch_routing"] = events_forward
        stats["switch_total_dropped_tokens"] = n_drop

    extra_notes = []
    if name == "mistral":
        diff = window_effect(model, spec, inp)
        stats["sliding_window_check"] = diff
        assert diff["max_abs_logit_diff_vs_no_window"] > 1e-3, diff
        assert diff["max_abs_diff_first_window_positions"] < 1e-5, diff
        extra_notes.append("verified: disabling the window changes logits (see stats.sliding_window_check)")

    # ---- save
    d = OUT_DIR / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model.save_pretrained(str(d))
    gen_cfg = d / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    np.savez_compressed(d / "io.npz", **inp, **arrays)

    # ---- round trip: reload with HF from the saved files and compare
    re_model = spec["cls"].from_pretrained(str(d), attn_implementation="eager").float().eval()
    re_arrays, _ = forward_outputs(re_model, spec, inp)
    rt = max(float(np.abs(re_arrays[k] - arrays[k]).max()) for k in re_arrays if k in arrays)
    assert rt < 1e-6, f"{name}: reload from fixture changes outputs by {rt}"

    # ---- stored / dropped tensors
    saved = tensor_table(d / "model.safetensors")
    in_memory = {n: list(p.shape) for n, p in model.state_dict(keep_vars=False).items()}
    dropped = sorted(k for k in model.all_tied_weights_keys) if hasattr(model, "all_tied_weights_keys") else []
    meta = {
        "family": name,
        "example": spec.get("example", name),
        "hf_class": spec["cls"].__name__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": seed,
        "seed_attempts": attempt + 1,
        "dtype": "float32",
        "attn_implementation": "eager",
        "init": {"weight_std": spec["std"], "embedding_std": spec["emb_std"], "overrides": spec.get("overrides", {}),
                 "post_scale": spec.get("post_scale", {}),
                 "norm_weight": f"1 + {NORM_W_STD}*N(0,1)", "norm_bias": f"{NORM_B_STD}*N(0,1)",
                 "linear_bias": f"{BIAS_STD}*N(0,1)"},
        "shapes": {k: list(v.shape) for k, v in {**inp, **arrays}.items()},
        "io_dtypes": {k: str(v.dtype) for k, v in {**inp, **arrays}.items()},
        "greedy": ({"n_new_tokens": N_NEW, "prompt": "input_ids[0] (full row, no padding)",
                    "greedy_ids": "new tokens only, shape (32,)",
                    "greedy_logits": "greedy_logits[s] = logits that chose greedy_ids[s]"} if want_greedy else None),
        "tied_weights_not_stored": dropped,
        "stored_tensors": saved,
        "in_memory_only_tensors": {k: v for k, v in in_memory.items() if k not in saved},
        "stored_only_tensors": sorted(k for k in saved if k not in in_memory),
        "stats": stats,
        "notes": spec["notes"] + extra_notes,
        "reload_roundtrip_max_abs_diff": rt,
    }
    if spec["kind"] == "seq2seq" and want_greedy:
        meta["greedy"]["decoder_start_token_id"] = spec["config"].decoder_start_token_id
        meta["greedy"]["prompt"] = "encoder input = input_ids[0] (attention all ones); decoder starts from " \
                                   "decoder_start_token_id, which is NOT included in greedy_ids"
    (d / "meta.json").write_text(dumps_compact(meta) + "\n")
    size = sum(f.stat().st_size for f in d.iterdir())
    if verbose:
        print(f"{name}: seed={seed} size={size / 1024:.1f} KiB stats={json.dumps({k: v for k, v in stats.items() if k != 'switch_routing'})}")
    return meta


def window_effect(model, spec: dict, inp: dict) -> dict:
    """Re-run mistral with the sliding window disabled and compare."""
    import copy

    cfg = copy.deepcopy(model.config)
    cfg.sliding_window = None
    m2 = spec["cls"](cfg).float().eval()
    m2.load_state_dict(model.state_dict())
    t = to_t(inp)
    W = model.config.sliding_window
    with torch.no_grad():
        a = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], use_cache=False).logits
        b = m2(input_ids=t["input_ids"], attention_mask=t["attention_mask"], use_cache=False).logits
    return {
        "window": W,
        "max_abs_logit_diff_vs_no_window": float((a - b).abs().max()),
        "max_abs_diff_first_window_positions": float((a[:, :W] - b[:, :W]).abs().max()),
    }


def main(argv=None) -> int:
    global torch, transformers
    import torch as _torch
    import transformers as _transformers

    torch, transformers = _torch, _transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("families", nargs="*", help=f"subset of {FAMILIES}")
    args = ap.parse_args(argv)
    fams = args.families or FAMILIES
    bad = [f for f in fams if f not in SPECS]
    if bad:
        ap.error(f"unknown families {bad}; choose from {FAMILIES}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for f in fams:
        run_family(f)
    total = sum(p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file())
    print(f"total fixture size: {total / 1024:.1f} KiB in {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
