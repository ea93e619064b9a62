"""Independent, reproducible random streams derived from one seed (no global seeding)."""

from __future__ import annotations

import zlib

import numpy as np


def stream_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator for the stream named by ``keys`` (ints or strings), derived from ``seed``.

    Different keys give statistically independent streams; the same seed and keys always give the
    same numbers, whatever else the run draws, so adding a stream never shifts another.
    """
    entropy = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]
    for key in keys:
        entropy.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(entropy))
