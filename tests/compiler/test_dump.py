"""`archc dump`: layers grouped by scope, collapsed repeat stacks, stable JSON and DOT."""
from __future__ import annotations

import json
import re

from archc.compiler.dump import dump_dot, dump_json, dump_text, layer_groups
from archc.dsl.lower import lower

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

STACK = """
config { n = 4
         d = 8 }
block Layer(x: float[B, T, d]) {
    return x + Linear(gelu(Linear(LayerNorm(x) as ln, 2 * d) as up), d) as down
}
model stack(ids: int[B, T]) {
    x = Embedding(ids, 16, d) as wte
    repeat n as layers { x = Layer(x) }
    return LayerNorm(x) as ln_f
}
"""


def test_ffn_dump_shows_two_layers_and_their_weights():
    text = dump_text(lower(EXAMPLES / "ffn.arch"))
    assert "layer hidden    params 30" in text
    assert "layer output    params 28" in text
    hidden = text[text.index("layer hidden"):text.index("layer output")]
    assert "W1" in hidden and "b1" in hidden and "relu(add)" in hidden
    assert "W2" not in hidden
    assert "layers: 2  (hidden, output)" in text
    assert "parameters: 58" in text


def test_flops_symbolic_then_numeric():
    g = lower(EXAMPLES / "ffn.arch")
    assert "FLOPs: 112*T" in dump_text(g)
    # 2*3*4*6 + 3*6 + 3*6 (matmul, bias, relu) + 2*3*6*4 + 3*4
    assert "FLOPs: 112*T = 336" in dump_text(g, bindings={"T": 3})


def test_repeat_collapsed_expanded_and_single_layer(arch_file):
    g = lower(arch_file(STACK))
    collapsed = dump_text(g)
    assert "layers.0 .. layers.3   (repeat x4, one shown)" in collapsed
    assert "layers.1" not in collapsed.split("layers:")[0].replace("layers.0 .. layers.3", "")
    per_layer = 8 + 8 + 8 * 16 + 16 + 16 * 8 + 8
    assert f"params {per_layer:,} each, {4 * per_layer:,} total" in collapsed
    expanded = dump_text(g, expand=True)
    assert all(f"layer layers.{i}    params {per_layer}" in expanded for i in range(4))
    one = dump_text(g, layer="layers.2")
    assert "layer layers.2" in one and "layer layers.1" not in one and "wte" not in \
        one.split("\n\n", 1)[1].split("layers:")[0].replace("wte.embedding", "")
    assert "layers: 6  (wte, layers.0-3 (repeat x4), ln_f)" in collapsed


def test_json_is_complete_and_stable(arch_file):
    g = lower(arch_file(STACK))
    doc = json.loads(dump_json(g, bindings={"B": 1, "T": 5}))
    assert doc["format"] == "archc.dump/1"
    assert [l["name"] for l in doc["layers"]] == ["wte"] + [f"layers.{i}" for i in range(4)] \
        + ["ln_f"]
    assert doc["layers"][1]["repeat"] == {"name": "layers", "index": 0, "count": 4}
    assert doc["totals"]["params"] == g.param_count()
    assert sum(l["params"] for l in doc["layers"]) == g.param_count()
    assert doc["inputs"] == [{"name": "ids", "dtype": "int64", "shape": ["B", "T"]}]
    node = doc["layers"][1]["nodes"][0]
    assert set(node) == {"id", "name", "op", "dtype", "shape", "args", "attrs", "params",
                         "flops", "span"}
    assert doc["totals"]["flops_value"] is not None
    assert dump_json(g, bindings={"B": 1, "T": 5}) == dump_json(g, bindings={"B": 1, "T": 5})


def test_dot_has_a_cluster_per_layer(arch_file):
    g = lower(arch_file(STACK))
    dot = dump_dot(g)
    assert dot.startswith('digraph "stack" {') and dot.rstrip().endswith("}")
    top = re.compile(r"^  subgraph cluster_", re.M)      # a layer (sub-scopes nest inside)
    assert len(top.findall(dot)) == 3                     # wte, layers x4, ln_f
    assert len(top.findall(dump_dot(g, expand=True))) == 6


def test_groups_sum_to_totals(arch_file):
    g = lower(arch_file(STACK))
    assert sum(grp.params for grp in layer_groups(g)) == g.param_count()
