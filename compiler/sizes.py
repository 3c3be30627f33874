"""Sizes the plans share: how buffers are aligned, how bytes are printed, and how long a
model's context is (for the KV-cache and memory plans and `archc stats`)."""
from __future__ import annotations

from ..dsl.graph import Graph

ALIGN = 64    # bytes: every planned buffer starts on a cache line
CONTEXT_NAMES = ("max_seq", "n_ctx", "max_position_embeddings", "block_size",
                 "context_length", "seq_len", "max_len")


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit} ({n:,} B)"
    return f"{n:,} B"


def context_length(g: Graph) -> tuple[int | None, str]:
    """The model's context from its config (the first of CONTEXT_NAMES set), and where
    it came from; (None, "") when the config does not say."""
    cfg = g.meta.get("config", {})
    for name in CONTEXT_NAMES:
        v = cfg.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v, f"config {name}"
    return None, ""
