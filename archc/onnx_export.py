"""`archc export`: a compiled layer graph as an ONNX model (standard opset, no custom ops).

    archc graph node  --RULES[op] (onnx_rules.py)-->  ONNX nodes named /layers.3/attn/q/linear/MatMul
    param             initializer named by the parameter (layers.3.attn.q.weight)
    input / output    graph input / output by name; symbolic sizes (B, T) as dim params
    every node's value  its archc id as the tensor name, its archc type as value_info

Each archc op's ONNX translation is found by name in `onnx_rules.RULES`; an op with none is
in `onnx_rules.NOT_EXPORTABLE` with the reason, and exporting a graph that holds one is a
user error naming the op and where it is (tests/archc/test_onnx_rules.py walks the registry
so no op is left with neither).

The decode graph (`decode=True`, decoder models): the same network over T new tokens after
P cached ones. Every cached self-attention (the KV plan's entries) takes inputs
`past_key_values.{i}.key/.value` (B, H_kv, P, D) and gives `present.{i}.key/.value`
(B, H_kv, P+T, D), keys stored after RoPE; positions, RoPE and the causal/window masks count
from P. With P = 0 it is the prompt pass.

Big weights go to a side file (`WeightFile`, `model.onnx.data`): a protobuf holds at most
2 GB. This module builds protos only; archc/export_cmd.py writes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .dsl.dims import Dim, DimLike
from .dsl.errors import ArchError
from .dsl.graph import Graph, Node
from .dsl.ops import TT, trait
from .compiler.dump import group_key
from .onnx_rules import NOT_EXPORTABLE, RULES

OPSET = 21            # Gelu (20); an IR version every current ONNX Runtime reads
IR_VERSION = 10
ONNX_DTYPES = {"float32": 1, "int64": 7, "bool": 9, "float64": 11}   # TensorProto enum
LEAVES = ("input", "param", "const")


@dataclass
class Decode:
    """What the decode graph adds: a past/present pair per cached attention."""
    entries: dict[str, int]                   # attention node id -> cache index
    caches: list[tuple[str, int, int]]        # per index: (dtype, H_kv, D)
    past_len: str = ""                        # tensor: P as a 1-element int64
    presents: list[tuple[str, str]] = field(default_factory=list)   # (output name, tensor)


class Emitter:
    """Builds the ONNX graph: what a rule calls to add nodes, constants and shapes."""

    def __init__(self, g: Graph, decode: Decode | None = None):
        from onnx import helper
        self.helper = helper
        self.g = g
        self.decode = decode
        self.nodes: list = []
        self.initializers: list = []
        self.where = ""                        # the name prefix of the archc node being built
        self.doc = ""
        self._count = 0
        self._consts: dict[tuple, str] = {}
        self._dims: dict[str, str] = {}        # symbol -> 1-element int64 tensor
        self.sizes_from: dict[str, tuple[str, int]] = {}   # symbol -> (input, axis) it is read from

    # ---- names and nodes ------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        self._count += 1
        return f"{self.where}/{hint}:{self._count}"

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        """Add one ONNX node; its output name (or names, for n_out > 1)."""
        outs = [self.fresh(op_type) for _ in range(n_out)]
        self._count += 1
        node = self.helper.make_node(op_type, list(inputs), outs,
                                     name=f"{self.where}/{op_type}_{self._count}", **attrs)
        if self.doc:
            node.doc_string = self.doc
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype: str | None = None) -> str:
        """A constant tensor (an initializer); small ones are shared."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = f"const:{len(self.initializers)}"
        self.initializers.append(tensor(name, arr))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.array(list(values), dtype=np.int64))

    def scalar(self, value, dtype: str) -> str:
        return self.const(np.array(value, dtype=dtype))

    def cast(self, x: str, have: str, want: str) -> str:
        return x if have == want else self.op("Cast", [x], to=ONNX_DTYPES[want])

    def type(self, nid: str) -> TT:
        n = self.g.node(nid)
        return TT(n.shape, n.dtype)

    # ---- sizes at run time ----------------------------------------------------------
    def shape(self, x: str, start: int | None = None, end: int | None = None) -> str:
        """Shape(x)[start:end] as a 1-D int64 tensor."""
        attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        return self.op("Shape", [x], **attrs)

    def axis_len(self, x: str, axis: int) -> str:
        """x's length along `axis`, a 1-element int64."""
        return self.shape(x, axis, axis + 1 if axis != -1 else None)

    def scalar_of(self, one: str) -> str:
        """A 1-element tensor as a 0-D one (Range takes scalars)."""
        return self.op("Squeeze", [one, self.ints([0])])

    def dim(self, d: DimLike) -> str:
        """A (symbolic) size as a 1-element int64: symbols read from the inputs' shapes."""
        if isinstance(d, int):
            return self.ints([d])
        total = None
        for mono, coeff in d.terms:
            term = self.ints([coeff])
            for s in mono:
                term = self.op("Mul", [term, self._symbol(s)])
            total = term if total is None else self.op("Add", [total, term])
        return total

    def dims(self, shape: Sequence[DimLike]) -> str:
        if all(isinstance(d, int) for d in shape):
            return self.ints(shape)
        return self.op("Concat", [self.dim(d) for d in shape], axis=0)

    def _symbol(self, s: str) -> str:
        if s not in self._dims:
            if s not in self.sizes_from:
                raise ArchError(f"the size `{s}` is not the size of any input axis, so the "
                                "exported graph cannot compute it")
            where, self.where = self.where, "/sizes"
            x, axis = self.sizes_from[s]
            self._dims[s] = self.axis_len(x, axis)
            self.where = where
        return self._dims[s]

    def past_len(self) -> str:
        """P, the cached tokens before these (decode graph), as a 1-element int64."""
        return self.decode.past_len


def tensor(name: str, arr: np.ndarray):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.require(arr, requirements="C"), name)


class WeightFile:
    """Where the parameters go: into the graph (`location` None), or into one side file
    that every graph exported with this store points into (each weight stored once, at
    offsets aligned to 64 bytes); tensors under INLINE_BYTES stay in the graph."""

    INLINE_BYTES = 1024

    def __init__(self, location: str | None = None):
        self.location = location
        self.placed: dict[str, tuple[int, np.ndarray]] = {}
        self.size = 0

    def tensor(self, name: str, arr: np.ndarray):
        if self.location is None or arr.nbytes < self.INLINE_BYTES:
            return tensor(name, arr)
        from onnx import TensorProto
        if name not in self.placed:
            offset = -(-self.size // 64) * 64
            self.placed[name] = (offset, arr)
            self.size = offset + arr.nbytes
        offset, _ = self.placed[name]
        t = TensorProto(name=name, data_type=ONNX_DTYPES[arr.dtype.name], dims=arr.shape,
                        data_location=TensorProto.EXTERNAL)
        for k, v in (("location", self.location), ("offset", offset), ("length", arr.nbytes)):
            t.external_data.add(key=k, value=str(v))
        return t

    def write(self, f) -> None:
        """The side file's bytes, in order, into binary file `f`."""
        pos = 0
        for offset, arr in sorted(self.placed.values(), key=lambda p: p[0]):
            f.write(b"\0" * (offset - pos))
            f.write(np.require(arr, dtype=arr.dtype.newbyteorder("<"), requirements="C").data)
            pos = offset + arr.nbytes


def _dim_proto(d: DimLike):
    return d if isinstance(d, int) else str(d)


def value_info(name: str, dtype: str, shape):
    from onnx import helper
    return helper.make_tensor_value_info(name, ONNX_DTYPES[dtype],
                                         [_dim_proto(d) for d in shape])


def check_exportable(g: Graph, decode: bool = False) -> None:
    """Every op of `g` has an export rule, or one error naming each op that has none."""
    bad: dict[str, Node] = {}
    for node in g.nodes():
        if node.op not in LEAVES and node.op not in RULES:
            bad.setdefault(node.op, node)
    if bad:
        op, node = next(iter(bad.items()))
        more = [o for o in bad if o != op]
        reason = NOT_EXPORTABLE.get(op, "it has no ONNX export rule")
        raise ArchError(f"cannot export to ONNX: op `{op}` ({node.scope or node.id}) has no "
                        f"standard ONNX form: {reason}"
                        + (f"; also not exportable: {', '.join(more)}" if more else ""),
                        node.span, hint="`archc dump` shows where each op is")


def scope_path(g: Graph, node: Node) -> str:
    """/layers.3/attn/q/linear: the layer (a repeat iteration stays one part), then the
    rest of the scope, then the node's own name."""
    layer, _ = group_key(g, node.scope)
    rest = node.scope[len(layer):].strip(".") if node.scope.startswith(layer) else node.scope
    own = node.id[len(node.scope) + 1:] if node.scope and node.id.startswith(node.scope + ".") \
        else node.id
    parts = [p for p in [layer] + rest.split(".") + [own] if p]
    return "/" + "/".join(parts)


def decode_plan(g: Graph) -> Decode:
    """The cached self-attentions of a decoder graph, in graph order; an error naming what
    stops a decode graph (cross-attention, biases rebuilt per step, positional ops)."""
    from .compiler.passes.plan_kv_cache import plan
    kp = plan(g, max_seq=1)
    if kp is None:
        raise ArchError("no decode graph: the model has no causal self-attention to cache")
    cross = [e.scope for e in kp.entries if e.kind == "cross"]
    if cross:
        raise ArchError(f"no decode graph: {cross[0]} is a cross-attention (an encoder-"
                        "decoder); archc exports decode steps of decoder-only models")
    cached = {e.node for e in kp.entries}
    for n in g.nodes():
        why = next((why for t, why in NO_DECODE if trait(n.op, t)), None)
        if why is None and trait(n.op, "attention") and n.id not in cached:
            why = "is not a cached self-attention: its keys would be the new tokens' alone"
        if why is not None:
            raise ArchError(f"no decode graph: `{n.op}` ({n.scope or n.id}) {why}", n.span)
    return Decode({e.node: i for i, e in enumerate(kp.entries)},
                  [(e.dtype, e.kv_heads, e.head_dim) for e in kp.entries])


# what stops a decode step over past/present K/V computing what the full graph computes,
# by the op's traits (the registry's; runtime/kv_cache.py refuses the same ops)
NO_DECODE = (
    ("position_bias", "builds a bias over every key; the decode graph does not rebuild it "
                      "per step"),
    ("mask", "builds a mask over keys the decode graph keeps in past_*"),
    ("mixes_positions", "mixes positions in a way a step over new tokens cannot recompute"),
)


def export_graph(g: Graph, params: Mapping[str, np.ndarray], *, decode: bool = False,
                 weights: WeightFile | None = None, name: str | None = None):
    """The ONNX ModelProto of `g` with `params` as initializers, in the graph or in the side
    file of `weights` (see the module docstring)."""
    from onnx import helper
    check_exportable(g)
    dec = decode_plan(g) if decode else None
    e = Emitter(g, dec)
    inputs, env = [], {}
    for nid in g.inputs:
        n = g.node(nid)
        inputs.append(value_info(n.attrs["name"], n.dtype, n.shape))
        env[nid] = n.attrs["name"]
        for axis, d in enumerate(n.shape):
            if isinstance(d, Dim) and len(d.terms) == 1 and d.terms[0][1] == 1 \
                    and len(d.terms[0][0]) == 1:
                e.sizes_from.setdefault(d.terms[0][0][0], (n.attrs["name"], axis))
    if dec is not None:
        _past_inputs(e, dec, inputs)
    values: dict[str, str] = {}               # ONNX tensor -> the archc id it is the value of
    for nid in g.topo():
        node = g.node(nid)
        if node.op == "input":
            continue
        if node.op in ("param", "const"):
            env[nid] = _leaf(e, node, params, weights or WeightFile())
            continue
        e.where, e.doc = scope_path(g, node), f"archc {node.op}" + (
            f" at {node.span}" if node.span else "")
        out = RULES[node.op](e, node, [env[a] for a in g.args(nid)])
        env[nid] = out
        if isinstance(out, str):
            values.setdefault(out, nid)
    graph_outputs, infos = _name_values(g, e, env, values)
    if dec is not None:
        for i, (out_name, t) in enumerate(dec.presents):
            e.nodes.append(helper.make_node("Identity", [t], [out_name],
                                            name=f"/present/{out_name}"))
            dtype, kv_heads, head_dim = dec.caches[i // 2]
            graph_outputs.append(value_info(out_name, dtype, ("B", kv_heads, "P + T", head_dim)))
    graph = helper.make_graph(e.nodes, name or g.name, inputs, graph_outputs,
                              initializer=e.initializers, value_info=infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="archc", producer_version="0.1.0")
    model.ir_version = IR_VERSION
    src = g.meta.get("source")
    helper.set_model_props(model, {"archc.model": g.name, **({"archc.source": str(src)}
                                                              if src else {}),
                                   "archc.graph": "decode" if decode else "full"})
    return model


def _leaf(e: Emitter, node: Node, params: Mapping[str, np.ndarray], weights: WeightFile) -> str:
    if node.op == "const":
        return e.const(np.asarray(node.attrs["value"]).astype(node.dtype))
    name = node.attrs["name"]
    if name not in params:
        raise ArchError(f"no value for parameter `{name}`")
    arr = np.asarray(params[name]).astype(node.dtype, copy=False)
    e.initializers.append(weights.tensor(name, arr.reshape([int(d) for d in node.shape])))
    return name


def _name_values(g: Graph, e: Emitter, env: dict, values: dict[str, str]):
    """Rename each graph output's tensor to its name and every other value's to its archc
    id (the names a program feeds and a person reads in Netron); the outputs' value_info
    and the other values' value_info (their archc types)."""
    from onnx import helper
    leaves = {i.name for i in e.initializers} | {env[n] for n in g.inputs}
    rename: dict[str, str] = {}
    outputs = []
    for out_name, nid in g.outputs.items():
        t = env[nid]
        if t in leaves or t in rename:       # an input or weight returned as it is, or twice
            e.nodes.append(helper.make_node("Identity", [t], [out_name], name=f"/{out_name}"))
        else:
            rename[t] = out_name
        n = g.node(nid)
        outputs.append(value_info(out_name, n.dtype, n.shape))
    taken = leaves | set(rename.values())
    for t, nid in values.items():
        if t not in rename and t not in leaves and nid not in taken:
            rename[t] = nid
    for node in e.nodes:
        for i, x in enumerate(node.input):
            node.input[i] = rename.get(x, x)
        for i, x in enumerate(node.output):
            node.output[i] = rename.get(x, x)
    infos = [value_info(nid, g.node(nid).dtype, g.node(nid).shape)
             for t, nid in values.items() if rename.get(t) == nid]
    return outputs, infos


def _past_inputs(e: Emitter, dec: Decode, inputs: list) -> None:
    for i, (dtype, kv_heads, head_dim) in enumerate(dec.caches):
        for kind in ("key", "value"):
            inputs.append(value_info(f"past_key_values.{i}.{kind}", dtype,
                                     ("B", kv_heads, "P", head_dim)))
    e.where = "/sizes"
    dec.past_len = e.axis_len("past_key_values.0.key", 2)
