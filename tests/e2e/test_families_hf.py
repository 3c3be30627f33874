"""Each dense family's .arch file, loaded with a tiny Hugging Face checkpoint through its
`weights hf` mapping, reproduces the outputs transformers computed (fixtures made by
scripts/make_fixtures.py). PaLM has no HF implementation: it is checked against an
independent NumPy transcription of the paper's block written here."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
INPUTS = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "types"}
OUTPUTS = {"hidden": "last_hidden_state", "logits": "logits", "pooled": "pooler_output"}
# llama_tied (`tie_word_embeddings`) and mistral_nowindow (`"sliding_window": null`) are
# variants: the family's own .arch, its config flag the other way
FAMILIES = ["gpt2", "bert", "llama", "mistral", "qwen2", "gpt_neox", "falcon", "llama_tied",
            "mistral_nowindow"]


def example_of(family: str) -> str:
    """The .arch a fixture runs on: its own family's, or the one a variant's meta names."""
    return json.loads((FIX / family / "meta.json").read_text()).get("example", family)


def run_fixture(family: str):
    model = archc.load(ROOT / "examples" / f"{example_of(family)}.arch", weights=FIX / family)
    io = np.load(FIX / family / "io.npz")
    inputs = {INPUTS[k]: io[k] for k in INPUTS if k in io and INPUTS[k] in model.inputs}
    return model, model.run(inputs, executor="reference"), io


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_transformers(family):
    model, out, io = run_fixture(family)
    assert model.warnings == []
    compared = 0
    for ours, theirs in OUTPUTS.items():
        if theirs in io:
            assert out[ours].shape == io[theirs].shape
            err = float(np.max(np.abs(out[ours] - io[theirs])))
            assert err <= 1e-4, f"{family} {ours}: max |diff| {err}"
            compared += 1
    assert compared == 2      # hidden states and logits (BERT: pooler)


def test_fixture_config_sets_the_model_size():
    # the fixture's config.json, through `config ... = "..."` lines, shrinks GPT-2 small
    model, _, _ = run_fixture("gpt2")
    cfg = model.graph.meta["config"]
    assert (cfg["n_layer"], cfg["d_model"], cfg["n_head"], cfg["vocab"]) == (2, 64, 4, 128)


def test_mistral_window_is_what_makes_it_match():
    # without the sliding window the same weights give different logits
    io = np.load(FIX / "mistral" / "io.npz")
    wide = archc.load(ROOT / "examples" / "mistral.arch", weights=FIX / "mistral",
                      config={"window": 1000})
    out = wide.run(ids=io["input_ids"], executor="reference")
    assert np.max(np.abs(out["logits"] - io["logits"])) > 1e-2


def test_llama_dump_param_total_equals_the_checkpoint():
    meta = json.loads((FIX / "llama" / "meta.json").read_text())
    tensors = meta["stored_tensors"]
    size = sum(math.prod(s) for s in tensors.values())
    sets = []
    for const, key in (("n_layer", "num_hidden_layers"), ("d_model", "hidden_size"),
                       ("n_head", "num_attention_heads"), ("n_kv_head", "num_key_value_heads"),
                       ("d_ff", "intermediate_size"), ("vocab", "vocab_size")):
        value = json.loads((FIX / "llama" / "config.json").read_text())[key]
        sets += ["--set", f"{const}={value}"]
    text = subprocess.run([sys.executable, "-m", "archc", "dump", "examples/llama.arch", *sets],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"parameters: {size:,}" in text
    model = archc.load(ROOT / "examples" / "llama.arch", weights=FIX / "llama")
    assert len(model.graph.params()) == len(tensors)


# ---- PaLM against an independent NumPy transcription -----------------------------------

def _ln(x, w, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w


def _rope(x, pos):                       # x: (B, H, T, D), half-split pairs
    D = x.shape[-1]
    inv = 1.0 / 10000 ** (np.arange(0, D, 2) / D)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * cos + rot * sin


def palm_numpy(p, ids, n_layer, n_head, head_dim, eps):
    x = p["wte"][ids].astype(np.float64)
    B, T, _ = x.shape
    pos = np.arange(T, dtype=np.float64)
    causal = np.tril(np.ones((T, T), dtype=bool))
    for i in range(n_layer):
        g = lambda n: p[f"layers.{i}.{n}"].astype(np.float64)  # noqa: E731
        h = _ln(x, g("ln.weight"), eps)
        q = (h @ g("attn.q.weight")).reshape(B, T, n_head, head_dim).transpose(0, 2, 1, 3)
        k = (h @ g("attn.k.weight"))[:, None]                 # one K/V head: (B, 1, T, D)
        v = (h @ g("attn.v.weight"))[:, None]
        q, k = _rope(q, pos), _rope(k, pos)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
        s = np.where(causal, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = (a / a.sum(-1, keepdims=True)) @ v                # (B, H, T, D)
        attn = a.transpose(0, 2, 1, 3).reshape(B, T, -1) @ g("attn.o.weight")
        gate = h @ g("mlp.gate.weight")
        mlp = (gate / (1 + np.exp(-gate)) * (h @ g("mlp.up.weight"))) @ g("mlp.down.weight")
        x = x + attn + mlp
    x = _ln(x, p["ln_f.weight"].astype(np.float64), eps)
    return x, x @ p["wte"].T.astype(np.float64)


def test_palm_matches_independent_numpy():
    cfg = dict(n_layer=2, d_model=32, n_head=4, head_dim=8, d_ff=48, vocab=50)
    model = archc.load(ROOT / "examples" / "palm.arch", seed=3, config=cfg)
    rng = np.random.default_rng(0)
    # perturb every parameter so a dropped norm weight or a swapped branch shows
    params = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32)
              for k, v in model.params.items()}
    model.params = params
    ids = rng.integers(0, 50, size=(2, 7))
    out = model.run(ids=ids, executor="reference")
    hidden, logits = palm_numpy(params, ids, 2, 4, 8, 1e-6)
    assert np.max(np.abs(out["hidden"] - hidden)) <= 1e-4
    assert np.max(np.abs(out["logits"] - logits)) <= 1e-4 * max(1.0, np.abs(logits).max())
    assert len([n for n in params if n.startswith("layers.0.")]) == 8   # ln, q, k, v, o, gate, up, down: no biases
