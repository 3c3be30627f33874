"""Kernels by op family. Each family file holds `ref_<op>`, the plain NumPy spec of the op
(called `ref_<op>(*tensor_args, **attrs)`), and beside it the fast compiled version.

`REFERENCE` maps op name -> ref function, collected from the family modules, so adding an
op's reference is adding one function.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

REFERENCE: dict[str, Callable] = {}


def _collect() -> None:
    # every file in this package is a kernel family; files named `_*` are helpers
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for name, fn in vars(mod).items():
            if name.startswith("ref_") and callable(fn) and fn.__module__ == mod.__name__:
                REFERENCE[name[4:]] = fn


_collect()
