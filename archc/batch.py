"""Batch inference over a directory: every input in it through one compiled model.

    archc run MODEL.arch --weights W --input-dir DIR --output-dir OUT [--batch-size N]
                         [--tokenizer tokenizer.json] [--resume] [--ray [ADDRESS]]

An item is one file of DIR, and its output is OUT/<stem>.npy (.npz for several outputs):
    .npy          the model's one input        .npz    its inputs by name
    .txt          text, one row per line (with --tokenizer: the model's token inputs)
    .jsonl        text, one row per line: a JSON string, or an object with a "text" field
exactly what `archc run --input FILE` (or `--text-file FILE`) takes, and its output equals
that run's up to float rounding (runtime/batch.py says when items share a call).

The job is cut into shards: consecutive items (by name), a few calls' worth. A worker
(one process's compiled model) runs a shard: reads its items, sorts them by length,
runs calls of up to N rows and writes each output as soon as its rows are done (through
runtime/io.py: atomically, never over an input). The same shards go through the same
worker code in process (the default) or on Ray (archc/batch_ray.py), so both write the
same bits when they run the same kernels (same --threads, tuned kernels settled).

A bad item does not stop the job: its failure is reported with its file name and the
one-line error, the rest run, and the exit code is 1. --resume skips items whose output
is there (written atomically, so there only if whole).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .dsl.errors import ArchError

SUFFIXES = (".npy", ".npz", ".txt", ".jsonl")
TEXT_SUFFIXES = (".txt", ".jsonl")
# a shard is this many calls' worth of items: the window sorted by length. 32 (1,024 items
# at --batch-size 32): 2,000 sentences padded 1.4% more tokens than they hold, against
# 5.2% with 8; outputs are still written item by item as their calls end
SHARD_CALLS = 32
PROGRAM_BYTES = 1 << 30  # compiled programs (one per call shape) kept, by their buffers' bytes
EXIT_SOME_FAILED = 1


@dataclass
class Job:
    """What every worker needs to load the model and run items: plain values, so a Ray
    worker on another machine gets it by pickling (paths absolute)."""
    model: str
    output_dir: str
    weights: str | None = None
    model_name: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    weights_map: str | None = None
    allow_missing: bool = False
    seed: int = 0
    max_memory: int | str | None = None
    tokenizer: str | None = None
    batch_size: int = 32
    threads: int | None = None
    executor: str = "numba"
    weights_dtype: str | None = None
    model_ref: Any = None       # a loaded Model put in Ray's object store, instead of paths

    def load(self):
        if self.model_ref is not None:
            import ray
            return ray.get(self.model_ref)
        from .api import load
        return load(self.model, weights=self.weights, seed=self.seed, model=self.model_name,
                    config=self.config, weights_map=self.weights_map,
                    allow_missing=self.allow_missing, max_memory=self.max_memory,
                    weights_dtype=self.weights_dtype)


@dataclass
class Result:
    """One item's outcome, as a worker reports it."""
    path: str
    ok: bool
    message: str = ""          # the one-line error, or warnings (one per line)
    rows: int = 0


@dataclass
class Summary:
    items: int = 0                   # items run: written + failed
    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (file, message)
    skipped: int = 0                 # outputs there already (--resume)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        skipped = f", {self.skipped} skipped (output there already)" if self.skipped else ""
        return (f"{self.items} item{'s' if self.items != 1 else ''}: {self.written} written, "
                f"{len(self.failed)} failed{skipped} in {self.seconds:.2f} s, "
                f"{self.items_per_second:.1f} items/s")


def output_suffix(graph) -> str:
    return ".npy" if len(graph.outputs) == 1 else ".npz"


def one_line(e: BaseException) -> str:
    """The usual error, on one line: an ArchError's message, anything else as a bug."""
    if isinstance(e, ArchError):
        return f"error: {e.message}"
    return f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# ---- a worker: one process's compiled model --------------------------------------------------

class Worker:
    """Loads and compiles the model once; `run(paths)` runs a shard of items and writes
    their outputs. Ray Data calls it as a map_batches class (`__call__`)."""

    def __init__(self, job: Job, model=None, keep_going: bool = False):
        """`keep_going`: a model that does not load fails every item, not the constructor
        (a Ray worker whose constructor raised would be restarted again and again)."""
        from .runtime.batch import layout_of
        from .text import ROLES
        self.job = job
        self.failure = None
        try:
            self.model = model if model is not None else job.load()
        except Exception as e:  # noqa: BLE001
            if not keep_going:
                raise
            self.failure = f"{one_line(e)} (loading the model)"
            return
        self.graph = self.model.graph
        self.inputs = [self.graph.node(n).attrs["name"] for n in self.graph.inputs]
        self.layout = layout_of(self.graph, ROLES["mask"])
        self.suffix = output_suffix(self.graph)
        self.tokenizer = None
        self.pad_values: dict[str, int] = {}
        if job.tokenizer is not None:
            from .run_cmds import _tokenizer
            self.tokenizer = _tokenizer(job.tokenizer)
            pad = (self.tokenizer.padding or {}).get("pad_id", 0)
            self.pad_values = {n: pad for n in ROLES["ids"] if n in self.inputs}
        self.reads = self.model.files + ([("tokenizer", job.tokenizer)] if job.tokenizer else [])
        from .runtime.io import OutputFolder
        self.outputs = OutputFolder(job.output_dir, self.reads)
        self.ex = None
        self.fits: set[tuple] = set()         # call sizes checked against --max-memory
        if job.executor == "numba":
            self.ex = self.model.compiled(job.threads)

    # Ray Data: a batch of shards (one, as archc asks) -> one row per item
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        results = [r for paths in batch["paths"] for r in self.run([str(p) for p in paths])]
        return {"path": [r.path for r in results], "ok": [r.ok for r in results],
                "message": [r.message for r in results], "rows": [r.rows for r in results]}

    def run(self, paths: Sequence[str]) -> list[Result]:
        """Run a shard: each item read, checked, batched, run and written; a failure is
        that item's alone (a call that fails is run again one item at a time)."""
        from .runtime.batch import gather, plan, rows_of, scatter
        if self.failure is not None:
            return [Result(p, False, self.failure) for p in paths]
        results: dict[int, Result] = {}
        items: list[dict] = []
        index: list[int] = []                 # item -> position in `paths`
        warnings: dict[int, list[str]] = {}
        for k, (path, read) in enumerate(zip(paths, self.read_all(paths))):
            if isinstance(read, Exception):   # reported as this item's failure
                results[k] = Result(path, False, one_line(read))
            else:
                index.append(k)
                items.append(read[0])
                warnings[k] = read[1]
        # item -> (first row, rows, outputs) of its pieces run so far
        parts: dict[int, list[tuple[int, int, dict]]] = {i: [] for i in range(len(items))}
        finished: set[int] = set()
        for call in plan(self.layout, items, self.job.batch_size):
            call = [p for p in call if p.item not in finished]
            if not call:
                continue
            try:
                outs = scatter(self.layout, items, call,
                               self.call(gather(self.layout, items, call, self.pad_values)))
                for p, out in zip(call, outs):
                    parts[p.item].append((p.start, p.stop - p.start, out))
            except Exception:  # noqa: BLE001 - which item? each runs alone to tell
                for i in dict.fromkeys(p.item for p in call):
                    try:
                        parts[i] = [(0, rows_of(self.layout, items[i]), self.alone(items[i]))]
                    except Exception as e:  # noqa: BLE001
                        results[index[i]] = Result(paths[index[i]], False, one_line(e))
                        finished.add(i)
            for i in dict.fromkeys(p.item for p in call):
                if i not in finished and \
                        sum(n for _, n, _ in parts[i]) == rows_of(self.layout, items[i]):
                    k = index[i]
                    results[k] = self.write(paths[k], parts.pop(i), items[i], warnings[k])
                    finished.add(i)
        return [results[k] for k in range(len(paths))]

    def read_all(self, paths: Sequence[str]) -> list:
        """Each item's (inputs checked against the model's declared types, warnings), or
        the exception reading it raised; the text items' lines tokenised in one call."""
        from .runtime.inputs import bind_inputs, read_array
        from .text import texts_inputs
        got: dict[int, Any] = {}
        texts: dict[int, list[str]] = {}
        for k, name in enumerate(paths):
            path = Path(name)
            try:
                if path.suffix in TEXT_SUFFIXES:
                    texts[k] = self.text_lines(path)
                    continue
                data = read_array(path, what="input")
                if isinstance(data, dict):
                    got[k] = data
                elif len(self.inputs) == 1:
                    got[k] = {self.inputs[0]: data}
                else:
                    raise ArchError(f"the model has {len(self.inputs)} inputs "
                                    f"({', '.join(self.inputs)}); give them in an .npz by "
                                    "name")
            except Exception as e:  # noqa: BLE001 - this item's failure
                got[k] = e
        if texts:
            try:
                got.update(zip(texts, texts_inputs(self.graph, self.tokenizer,
                                                   list(texts.values()), {})))
            except Exception:  # noqa: BLE001 - whose? each is tokenised alone to tell
                for k, lines in texts.items():
                    try:
                        got[k] = texts_inputs(self.graph, self.tokenizer, [lines], {})[0]
                    except Exception as e:  # noqa: BLE001
                        got[k] = e
        for k, arrays in got.items():
            if not isinstance(arrays, Exception):
                try:
                    arrays, _, warned = bind_inputs(self.graph, arrays)
                    got[k] = (arrays, warned)
                except Exception as e:  # noqa: BLE001
                    got[k] = e
        return [got[k] for k in range(len(paths))]

    def text_lines(self, path: Path) -> list[str]:
        from .text import read_lines
        if self.tokenizer is None:
            raise ArchError(f"{path.suffix} input is text: it needs --tokenizer")
        numbered = [(n, line) for n, line in enumerate(read_lines(path, "input"), 1)
                    if line.strip()]
        lines = [_json_text(line, n) if path.suffix == ".jsonl" else line
                 for n, line in numbered]
        if not lines:
            raise ArchError("no text in it (every line is blank)")
        return lines

    def call(self, inputs: dict) -> dict:
        """One model call, refused beforehand if it would not fit in --max-memory."""
        from .runtime.budget import check_run
        from .runtime.inputs import bind_inputs
        _, sizes, _ = bind_inputs(self.graph, inputs)
        key = tuple(sorted(sizes.items()))
        if key not in self.fits:          # the estimate walks the graph: once per sizes
            check_run(self.graph, sizes, self.model.max_memory)
            self.fits.add(key)
        if self.ex is None:
            return self.model.run(inputs, seed=self.job.seed, executor="reference")
        out = self.ex.run(inputs)
        self.ex.trim_programs(PROGRAM_BYTES)
        return out

    def alone(self, arrays: dict) -> dict:
        """An item's outputs from calls of its own."""
        from .runtime.batch import gather, join, plan, scatter
        parts = []
        for call in plan(self.layout, [arrays], self.job.batch_size):
            parts += scatter(self.layout, [arrays], call,
                             self.call(gather(self.layout, [arrays], call, self.pad_values)))
        return join(self.layout, parts)

    def write(self, path: str, parts: list, arrays: dict, warned: list[str]) -> Result:
        from .runtime.batch import join, rows_of
        try:
            outputs = join(self.layout, [o for _, _, o in sorted(parts, key=lambda p: p[0])])
            # never over a file the job reads; the job sweeps and checks: runtime/io.py
            self.outputs.save(Path(path).stem + self.suffix, outputs, [("input", path)])
        except Exception as e:  # noqa: BLE001
            return Result(path, False, one_line(e))
        return Result(path, True, "\n".join(f"warning: {w}" for w in warned),
                      rows_of(self.layout, arrays))


def _json_text(line: str, n: int) -> str:
    try:
        value = json.loads(line)
    except ValueError as e:
        raise ArchError(f"line {n} is not JSON: {e}") from None
    if isinstance(value, dict):
        value = value.get("text")
    if not isinstance(value, str):
        raise ArchError(f"line {n}: expected a JSON string or an object with a \"text\" "
                        "string")
    return value


# ---- the job: list, shard, run, report ------------------------------------------------------

def list_inputs(input_dir: Path) -> tuple[list[Path], int]:
    """The items of DIR in name order (hidden files and other suffixes left out), and how
    many files were left out."""
    if not input_dir.is_dir():
        raise ArchError(f"--input-dir {input_dir}: " + ("not a directory" if input_dir.exists()
                                                        else "no such directory"))
    items, other = [], 0
    with os.scandir(input_dir) as entries:
        for e in entries:
            if e.name.startswith(".") or e.is_dir():
                continue
            if Path(e.name).suffix in SUFFIXES:
                items.append(input_dir / e.name)
            else:
                other += 1
    return sorted(items, key=lambda p: p.name), other


def shards(paths: Sequence[str], batch_size: int) -> list[list[str]]:
    size = batch_size * SHARD_CALLS
    return [list(paths[i:i + size]) for i in range(0, len(paths), size)]


class Reporter:
    """Counts results as they come, says each failure at once, and draws a progress bar
    (items, items/s, ETA) when the stream is a terminal."""

    def __init__(self, total: int, summary: Summary, stream=None,
                 names: Mapping[str, str] | None = None):
        self.total, self.summary, self.stream = total, summary, stream
        self.names = names or {}         # a worker's path -> the name the user knows it by
        self.tty = stream is not None and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.drawn = 0.0
        self.seen: set[str] = set()

    def __call__(self, r: Result) -> None:
        if r.path in self.seen:       # a result said twice (a retried shard) counts once
            return
        self.seen.add(r.path)
        name = self.names.get(r.path, r.path)
        s = self.summary
        s.items += 1
        if r.ok:
            s.written += 1
        else:
            s.failed.append((name, r.message))
        if self.stream is not None and r.message:
            self.clear()
            for line in r.message.splitlines():
                print(f"{name}: {line}", file=self.stream)
        now = time.perf_counter()
        if self.tty and (now - self.drawn > 0.1 or s.items == self.total):
            self.drawn = now
            self.draw(now - self.start)

    def draw(self, seconds: float) -> None:
        s = self.summary
        rate = s.items / seconds if seconds > 0 else 0.0
        left = (self.total - s.items) / rate if rate > 0 else 0.0
        width = 24
        full = int(width * s.items / self.total) if self.total else width
        failed = f"  {len(s.failed)} failed" if s.failed else ""
        self.stream.write(f"\r[{'#' * full}{'.' * (width - full)}] {s.items}/{self.total} items"
                          f"  {rate:.1f} items/s  ETA {_clock(left)}{failed}\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")

    def missing(self, paths: Sequence[str], why: str) -> None:
        for p in paths:
            if p not in self.seen:
                self(Result(p, False, why))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def run_dir(model, input_dir, output_dir, *, weights=None, batch_size: int = 32,
            tokenizer=None, resume: bool = False, ray: str | bool | None = None,
            workers: int | None = None, put_weights: bool = False, threads: int | None = None,
            executor: str = "numba", seed: int = 0, config: Mapping[str, Any] | None = None,
            model_name: str | None = None, weights_map: str | None = None,
            allow_missing: bool = False, max_memory=None, weights_dtype: str | None = None,
            progress=None) -> Summary:
    """Run every input of `input_dir` through `model` (an .arch path, or a Model from
    archc.load) and write one output per input into `output_dir`; see the module
    docstring. `ray`: None runs in this process; True (a local Ray) or an address ("auto",
    "HEAD_IP:6379") runs on Ray with `workers` workers of `threads` threads each;
    `put_weights` loads the model here and hands it to the workers through Ray's object
    store instead of each reading `weights` (always so for a Model). `weights_dtype`: as
    archc.load's (an .arch path only; a Model keeps its own). `progress`: a stream
    for the progress bar and the failures as they come. Returns the Summary."""
    from .api import Model
    loaded = model if isinstance(model, Model) else None
    job = Job(model=str(Path(model).resolve()) if loaded is None else "",
              output_dir=str(Path(output_dir).resolve()),
              weights=None if weights is None else str(Path(weights).resolve()),
              model_name=model_name, config=dict(config or {}), weights_map=weights_map,
              allow_missing=allow_missing, seed=seed, max_memory=max_memory,
              tokenizer=None if tokenizer is None else str(Path(tokenizer).resolve()),
              batch_size=batch_size, threads=threads, executor=executor,
              weights_dtype=weights_dtype)
    if batch_size < 1:
        raise ArchError(f"--batch-size must be at least 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ArchError(f"--workers must be at least 1, got {workers}")
    if executor not in ("numba", "reference"):
        raise ArchError(f"unknown executor {executor!r}; expected numba or reference")
    if ray is not None:
        from .batch_ray import MAX_TRIES, run_on_ray   # says so now if Ray is not installed
    in_dir, out_dir = Path(input_dir), Path(output_dir)
    paths, _ = list_inputs(in_dir)
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ArchError(f"--output-dir {out_dir} is the input directory",
                        hint="outputs are named like their inputs: write them elsewhere")
    if ray is None and loaded is None:
        loaded = job.load()       # in process: the model is loaded once, here
    if loaded is not None:
        graph = loaded.graph
    else:                         # on Ray the workers load it; here: its outputs, its errors
        from .dsl.lower import lower
        graph = lower(job.model, model_name, job.config)
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArchError(f"cannot make --output-dir {out_dir}: {e.strerror}") from None
    from .dsl.cache import remove_stale_temps_in
    remove_stale_temps_in(out_dir)        # of writes killed mid-way: before workers write
    todo, summary, clashes = plan_items(paths, out_dir, output_suffix(graph), resume)
    # workers get absolute paths (a Ray worker's directory is not ours); reports say DIR/name
    names = {str(p.resolve()): str(p) for p in paths}
    todo = [str(Path(p).resolve()) for p in todo]
    reporter = Reporter(len(todo) + len(clashes), summary, progress, names)
    if progress is not None:
        for w in getattr(loaded, "warnings", ()):
            print(f"warning: {w}", file=progress)
    for p, why in clashes:
        reporter(Result(p, False, why))
    work = shards(todo, batch_size)
    t0 = time.perf_counter()
    try:
        if ray is None:
            worker = Worker(job, loaded)
            if progress is not None and worker.ex is not None:
                for w in worker.ex.warnings:
                    print(f"warning: {w}", file=progress)
            # the clock starts with the model ready, as a Ray worker's does before its first
            # shard (on Ray it counts Ray's start and the workers' loading: its overhead)
            t0 = reporter.start = time.perf_counter()
            for shard in work:
                for r in worker.run(shard):
                    reporter(r)
        else:
            if loaded is None and put_weights:
                loaded = job.load()
            for row in run_on_ray(job, work, Worker, None if ray is True else str(ray),
                                  workers, loaded):
                reporter(Result(**row))
            reporter.missing(todo, f"error: its worker died {MAX_TRIES} times running it "
                                   "(Ray's logs say why)")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - t0
        reporter.clear()
    return summary


def plan_items(paths: list[Path], out_dir: Path, suffix: str, resume: bool):
    """(items to run, the Summary so far, (item, why) of items whose names clash): two
    inputs with one stem would write one output; with --resume an item whose output is
    there, whole, is skipped (one torn by a machine that crashed is run again)."""
    from .runtime.io import is_whole
    by_stem: dict[str, list[Path]] = {}
    for p in paths:
        by_stem.setdefault(p.stem, []).append(p)
    done = set(os.listdir(out_dir)) if resume else set()
    todo, clashes, summary = [], [], Summary()
    for stem, ps in by_stem.items():
        if len(ps) > 1:
            names = " and ".join(p.name for p in ps)
            clashes += [(str(p), f"error: inputs {names} would both write {stem}{suffix}")
                        for p in ps]
        elif stem + suffix in done and is_whole(out_dir / (stem + suffix)):
            summary.skipped += 1
        else:
            todo.append(str(ps[0]))
    return sorted(todo, key=lambda p: Path(p).name), summary, clashes


# ---- the command line --------------------------------------------------------------------------

def add_batch_args(run) -> None:
    g = run.add_argument_group("many inputs (batch inference)")
    g.add_argument("--input-dir", metavar="DIR",
                   help="run every input in DIR (.npy, .npz by input name; .txt/.jsonl lines "
                        "with --tokenizer), one output each into --output-dir")
    g.add_argument("--output-dir", metavar="OUT", help="where --input-dir's outputs go "
                   "(OUT/<stem>.npy, or .npz for several outputs)")
    from .args import COUNT
    g.add_argument("--batch-size", type=COUNT, metavar="N",
                   help="rows per model call (default 32)")
    g.add_argument("--resume", action="store_true",
                   help="skip inputs whose output is already in --output-dir")
    g.add_argument("--ray", nargs="?", const=True, metavar="ADDRESS",
                   help="run on Ray (pip install 'archc[ray]'): a local Ray, or the cluster "
                        "at ADDRESS (auto, or HEAD_IP:6379; see docs/BATCH.md)")
    g.add_argument("--workers", type=COUNT, metavar="N",
                   help="Ray workers (default: the cluster's CPUs / --threads)")
    g.add_argument("--put-weights", action="store_true",
                   help="with --ray: load the model here and give it to the workers through "
                        "Ray's object store (else each worker reads --weights itself)")


BATCH_FLAGS = (("--input-dir", "input_dir"), ("--output-dir", "output_dir"),
               ("--batch-size", "batch_size"), ("--resume", "resume"), ("--ray", "ray"),
               ("--workers", "workers"), ("--put-weights", "put_weights"))


def wants_batch(args) -> bool:
    """Did `archc run` get any flag of the batch job?"""
    return any(getattr(args, name) not in (None, False) for _, name in BATCH_FLAGS)


def cmd_run_dir(args) -> int:
    """`archc run --input-dir`: returns the exit code (1 when some item failed)."""
    if args.input_dir is None:
        flag = next(f for f, name in BATCH_FLAGS if getattr(args, name) not in (None, False))
        raise ArchError(f"{flag} is for a directory of inputs: give --input-dir DIR "
                        "--output-dir OUT")
    if args.output_dir is None:
        raise ArchError("--input-dir needs --output-dir OUT (one output per input goes there)")
    clash = [flag for flag, given in (("--input", args.input), ("--text", args.text),
                                      ("--text-file", args.text_file), ("--output", args.output),
                                      ("--profile", args.profile), ("--train", args.train))
             if given]
    if clash:
        raise ArchError(f"--input-dir takes its inputs from the directory: drop {clash[0]}")
    if args.tap:
        raise ArchError("--tap is for a run of its own: a batch over --input-dir writes the "
                        "model's outputs only", hint="archc run ... --input FILE --tap NAME")
    from .args import parse_sets
    batch_size = 32 if args.batch_size is None else args.batch_size
    summary = run_dir(args.model, args.input_dir, args.output_dir, weights=args.weights,
                      batch_size=batch_size, tokenizer=args.tokenizer, resume=args.resume,
                      ray=args.ray, workers=args.workers, put_weights=args.put_weights,
                      threads=args.threads, executor=args.executor, seed=args.seed,
                      config=parse_sets(args.set), model_name=args.model_name,
                      weights_map=args.weights_map, allow_missing=args.allow_missing,
                      max_memory=args.max_memory,
                      weights_dtype=args.weights_dtype, progress=sys.stderr)
    print(summary.line(), file=sys.stderr)
    if summary.interrupted:
        print("interrupted: what was written is whole; --resume continues from there",
              file=sys.stderr)
        return 130
    return EXIT_SOME_FAILED if summary.failed else 0


__all__ = ["Job", "Result", "Summary", "Worker", "run_dir", "list_inputs", "shards"]
