"""The README's quick start, from a checkpoint folder to an answer, on the qwen2 fixture with
a small tokenizer beside it: import, check, generate text."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf" / "qwen2"
WORDS = ("the cat sat on a mat and the dog ran in a park while my bird sang to the warm "
         "sun by the cold lake").split()


def archc_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_decoder_quick_start(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers
    folder = tmp_path / "Qwen2-tiny"
    shutil.copytree(FIX, folder)
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(
        vocab_size=128, special_tokens=["[UNK]"]))
    tok.save(str(folder / "tokenizer.json"))

    arch = tmp_path / "qwen2.arch"
    proc = archc_cli("import", folder, "-o", arch)
    assert proc.returncode == 0, proc.stderr
    proc = archc_cli("check", arch, "--weights", folder)
    assert proc.returncode == 0 and "fill 27 of 27 parameters" in proc.stdout, proc.stderr
    prompt = "the cat sat on"
    proc = archc_cli("generate", arch, "--weights", folder, "--tokenizer",
                     folder / "tokenizer.json", "--prompt", prompt, "-n", "6")
    assert proc.returncode == 0, proc.stderr
    ids = tok.encode(prompt).ids
    want = archc.load(arch, weights=folder).generate(np.array([ids]), 6).ids[0]
    assert proc.stdout == tok.decode(ids + [int(t) for t in want]) + "\n"
    assert proc.stderr.splitlines()[-1].startswith("6 tokens: load ")
