"""The dense family examples check at their real size and run with random weights
(`--seed`) at a tiny size set with `--set`; dropout applies only with `--train`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "gpt2": dict(n_layer=1, n_head=2, d_model=16, vocab=32, n_ctx=16),
    "bert": dict(n_layer=1, n_head=2, d_model=16, d_ff=32, vocab=32, n_ctx=16),
    "llama": dict(n_layer=1, n_head=4, n_kv_head=2, d_model=16, head_dim=4, d_ff=24, vocab=32),
    "mistral": dict(n_layer=1, n_head=4, n_kv_head=2, d_model=16, head_dim=4, d_ff=24,
                    vocab=32, window=2),
    "gpt_neox": dict(n_layer=1, n_head=2, d_model=16, vocab=32),
    "falcon": dict(n_layer=1, n_head=2, d_model=16, vocab=32),
    "palm": dict(n_layer=1, n_head=2, head_dim=8, d_model=16, vocab=32),
    "minilm_embed": dict(n_layer=1, n_head=2, d_model=16, d_ff=32, vocab=32, n_ctx=16),
    "qwen2": dict(n_layer=1, n_head=4, n_kv_head=2, d_model=16, head_dim=4, d_ff=24, vocab=32),
}
REAL = {"gpt2": "124,439,808", "bert": "109,482,240", "llama": "1,100,048,384",
        "gpt_neox": "162,322,944", "falcon": "6,921,720,704", "mistral": "7,241,732,096",
        "qwen2": "7,615,616,512"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "archc", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.parametrize("family", sorted(TINY))
def test_example_checks_and_runs_tiny(family, tmp_path):
    r = cli("check", f"examples/{family}.arch")
    assert r.returncode == 0, r.stderr
    if family in REAL:
        assert f"{REAL[family]} parameters" in r.stdout
    ids = np.array([[1, 2, 3, 4, 5]])
    inputs = {"ids": ids, "mask": np.ones_like(ids), "types": np.zeros_like(ids)}
    model = archc.load(ROOT / "examples" / f"{family}.arch", seed=1, config=TINY[family])
    out = model.run({k: v for k, v in inputs.items() if k in model.inputs},
                    executor="reference")
    assert all(np.isfinite(v).all() for v in out.values())
    if "logits" in out:
        assert out["logits"].shape == (1, 5, 32)


def test_cli_train_applies_dropout_deterministically(tmp_path):
    src = tmp_path / "d.arch"
    src.write_text("model m(x: float[T, 8]) {\n    return y = dropout(x, rate=0.5)\n}\n")
    np.save(tmp_path / "x.npy", np.ones((4, 8), dtype=np.float32))
    outs = []
    for extra in ([], ["--train", "--seed", "3"], ["--train", "--seed", "3"],
                  ["--train", "--seed", "4"]):
        r = cli("run", str(src), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                *extra)
        assert r.returncode == 0, r.stderr
        outs.append(np.load(tmp_path / "y.npy"))
    assert np.all(outs[0] == 1)                              # inference: identity
    assert set(np.unique(outs[1])) == {0.0, 2.0}             # inverted scaling
    assert np.array_equal(outs[1], outs[2]) and not np.array_equal(outs[1], outs[3])
    r = cli("dump", str(src))
    assert "rate=0.5" in r.stdout


def test_cli_set_unknown_constant_is_an_error():
    r = cli("check", "examples/gpt2.arch", "--set", "n_layr=2")
    assert r.returncode == 2
    assert "no config constant `n_layr`" in r.stderr and "did you mean `n_layer`?" in r.stderr
