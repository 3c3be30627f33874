"""The compiler's side of the CLI: pipeline flags for `archc dump`, and `archc stats`.

    archc dump MODEL --after fuse_ffn      the graph after one pass (and those before it)
    archc dump MODEL -O                    after the whole pipeline
    archc dump MODEL --passes simplify,fuse_ffn   /  --no-fuse_attention
    archc dump MODEL --verify --stats --explain --kv [--batch B --max-seq S --max-memory 2GB]
    archc stats MODEL [--seq T]            params, FLOPs/token, activation peak, KV bytes

Nothing here imports Numba: of the runtime, only budget.py (NumPy and the dsl) is used.
"""
from __future__ import annotations

import argparse
from typing import Any

from .args import COUNT, add_checkpoint_args, add_weights_dtype
from .dsl.errors import ArchError
from .runtime.budget import parse_size

PASS_NAMES = ("lower_layers", "simplify", "fuse_residual_norm", "fuse_ffn", "fuse_attention",
              "plan_kv_cache", "plan_memory")
def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=COUNT, default=1, metavar="B",
                   help="batch size for the KV-cache and memory plans (default 1)")
    p.add_argument("--max-seq", type=COUNT, metavar="S",
                   help="KV-cache length (default: the model's declared context, e.g. n_ctx)")
    p.add_argument("--max-memory", type=parse_size, metavar="SIZE",
                   help="refuse a KV-cache plan larger than this, e.g. 2GB")
    p.add_argument("--lanes", type=COUNT, metavar="N",
                   help="plan per-lane scratch for N lanes (default: this machine's cores, "
                        "as a run plans it)")


def add_dump_args(dump: argparse.ArgumentParser) -> None:
    g = dump.add_argument_group("compiler passes")
    g.add_argument("-O", "--optimize", action="store_true",
                   help="show the graph after the whole pass pipeline")
    # no argparse `choices`: the pipeline checks the name and suggests the closest one
    g.add_argument("--after", metavar="PASS",
                   help="show the graph after this pass: " + ", ".join(PASS_NAMES))
    g.add_argument("--passes", metavar="A,B,...", help="run only these passes (in order)")
    for name in PASS_NAMES:
        g.add_argument(f"--no-{name}", dest=f"no_{name}", action="store_true",
                       help=argparse.SUPPRESS)
    g.add_argument("--verify", action="store_true", help="check the graph after every pass")
    g.add_argument("--stats", action="store_true",
                   help="print rewrites fired, nodes before/after and fusion coverage")
    g.add_argument("--explain", action="store_true",
                   help="list every fusion candidate that was rejected, and why")
    g.add_argument("--kv", action="store_true", help="print the KV-cache plan")
    _plan_args(g)


def add_stats_parser(sub, common) -> None:
    st = sub.add_parser("stats", help="parameters, FLOPs per token, activation peak and KV "
                                      "bytes, per layer and overall")
    common(st)
    add_checkpoint_args(st, "; its config.json sets the sizes")
    st.add_argument("--format", "-f", choices=("text", "json"), default="text",
                    help="json: the same figures as one object (archc.stats/1)")
    st.add_argument("--seq", type=COUNT, metavar="T",
                    help="sequence length (default: the model's declared context)")
    st.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                    help="give another symbolic size a value")
    add_weights_dtype(st)
    _plan_args(st)


def wants_pipeline(args) -> bool:
    return bool(args.optimize or args.after or args.passes or args.verify or args.stats
                or args.explain or args.kv or any(getattr(args, f"no_{n}") for n in PASS_NAMES))


def _plan_lanes(args) -> int:
    # the memory plan's per-lane scratch: --lanes, else as a run on this machine plans it
    from .runtime.budget import plan_lanes
    return args.lanes or plan_lanes()


def compile_graph(graph, args, dims: dict[str, int]):
    from .compiler.pipeline import run_pipeline
    only = None
    if args.passes:
        only = [p.strip() for p in args.passes.split(",") if p.strip()]
    skip = tuple(n for n in PASS_NAMES if getattr(args, f"no_{n}", False))
    options: dict[str, Any] = {"batch": args.batch, "max_seq": args.max_seq,
                               "max_memory": args.max_memory, "dims": dims,
                               "lanes": _plan_lanes(args)}
    return run_pipeline(graph, only=only, skip=skip, stop_after=args.after,
                        verify=args.verify, options=options)


def report(res, args) -> str:
    """The text printed after the dump: plan summaries, --stats, --explain, --kv."""
    from .compiler.passes.plan_kv_cache import kv_table
    from .compiler.pipeline import explain_text, stats_text
    out = []
    notes = [n for _, step in res.steps for n in step.notes]
    ran = " -> ".join(n for n, _ in res.steps) or "none"
    out.append(f"passes: {ran}\n")
    out.extend(f"note: {n}\n" for n in notes)
    if args.stats:
        out.append(stats_text(res))
    if args.explain:
        out.append(explain_text(res))
    if args.kv:
        if res.result("plan_kv_cache") is None:
            out.append("no KV-cache plan: the plan_kv_cache pass did not run\n")
        else:
            out.append(kv_table(res.graph.meta.get("kv_plan")))
    return "".join(out)


def cmd_stats(args, graph, dims: dict[str, int]) -> str:
    from .compiler.pipeline import run_pipeline
    from .compiler.report import layer_rows
    from .compiler.sizes import context_length, fmt_bytes
    seq = args.seq or args.max_seq or context_length(graph)[0]
    if seq is None:
        raise ArchError("no sequence length: the model declares no context length",
                        hint="give --seq T")
    bindings = {"B": args.batch, "T": seq, **dims}
    g = run_pipeline(graph, options={"batch": args.batch, "max_seq": args.max_seq or seq,
                                     "max_memory": args.max_memory, "dims": bindings,
                                     "lanes": _plan_lanes(args)}).graph
    mp, kp = g.meta.get("memory_plan"), g.meta.get("kv_plan")
    rows = layer_rows(g, bindings, args.batch * seq)
    weights = weights_per_dtype(g, args.weights_dtype)
    if args.format == "json":
        return _stats_json(g.name, args.batch, seq, kp, rows, weights)
    head = (f"{'layer':<20} {'params':>12} {'FLOPs/token':>14} {'act. peak':>12} "
            f"{'KV B/token':>11} {'KV bytes':>14}")
    lines = [f"model {g.name}: B={args.batch}, T={seq}"
             + (f", S_max={kp.max_seq} ({kp.max_seq_from})" if kp else ""), head]
    for r in rows:
        lines.append(f"{r.name:<20} {r.params:>12,} {r.flops_per_token:>14,.0f} "
                     f"{r.act_peak:>12,} {r.kv_per_token:>11,} {r.kv_bytes:>14,}")
    lines.append(weights_line(weights))
    if mp:
        lines.append(mp.summary())
    if kp:
        lines.append(f"KV cache: {fmt_bytes(kp.total_bytes)} in total, "
                     f"{kp.bytes_per_token():,} bytes per token per sequence")
        lines.extend(f"warning: {w}" for w in kp.warnings)
    lines.append("act. peak per layer: bytes of activations alive while the layer runs; "
                 "total: the planned arena")
    return "\n".join(lines) + "\n"


def html_page(graph, args, dims: dict[str, int]) -> str:
    """`archc dump -f html`: the graph as shown by the flags (as written, or -O / --after),
    with the figures, fusion report and plans of a pipeline run (the passes the flags
    choose, else all), at B=--batch and T=--dim T, else the declared context."""
    import sys
    from .compiler import dump
    from .compiler.dump_html import dump_html
    from .compiler.report import layer_rows
    from .compiler.sizes import context_length
    seq = dims.get("T") or args.max_seq or context_length(graph)[0]
    bindings = {"B": args.batch, **dims, **({"T": seq} if seq else {})}
    res = compile_graph(graph, args, bindings)
    shown = res.graph if wants_pipeline(args) else graph
    if seq is None:
        bindings = dict(res.graph.meta["memory_plan"].bindings) \
            if res.graph.meta.get("memory_plan") else bindings
    tokens = 1
    for name in ("B", "T"):
        tokens *= bindings.get(name, 1)
    rows = layer_rows(res.graph, bindings, tokens)
    dot = dump.dump_dot(shown, expand=args.expand, layer=args.layer, bindings=bindings)
    try:
        svg, why = dump.render_dot(dot, "svg").decode(), ""
    except ArchError as e:
        svg, why = None, e.message + (f" ({e.hint})" if e.hint else "")
        print(f"warning: the page has no picture: {why}", file=sys.stderr)
    return dump_html(shown, res, rows, svg=svg, picture_note=why, bindings=bindings)


def weights_per_dtype(g, weights_dtype: str | None) -> dict[str, tuple[int, int]]:
    """Stored dtype -> (values, bytes) of the parameters with `weights_dtype` (or the model's
    config constant): int8 counts its scales, one float32 per 32 weights."""
    from .api import check_weights_dtype
    from .runtime.packed import weight_bytes, weights_dtype_of
    check_weights_dtype(weights_dtype)
    return weight_bytes(g, weights_dtype_of(g, weights_dtype))


def weights_line(per: dict[str, tuple[int, int]]) -> str:
    from .compiler.sizes import fmt_bytes
    total = sum(b for _, b in per.values())
    parts = [f"{dtype} {n:,} values, {fmt_bytes(b)}" for dtype, (n, b) in per.items()]
    return f"weights: {fmt_bytes(total)}: " + "; ".join(parts)


def _stats_json(name: str, batch: int, seq: int, kp, rows, weights) -> str:
    """`archc stats --format json`: {"format": "archc.stats/1", "model", "batch", "seq",
    "max_seq", "layers": [{"name", params, flops_per_token, activation_peak_bytes,
    kv_bytes_per_token, kv_bytes}, ...], "total": {the same keys; its activation peak is
    the planned arena}, "weights": {stored dtype: {"values", "bytes"}}, "warnings": [...]}."""
    import json

    def figures(r):
        return {"params": r.params, "flops_per_token": round(r.flops_per_token, 3),
                "activation_peak_bytes": r.act_peak, "kv_bytes_per_token": r.kv_per_token,
                "kv_bytes": r.kv_bytes}
    *layers, total = rows
    doc = {"format": "archc.stats/1", "model": name, "batch": batch, "seq": seq,
           "max_seq": kp.max_seq if kp else None,
           "layers": [{"name": r.name, **figures(r)} for r in layers], "total": figures(total),
           "weights": {dtype: {"values": n, "bytes": b} for dtype, (n, b) in weights.items()},
           "warnings": list(kp.warnings) if kp else []}
    return json.dumps(doc, indent=2) + "\n"
