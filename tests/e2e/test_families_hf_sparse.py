"""T5 (ReLU and gated-GELU), Switch, Mixtral and Longformer: each .arch file, loaded with a
tiny Hugging Face checkpoint through its `weights hf` mapping, reproduces the outputs
transformers computed (fixtures in tests/fixtures/hf, made by scripts/make_fixtures.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import archc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
INPUTS = {"input_ids": "ids", "attention_mask": "mask", "decoder_input_ids": "decoder_ids",
          "global_attention_mask": "global_mask"}
OUTPUTS = {"encoder": "encoder_last_hidden_state", "hidden": "last_hidden_state",
           "logits": "logits"}
FAMILIES = {"t5": 3, "t5_gated": 3, "switch": 3, "mixtral": 2, "longformer": 2}


def run_fixture(family: str, **config):
    model = archc.load(ROOT / "examples" / f"{family}.arch", weights=FIX / family,
                       config=config or None)
    io = np.load(FIX / family / "io.npz")
    inputs = {INPUTS[k]: io[k] for k in INPUTS if k in io and INPUTS[k] in model.inputs}
    if "decoder_ids" in inputs:   # HF's default decoder mask: every token real
        inputs["decoder_mask"] = np.ones_like(inputs["decoder_ids"])
    return model, model.run(inputs, executor="reference"), io


def max_diff(out, io, ours="logits") -> float:
    return float(np.max(np.abs(out[ours] - io[OUTPUTS[ours]])))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_matches_transformers(family):
    model, out, io = run_fixture(family)
    assert model.warnings == []
    compared = 0
    for ours, theirs in OUTPUTS.items():
        if ours in out and theirs in io:
            assert out[ours].shape == io[theirs].shape
            err = max_diff(out, io, ours)
            assert err <= 1e-4, f"{family} {ours}: max |diff| {err}"
            compared += 1
    assert compared == FAMILIES[family]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_stored_tensor_is_a_parameter(family):
    # no parameter is left to random init, and tied copies are the only skipped names
    meta = json.loads((FIX / family / "meta.json").read_text())
    model, _, _ = run_fixture(family)
    stored = meta["stored_tensors"]
    assert len(model.graph.params()) == len(stored)
    assert sum(int(np.prod(s)) for s in stored.values()) == model.graph.param_count()


def test_switch_capacity_overflow_is_what_makes_it_match():
    # the fixture drops 9 tokens (expert_capacity=3); without the limit the result differs
    _, out, io = run_fixture("switch", capacity=1000)
    assert max_diff(out, io) > 1e-3


def test_switch_dense_and_sparse_layers_alternate():
    model, _, _ = run_fixture("switch")
    names = {n.attrs["name"] for n in model.graph.params()}
    assert "encoder.layers.0.mlp.dense.up.weight" in names
    assert "encoder.layers.1.mlp.router.weight" in names
    assert not any(n.startswith("encoder.layers.0.mlp.router") for n in names)
    assert sum(1 for n in model.graph.nodes() if n.op == "moe") == 2


def test_longformer_global_tokens_and_window_matter():
    io = np.load(FIX / "longformer" / "io.npz")
    model, _, _ = run_fixture("longformer")
    no_global = model.run(ids=io["input_ids"], mask=io["attention_mask"], executor="reference",
                          global_mask=np.zeros_like(io["global_attention_mask"]))
    assert max_diff(no_global, io) > 1e-2
    _, wide, _ = run_fixture("longformer", window=24)
    assert max_diff(wide, io) > 1e-2


def test_t5_relative_bias_is_shared_not_per_layer():
    model, _, _ = run_fixture("t5")
    biases = [n for n in model.graph.nodes() if n.op == "relative_position_bias"]
    assert [n.attrs["bidirectional"] for n in biases] == [True, False]
    attn = [n for n in model.graph.nodes() if n.op == "attention"]
    # 2 encoder + 2 decoder self-attentions read a bias; the 2 cross-attentions do not
    assert sum(1 for n in attn if len(model.graph.args(n.id)) == 5) == 4
    assert all(n.attrs["scale"] == 1.0 for n in attn)
