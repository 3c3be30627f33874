"""`archc export MODEL.arch [--weights W] -o model.onnx`: the compiled graph as ONNX
(`pip install 'archc[onnx]'`), for Netron and ONNX Runtime.

    model.onnx          the whole network (a prompt pass: every position's outputs)
    model.decode.onnx   decoder models: T new tokens after P cached ones, with inputs
                        past_key_values.{i}.key/.value and outputs present.{i}.key/.value
    model.onnx.data     the weights, when they pass EXTERNAL_BYTES (or --external-data):
                        one file both graphs read

Every file is written atomically (runtime/io.write_atomic) and none may be a file the
export reads (the model, an include, the weights).
"""
from __future__ import annotations

import sys
from pathlib import Path

from .args import add_weights_args, parse_sets
from .dsl.errors import ArchError

EXTERNAL_BYTES = 1 << 30     # weights above this go to a side file (a protobuf holds < 2 GB)


def add_export_parser(sub, common) -> None:
    ex = sub.add_parser("export", help="write the compiled graph as an ONNX model (needs "
                                       "`pip install 'archc[onnx]'`)")
    common(ex)
    ex.add_argument("--output", "-o", metavar="FILE", required=True,
                    help="the .onnx file; a decoder model's decode step goes beside it as "
                         "NAME.decode.onnx")
    add_weights_args(ex)
    ex.add_argument("--as-written", action="store_true",
                    help="export the graph as written, before the compiler's passes")
    ex.add_argument("--no-decode", action="store_true", help="do not write the decode step")
    ex.add_argument("--external-data", action="store_true",
                    help="put the weights in NAME.data beside the model, whatever their size")
    ex.add_argument("--max-memory", metavar="SIZE",
                    help="refuse a model whose parameters would need more, e.g. 8G")


def decode_path(out: str) -> str:
    p = Path(out)
    return str(p.with_name(p.stem + ".decode" + (p.suffix or ".onnx")))


def cmd_export(args) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ArchError("archc export needs the onnx package, which is not installed",
                        hint="pip install 'archc[onnx]'") from None
    import numpy as np
    from .api import load, source_files
    from .compiler.pipeline import run_pipeline
    from .dsl.lower import lower
    from .onnx_export import WeightFile, check_exportable, export_graph
    from .runtime.io import check_output, to_stdout
    optimise = lambda g: g if args.as_written else \
        run_pipeline(g, skip=("plan_kv_cache", "plan_memory")).graph      # noqa: E731
    # what can be refused is refused before any weight is read or made
    written = lower(args.model, args.model_name, parse_sets(args.set))
    check_exportable(optimise(written))
    if to_stdout(args.output):
        raise ArchError("archc export writes files (a model, its decode step, its weights)",
                        hint="give -o NAME.onnx")
    data = args.output + ".data"
    outs = [args.output, decode_path(args.output), data]
    reads = source_files(written) + ([("weights", args.weights)] if args.weights else [])
    for p in outs:
        check_output(p, reads)
    model = load(args.model, weights=args.weights, seed=args.seed, model=args.model_name,
                 config=parse_sets(args.set), weights_map=args.weights_map,
                 allow_missing=args.allow_missing, max_memory=args.max_memory)
    for w in model.warnings:
        print(f"warning: {w}", file=sys.stderr)
    graph = optimise(model.graph)
    size = sum(np.asarray(v).nbytes for v in model.params.values())
    external = args.external_data or size > EXTERNAL_BYTES
    weights = WeightFile(Path(data).name if external else None)
    models = [(args.output, export_graph(graph, model.params, weights=weights))]
    if not args.no_decode:
        try:
            models.append((outs[1], export_graph(graph, model.params, decode=True,
                                                 weights=weights)))
        except ArchError as e:
            if not e.message.startswith("no decode graph"):
                raise
            print(f"note: {e.message}", file=sys.stderr)
    write_models(models, weights, data if external else None)
    print("wrote " + ", ".join([p for p, _ in models] + ([data] if external else [])),
          file=sys.stderr)
    return 0


def write_models(models, weights, data: str | None) -> None:
    """Write the side file first (when there is one), then each (path, ModelProto), each
    atomically: a graph is never on disk before the weights it points into."""
    from .runtime.io import write_atomic
    if data is not None:
        write_atomic(data, weights.write)
    for path, m in models:
        blob = m.SerializeToString()
        write_atomic(path, lambda f, blob=blob: f.write(blob))
