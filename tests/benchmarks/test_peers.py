"""Smoke test of benchmarks/lm.py's peers on a tiny GPT-2: the ONNX exports (torch.onnx's
and archc's own) run by ONNX Runtime and the GGUF files run by llama.cpp give Hugging
Face's logits and greedy tokens.
Each part skips without its packages (the `bench` extra; torch never in CI), and the
llama.cpp part without llama.cpp's converter (`benchmarks/contenders.py fetch-converter`)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import contenders  # noqa: E402
import lm  # noqa: E402

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in contenders.HF_NEEDS),
    reason="needs torch and transformers (the bench extra)")


def _run(*args: str) -> None:
    out = subprocess.run([sys.executable, str(BENCH / "contenders.py"), *args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("bench") / "gpt2"
    _run("make-hf", "gpt2", str(d), "--tiny")
    return str(d)


@pytest.fixture(scope="module")
def hf(checkpoint):
    return contenders.make("hf-eager", "gpt2", checkpoint, 1, None)


def _agrees(kind: str, checkpoint: str, hf) -> None:
    """The logits check lm.py runs before timing, and greedy decoding, against HF eager."""
    why = contenders.missing(kind)
    if why:
        pytest.skip(why)
    _run("make", kind, checkpoint, "--family", "gpt2")
    peer = contenders.make(kind, "gpt2", checkpoint, 1, None, max_tokens=64)
    assert peer.vocab == hf.vocab
    ids = contenders.prompt_ids(hf.vocab, 24, seed=3)
    notes, dropped = lm.compare_logits({"hf-eager": hf.logits(ids), kind: peer.logits(ids)}, 24)
    assert dropped == [], notes
    want = hf.decode(ids, 8)[2]
    got = peer.decode(ids, 8)[2]
    if lm.LOGIT_TOL[kind] is not None:
        assert got == want
    assert peer.prefill(ids) > 0 and peer.prompt(ids) > 0


@pytest.mark.parametrize("kind", ["ort", "ort-archc"])
def test_ort_on_the_onnx_exports(kind, checkpoint, hf):
    _agrees(kind, checkpoint, hf)


@pytest.mark.parametrize("kind", ["llama.cpp-f32", "llama.cpp-q8_0"])
def test_llama_cpp_on_the_gguf_files(kind, checkpoint, hf):
    _agrees(kind, checkpoint, hf)
