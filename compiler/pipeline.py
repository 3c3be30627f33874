"""The pass pipeline: a flat, named sequence of passes, a verifier between them on request,
and per-pass statistics.

    result = run_pipeline(graph, verify=True)            # every pass, in order
    result = run_pipeline(graph, only=["simplify"])      # a chosen subset (still in order)
    result = run_pipeline(graph, stop_after="fuse_ffn")  # the graph as it is after one pass
    result.graph, result.steps                           # [(name, PassResult), ...]

Planning passes (plan_kv_cache, plan_memory) take options (batch size, sequence lengths,
memory budget) through `options`; transforming passes take none. Plans are recorded in
`graph.meta` ("kv_plan", "memory_plan").
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..dsl import progress
from ..dsl.graph import Graph
from .ir import PassResult
from .passes.fuse_attention import fuse_attention
from .passes.fuse_ffn import fuse_ffn
from .passes.fuse_residual_norm import fuse_residual_norm
from .passes.lower_layers import DECOMPOSE, lower_layers
from .passes.plan_kv_cache import plan_kv_cache
from .passes.plan_memory import plan_memory
from .passes.simplify import simplify
from .verify import verify as verify_graph

PASSES: dict[str, Callable[..., PassResult]] = {
    "lower_layers": lower_layers,
    "simplify": simplify,
    "fuse_residual_norm": fuse_residual_norm,
    "fuse_ffn": fuse_ffn,
    "fuse_attention": fuse_attention,
    "plan_kv_cache": plan_kv_cache,
    "plan_memory": plan_memory,
}
DEFAULT = list(PASSES)


@dataclass
class PipelineResult:
    graph: Graph
    steps: list[tuple[str, PassResult]] = field(default_factory=list)
    sizes: list[tuple[str, int, int]] = field(default_factory=list)   # (pass, before, after)

    def result(self, name: str) -> PassResult | None:
        return next((r for n, r in self.steps if n == name), None)

    def coverage(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for _, r in self.steps:
            out.update(r.coverage)
        return out


def check_names(names, what: str = "--passes") -> None:
    from ..dsl.errors import ArchError, did_you_mean
    for n in names:
        if n not in PASSES:
            raise ArchError(f"{what}: no pass named `{n}`",
                            hint=did_you_mean(n, PASSES) or "passes: " + ", ".join(PASSES))


def run_pipeline(g: Graph, only: list[str] | None = None, skip: tuple[str, ...] = (),
                 stop_after: str | None = None, verify: bool = False,
                 options: Mapping[str, Any] | None = None) -> PipelineResult:
    names = [n for n in (DEFAULT if only is None else only) if n not in skip]
    check_names(names)
    if stop_after is not None:
        check_names([stop_after], "--after")
        order = DEFAULT.index(stop_after)
        names = [n for n in names if DEFAULT.index(n) <= order]
    names.sort(key=DEFAULT.index)
    options = dict(options or {})
    lowerable = frozenset(DECOMPOSE)
    if verify:
        verify_graph(g, "", (), lowerable)
    res = PipelineResult(g)
    ran: list[str] = []
    for name in names:
        fn = PASSES[name]
        accepted = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in options.items() if k in accepted}
        before = len(res.graph)
        with progress.task(f"pass {name}"):
            step = fn(res.graph, **kwargs)
        if verify:
            verify_graph(step.graph, name, ran, lowerable)
        ran.append(name)
        res.steps.append((name, step))
        res.sizes.append((name, before, len(step.graph)))
        res.graph = step.graph
    return res


def stats_text(res: PipelineResult) -> str:
    """Per pass: nodes before/after and rewrites fired; then the fusion coverage."""
    lines = ["pass statistics:"]
    for (name, step), (_, before, after) in zip(res.steps, res.sizes):
        fired = ", ".join(f"{k} x{v}" for k, v in sorted(step.stats.items())) or "no change"
        lines.append(f"  {name:<20} nodes {before:>5} -> {after:<5} {fired}")
    cov = {what: fs for what, fs in res.coverage().items() if fs[1]}
    if cov:
        lines.append("fusion coverage: " + ", ".join(f"{f}/{s} {what} fused"
                                                     for what, (f, s) in cov.items()))
    return "\n".join(lines) + "\n"


def explain_text(res: PipelineResult) -> str:
    lines = []
    for name, step in res.steps:
        if step.rejected:
            verb = "not lowered" if name == "lower_layers" else "not fused"
            lines.append(f"{name}: {len(step.rejected)} candidate"
                         f"{'s' if len(step.rejected) != 1 else ''} {verb}")
            lines.extend(f"  {why}" for why in step.rejected)
        else:
            lines.append(f"{name}: no rejected candidates")
    return "\n".join(lines) + "\n"
