"""Weights sections: transforms (transpose, split, per-head split, tie, skip), config.json
overrides, and every missing / unexpected / mis-shaped tensor in one error."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import archc
from archc.dsl.errors import ArchError

MODEL = """
config { d = 4  H = 2  n_layer = 2 }
model m(x: float[T, d]) {
    param wte: float[6, d] = normal(0.02)
    repeat n_layer as layers {
        layer attn {
            param q: float[d, d] = normal(0.02)
            param k: float[d, d] = normal(0.02)
            param b: float[d] = zeros
        }
    }
    param head: float[6, d] = normal(0.02)
    return y = x @ transpose(wte)
}
weights hf {
    config n_layer = "n_layer"
    "emb" -> wte, head
    "h.{i}.qk" -> split(transpose(layers.{i}.attn.q), transpose(layers.{i}.attn.k), axis=0, heads=H)
    "h.{i}.b" -> layers.{i}.attn.b
    "junk" -> skip
}
"""


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "m.arch"
    p.write_text(MODEL)
    return p


def tensors(n_layer=2):
    t = {"emb": np.arange(24, dtype=np.float32).reshape(6, 4),
         "junk": np.zeros(3, dtype=np.float32)}
    for i in range(n_layer):
        t[f"h.{i}.qk"] = (np.arange(32, dtype=np.float32) + 100 * i).reshape(8, 4)
        t[f"h.{i}.b"] = np.full(4, i, dtype=np.float32)
    return t


def test_mapping_transforms(model_file, tmp_path):
    save_file(tensors(), str(tmp_path / "w.safetensors"))
    m = archc.load(model_file, weights=tmp_path / "w.safetensors")
    p = m.params
    assert np.array_equal(p["wte"], p["head"])                        # one tensor, two params
    qk = tensors()["h.1.qk"]
    # heads=2: rows are [q_h0 (2), k_h0 (2), q_h1 (2), k_h1 (2)]; then (out, in) -> (in, out)
    assert np.array_equal(p["layers.1.attn.q"], np.concatenate([qk[0:2], qk[4:6]]).T)
    assert np.array_equal(p["layers.1.attn.k"], np.concatenate([qk[2:4], qk[6:8]]).T)
    assert np.array_equal(p["layers.0.attn.b"], np.zeros(4))


def test_all_problems_in_one_error(model_file, tmp_path):
    t = tensors()
    del t["h.1.b"]
    t["h.0.qk"] = np.zeros((6, 4), dtype=np.float32)
    t["h.5.b"] = np.zeros(4, dtype=np.float32)
    t["extra"] = np.zeros(2, dtype=np.float32)
    save_file(t, str(tmp_path / "w.safetensors"))
    with pytest.raises(ArchError) as e:
        archc.load(model_file, weights=tmp_path / "w.safetensors")
    msg = e.value.message
    assert "(6 problems)" in msg          # the mis-shaped qk also leaves q and k missing
    assert "mis-shaped: h.0.qk is [6, 4] in the file, split(transpose(layers.0.attn.q), " \
           "transpose(layers.0.attn.k), axis=0, heads=2) needs [8, 4]" in msg
    assert "unexpected: h.5.b [4] -> layers.5.attn.b, which the model does not have" in msg
    assert "unexpected: extra [2]" in msg
    assert "missing: layers.1.attn.b float[4] (checkpoint tensor h.1.b)" in msg
    assert "missing: layers.0.attn.q float[4, 4] (checkpoint tensor h.0.qk)" in msg


def test_hf_folder_config_sets_constants(model_file, tmp_path):
    save_file(tensors(3), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 3}))
    m = archc.load(model_file, weights=tmp_path)
    assert m.graph.meta["config"]["n_layer"] == 3 and "layers.2.attn.b" in m.params
    # an explicit override wins over config.json
    with pytest.raises(ArchError, match="unexpected: h.2.qk"):
        archc.load(model_file, weights=tmp_path, config={"n_layer": 2})


@pytest.mark.parametrize("rule,msg,hint", [
    ('"a" -> layers.{i}.attn.q', "`{i}` in `layers.{i}.attn.q` does not appear", None),
    ('"h.{i}.a" -> layers.{i}.atn.q', "no parameter of the model matches", "layers.{i}.attn.q"),
    ('"h.{i}.a" -> transpos(layers.{i}.attn.q)', "unknown weight transform `transpos`",
     "did you mean `transpose`?"),
    ('"h.{i}.a" -> split(layers.{i}.attn.q, layers.{i}.attn.k, axes=0)',
     "split() has no option `axes`", "did you mean `axis`?"),
    ('"a" -> skip, wte', "`skip` drops a tensor", None),
])
def test_mapping_errors_point_at_the_rule(tmp_path, rule, msg, hint):
    p = tmp_path / "m.arch"
    p.write_text(MODEL.replace('"junk" -> skip', rule))
    with pytest.raises(ArchError) as e:
        archc.load(p)
    assert msg in e.value.message
    assert e.value.span is not None and e.value.span.line == 20
    if hint:
        assert hint in e.value.hint
