"""How the command line shows progress (dsl/progress.py reports it):

- on a terminal, a step that has run for more than a second gets one line on stderr,
  rewritten as it advances ("compiling kernels 12/48", "loading weights 210/498 MB") and
  erased when it ends;
- with -v, every step prints its time when it ends (on a terminal or not);
- with -q, nothing.
"""
from __future__ import annotations

import threading
import time
from typing import TextIO

from .dsl import progress
from .dsl.progress import Task

SHOW_AFTER = 1.0          # seconds a step runs before it is shown
REDRAW_EVERY = 0.1        # at most this often


def _figures(task: Task, done: float | None = None) -> str:
    done = task.done if done is None else done
    if task.total is None:
        return ""
    if task.unit == "MB":
        digits = 0 if task.total >= 100e6 else 1
        return f" {done / 1e6:,.{digits}f}/{task.total / 1e6:,.{digits}f} MB"
    return f" {done:,.0f}/{task.total:,.0f}"


class TerminalView:
    def __init__(self, stream: TextIO, *, live: bool, verbose: bool):
        self.stream, self.live, self.verbose = stream, live, verbose
        self.running: list[Task] = []
        self.drawn = False            # a progress line is on the screen
        self.last_draw = 0.0
        self.lock = threading.Lock()
        self.timers: dict[int, threading.Timer] = {}

    def started(self, task: Task) -> None:
        with self.lock:
            self.running.append(task)
        if self.live:
            timer = threading.Timer(SHOW_AFTER, self._draw_if_running, (task,))
            timer.daemon = True
            self.timers[id(task)] = timer
            timer.start()

    def advanced(self, task: Task) -> None:
        now = time.perf_counter()
        if self.live and now - task.start >= SHOW_AFTER and now - self.last_draw >= REDRAW_EVERY:
            self._draw(task)

    def finished(self, task: Task) -> None:
        timer = self.timers.pop(id(task), None)
        if timer is not None:
            timer.cancel()
        with self.lock:
            if task in self.running:
                self.running.remove(task)
            if self.drawn:
                self.stream.write("\r\x1b[K")
                self.drawn = False
            if self.verbose and not (task.total == 0):
                self.stream.write(f"archc: {task.name}{_figures(task)}: "
                                  f"{task.seconds:.2f} s\n")
            self.stream.flush()

    def _draw_if_running(self, task: Task) -> None:
        if task in self.running:
            self._draw(task)

    def _draw(self, task: Task) -> None:
        with self.lock:
            if task is not (self.running[-1] if self.running else None):
                return                    # an inner step is showing, or it has ended
            if task.total == 0:
                return                    # nothing to do after all (kernels all loaded)
            self.stream.write(f"\r\x1b[K{task.name}{_figures(task)} ...")
            self.stream.flush()
            self.drawn = True
            self.last_draw = time.perf_counter()


def show_progress(stream: TextIO, *, quiet: bool, verbose: bool) -> None:
    """Listen to progress reports as the flags say: -q nothing; on a terminal, steps longer
    than a second; -v every step's time."""
    live = not quiet and stream.isatty()
    if quiet or not (live or verbose):
        progress.listen(None)
        return
    progress.listen(TerminalView(stream, live=live, verbose=verbose))
