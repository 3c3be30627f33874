"""Shared test helpers."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

# Kernels are not measured during tests (runtime/tune.py): every run takes the same defaults,
# and no test pays for a measurement; tests/runtime/test_tune.py measures on purpose.
os.environ.setdefault("ARCHC_TUNE", "0")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def arch_file(tmp_path):
    """Write .arch source (dedented) to a temp file and return its path."""
    def write(source: str, name: str = "model.arch") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source).lstrip("\n"))
        return path
    return write


@pytest.fixture(scope="session")
def bert_tokenizer():
    """Write a word-level tokenizer.json with BERT's [CLS] ... [SEP] template, its ids below
    the tiny BERT fixture's 128, and return its vocabulary: `bert_tokenizer(path)`."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, processors

    def make(path: Path) -> dict[str, int]:
        vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + TINY_WORDS)}
        tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        tok.save(str(path))
        return vocab
    return make


TINY_WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park"]
