"""Every unknown name gets its "did you mean", whatever follows it (`as`, arguments, keyword
attributes, an index), and a hint names what fixes it: through the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"

MODEL = """config {{
    d = 4
    n_layer = 2
}}
block Layer(x) {{ return relu(x) }}
model m(x: float[T, d], mask: int[T]) {{
    y = {expr}
    return y
}}
"""


def archc(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)


def errors(r: subprocess.CompletedProcess) -> list[str]:
    """The error's lines without the quoted source and caret."""
    assert r.returncode == 2 and "Traceback" not in r.stderr
    return [line for line in r.stderr.splitlines() if not line.startswith("    ")]


@pytest.mark.parametrize("expr, lines", [
    ("Atention(x, 2) as attn", ["unknown layer or block `Atention`",
                                "did you mean `Attention`?"]),
    ("Layr(x) as l", ["unknown layer or block `Layr`", "did you mean `Layer`?"]),
    ("rleu(x) as r", ["unknown layer or block `rleu`",
                      "did you mean `relu`? (it has no parameters: drop `as r`)"]),
    ("Mean(x, axis=0) as q", ["unknown layer or block `Mean`",
                              "did you mean `mean`? (it has no parameters: drop `as q`)"]),
    ("rleu(x)", ["unknown op or block `rleu`", "did you mean `relu`?"]),
    ("xx[0]", ["unknown name `xx`", "did you mean `x`?"]),
    ("softmax(x, axis=n_layr)", ["unknown name `n_layr`", "did you mean `n_layer`?"]),
    ("softmax(x, axs=-1)", ["softmax() has no argument `axs`", "did you mean `axis`?"]),
    ("mean(x, axs=0)", ["mean() has no argument `axs`", "did you mean `axis`?"]),
    ("LayerNorm(x, epsilon=1e-6) as ln", ["LayerNorm() has no argument `epsilon`",
                                          "did you mean `eps`?"]),
    ('cast(x, "flaot32")', ["cast: unknown dtype 'flaot32'; expected float32, float64, int64 "
                            "or bool", "did you mean `float32`?"]),
])
def test_unknown_names_in_the_model(tmp_path, expr, lines):
    (tmp_path / "m.arch").write_text(MODEL.format(expr=expr))
    out = errors(archc("check", "m.arch", cwd=tmp_path))
    assert out[0].split(": error: ")[1] == lines[0]
    assert f"hint: {lines[1]}" in out


@pytest.mark.parametrize("args, lines", [
    (["dump", "examples/gpt2.arch", "-O", "--no-fuse_fnn"],
     ["archc dump: error: unrecognized arguments: --no-fuse_fnn",
      "hint: did you mean `--no-fuse_ffn`?"]),
    (["check", "examples/gpt2.arch", "--sett", "n_layer=2"],
     ["archc check: error: unrecognized arguments: --sett n_layer=2",
      "hint: did you mean `--set`?"]),
    (["dump", "examples/gpt2.arch", "--dim", "TT=4"],
     ["error: --dim TT=4: the model has no symbolic size `TT`",
      "hint: did you mean `--dim T=4`? (its sizes: B, T)"]),
    (["check", "examples/gpt2.arch", "--set", "n_layr=2"],
     ["error: cannot set `n_layr`: examples/gpt2.arch has no config constant `n_layr`",
      "hint: did you mean `n_layer`?"]),
    (["check", "examples/gpt2.arch", "--set", "vocab=abc"],
     ["error: cannot set `vocab` to the string 'abc': it is a number (its default is 50257)",
      "note: `vocab` is defined at examples/gpt2.arch:10:5",
      "hint: give a number, e.g. --set vocab=50257"]),
    (["check", "examples/gpt2.arch", "--set", "tied=1"],
     ["error: cannot set `tied` to the size 1: it is true or false (its default is true)",
      "note: `tied` is defined at examples/gpt2.arch:13:5",
      "hint: give true or false, e.g. --set tied=true"]),
])
def test_unknown_options_and_values(args, lines):
    out = errors(archc(*args))
    assert out[-len(lines):] == lines


def test_another_familys_checkpoint_is_named(tmp_path):
    np.save(tmp_path / "ids.npy", np.zeros((1, 3), np.int64))
    out = errors(archc("run", "examples/gpt2.arch", "--weights", FIX / "llama",
                       "--input", f"ids={tmp_path / 'ids.npy'}"))
    assert out == [
        f"error: weights {FIX / 'llama'}: the rules of `weights hf` match only 1 of its 21 "
        "tensors",
        "note: its tensors are named like `model.embed_tokens.weight`",
        "note: its config.json says model_type `llama`",
        "hint: is it a checkpoint of another family? (--weights-map NAME chooses another "
        "weights section)"]
