"""What a long step is doing, told to whoever listens (the command line shows it on a
terminal; nothing listens in a library call or a test).

    with progress.task("loading weights", total=nbytes, unit="MB") as t:
        for ...: t.advance(len(chunk))
    with progress.task("pipeline: simplify"):      # a step with no count: only its time
        ...

Every stage may report (this module is at the bottom of dsl -> compiler -> runtime -> archc);
a listener gets `started(task)`, `advanced(task)` and `finished(task)` calls. `Task.done`
and `Task.total` are in the task's own unit (bytes shown as MB, kernels as a count).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol


@dataclass
class Task:
    name: str
    total: float | None = None
    unit: str = ""                     # "MB": done/total are bytes shown in MB
    done: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0               # set when finished

    def advance(self, n: float = 1) -> None:
        self.done += n
        if _listener is not None:
            _listener.advanced(self)


class Listener(Protocol):
    def started(self, task: Task) -> None: ...
    def advanced(self, task: Task) -> None: ...
    def finished(self, task: Task) -> None: ...


_listener: Listener | None = None


def listen(listener: Listener | None) -> Listener | None:
    """Send reports to `listener` (None: to no one); returns the previous one."""
    global _listener
    previous, _listener = _listener, listener
    return previous


@contextmanager
def task(name: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
    t = Task(name, total, unit)
    if _listener is not None:
        _listener.started(t)
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - t.start
        if _listener is not None:
            _listener.finished(t)
