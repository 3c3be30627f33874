"""`archc tune MODEL.arch`: measure, on this machine, the kernels a model's products run.

    archc tune MODEL.arch [--weights W] [--set N=V ...] [--seq 128 --seq 512] [--threads N]
                          [--weights-dtype int8|bf16]

Builds the compiled programs for a prompt of each --seq length (batch 1) and a decode
step, which measures every product class this machine has not met yet (runtime/tune.py),
and prints, per product, the kernel chosen and its GFLOP/s here; then every step that runs
on its NumPy reference instead of a compiled kernel, and why (or that none does). Runs do the same on
their own the first time they meet a class; this does it up front and shows the result.
"""
from __future__ import annotations

import os
import sys

from .args import add_weights_dtype, parse_sets


def add_tune_parser(sub, common) -> None:
    p = sub.add_parser("tune", help="measure the kernels a model runs on this machine, "
                                    "and show which were chosen")
    common(p)
    p.add_argument("--weights", "-w", metavar="FILE",
                   help="a checkpoint, for the model's real sizes (else the .arch's)")
    p.add_argument("--seq", type=int, action="append", metavar="T",
                   help="prompt lengths to measure for; repeatable (default: 128 and 512, "
                        "within the model's context)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for kernels and BLAS (default: every free core)")
    add_weights_dtype(p)


def cmd_tune(args) -> int:
    from .api import load
    from .runtime import tune
    os.environ["ARCHC_TUNE"] = "1"
    model = load(args.model, weights=args.weights, model=args.model_name,
                 config=parse_sets(args.set), allow_missing=True,
                 weights_dtype=args.weights_dtype)
    ex = model.compiled(args.threads)
    limit = ex.toolchain.context_length(model.graph)[0]
    lengths = args.seq or [T for T in (128, 512) if limit is None or T <= limit] or [limit]
    symbols = _symbols(model.graph)
    print(f"machine: {tune.cpu_model()}; ISA {' '.join(tune.machine()['isa']) or '-'}; "
          f"{ex.threads} thread(s); wisdom {tune.wisdom().path}", file=sys.stderr)
    rows, on_reference = [], []
    for T in [*lengths, 1]:
        prog = ex.program({s: 1 if s == "B" else T for s in symbols})
        rows += [(f"T={T}", *r) for r in tune.kernel_report(prog)]
        on_reference += [(f"T={T}", nid, prog.graph.node(nid).op, why)
                         for nid, why in prog.fallbacks.items()]
    width = max((len(r[1]) for r in rows), default=4)
    kw = max((len(r[4]) for r in rows), default=6)
    print(f"{'pass':<7} {'node':<{width}} {'product (M, K) x N':<22} {'kernel':<{kw}} GFLOP/s")
    for pass_, node, _op, shape, kernel, rate in rows:
        print(f"{pass_:<7} {node:<{width}} {shape:<22} {kernel:<{kw}} {rate:>7}")
    print()
    if not on_reference:
        print("every step runs a compiled kernel (none on its NumPy reference)")
    for pass_, node, op, why in on_reference:
        print(f"{pass_:<7} {node} ({op}) runs on its NumPy reference: {why}")
    return 0


def _symbols(graph) -> set[str]:
    """The size names the model's inputs use: B is bound to 1, every other to T."""
    out: set[str] = set()
    for n in graph.inputs:
        for d in graph.node(n).shape:
            if not isinstance(d, int):
                out |= d.symbols()
    return out
