"""dsl/layers/functions.py: `sum`, `mean` (masked) and `ones_like`, written in terms of ops,
checked against NumPy through both executors; and `include ... with weights`."""
from __future__ import annotations

import numpy as np
import pytest

import archc
from archc.dsl.errors import ArchError
from archc.dsl.lower import lower

POOL = """
model m(x: float[B, T, 4], mask: int[B, T]) {
    a = mean(x, axis=1, mask=mask)
    s = sum(x, axis=1, mask=mask, keepdims=true)
    u = mean(x, axis=1)
    c = mean(x)
    o = ones_like(mask)
    f = ones_like(x, dtype="float64")
    n = x / sqrt(sum(x * x, axis=-1, keepdims=true))
    return a, s, u, c, o, f, n
}
"""


@pytest.mark.parametrize("executor", ["reference", "numba"])
def test_reductions_match_numpy(arch_file, executor):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])   # a row keeps none
    w = mask[..., None].astype(np.float64)
    want = dict(a=(x * w).sum(1) / np.maximum(w.sum(1), 1e-9), s=(x * w).sum(1, keepdims=True),
                u=x.mean(1), c=x.mean(-1), o=np.ones_like(mask), f=np.ones(x.shape),
                n=x / np.linalg.norm(x, axis=-1, keepdims=True))
    out = archc.load(arch_file(POOL)).run(x=x, mask=mask, executor=executor)
    for k, v in want.items():
        assert out[k].shape == v.shape, k
        assert out[k].dtype == {"o": np.int64, "f": np.float64}.get(k, np.float32), k
        assert np.max(np.abs(out[k] - v)) < 1e-6, k
    assert out["a"][2].tolist() == [0.0] * 4          # no kept position: 0, not NaN


@pytest.mark.parametrize("call, message", [
    ("mean(x, axis=3, mask=mask)", "mean: `axis` must be a whole number in [-3, 2] for a "
                                   "rank-3 tensor, got 3"),
    ("mean(x, axis=2, mask=mask)", "mean: `mask` must have the shape of x up to the axis, "
                                   "[B, T, 4], got int[B, T]"),
    ("sum(mask)", "sum: needs a float tensor, got int[B, T]"),
    ('ones_like(x, dtype="bool")', "ones_like: dtype must be float32, float64 or int64, got "
                                   "'bool'"),
    ("mean(x, axis=1) as pool", "`as` names a layer or block call; `mean` is a function with "
                                "no parameters"),
    ("mean(x, axes=1)", "mean() has no argument `axes`"),
])
def test_function_errors(arch_file, call, message):
    path = arch_file(f"model m(x: float[B, T, 4], mask: int[B, T]) {{\n    y = {call}\n"
                     "    return y\n}\n")
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == message
    assert e.value.span.line == 2


LIB = """
config { d = 4 }
block Enc(x) {
    return Linear(x, d) as enc
}
model lib(x: float[T, d]) {
    y = Enc(x)
    return Linear(y, 2) as head
}
weights hf {
    "enc.w" -> enc.weight
    "enc.b" -> enc.bias
    "head.w" -> head.weight
    "head.b" -> head.bias
}
"""


def test_include_brings_weights_only_when_asked(tmp_path):
    (tmp_path / "lib.arch").write_text(LIB)
    plain = tmp_path / "plain.arch"
    plain.write_text('include "lib.arch"\nmodel m(x: float[T, d]) { return Enc(x) }\n')
    assert lower(plain).meta["weight_maps"] == {}
    asked = tmp_path / "asked.arch"
    asked.write_text('include "lib.arch" with weights\n'
                     'model m(x: float[T, d]) { return Enc(x) }\n')
    wmap = lower(asked).meta["weight_maps"]["hf"]
    # the included mapping is used in part: the head this model lacks drops its tensors
    kinds = {r.key: type(r.dests[0]).__name__ for r in wmap.rules}
    assert kinds == {"enc.w": "Param", "enc.b": "Param", "head.w": "Skip", "head.b": "Skip"}


def test_a_main_file_mapping_still_checks_every_rule(tmp_path):
    path = tmp_path / "m.arch"
    path.write_text(LIB.replace("model lib(x: float[T, d]) {\n    y = Enc(x)\n"
                                "    return Linear(y, 2) as head\n}",
                                "model lib(x: float[T, d]) { return Enc(x) }"))
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == "no parameter of the model matches `head.weight`"


def test_a_diamond_brings_the_weights_one_path_asks_for(tmp_path):
    # main -> lib (no weights) and main -> mid -> lib with weights: lib's section comes in
    (tmp_path / "lib.arch").write_text(LIB)
    (tmp_path / "mid.arch").write_text('include "lib.arch" with weights\n')
    for first, second in (("lib", "mid"), ("mid", "lib")):
        main = tmp_path / f"main_{first}.arch"
        main.write_text(f'include "{first}.arch"\ninclude "{second}.arch"\n'
                        'model m(x: float[T, d]) { return Enc(x) }\n')
        assert lower(main).meta["weight_maps"] == {}          # mid itself was not asked
    main = tmp_path / "asked.arch"
    main.write_text('include "lib.arch"\ninclude "mid.arch" with weights\n'
                    'model m(x: float[T, d]) { return Enc(x) }\n')
    assert list(lower(main).meta["weight_maps"]) == ["hf"]
