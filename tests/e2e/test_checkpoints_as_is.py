"""Checkpoints run as they are, through the CLI: a tied head chosen by `tie_word_embeddings`,
`"sliding_window": null`, one T5 file for tied and untied heads, base-model names without
the task head's prefix (and the other way round), a config value the .arch does not compute
(an error naming the key), and a checkpoint no rule matches (said so, not a list of
hundreds). `--allow-missing` is never offered where it would randomise a trained part."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"


def archc(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def run(tmp_path, arch: str, weights, inputs: dict, *more) -> dict:
    """`archc run` with `inputs` saved as .npy files; the outputs read back."""
    flags = []
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
        flags += ["-i", f"{name}={tmp_path / f'{name}.npy'}"]
    r = archc("run", f"examples/{arch}.arch", "--weights", weights, *flags, *more,
              "-o", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "out.npz") as z:
        return dict(z)


def variant(tmp_path, family: str, rename, config: dict | None = None) -> Path:
    """A copy of a fixture with its tensors renamed (None drops one) and config.json
    changed: a base model's checkpoint, another head's."""
    d = tmp_path / f"{family}_variant"
    d.mkdir()
    tensors = {rename(k): v for k, v in load_file(FIX / family / "model.safetensors").items()}
    save_file({k: v for k, v in tensors.items() if k is not None}, d / "model.safetensors")
    cfg = json.loads((FIX / family / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **(config or {})}))
    return d


def close(a, b, tol=1e-4):
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= tol


def test_a_tied_llama_runs_on_llama_arch(tmp_path):
    io = np.load(FIX / "llama_tied" / "io.npz")
    out = run(tmp_path, "llama", FIX / "llama_tied", {"ids": io["input_ids"]})
    assert close(out["logits"], io["logits"])


def test_a_null_sliding_window_is_no_window(tmp_path):
    io = np.load(FIX / "mistral_nowindow" / "io.npz")
    out = run(tmp_path, "mistral", FIX / "mistral_nowindow", {"ids": io["input_ids"]})
    assert close(out["logits"], io["logits"])


@pytest.mark.parametrize("family", ["t5", "t5_gated"])
def test_one_t5_file_for_tied_and_untied_heads(tmp_path, family):
    io = np.load(FIX / family / "io.npz")
    out = run(tmp_path, "t5", FIX / family, {
        "ids": io["input_ids"], "mask": io["attention_mask"],
        "decoder_ids": io["decoder_input_ids"],
        "decoder_mask": np.ones_like(io["decoder_input_ids"])})
    assert close(out["logits"], io["logits"])


def test_a_base_model_checkpoint_lacks_the_prefix(tmp_path):
    # GPT2Model's names: `h.0.attn...` for GPT2LMHeadModel's `transformer.h.0.attn...`;
    # its head is the tied embedding, so the logits are still there
    base = variant(tmp_path, "gpt2", lambda k: k.removeprefix("transformer."),
                   {"architectures": ["GPT2Model"]})
    io = np.load(FIX / "gpt2" / "io.npz")
    out = run(tmp_path, "gpt2", base, {"ids": io["input_ids"]})
    assert close(out["logits"], io["logits"]) and close(out["hidden"], io["last_hidden_state"])


def test_a_task_head_checkpoint_adds_the_prefix(tmp_path):
    # a BERT inside a task-head model is stored under `bert.`
    wrapped = variant(tmp_path, "bert", lambda k: "bert." + k)
    io = np.load(FIX / "bert" / "io.npz")
    out = run(tmp_path, "bert", wrapped, {"ids": io["input_ids"], "mask": io["attention_mask"],
                                          "types": io["token_type_ids"]})
    assert close(out["hidden"], io["last_hidden_state"])


def test_a_missing_trained_head_is_never_offered_allow_missing(tmp_path):
    # LlamaModel: no `model.` prefix and no lm_head; untied, so the logits cannot be made
    base = variant(tmp_path, "llama", lambda k: None if k == "lm_head.weight"
                   else k.removeprefix("model."), {"architectures": ["LlamaModel"]})
    np.save(tmp_path / "ids.npy", np.zeros((1, 3), np.int64))
    r = archc("run", "examples/llama.arch", "--weights", base, "-i", tmp_path / "ids.npy")
    assert r.returncode == 2
    assert "missing: lm_head.weight float[64, 128] (checkpoint tensor lm_head.weight)" in r.stderr
    assert "allow-missing" not in r.stderr
    assert "tie_word_embeddings" in r.stderr and "Traceback" not in r.stderr
    assert "note: its config.json says architectures LlamaModel" in r.stderr


def test_a_config_value_the_arch_does_not_compute_names_the_key(tmp_path):
    scaled = variant(tmp_path, "llama", lambda k: k,
                     {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    np.save(tmp_path / "ids.npy", np.zeros((1, 3), np.int64))
    r = archc("run", "examples/llama.arch", "--weights", scaled, "-i", tmp_path / "ids.npy")
    assert r.returncode == 2
    first = r.stderr.splitlines()[0]
    assert first.startswith("examples/llama.arch:")
    assert first.endswith('error: config.json sets `rope_scaling` to {"rope_type": "llama3", '
                          '"factor": 8.0}; this model computes only null')
    assert '    require "rope_scaling" == none' in r.stderr


def test_a_checkpoint_no_rule_matches_is_said_so(tmp_path):
    np.save(tmp_path / "ids.npy", np.zeros((1, 3), np.int64))
    r = archc("run", "examples/gpt2.arch", "--weights", FIX / "t5", "-i", tmp_path / "ids.npy")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == (f"error: weights {FIX / 't5'}: no rule of `weights hf` matches any of "
                        "its 47 tensors, so none was loaded and its config.json was not applied")
    assert "note: its config.json says model_type `t5`" in lines
    assert len(lines) < 8
