"""Model inputs: read .npy/.npz files safely and check them against the declared types.

Nothing from an input file is ever executed: arrays are read with `allow_pickle=False`,
so a pickled object array is refused, never unpickled.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from ..dsl.dims import Dim, evaluate, shape_str
from ..dsl.errors import ArchError, did_you_mean
from ..dsl.files import check_regular, open_regular
from ..dsl.graph import Graph

DTYPE_NAMES = {"float32": "float", "int64": "int", "bool": "bool"}


MAX_MEMBERS = 10_000          # arrays in one .npz (a model has a few inputs)
_HEAD = 1 << 16               # enough for any .npy header of a real array


def read_array(path: str | os.PathLike, what: str = "input",
               limit: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """One array from a .npy file, or a name -> array dict from an .npz file. `-` reads
    standard input (a pipe); any other path must be a regular file, so a FIFO or a device
    is refused before it is opened rather than read for ever.

    Nothing is read past the headers before the memory it needs is known: the .npy
    header's shape x dtype, the sum of an .npz's members' (before decompressing any), each
    checked against `limit` (bytes; default: the memory budget, runtime/budget.py)."""
    if limit is None:
        from .budget import default_max_memory
        limit = default_max_memory()
    if str(path) == "-":
        p: object = "standard input"
        src = io.BytesIO(_read_stdin(what, limit))
        size = len(src.getbuffer())
    else:
        p = Path(path)
        if p.is_dir():
            raise ArchError(f"{what} {p} is a directory, not a .npy file")
        size = check_regular(p, what, stdin_ok=True).st_size
        src = p
    try:
        with _open(src, what) as f:
            magic = f.read(6)
    except OSError as e:
        raise ArchError(f"cannot read {what} {p}: {e.strerror}") from None
    if magic[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(_rewound(src)) as zf:
                members = zf.infolist()
                if len(members) > MAX_MEMBERS:
                    raise ArchError(f"{what} {p} holds {len(members):,} arrays; archc reads "
                                    f"at most {MAX_MEMBERS:,} from one .npz")
                need = 0
                for info in members:
                    with zf.open(info) as member:
                        need += _check_header(member, info.file_size,
                                              f"{what} {p}[{info.filename}]")
                _check_budget(need, limit, f"{what} {p}")
            with np.load(_rewound(src), allow_pickle=False) as z:
                return {k: _checked(z[k], f"{what} {p}[{k}]") for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise ArchError(f"{what} {p} is not a readable .npz archive: {_reason(e)}") from None
    if magic != b"\x93NUMPY":
        raise ArchError(f"{what} {p} is not a .npy file (it does not start with the NumPy "
                        "magic bytes)", hint="save arrays with numpy.save(path, array)")
    try:
        with _open(src, what) as f:
            _check_budget(_check_header(f, size, f"{what} {p}"), limit, f"{what} {p}")
        return _checked(np.load(_rewound(src), allow_pickle=False), f"{what} {p}")
    except MemoryError:
        raise ArchError(f"{what} {p} is too large to load") from None
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise ArchError(f"{what} {p} holds pickled Python objects; archc never unpickles "
                            "files", hint="save a plain numeric array (not dtype=object)") from None
        raise ArchError(f"{what} {p} is not a valid .npy file: {_reason(e)}") from None
    except (OSError, EOFError) as e:
        raise ArchError(f"{what} {p} is truncated or unreadable: {_reason(e)}") from None


def _read_stdin(what: str, limit: int) -> bytes:
    """Standard input, read no further than its .npy header says (checked against
    `limit` first), or than `limit` for anything else (an .npz must be whole to be read)."""
    stream = sys.stdin.buffer
    head = stream.read(_HEAD)
    if head[:6] == b"\x93NUMPY":
        f = io.BytesIO(head)
        try:
            need = _check_header(f, 1 << 62, f"{what} standard input")
        except ArchError:
            return head           # a header that does not parse: read_array says why
        _check_budget(need, limit, f"{what} standard input")
        rest = max(0, f.tell() + need + 1 - len(head))     # + 1: see trailing bytes
        return head + stream.read(rest)
    data = head + stream.read(max(0, limit + 1 - len(head)))
    if len(data) > limit:
        raise ArchError(f"{what} standard input holds more than {_fmt(limit)}, the memory "
                        f"{getattr(limit, 'why', '--max-memory')} allows; stopped reading",
                        hint="pipe a .npy array (its size is read from its header)")
    return data


def _fmt(n: int) -> str:
    from .budget import fmt
    return fmt(n)


def _check_budget(need: int, limit: int, label: str) -> None:
    if need > limit:
        why = getattr(limit, "why", "--max-memory")
        raise ArchError(f"{label} needs {_fmt(need)} to load, more than {why} {_fmt(limit)}",
                        hint="use a smaller input, or raise " + getattr(limit, "knob",
                                                                        "--max-memory"))


def _open(src, what: str):
    """A binary file object over a path (a regular file only) or an in-memory buffer."""
    if isinstance(src, io.BytesIO):
        return contextlib.nullcontext(_rewound(src))
    return open_regular(src, what)


def _rewound(src):
    if isinstance(src, io.BytesIO):
        src.seek(0)
    return src


def _check_header(f, size: int, label: str) -> int:
    """The bytes the array needs, from its header; refused before loading: a header whose
    shape needs more bytes than the file holds (a corrupt or hostile header would make
    NumPy allocate them), or a pickled dtype."""
    from numpy.lib import format as npy
    try:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):     # 3.0 differs only by a UTF-8 header
            shape, _, dtype = npy.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is unknown")
    except Exception as e:  # noqa: BLE001 - NumPy's header parser raises many kinds
        raise ArchError(f"{label} has a corrupt .npy header: {_reason(e)}") from None
    if dtype.hasobject:
        raise ArchError(f"{label} holds pickled Python objects; archc never unpickles files",
                        hint="save a plain numeric array (not dtype=object)")
    need = math.prod(shape) * dtype.itemsize
    have = size - f.tell()
    if need > have:
        raise ArchError(f"{label} is truncated or corrupt: its header says shape "
                        f"{shape_str(shape)} ({need:,} bytes) but the file holds {have:,}")
    return need


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _checked(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise ArchError(f"{label} has dtype {arr.dtype}; expected numbers (float or int)")
    return arr


def bind_inputs(g: Graph, arrays: dict[str, np.ndarray]):
    """Check inputs against their declared types; returns (converted arrays, size bindings,
    warnings). Symbolic sizes are bound from the first input that shows them."""
    declared = {g.node(n).attrs["name"]: g.node(n) for n in g.inputs}
    for name in arrays:
        if name not in declared:
            raise ArchError(f"the model has no input named `{name}`",
                            hint=did_you_mean(name, declared) or
                            "inputs: " + ", ".join(f"{k}: {v.type_str}" for k, v in declared.items()))
    missing = [n for n in declared if n not in arrays]
    if missing:
        raise ArchError(f"missing input{'s' if len(missing) > 1 else ''}: " +
                        ", ".join(f"`{n}` ({declared[n].type_str})" for n in missing),
                        hint="pass each as --input NAME=file.npy")
    bindings: dict[str, int] = {}
    where: dict[str, str] = {}
    out: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    for name, node in declared.items():
        arr = np.asarray(arrays[name])
        if arr.ndim != len(node.shape):
            raise ArchError(f"input `{name}` has shape {shape_str(arr.shape)} ({arr.ndim}-D) but "
                            f"the model declares {_declared(node)}", node.span)
        if 0 in arr.shape:   # nothing to compute, and kernels assume at least one row
            raise ArchError(f"input `{name}` is empty: shape {shape_str(arr.shape)}", node.span,
                            "every axis needs at least one element")
        for axis, (d, actual) in enumerate(zip(node.shape, arr.shape)):
            if isinstance(d, Dim) and len(d.terms) == 1 and d.terms[0][1] == 1 \
                    and len(d.terms[0][0]) == 1:
                sym = d.terms[0][0][0]
                if sym in bindings and bindings[sym] != actual:
                    raise ArchError(f"input `{name}` has {sym} = {actual} (axis {axis}) but "
                                    f"`{where[sym]}` has {sym} = {bindings[sym]}", node.span,
                                    f"every input must agree on {sym}")
                bindings.setdefault(sym, actual)
                where.setdefault(sym, name)
        for axis, (d, actual) in enumerate(zip(node.shape, arr.shape)):
            try:
                expected = evaluate(d, bindings)
            except KeyError:
                continue
            if expected != actual:
                raise ArchError(f"input `{name}` has shape {shape_str(arr.shape)} but the model "
                                f"declares {_declared(node)}: axis {axis} should be {d} = "
                                f"{expected}",
                                node.span)
        out[name] = _convert(name, arr, node, warnings)
    for name, arr in out.items():
        if arr.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                warnings.append(f"input `{name}` contains {bad} NaN/Inf value"
                                f"{'s' if bad > 1 else ''}")
    return out, bindings, warnings


def _declared(node) -> str:
    # an input's declared type, e.g. int64[B, T]: for messages only (formatting it for every
    # input of every item was a third of a batch job's reading time)
    return f"{DTYPE_NAMES.get(node.dtype, node.dtype)}{shape_str(node.shape)}"


def _convert(name, arr, node, warnings) -> np.ndarray:
    dtype, kind = node.dtype, arr.dtype.kind

    def wrong(more="", hint=None) -> ArchError:
        return ArchError(f"input `{name}` has dtype {arr.dtype}; expected {_declared(node)}"
                         f"{more}", node.span, hint)
    if dtype in ("float32", "float64"):
        if kind not in "fiub":
            raise wrong()
        if kind != "f":
            warnings.append(f"input `{name}` has dtype {arr.dtype}; converted to {dtype}")
        return np.ascontiguousarray(arr, dtype=dtype)
    if dtype == "int64":
        if kind not in "iu":
            raise wrong(" (integer token ids)", "save ids with an integer dtype, e.g. np.int64")
        return np.ascontiguousarray(arr, dtype=np.int64)
    if dtype == "bool":
        if kind not in "biu":
            raise wrong()
        return np.ascontiguousarray(arr != 0)
    return arr
