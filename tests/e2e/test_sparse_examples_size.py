"""At their real sizes the T5 and Mixtral examples have exactly the published parameter
counts (as Hugging Face counts them: tied weights once), so every layer is there."""
from __future__ import annotations

from pathlib import Path

import pytest

from archc.dsl.lower import lower

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("family, count", [
    ("t5", 222_903_552),            # t5-base
    ("t5_gated", 247_577_856),      # google/t5-v1_1-base
    ("mixtral", 46_702_792_704),    # Mixtral-8x7B
])
def test_real_size_parameter_count(family, count):
    assert lower(ROOT / "examples" / f"{family}.arch").param_count() == count


def test_examples_build_at_real_size():
    for family in ("switch", "longformer", "retro", "memory"):
        g = lower(ROOT / "examples" / f"{family}.arch")
        assert g.param_count() > 100_000_000
