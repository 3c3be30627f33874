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
