"""Prompt cache: KV snapshots keyed by token prefixes, bounded in bytes (least recently used first out).

A snapshot holds one row's keys/values after a known token sequence (and the digest of the images/
audio inside it, because their placeholder tokens are identical for different pictures). A new
prompt that starts with a stored sequence resumes from the snapshot and prefills only the rest.
Only whole snapshots are reused: sliding-window layers cannot be cut back to an earlier point.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass
class Snapshot:
    """One row's per-layer temporal (keys, values) after ``tokens``."""

    tokens: tuple[int, ...]
    media: str
    kv: list[tuple[mx.array, mx.array]]
    nbytes: int


def media_digest(ids: np.ndarray, arrays: dict, n_tokens: int, boi: int, boa: int) -> str:
    """Digest of the images and audio clips whose blocks start within the first ``n_tokens`` ids."""
    head = np.asarray(ids).reshape(-1)[:n_tokens]
    n_img, n_aud = int((head == boi).sum()), int((head == boa).sum())
    if not n_img and not n_aud:
        return ""
    h = hashlib.sha1()
    for key, n in (("pixel_values", n_img), ("image_position_ids", n_img),
                   ("input_features", n_aud), ("input_features_mask", n_aud)):
        if n and arrays.get(key) is not None:
            h.update(np.ascontiguousarray(np.asarray(arrays[key])[:n]).tobytes())
    return h.hexdigest()


class PromptCache:
    """Snapshots by token prefix, LRU-evicted to stay under ``max_bytes`` (0 disables the cache)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], Snapshot] = OrderedDict()
        self.nbytes = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: list[int], digest_of) -> Snapshot | None:
        """The longest snapshot that is a strict prefix of ``ids`` with matching media (``digest_of(n)``)."""
        best = None
        for key, snap in self._entries.items():
            n = len(key)
            if n < len(ids) and (best is None or n > len(best.tokens)) and tuple(ids[:n]) == key \
                    and snap.media == digest_of(n):
                best = snap
        if best is not None:
            self._entries.move_to_end(best.tokens)
            self.hits += 1
        return best

    def store(self, tokens: list[int], media: str, kv: list[tuple[mx.array, mx.array]]) -> None:
        """Keep a snapshot (evicting the least recently used ones to fit)."""
        key = tuple(tokens)
        nbytes = sum(k.nbytes + v.nbytes for k, v in kv)
        if not key or nbytes > self.max_bytes:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        mx.eval([a for pair in kv for a in pair])
        self._entries[key] = Snapshot(key, media, kv, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
