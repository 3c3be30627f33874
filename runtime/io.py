"""Writing results: atomically, so an interrupted run never leaves a half-written file and
an existing file is only ever replaced by a complete one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..dsl.cache import replace_atomically
from ..dsl.errors import ArchError


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call `write(fileobj)` on a temporary file beside `path`, then rename it over `path`."""
    p = Path(path)
    if p.is_dir():
        raise ArchError(f"output {p} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ArchError(f"cannot write {p}: directory {parent} does not exist")
    replace_atomically(p, write)


def save_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray]) -> None:
    """One output -> .npy; several -> .npz keyed by output name."""
    p = str(path)
    if p.endswith(".npz"):
        write_atomic(p, lambda f: np.savez(f, **outputs))
    elif len(outputs) == 1:
        (arr,) = outputs.values()
        write_atomic(p, lambda f: np.save(f, arr, allow_pickle=False))
    else:
        raise ArchError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}); "
                        f"{p} can hold only one", hint="write them all with --output out.npz")
