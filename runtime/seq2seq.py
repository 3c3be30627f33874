"""Encoder-decoder generation: the encoder runs once, the decoder one step per token.

The model is one graph; it is cut where the decoder reads values made from the encoder's
inputs alone (the boundary: per layer the cross-attention K and V, and the encoder mask):

    full graph     ids, mask, decoder_ids, decoder_mask                  -> logits
    encoder graph  ids, mask                                             -> boundary values
    decoder graph  decoder_ids, decoder_mask, boundary values as params  -> logits

A boundary value becomes a `param` of the decoder graph, bound to an array the encoder run
fills in place, so the decoder's programs read it like a weight (no copy per step); its
cross-attentions lay K/V out into the session's cache once (kv_cache.CacheEntry, cross).
Values made from weights alone (fused QKV weights, transposes) become params too, bound to
the arrays the full executor already folded, so neither part recomputes or duplicates them.
The decoder graph has concrete boundary shapes, so it is made per (batch, encoder length).
"""
from __future__ import annotations

import numpy as np

from ..dsl.dims import evaluate
from ..dsl.errors import ArchError
from ..dsl.graph import Graph


def _depends_on(g: Graph, roots: set[str]) -> set[str]:
    out: set[str] = set()
    for nid in g.topo():
        if nid in roots or any(a in out for a in g.args(nid)):
            out.add(nid)
    return out


def cut(g: Graph, outputs: dict[str, str], frozen: dict[str, tuple]) -> Graph:
    """The part of `g` computing `outputs`, with every node in `frozen` turned into a
    parameter named `@<node id>` of the given concrete shape (its inputs cut away)."""
    out = g.copy()
    for nid, shape in frozen.items():
        node = out.node(nid)
        out.set_args(nid, [])
        out.set_node(node.with_(op="param", attrs={"name": f"@{nid}", "init": "zeros"},
                                shape=tuple(shape), parts=()))
    keep = set(outputs.values())
    for nid in outputs.values():
        keep |= _ancestors(out, nid)
    for nid in list(out.nx.nodes):
        if nid not in keep:
            out.remove(nid)
    out.outputs = dict(outputs)
    out.inputs = [i for i in out.inputs if i in keep and i not in frozen]
    return out


def _ancestors(g: Graph, nid: str) -> set[str]:
    import networkx as nx
    return nx.ancestors(g.nx, nid)


class EncoderDecoder:
    """The full executor `ex` split into an encoder executor and, per (B, encoder length),
    a decoder executor; `encode` runs the encoder and fills the decoder's boundary."""

    def __init__(self, ex, encoder_inputs: list[str], batch: str | None):
        from .executor import Executor
        self.ex = ex
        self.batch = batch
        g = ex.graph
        by_name = {g.node(n).attrs["name"]: n for n in g.inputs}
        enc_roots = {by_name[n] for n in encoder_inputs}
        dec_roots = set(g.inputs) - enc_roots
        self.dec_dyn = _depends_on(g, dec_roots)
        enc_static = _depends_on(g, enc_roots) - self.dec_dyn
        self.boundary = sorted({a for n in self.dec_dyn for a in g.args(n) if a in enc_static},
                               key=g.topo().index)
        for b in self.boundary:
            if g.node(b).dtype == "tuple":
                raise ArchError(f"cannot split the encoder from the decoder at `{b}` (a tuple)")
        self.folded = {a: v for a, v in ex.folded_values.items()}
        outs = {name: nid for name, nid in g.outputs.items() if nid in self.dec_dyn}
        if not outs:
            raise ArchError("no model output depends on the decoder's inputs")
        self.dec_outputs = outs
        enc_graph = cut(g, {f"@{b}": b for b in self.boundary},
                        {n: v.shape for n, v in self.folded.items()})
        self.encoder_inputs = [g.node(n).attrs["name"] for n in enc_graph.inputs]
        self.encoder = Executor(enc_graph, self._params(enc_graph, {}), optimize=False,
                                threads=ex.threads, toolchain=ex.toolchain)
        self._decoders: dict[tuple, object] = {}

    def _params(self, graph: Graph, boundary: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        params = {}
        for node in graph.params():
            name = node.attrs["name"]
            if not name.startswith("@"):
                params[name] = self.ex.weights[name]
            elif name[1:] in boundary:
                params[name] = boundary[name[1:]]
            else:
                params[name] = self.folded[name[1:]]
        return params

    def decoder(self, dims: dict[str, int]):
        """The decoder executor for these sizes (batch, encoder length), made once."""
        from .executor import Executor
        key = tuple(sorted(dims.items()))
        dec = self._decoders.get(key)
        if dec is None:
            g = self.ex.graph
            shapes = {b: tuple(evaluate(d, dims) for d in g.node(b).shape)
                      for b in self.boundary}
            frozen = {**{n: v.shape for n, v in self.folded.items()}, **shapes}
            graph = cut(g, self.dec_outputs, frozen)
            buffers = {b: np.zeros(s, g.node(b).dtype) for b, s in shapes.items()}
            dec = Executor(graph, self._params(graph, buffers), optimize=False,
                           threads=self.ex.threads, toolchain=self.ex.toolchain)
            if len(self._decoders) >= 4:          # a few prompt shapes at a time
                self._decoders.pop(next(iter(self._decoders)))
            self._decoders[key] = dec
        return dec

    def encode(self, inputs: dict[str, np.ndarray], dims: dict[str, int], profile=None):
        """Run the encoder on `inputs` and write the boundary into the decoder executor for
        `dims`; returns that executor."""
        dec = self.decoder(dims)
        prog = self.encoder.program(dims)
        prog.compile(profile)
        prog.execute({k: v for k, v in inputs.items() if k in self.encoder_inputs}, profile)
        for name, value in prog.output_values().items():
            np.copyto(dec.weights[name], value, casting="unsafe")
        return dec


def for_executor(ex, encoder_inputs: list[str], batch: str | None) -> EncoderDecoder:
    """The split of `ex`, made once per executor."""
    key = (tuple(encoder_inputs), batch)
    cache = ex.__dict__.setdefault("_seq2seq", {})
    if key not in cache:
        cache[key] = EncoderDecoder(ex, encoder_inputs, batch)
    return cache[key]
