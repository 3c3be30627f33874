"""The worked FFN example: the numbers the issue asks for, through the real CLI."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import archc
from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
FFN = ROOT / "examples" / "ffn.arch"
X = ROOT / "examples" / "ffn_input.npy"
EXPECTED = np.array([[1.70355949, 4.58680433, 7.47004916, 10.353294],
                     [1.56070622, 4.19905974, 6.83741326, 9.47576678],
                     [2.19865128, 5.93062489, 9.66259851, 13.39457212]])


def test_input_is_the_layernormed_x():
    x = np.load(X, allow_pickle=False)
    np.testing.assert_allclose(x, [[-1.03927142, 0.13949668, 1.56694829, -0.66717355],
                                   [-0.97825977, 0.09190721, 1.59246789, -0.70611533],
                                   [-1.10306273, 0.02854757, 1.58729045, -0.51277529]],
                               atol=1e-12)


def test_api_matches_to_1e6():
    out = archc.load(FFN).run(x=np.load(X))
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], EXPECTED, atol=1e-6, rtol=0)


def test_weights_are_the_worked_ones():
    params = archc.load(FFN).params
    w1 = np.arange(1, 25).reshape(4, 6) / 10
    np.testing.assert_allclose(params["hidden.W1"], w1, atol=1e-15)
    np.testing.assert_allclose(params["output.W2"], w1.T, atol=1e-15)
    np.testing.assert_allclose(params["hidden.b1"], np.arange(1, 7) / 100)
    np.testing.assert_allclose(params["output.b2"], np.arange(1, 5) / 100)


def printed_matrix(text: str) -> np.ndarray:
    body = text[text.index("[["):text.rindex("]]") + 2]
    rows = re.findall(r"\[([^\[\]]+)\]", body)
    return np.array([[float(v) for v in r.split()] for r in rows])


def test_cli_prints_the_result(capsys):
    assert main(["run", str(FFN), "--input", str(X)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("y: float64[3, 4]\n")
    np.testing.assert_allclose(printed_matrix(out), EXPECTED, atol=1e-6, rtol=0)


def test_real_entry_point_runs_from_a_fresh_process(tmp_path):
    """The installed console script, as a user types it (proves the packaging too)."""
    out_file = tmp_path / "y.npy"
    proc = subprocess.run([sys.executable, "-m", "archc", "run", str(FFN), "--input", str(X),
                           "--output", str(out_file)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(printed_matrix(proc.stdout), EXPECTED, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.load(out_file), EXPECTED, atol=1e-6, rtol=0)
