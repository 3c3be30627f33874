"""Checkpoints: read a .safetensors file or a Hugging Face folder, and apply a model's
`weights` mapping (dsl/weightmap.py) to turn checkpoint tensors into parameters.

A Hugging Face folder is `config.json` + `model.safetensors` (or shards listed in
`model.safetensors.index.json`). Its config.json can set config constants through the
mapping's `config NAME = "json.key"` lines, so one .arch file fits every model size.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..dsl.dims import shape_str
from ..dsl.errors import ArchError
from ..dsl.files import bounded_json, open_regular
from ..dsl.literals import outside_value, shown
from ..dsl.values import same_value
from ..dsl.weightmap import Param, Skip, Split, Transpose, WeightMap, key_matches, literal

MAX_JSON_BYTES = 64_000_000


@dataclass
class Checkpoint:
    path: str
    tensors: Mapping[str, np.ndarray]           # read lazily, one tensor per lookup
    config: dict[str, Any] | None = None        # config.json of a Hugging Face folder
    files: list[str] = field(default_factory=list)   # every file read (outputs must not hit)
    generation: dict[str, Any] | None = None    # generation_config.json, if the folder has one


def read_checkpoint(path) -> Checkpoint:
    """The checkpoint's headers and config; tensors are read when looked up."""
    from .safetensors import SafetensorsFiles
    p = Path(path)
    if not p.is_dir():
        return Checkpoint(str(p), SafetensorsFiles([p]), files=[str(p)])
    read: list[Path] = []
    config = _json_object(p / "config.json", read)
    generation = _json_object(p / "generation_config.json", read)
    index = p / "model.safetensors.index.json"
    if index.is_file():
        read.append(index)
        doc = bounded_json(_read(index), str(index))
        wmap = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(wmap, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in wmap.items()):
            raise ArchError(f"{index} is not a safetensors index: `weight_map` must map "
                            "tensor names to shard file names")
        shards = sorted(set(wmap.values()))
        for s in shards:
            if not s or "/" in s or "\\" in s or s.startswith(".") or "\x00" in s:
                raise ArchError(f"{index} names a shard outside the folder: {s!r}")
        read += [p / s for s in shards]
        tensors = SafetensorsFiles([p / s for s in shards])
    elif (p / "model.safetensors").is_file():
        read.append(p / "model.safetensors")
        tensors = SafetensorsFiles([p / "model.safetensors"])
    else:
        raise ArchError(f"weights folder {p} has no model.safetensors",
                        hint="a Hugging Face folder holds config.json and model.safetensors "
                             "(save_pretrained(..., safe_serialization=True))")
    return Checkpoint(str(p), tensors, config, [str(f) for f in read], generation)


def _json_object(path: Path, read: list[Path]) -> dict | None:
    """A JSON object file of the folder (added to `read`), or None if there is none."""
    if not path.is_file():
        return None
    read.append(path)
    doc = bounded_json(_read(path), str(path))
    if not isinstance(doc, dict):
        raise ArchError(f"{path} should hold a JSON object")
    return doc


def _read(path: Path) -> bytes:
    """A config or index file's bytes, refused before reading when it is larger than any
    real one (a 100k-tensor index is ~10 MB)."""
    with open_regular(path, "checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise ArchError(f"{path} is {size:,} bytes; archc reads checkpoint JSON files of "
                            f"at most {MAX_JSON_BYTES:,} bytes")
        return f.read(MAX_JSON_BYTES + 1)


class Reported(Mapping):
    """A checkpoint's tensors that report each read to a progress task (its file bytes)."""

    def __init__(self, tensors: Mapping[str, np.ndarray], task) -> None:
        self.tensors, self.task = tensors, task
        self.entries = getattr(tensors, "entries", None)

    def nbytes(self) -> int:
        if self.entries is None:
            return sum(np.asarray(a).nbytes for a in self.tensors.values())
        return sum(e.end - e.begin for e in self.entries.values())

    def __getitem__(self, name: str) -> np.ndarray:
        arr = self.tensors[name]
        e = self.entries[name] if self.entries is not None else None
        self.task.advance(e.end - e.begin if e is not None else arr.nbytes)
        return arr

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, name) -> bool:
        return name in self.tensors


def generation_defaults(ckpt: Checkpoint) -> dict[str, Any]:
    """What transformers' `generate` would take from the checkpoint unless told otherwise:
    the end-of-sequence ids (generation_config.json's, else config.json's), and, when
    generation_config.json says `do_sample`, its temperature / top_k / top_p (with
    transformers' defaults 1.0 / 50 / 1.0 for those it leaves out)."""
    out: dict[str, Any] = {}
    gen = ckpt.generation or {}
    for source in (gen, ckpt.config or {}):
        eos = source.get("eos_token_id")
        ids = eos if isinstance(eos, list) else [eos]
        if eos is not None and all(isinstance(i, int) and not isinstance(i, bool)
                                   for i in ids):
            out["eos"] = ids
            break
    if gen.get("do_sample") is True:
        for key, default in (("temperature", 1.0), ("top_k", 50), ("top_p", 1.0)):
            value = gen.get(key, default)
            out[key] = default if value is None else value
    return out


def choose_section(sections: Mapping[str, Any], names, want: str | None = None):
    """The weights section (AST or resolved) to use for a checkpoint, or None for direct
    names: the one named `want`, else the one whose rules account for the most tensors."""
    if want is not None:
        if want not in sections:
            from ..dsl.errors import did_you_mean
            raise ArchError(f"the model has no weights section `{want}`",
                            hint=did_you_mean(want, sections) or
                            ("sections: " + ", ".join(sections) if sections else
                             "declare one with `weights NAME { ... }`"))
        return want
    if not sections:
        return None
    scores = {n: key_matches(s, names) for n, s in sections.items()}
    best = max(scores, key=lambda n: scores[n])
    return best if scores[best] > 0 else None


_ABSENT = object()


def config_value(hf_config: Mapping[str, Any], key: str) -> Any:
    """config.json's value at a dotted key (`rope_parameters.rope_theta`, `attention_window.0`):
    `None` for an explicit null, `_ABSENT` when the key (or a part of its path) is missing."""
    value: Any = hf_config
    for part in key.split("."):
        if isinstance(value, list) and part.isdigit():
            if int(part) >= len(value):
                return _ABSENT
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _ABSENT
    return value


def config_overrides(section, hf_config: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Config constants from config.json through `config NAME = "key"` lines, after its
    `require` lines are checked. Several lines for one constant are alternatives: the first
    key present wins. A key absent everywhere keeps the .arch default (older configs lack
    newer keys); a null keeps it too unless the line says what null means (`, null=none`)."""
    check_requires(section, hf_config)
    out: dict[str, Any] = {}
    tried: dict[str, list[str]] = {}
    for c in section.configs:
        const, key, null = (c.const, c.key, c.null) if hasattr(c, "const") else (*c, None)
        if const in out:
            continue
        value = config_value(hf_config, key)
        if value is None and null is not None:
            out[const] = literal(null)
            continue
        if value is None or value is _ABSENT:
            tried.setdefault(const, []).append(key)
            continue
        if isinstance(value, (list, dict)):
            raise ArchError(f"config.json `{key}` is {type(value).__name__}, not a number, "
                            f"bool or string; it cannot set `{const}`")
        problem = outside_value(value)
        if problem is not None:
            raise ArchError(f"config.json `{key}` = {shown(value)}: {problem}; it cannot set "
                            f"`{const}`")
        out[const] = value
    notes = [f"config.json has no {' or '.join(f'`{k}`' for k in keys)}; `{const}` keeps "
             "its default" for const, keys in tried.items() if const not in out]
    return out, notes


def check_requires(section, hf_config: Mapping[str, Any]) -> None:
    """`require "key" == value`: config.json may lack the key (the default is what the model
    computes) or hold that value; anything else changes the function, so it is an error."""
    for r in getattr(section, "requires", ()):
        value = config_value(hf_config, r.key)
        want = literal(r.value)
        allowed = want if r.among and isinstance(want, list) else [want]
        if value is _ABSENT or any(same_value(value, w) for w in allowed):
            continue
        raise ArchError(f"config.json sets `{r.key}` to {json.dumps(value)}; this model "
                        f"computes only {' or '.join(json.dumps(w) for w in allowed)}", r.span,
                        "the checkpoint is a variant this .arch does not implement: write "
                        "the variant in the .arch (an `if` on a config constant) and drop this "
                        "`require`")


def dest_shape(dest, binding: dict[str, str], shapes: Mapping[str, tuple]) -> tuple | None:
    """The shape a checkpoint tensor must have to fill `dest`; None if a parameter is
    unknown (reported by the caller)."""
    if isinstance(dest, Param):
        return shapes.get(dest.fill(binding))
    if isinstance(dest, Transpose):
        inner = dest_shape(dest.inner, binding, shapes)
        return None if inner is None else tuple(reversed(inner))
    if isinstance(dest, Split):
        parts = [dest_shape(d, binding, shapes) for d in dest.parts]
        if any(p is None for p in parts) or len({len(p) for p in parts}) != 1:
            return None
        if not -len(parts[0]) <= dest.axis < len(parts[0]):
            return None                  # reported by split_problem
        ax = dest.axis % len(parts[0])
        if any(p[:ax] + p[ax + 1:] != parts[0][:ax] + parts[0][ax + 1:] for p in parts):
            return None
        return parts[0][:ax] + (sum(p[ax] for p in parts),) + parts[0][ax + 1:]
    return None


def split_problem(dest, binding: dict[str, str], shapes: Mapping[str, tuple]) -> str | None:
    """Why a `split` inside `dest` cannot cut its tensor, or None: its axis must exist in
    the parts, and with `heads=n` every part's size along it must be a multiple of n (else
    the per-head reshape fails; usually a config constant disagrees with the checkpoint)."""
    if isinstance(dest, Transpose):
        return split_problem(dest.inner, binding, shapes)
    if not isinstance(dest, Split):
        return None
    for d in dest.parts:
        inner = split_problem(d, binding, shapes)
        if inner:
            return inner
        shape = dest_shape(d, binding, shapes)
        if shape is None:
            continue                     # an unknown parameter, reported by the caller
        if not -len(shape) <= dest.axis < len(shape):
            return (f"{_describe(dest, binding)}: {_describe(d, binding)} is "
                    f"{shape_str(shape)}, it has no axis {dest.axis}")
        size = shape[dest.axis]
        if dest.heads and isinstance(size, int) and size % dest.heads:
            return (f"{_describe(dest, binding)}: {_describe(d, binding)} is "
                    f"{shape_str(shape)}, its size {size} along axis {dest.axis} is not a "
                    f"multiple of heads={dest.heads}")
    return None


def _describe(dest, binding) -> str:
    if isinstance(dest, Param):
        return dest.fill(binding)
    if isinstance(dest, Transpose):
        return f"transpose({_describe(dest.inner, binding)})"
    if isinstance(dest, Split):
        opts = f"axis={dest.axis}" + (f", heads={dest.heads}" if dest.heads else "")
        return f"split({', '.join(_describe(d, binding) for d in dest.parts)}, {opts})"
    return "skip"


def _deliver(dest, arr: np.ndarray, binding, shapes, out: dict, origin: dict, name: str,
             problems: list[str], keep) -> None:
    if isinstance(dest, Param):
        pname = dest.fill(binding)
        if pname in out:
            problems.append(f"filled twice: {pname} from {origin[pname]} and {name}")
            return
        # a transposed (out, in) matrix stays a view: Fortran order is the layout the
        # compiled executor keeps matrix weights in, so it is never copied
        contiguous = arr.flags.c_contiguous or (arr.ndim == 2 and arr.flags.f_contiguous)
        out[pname] = keep(pname, arr if contiguous else np.ascontiguousarray(arr))
        origin[pname] = name
    elif isinstance(dest, Transpose):
        _deliver(dest.inner, np.transpose(arr), binding, shapes, out, origin, name, problems,
                 keep)
    elif isinstance(dest, Split):
        ax = dest.axis % arr.ndim
        sizes = [dest_shape(d, binding, shapes)[ax] for d in dest.parts]
        if dest.heads:
            # the axis holds `heads` groups, each [part1_h, part2_h, ...] (GPT-NeoX layout)
            per = [s // dest.heads for s in sizes]
            grouped = arr.reshape(arr.shape[:ax] + (dest.heads, sum(per)) + arr.shape[ax + 1:])
            cuts = np.cumsum(per)[:-1]
            pieces = np.split(grouped, cuts, axis=ax + 1)
            pieces = [p.reshape(arr.shape[:ax] + (s,) + arr.shape[ax + 1:])
                      for p, s in zip(pieces, sizes)]
        else:
            pieces = np.split(arr, np.cumsum(sizes)[:-1], axis=ax)
        for d, piece in zip(dest.parts, pieces):
            _deliver(d, piece, binding, shapes, out, origin, name, problems, keep)


def map_checkpoint(wmap: WeightMap, tensors: Mapping[str, np.ndarray],
                   shapes: Mapping[str, tuple], keep=None) -> tuple[dict, dict, list[str]]:
    """Apply the rules to every checkpoint tensor. Returns (parameter arrays, parameter ->
    checkpoint name, problems); problems cover unexpected and mis-shaped checkpoint
    tensors, missing parameters are left to the caller. Tensor by tensor: with a lazy
    `tensors` (SafetensorsFiles) one raw checkpoint tensor at a time is alive beside the
    parameters made so far; `keep(param, array)` is the form each parameter is kept in
    (runtime/weights.py: converted, and packed when its weights are)."""
    keep = keep or (lambda pname, arr: arr)
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    arr = None
    for name in tensors:
        arr = None          # drop the previous tensor before reading the next
        arr = tensors[name]
        rule, binding, bad = _match(wmap, name, tuple(arr.shape), shapes)
        problems += bad
        if rule is None or bad or isinstance(rule.dests[0], Skip):
            continue
        for dest in rule.dests:
            _deliver(dest, arr, binding, shapes, out, origin, name, problems, keep)
    return out, origin, problems


def map_shapes(wmap: WeightMap, tensors: Mapping[str, tuple],
               shapes: Mapping[str, tuple]) -> tuple[dict[str, str], list[str]]:
    """`map_checkpoint` on the tensors' shapes alone (a checkpoint's headers): parameter ->
    checkpoint name of every parameter the rules fill, and the same problems."""
    origin: dict[str, str] = {}
    problems: list[str] = []
    for name, shape in tensors.items():
        rule, binding, bad = _match(wmap, name, tuple(shape), shapes)
        problems += bad
        if rule is None or bad or isinstance(rule.dests[0], Skip):
            continue
        for pname in (p for d in rule.dests for p in _param_names(d, binding)):
            if pname in origin:
                problems.append(f"filled twice: {pname} from {origin[pname]} and {name}")
            origin[pname] = name
    return origin, problems


def _match(wmap: WeightMap, name: str, shape: tuple, shapes: Mapping[str, tuple]):
    """The rule matching checkpoint tensor `name`, its binding, and what is wrong with
    the tensor for it (no rule, a split that cannot cut it, a shape its parameters lack)."""
    rule, binding = wmap.match(name)
    if rule is None:
        return None, None, [f"unexpected: {name} {shape_str(shape)} (no rule of "
                            f"`weights {wmap.name}` matches it)"]
    if isinstance(rule.dests[0], Skip):
        return rule, binding, []
    problems = []
    for dest in rule.dests:
        why = split_problem(dest, binding, shapes)
        if why:
            problems.append(f"cannot split: {name} {shape_str(shape)} -> {why}")
            continue
        want = dest_shape(dest, binding, shapes)
        if want is None:
            missing = [p for p in _param_names(dest, binding) if p not in shapes]
            problems.append(f"unexpected: {name} {shape_str(shape)} -> "
                            f"{', '.join(missing) or _describe(dest, binding)}, which the "
                            "model does not have")
        elif shape != tuple(want):
            problems.append(f"mis-shaped: {name} is {shape_str(shape)} in the file, "
                            f"{_describe(dest, binding)} needs {shape_str(want)}")
    return rule, binding, problems


def _param_names(dest, binding) -> list[str]:
    if isinstance(dest, Param):
        return [dest.fill(binding)]
    if isinstance(dest, Transpose):
        return _param_names(dest.inner, binding)
    if isinstance(dest, Split):
        return [n for d in dest.parts for n in _param_names(d, binding)]
    return []
