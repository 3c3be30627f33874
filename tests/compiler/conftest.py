"""Helpers for compiler tests: lower a snippet, run passes with the verifier on, and compare
outputs with the reference executor on the unoptimised graph."""
from __future__ import annotations

import textwrap
from collections import Counter

import numpy as np
import pytest

from archc.compiler.pipeline import run_pipeline
from archc.compiler.verify import verify
from archc.dsl.lower import lower, load_program
from archc.runtime.reference import run_reference
from archc.runtime.weights import init_params

# small sizes for the example models, applied when the model's config has the name
SMALL = {"n_layer": 2, "n_layers": 2, "n_encoder_layers": 2, "n_decoder_layers": 2,
         "d_model": 32, "n_head": 4, "n_heads": 4, "n_kv_head": 2, "n_kv_heads": 2, "d_ff": 48, "vocab": 50,
         "n_ctx": 64, "max_seq": 64, "window": 4, "d_kv": 8, "n_experts": 4}


def lower_and_run(path, *passes):
    """Lower `path`, then run `passes` in order with the verifier after each; returns the
    unoptimised graph and the last pass's result."""
    g = graph = lower(path)
    result = None
    for p in passes:
        result = p(graph)
        verify(result.graph, p.__name__)
        graph = result.graph
    return g, result


def small_config(path) -> dict:
    names = {c.name for c in load_program(path).consts}
    return {k: v for k, v in SMALL.items() if k in names}


def random_inputs(g, seed: int = 0, sizes=None) -> dict:
    sizes = {"B": 2, "T": 5, "S": 4, **(sizes or {})}
    rng = np.random.default_rng(seed)
    out = {}
    for nid in g.inputs:
        n = g.node(nid)
        shape = tuple(d if isinstance(d, int) else d.evaluate({s: sizes.get(s, 4)
                                                                for s in d.symbols()})
                      for d in n.shape)
        if n.dtype == "int64":
            out[n.attrs["name"]] = rng.integers(0, 2, shape)
        elif n.dtype == "bool":
            out[n.attrs["name"]] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[n.attrs["name"]] = rng.standard_normal(shape).astype(n.dtype)
    return out


def random_params(g, seed: int = 0) -> dict:
    """Initialised parameters plus noise, so ones/zeros inits do not hide mistakes."""
    rng = np.random.default_rng(seed + 1)
    return {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in init_params(g, seed).items()}


def assert_same_outputs(g0, g1, inputs=None, params=None, tol=1e-5):
    inputs = inputs if inputs is not None else random_inputs(g0)
    params = params if params is not None else random_params(g0)
    a = run_reference(g0, inputs, params)
    b = run_reference(g1, inputs, params)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert np.max(np.abs(a[k].astype(np.float64) - b[k]), initial=0.0) <= tol, k


def op_counts(g) -> Counter:
    return Counter(n.op for n in g.nodes())


@pytest.fixture
def compile_src(arch_file):
    """Lower a snippet and run passes (verifier on): returns (before, PipelineResult)."""
    def go(source: str, passes=None, **options):
        g = lower(arch_file(source))
        return g, run_pipeline(g, only=passes, verify=True, options=options)
    return go


def snippet(text: str) -> str:
    return textwrap.dedent(text)
