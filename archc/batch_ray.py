"""`archc run --input-dir DIR --output-dir OUT --ray [ADDRESS]`: the batch job as a Ray
Data pipeline (the optional extra: pip install 'archc[ray]').

    shards of item names  ──ray.data.from_items──>  one block per shard
        ──map_batches(Worker, ActorPoolStrategy(size=workers))──>  one row per item
        ──iter_rows (streaming, on the driver)──>  progress bar, failures, summary

Each actor is an archc Worker (archc/batch.py): it loads and compiles the model once and
then runs shards: it reads their items from OUT's and DIR's paths (a path every node sees),
runs them and writes their outputs itself, so only names and one small row per item
travel through Ray. The shards are the in-process job's, run by the same code: the same
batches, so the same bits (given the same threads and kernels).

Ray does the rest: the actor pool, scheduling across nodes, back-pressure, and a retry of
a shard whose worker died (its outputs are written again, atomically, under the same
names: none lost, none twice). A shard whose worker dies MAX_TRIES times is reported as
failed and the job goes on. Without ADDRESS a local Ray is started (and stopped after);
with one, archc joins that cluster. The model reaches the workers as paths (the .arch,
--weights) that every node sees, or with --put-weights as one object in Ray's object
store (loaded once by the driver, fetched once per node).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import Iterator, Sequence

from .dsl.errors import ArchError

MAX_TRIES = 4           # a shard runs at most this often (its worker dying each time)


try:
    import ray
    import ray.data
except ImportError:
    raise ArchError("--ray needs Ray (with Ray Data)",
                    hint="pip install 'archc[ray]'  (or: pip install 'ray[data]')") from None


def run_on_ray(job, work: Sequence[Sequence[str]], worker, address: str | None,
               workers: int | None, model=None) -> Iterator[dict]:
    """Run the shards `work` of `job` on Ray with actors of class `worker` (archc's
    Worker; a test's subclass injects faults), yielding one row per item (path, ok,
    message, rows) as results stream in; an item of a shard Ray gave up on yields none.
    `model`: a loaded Model to hand to the workers through the object store."""
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise ArchError(f"cannot start or join {where}: {str(e).splitlines()[0]}",
                            hint="start one with `ray start --head`, and join it with "
                                 "--ray auto (or its address)") from None
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.max_errored_blocks
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    try:
        if not work:
            return
        if model is not None:
            job = replace(job, model_ref=ray.put(_portable(model)))
        threads = job.threads or 1          # a worker's threads: one per CPU Ray gives it
        n = workers or int(ray.cluster_resources().get("CPU", 1)) // threads
        n = max(1, min(n, len(work)))
        ctx.enable_progress_bars = False      # archc draws its own
        ctx.max_errored_blocks = -1           # a shard that keeps killing its worker is skipped
        quiet.setLevel(logging.ERROR)         # Ray Data's notes on its own execution
        ds = ray.data.from_items([{"paths": list(s)} for s in work],
                                 override_num_blocks=len(work))
        with warnings.catch_warnings():
            # max_task_retries has no named parameter yet (pyproject pins Ray below the
            # release that drops the dictionary of remote arguments)
            warnings.simplefilter("ignore", DeprecationWarning)
            out = ds.map_batches(
                worker, fn_constructor_args=(replace(job, threads=threads), None, True),
                batch_size=1, compute=ray.data.ActorPoolStrategy(size=n),
                num_cpus=threads, max_task_retries=MAX_TRIES - 1)
            for row in out.iter_rows():
                yield {"path": str(row["path"]), "ok": bool(row["ok"]),
                       "message": str(row["message"]), "rows": int(row["rows"])}
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        quiet.setLevel(level)
        if started:
            ray.shutdown()


def _portable(model):
    """The Model without a compiled executor (threads and programs stay in this process)."""
    from .api import Model
    m = Model.__new__(Model)
    m.__dict__.update({k: v for k, v in model.__dict__.items() if k != "_executor"})
    return m
