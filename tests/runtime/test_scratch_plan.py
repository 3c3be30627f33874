"""Scratch is declared once, with its op (dsl/scratch.py), and the kernels take exactly
what the plan gave them: for every example model, through every attention path (a prompt,
a few rows, a cached prefill and decode, a sliding window's ring, cross-attention), each
program's step builders take every scratch buffer the plan placed and ask for none it did
not (`Program.temp` refuses those), and nothing is allocated off the plan."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.api import executor
from archc.runtime import executor as executor_mod
from archc.runtime import seq2seq
from archc.runtime.generate import generate, session_for

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
HF = sorted(p.name for p in FIX.iterdir() if (p / "io.npz").is_file())
DECODERS = {"gpt2", "llama", "llama_tied", "mistral", "mistral_nowindow", "gpt_neox", "falcon",
            "mixtral", "qwen2", "t5", "t5_gated", "switch", "palm"}
SMALL = {   # examples with no Hugging Face fixture, at a tiny size
    "palm": dict(n_layer=1, n_head=2, head_dim=8, d_model=16, vocab=32),
}
INPUTS = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "types",
          "global_attention_mask": "global_mask", "decoder_input_ids": "decoder_ids",
          "decoder_attention_mask": "decoder_mask"}


@pytest.fixture
def programs(monkeypatch):
    built = []
    init = executor_mod.Program.__init__

    def record(self, *a, **k):
        init(self, *a, **k)
        built.append(self)
    monkeypatch.setattr(executor_mod.Program, "__init__", record)
    return built


def _load(family):
    if family in SMALL:
        return archc.load(ROOT / "examples" / f"{family}.arch", seed=1, config=SMALL[family]), \
            {"ids": np.array([[1, 2, 3, 4, 5, 6, 7]])}
    example = json.loads((FIX / family / "meta.json").read_text()).get("example", family)
    model = archc.load(ROOT / "examples" / f"{example}.arch", weights=FIX / family)
    io = np.load(FIX / family / "io.npz")
    inputs = {INPUTS[k]: io[k] for k in INPUTS if k in io and INPUTS[k] in model.inputs}
    for name in model.inputs:                 # masks the fixture leaves out: every token real
        ids = name.replace("mask", "ids")
        if name not in inputs and ids in inputs:
            inputs[name] = np.ones_like(inputs[ids])
    return model, inputs


@pytest.mark.parametrize("family", HF + sorted(SMALL))
def test_every_program_takes_exactly_its_planned_scratch(family, programs):
    model, inputs = _load(family)
    ex = executor(model.graph, model.params)
    ex.run(inputs)                                                      # the fixture's T
    short = {k: v[:, :3] if v.ndim == 2 else v for k, v in inputs.items()}
    if not any(v.ndim == 2 and v.shape[1] < 3 for v in inputs.values()):
        ex.run(short)                                                   # a few rows
    if family in DECODERS:
        ids = inputs["ids"][:1]
        generate(ex, ids, 3)                  # a cached prompt (and a ring), then decode steps
        generate(ex, ids[:, :2], 2)           # a prompt of a few rows into the cache
    assert programs
    for prog in programs:
        assert not prog.unplanned, family
        assert prog.unused_scratch() == set(), family


def test_the_families_cover_every_attention_path(monkeypatch):
    from archc.runtime.steps import attention
    taken = set()
    for name, fn in list(attention.PATHS.items()):
        monkeypatch.setitem(attention.PATHS, name,
                            lambda P, a, name=name, fn=fn: (taken.add(name), fn(P, a)))
    for family in ("gpt2", "mistral", "t5"):
        model, inputs = _load(family)
        ex = executor(model.graph, model.params)
        ex.run(inputs)
        ex.run({k: v[:, :3] for k, v in inputs.items()})
        generate(ex, inputs["ids"][:1], 3)
        generate(ex, inputs["ids"][:1, :2], 2)
    # a decoder prompt of several tokens over the encoder's cached keys (a forced prefix)
    ids = inputs["ids"][:1]
    dims = {"B": 1, "T": ids.shape[1]}
    dec = seq2seq.for_executor(ex, ["ids", "mask"], "B").encode(
        {"ids": ids, "mask": np.ones_like(ids)}, dims)
    sess = session_for(dec, 1, 8, length="S", dims=dims, ones=("decoder_mask",))
    prefix = np.zeros((1, 6), np.int64)
    sess.forward({"decoder_ids": prefix, "decoder_mask": np.ones_like(prefix)}, {"S": 6})
    assert taken == set(attention.PATHS)
