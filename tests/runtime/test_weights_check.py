"""runtime/weights.check_weights: apply_weights's verdict from a checkpoint's headers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from archc.api import lower_with_checkpoint, weight_map
from archc.dsl.errors import ArchError
from archc.runtime.checkpoint import read_checkpoint
from archc.runtime.weights import apply_weights, check_weights

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"

MODEL = """
model m(x: float[T, 4]) {
    y = Linear(x, 3) as proj
    return y
}
"""


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "falcon", "mixtral", "t5"])
def test_a_fixture_checks_without_reading_a_tensor(family):
    graph, ckpt, _ = lower_with_checkpoint(ROOT / "examples" / f"{family}.arch",
                                           weights=FIX / family)
    n = check_weights(graph, ckpt, mapping=weight_map(graph, ckpt))
    assert n == len({p.attrs["name"] for p in graph.params() if "value" not in p.attrs})
    assert ckpt.tensors.reads == 0


@pytest.mark.parametrize("tensors", [
    {"proj.weight": np.zeros((4, 3), np.float32)},                                # missing
    {"proj.weight": np.zeros((3, 4), np.float32), "proj.bias": np.zeros(3, np.float32)},
    {"proj.weight": np.zeros((4, 3), np.float32), "proj.bias": np.zeros(3, np.float32),
     "extra": np.zeros(2, np.float32)},                                           # unexpected
])
def test_the_same_verdict_as_loading(arch_file, tmp_path, tensors):
    save_file(tensors, tmp_path / "w.safetensors")
    graph, ckpt, _ = lower_with_checkpoint(arch_file(MODEL), weights=tmp_path / "w.safetensors")
    with pytest.raises(ArchError) as loaded:
        apply_weights(graph, ckpt.tensors)
    with pytest.raises(ArchError) as checked:
        check_weights(graph, ckpt)
    assert checked.value.message == loaded.value.message
    assert checked.value.hint == loaded.value.hint
