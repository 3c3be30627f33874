"""The `archc` command line: run, dump, check, stats, generate, tune, export, import.

User errors print `file:line:col: error: ...` with the source line and a caret, and exit 2;
no traceback unless --debug. `check` and `dump` import no Numba and compile nothing.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from .args import (add_checkpoint_args, add_weights_args, add_weights_dtype, input_files,
                   parse_dims, parse_named_files, parse_sets)
from .dsl.dims import Dim
from .dsl.errors import ArchError, closest, did_you_mean
from .signals import quit_now

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130    # 128 + SIGINT, what a shell reports for Ctrl-C


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the .arch file")
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="which model, when the file defines several")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress (shown on a terminal for any step over a second)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each step (reading, passes, loading, compiling) with its time")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a config constant, e.g. --set n_layer=2; repeatable")


def lower_args(args):
    """The graph a command shows or checks: sizes from --weights's config.json (as `run`
    takes them), then --set. Returns (graph, checkpoint or None); nothing is read of the
    checkpoint but its config and headers."""
    from .api import lower_with_checkpoint
    graph, ckpt, notes = lower_with_checkpoint(
        args.model, args.model_name, parse_sets(args.set), getattr(args, "weights", None),
        getattr(args, "weights_map", None))
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    return graph, ckpt


def _inputs_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--input", "-i", action="append", default=[], metavar="[NAME=]FILE",
                   help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archc", description="Compile, inspect and run transformer architectures "
                                  "written in .arch files.")
    parser.add_argument("--version", action="version", version="archc 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run a model on .npy inputs")
    _common(run)
    _inputs_arg(run, "an input array (.npy, or .npz holding several by name); "
                     "NAME=FILE when the model has several inputs; repeatable")
    run.add_argument("--tokenizer", metavar="FILE",
                     help="a Hugging Face tokenizer.json that makes the token inputs (ids, "
                          "mask, types) from --text or --text-file")
    run.add_argument("--text", action="append", default=[], metavar="TEXT",
                     help="an input text, one batch row (needs --tokenizer); repeatable")
    run.add_argument("--text-file", metavar="FILE",
                     help="input texts, one per line (blank lines skipped)")
    add_weights_args(run)
    run.add_argument("--train", action="store_true",
                     help="apply dropout (inverted scaling), deterministically from --seed")
    run.add_argument("--output", "-o", metavar="FILE",
                     help="write outputs (.npy for one output, .npz for several)")
    run.add_argument("--tap", action="append", default=[], metavar="NAME",
                     help="return this value too, as an output of its name: a scope "
                          "(layers.3.ffn, inside a repeat too), an MoE's router (its chosen "
                          "experts: layers.*.moe.router), or a node id; * matches as in file "
                          "names; repeatable")
    run.add_argument("--full", action="store_true", help="print every value, unabbreviated")
    run.add_argument("--max-memory", metavar="SIZE",
                     help="refuse to run if parameters + activations would need more, e.g. "
                          "8G or 512M (default: 80%% of the RAM)")
    add_weights_dtype(run)

    dump = sub.add_parser("dump", help="show the graph grouped by layer")
    _common(dump)
    dump.add_argument("--format", "-f", choices=("text", "dot", "json", "svg", "png", "html"),
                      default="text", help="svg and png are drawn by Graphviz's `dot`; html "
                      "is one self-contained page: picture, layer table, fusion report, plans")
    dump.add_argument("--expand", action="store_true",
                      help="show every iteration of a repeat stack")
    dump.add_argument("--layer", metavar="NAME", help="show one layer in full, e.g. layers.3")
    dump.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                      help="give a symbolic size a value for FLOP counts, e.g. --dim T=128")
    _inputs_arg(dump, "take symbolic sizes from these input arrays")
    add_checkpoint_args(dump, "; its config.json sets the sizes")
    dump.add_argument("--output", "-o", metavar="FILE", help="write the dump to a file")
    from .compile_cmds import add_dump_args, add_stats_parser
    add_dump_args(dump)

    check = sub.add_parser("check", help="parse, build and infer shapes")
    _common(check)
    add_checkpoint_args(check, "; its config.json sets the sizes, and its tensor names and "
                              "shapes are checked against the model (headers only)")
    add_stats_parser(sub, _common)
    imp = sub.add_parser("import", help="write a .arch for a Hugging Face checkpoint folder")
    imp.add_argument("checkpoint", metavar="CHECKPOINT_DIR",
                     help="a Hugging Face folder: config.json and model.safetensors")
    imp.add_argument("--output", "-o", metavar="FILE", help="write the .arch here "
                     "(default: print it)")
    imp.add_argument("--debug", action="store_true", help="show Python tracebacks")
    imp.set_defaults(quiet=False, verbose=False)
    from .run_cmds import add_generate_parser, add_run_args
    add_run_args(run)
    from .batch import add_batch_args
    add_batch_args(run)
    add_generate_parser(sub, _common, _inputs_arg)
    from .tune_cmd import add_tune_parser
    add_tune_parser(sub, _common)
    from .export_cmd import add_export_parser
    add_export_parser(sub, _common)
    parser.set_defaults(_commands=sub.choices)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """argparse's parsing, with a did-you-mean for an unknown option of the command."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = args._commands[args.command]
        options = [o for o in command._option_string_actions if o.startswith("--")]
        hints = [did_you_mean(x.partition("=")[0], options) for x in extra if x.startswith("-")]
        hint = next((h for h in hints if h), None)
        command.print_usage(sys.stderr)
        print(f"{command.prog}: error: unrecognized arguments: {' '.join(extra)}"
              + (f"\nhint: {hint}" if hint else ""), file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    return args


def check_dims(graph, dims: dict[str, int]) -> None:
    """--dim NAME=N names a symbolic size of the model."""
    sizes = {s for n in graph.topo() for d in (graph.node(n).shape or ())
             if isinstance(d, Dim) for s in d.symbols()}
    for name, value in dims.items():
        if name not in sizes and name not in ("B", "T"):
            near = closest(name, sizes)
            known = f"its sizes: {', '.join(sorted(sizes))}" if sizes else \
                "it has no symbolic sizes"
            raise ArchError(f"--dim {name}={value}: the model has no symbolic size `{name}`",
                            hint=f"did you mean `--dim {near}={value}`? ({known})" if near
                            else known)


def read_inputs(graph, items: Sequence[str], limit: int | None = None) -> dict:
    from .runtime.inputs import read_array
    names = [graph.node(n).attrs["name"] for n in graph.inputs]
    arrays: dict = {}
    for name, path in parse_named_files(items):
        data = read_array(path, what=f"input `{name}`" if name else "input", limit=limit)
        if isinstance(data, dict):
            if name is not None:
                raise ArchError(f"{path} is an .npz archive; pass it without a name",
                                hint="its arrays are matched to inputs by their names")
            arrays.update(data)
        elif name is None:
            if len(names) != 1:
                raise ArchError(f"the model has {len(names)} inputs ({', '.join(names)}); say "
                                f"which one {path} is", hint=f"--input {names[0]}={path}"
                                if names else None)
            arrays[names[0]] = data
        else:
            arrays[name] = data
    return arrays


def cmd_run(args) -> int:
    from .batch import cmd_run_dir, wants_batch
    if wants_batch(args):                 # many inputs, one output each
        return cmd_run_dir(args)
    import numpy as np
    from .api import load
    from .runtime.inputs import bind_inputs
    from .runtime.io import check_output, save_outputs, to_stdout
    reads = input_files(args.input) + [(what, f) for what, f in (
        ("tokenizer", args.tokenizer), ("text file", args.text_file)) if f]
    check_output(args.output, reads)                 # before the weights are read
    model = load(args.model, weights=args.weights, seed=args.seed, model=args.model_name,
                 config=parse_sets(args.set), weights_map=args.weights_map,
                 allow_missing=args.allow_missing, max_memory=args.max_memory,
                 weights_dtype=args.weights_dtype)
    for w in model.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.tap:
        model = model.tapped(args.tap)
    arrays = read_inputs(model.graph, args.input, model.max_memory)
    from .text import read_texts, text_inputs
    texts = read_texts(args.text, args.text_file)
    arrays.update(text_inputs(model.graph, args.tokenizer, texts, arrays))
    check_output(args.output, model.files + reads, list(model.graph.outputs))
    _, sizes, warnings = bind_inputs(model.graph, arrays)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    from .runtime.budget import check_run
    check_run(model.graph, sizes, model.max_memory)   # before any executor allocates
    from .run_cmds import run_model
    outputs = run_model(model, arrays, args)
    if args.output:
        save_outputs(args.output, outputs)
    if args.output and to_stdout(args.output):
        return 0            # the arrays went to stdout as .npy bytes: print nothing else
    opts = dict(precision=8, suppress_small=False, max_line_width=100)
    if not args.full:
        opts.update(threshold=200, edgeitems=3)
    else:
        opts.update(threshold=sys.maxsize)
    for name, arr in outputs.items():
        short = {"float32": "float", "int64": "int"}.get(str(arr.dtype), str(arr.dtype))
        print(f"{name}: {short}[{', '.join(str(d) for d in arr.shape)}]")
        print(np.array2string(arr, **opts))
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_dump(args) -> int:
    graph, ckpt = lower_args(args)
    if args.output:            # before the pipeline runs, not after
        from .api import source_files
        from .runtime.io import check_output
        check_output(args.output, source_files(graph) + input_files(args.input)
                     + [("weights", f) for f in (ckpt.files if ckpt else [])])
    bindings = parse_dims(args.dim)
    check_dims(graph, bindings)
    if args.input:
        from .runtime.inputs import bind_inputs
        _, found, _ = bind_inputs(graph, read_inputs(graph, args.input))
        bindings = {**found, **bindings}
    data = _dump_bytes(graph, args, bindings)
    if args.output:
        from .runtime.io import write_atomic
        write_atomic(args.output, lambda f: f.write(data))
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
    return 0


def _dump_bytes(graph, args, bindings: dict) -> bytes:
    from .compiler import dump
    from .compile_cmds import compile_graph, html_page, report, wants_pipeline
    if args.format == "html":            # runs the pipeline itself: the page reports it
        return html_page(graph, args, bindings).encode()
    extra = ""
    if wants_pipeline(args):
        res = compile_graph(graph, args, bindings)
        graph, extra = res.graph, report(res, args)
    if args.format == "text":
        text = dump.dump_text(graph, expand=args.expand, layer=args.layer, bindings=bindings)
        return (text + ("\n" + extra if extra else "")).encode()
    sys.stderr.write(extra)
    if args.format == "json":
        return dump.dump_json(graph, layer=args.layer, bindings=bindings).encode()
    text = dump.dump_dot(graph, expand=args.expand, layer=args.layer, bindings=bindings)
    return dump.render_dot(text, args.format) if args.format in ("svg", "png") else text.encode()


def cmd_check(args) -> int:
    from .compiler.dump import layer_groups, totals
    graph, ckpt = lower_args(args)
    tot = totals(graph, layer_groups(graph))
    ins = ", ".join(f"{graph.node(n).attrs['name']}: {graph.node(n).type_str}"
                    for n in graph.inputs)
    line = (f"{args.model}: ok: model {graph.name}({ins}), {tot['layers']} layers, "
            f"{tot['params']:,} parameters, {len(graph)} nodes")
    if ckpt is not None:
        from .api import weight_map
        from .runtime.weights import check_weights
        n = check_weights(graph, ckpt, f"weights {args.weights}",
                          weight_map(graph, ckpt, args.weights_map))
        total = len({p.attrs["name"] for p in graph.params()})
        line += f"; weights {args.weights} fill {n} of {total} parameters"
    print(line)
    return 0


def cmd_stats(args) -> int:
    from .compile_cmds import cmd_stats as stats
    graph, _ = lower_args(args)
    dims = parse_dims(args.dim)
    check_dims(graph, dims)
    sys.stdout.write(stats(args, graph, dims))
    return 0


def cmd_generate(args) -> int:
    from .api import load
    from .run_cmds import cmd_generate as generate
    from .runtime.inputs import read_array
    return generate(args, load, read_array)


def cmd_tune(args) -> int:
    from .tune_cmd import cmd_tune as tune
    return tune(args)


def cmd_export(args) -> int:
    from .export_cmd import cmd_export as export
    return export(args)


def cmd_import(args) -> int:
    from .importer import import_checkpoint
    text = import_checkpoint(args.checkpoint)
    if not args.output:
        sys.stdout.write(text)
        return 0
    if not args.output.endswith(".arch"):
        raise ArchError(f"--output {args.output}: an imported model is a .arch file",
                        hint=f"-o {Path(args.output).stem}.arch")
    from .runtime.io import check_output, write_atomic
    from .runtime.checkpoint import read_checkpoint
    check_output(args.output, [("checkpoint", f) for f in read_checkpoint(args.checkpoint).files])
    write_atomic(args.output, lambda f: f.write(text.encode()))
    print(f"wrote {args.output}: archc run {args.output} --weights {args.checkpoint} ...",
          file=sys.stderr)
    return 0


COMMANDS = {"run": cmd_run, "dump": cmd_dump, "check": cmd_check, "stats": cmd_stats,
            "generate": cmd_generate, "tune": cmd_tune, "export": cmd_export,
            "import": cmd_import}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(build_parser(), argv)
    except ArchError as e:   # an argument `type=` that checks its value (e.g. --max-memory)
        print(e.render(), file=sys.stderr)
        return EXIT_USER_ERROR
    from .progress_view import show_progress
    show_progress(sys.stderr, quiet=args.quiet, verbose=args.verbose)
    try:
        return COMMANDS[args.command](args)
    except ArchError as e:
        if _interrupted:    # e.g. input that ended because the interrupt closed its pipe
            return _said_interrupted()
        if args.debug:
            raise
        print(e.render(), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return _said_interrupted()
    except MemoryError as e:        # past the budget's estimate: say it as the budget would
        if args.debug:
            raise
        print(out_of_memory(e).render(), file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug in archc: say so plainly, traceback only on request
        if _interrupted:    # an interrupt that a library turned into another exception
            return _said_interrupted()
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e}\n"
              "this is a bug in archc; rerun with --debug for the traceback", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        from .dsl import progress
        progress.listen(None)


def out_of_memory(e: MemoryError) -> ArchError:
    from .runtime.budget import default_max_memory, fmt
    limit = default_max_memory()
    detail = f" ({str(e).splitlines()[0]})" if str(e) else ""
    return ArchError(f"out of memory{detail}; {limit.why} is {fmt(limit)} now",
                     hint="use a smaller model or shorter inputs, or give archc more memory "
                          "(--max-memory only lowers the limit it checks against)")


_interrupted = False


def _said_interrupted() -> int:
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _interrupt(signum, frame) -> None:
    """Ctrl-C while a command runs: unwind, so temporary files are removed; a second one
    leaves at once."""
    global _interrupted
    _interrupted = True
    signal.signal(signum, quit_now)
    raise KeyboardInterrupt


def console() -> int:
    """main() as the `archc` process runs it (see archc/__main__.py for Ctrl-C).

    Numba's first kernel load imports scipy.linalg whenever SciPy is installed, only to see
    whether np.dot can be compiled inside kernels (0.1-0.25 s of every start). archc's
    kernels never call BLAS from compiled code, so a process of our own answers "no" by
    blocking that one import. Not done in main(): a program calling main() keeps its SciPy.
    """
    sys.modules.setdefault("scipy.linalg.cython_blas", None)
    handled = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    if handled:
        signal.signal(signal.SIGINT, _interrupt)
    try:
        return main()
    except (KeyboardInterrupt, Exception) as e:   # between main()'s own handlers
        if not (isinstance(e, KeyboardInterrupt) or _interrupted):
            raise
        return _said_interrupted()
    finally:
        if handled:                  # exiting (threads, atexit): nothing left to clean
            signal.signal(signal.SIGINT, quit_now)


def entry() -> None:
    """The console script as installed before archc/__main__.py took this role."""
    signal.signal(signal.SIGINT, quit_now)
    raise SystemExit(console())
