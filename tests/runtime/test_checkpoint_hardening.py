"""Checkpoint folders and weights sections that cannot be applied are clear errors naming
the file or the tensor: per-head splits that do not divide, split axes a tensor lacks,
oversized or oddly named index entries, narrowing that overflows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import archc
from archc.dsl.errors import ArchError
from archc.runtime import checkpoint
from archc.runtime.checkpoint import read_checkpoint
from archc.runtime.weights import _convert

# rows of h.{i}.qk are [q_h, k_h] per head (GPT-NeoX), stored (out, in) like nn.Linear
MODEL = """
config { d = 4  H = 2 }
model m(x: float[T, d]) {
    repeat 2 as layers {
        layer attn {
            param q: float[d, d] = normal(0.02)
            param k: float[d, d] = normal(0.02)
        }
    }
    return y = x
}
weights hf {
    "h.{i}.qk" -> split(transpose(layers.{i}.attn.q), transpose(layers.{i}.attn.k), axis=0, heads=H)
}
"""


def tensors() -> dict[str, np.ndarray]:
    return {f"h.{i}.qk": (np.arange(32, dtype=np.float32) + 100 * i).reshape(8, 4)
            for i in range(2)}


def load_with(tmp_path, model_text: str):
    (tmp_path / "m.arch").write_text(model_text)
    save_file(tensors(), str(tmp_path / "w.safetensors"))
    return archc.load(tmp_path / "m.arch", weights=tmp_path / "w.safetensors")


def test_heads_that_do_not_divide_name_the_tensor(tmp_path):
    with pytest.raises(ArchError) as e:
        load_with(tmp_path, MODEL.replace("heads=H", "heads=3"))
    msg = e.value.message
    assert "cannot split: h.0.qk [8, 4] -> split(transpose(layers.0.attn.q), " \
           "transpose(layers.0.attn.k), axis=0, heads=3): transpose(layers.0.attn.q) is " \
           "[4, 4], its size 4 along axis 0 is not a multiple of heads=3" in msg
    assert "cannot split: h.1.qk" in msg


@pytest.mark.parametrize("axis", [2, 5, -3])
def test_a_split_axis_the_tensor_lacks_is_an_error(tmp_path, axis):
    # `axis % ndim` would have cut a 2-d tensor along a wrapped-around axis
    with pytest.raises(ArchError, match=f"is \\[4, 4\\], it has no axis {axis}"):
        load_with(tmp_path, MODEL.replace("axis=0, heads=H", f"axis={axis}"))


def test_heads_that_divide_still_load(tmp_path):
    m = load_with(tmp_path, MODEL.replace("heads=H", "heads=1"))
    qk = tensors()["h.0.qk"]
    np.testing.assert_array_equal(m.params["layers.0.attn.q"], qk[:4].T)


def test_oversized_config_is_refused_before_reading(tmp_path, monkeypatch):
    save_file({"a": np.ones(1, np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"pad": "x" * 200}))
    monkeypatch.setattr(checkpoint, "MAX_JSON_BYTES", 100)
    with pytest.raises(ArchError, match="config.json is 211 bytes; archc reads checkpoint "
                                        "JSON files of at most 100 bytes"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("shard", ["", "../w.safetensors", ".hidden", "a\x00b"])
def test_index_naming_a_shard_outside_the_folder(tmp_path, shard):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(ArchError, match="names a shard outside the folder"):
        read_checkpoint(tmp_path)


def test_index_naming_a_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001.safetensors"}}))
    with pytest.raises(ArchError, match="not found: .*model-00001.safetensors"):
        read_checkpoint(tmp_path)


def test_narrowing_warnings_see_overflow_and_ignore_nan():
    warnings: list[str] = []
    out = _convert("w", np.array([1e300, 1.0]), "float32", warnings)
    assert np.isinf(out[0]) and warnings == [
        "weight w: float64 -> float32 loses precision (1 of 2 values overflow to infinity)"]
    warnings.clear()
    _convert("w", np.array([np.nan, np.inf, 1 / 3]), "float32", warnings)
    assert warnings == ["weight w: float64 -> float32 loses precision (max change 9.93e-09)"]
    warnings.clear()
    _convert("w", np.array([np.nan, 0.5]), "float32", warnings)
    assert warnings == []


def test_a_config_json_number_past_int64_names_its_key(tmp_path):
    (tmp_path / "m.arch").write_text(
        MODEL.replace("weights hf {", 'weights hf {\n    config d = "hidden"'))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file(tensors(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"hidden": 1' + "0" * 400 + "}")
    with pytest.raises(ArchError) as e:
        archc.load(tmp_path / "m.arch", weights=folder)
    assert e.value.message == ("config.json `hidden` = ...: a whole number of 401 digits "
                               "exceeds 9223372036854775807 (int64); it cannot set `d`")
