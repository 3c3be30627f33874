"""The Python API and the command line share their defaults: compiled kernels unless the
reference executor is asked for."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"


def test_run_defaults_to_the_compiled_executor_like_the_cli(tmp_path):
    io = np.load(FIX / "gpt2" / "io.npz")
    model = archc.load(ROOT / "examples" / "gpt2.arch", weights=FIX / "gpt2")
    out = model.run(ids=io["input_ids"])
    assert getattr(model, "_executor", None) is not None        # compiled() was used
    ref = model.run(ids=io["input_ids"], executor="reference")
    np.testing.assert_allclose(out["logits"], ref["logits"], rtol=1e-4, atol=1e-5)
    np.save(tmp_path / "ids.npy", io["input_ids"])
    proc = subprocess.run([sys.executable, "-m", "archc", "run", str(ROOT / "examples" /
                           "gpt2.arch"), "-w", str(FIX / "gpt2"), "-i", str(tmp_path /
                           "ids.npy"), "-o", str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["logits"], out["logits"])   # the same kernels


def test_train_and_unknown_executors():
    model = archc.load(ROOT / "examples" / "ffn.arch")
    x = np.load(ROOT / "examples" / "ffn_input.npy")
    np.testing.assert_array_equal(model.run(x=x, train=True)["y"],
                                  model.run(x=x, executor="reference")["y"])  # no dropout
    with pytest.raises(archc.ArchError, match="unknown executor 'torch'"):
        model.run(x=x, executor="torch")
