"""A stand-in drafter for tests and benchmarks (not part of the library)."""

from __future__ import annotations

import mlx.core as mx


class ForcedDrafter:
    """A stand-in drafter that proposes a known continuation (e.g. the target's own greedy output).

    It measures the mechanism's best case (every draft accepted, no drafter compute); ``wrong_every``
    corrupts every n-th proposal so tests can exercise partial acceptance and cache trimming.
    """

    def __init__(self, sequence: list[int], wrong_every: int = 0, vocab_size: int = 0):
        self.sequence, self.wrong_every, self.vocab_size = list(sequence), wrong_every, vocab_size

    def draft(self, target, token: mx.array, hidden: mx.array, shared_kv: dict, position: int, k: int) -> mx.array:
        """The k tokens that follow absolute position ``position`` in the known sequence."""
        out = []
        for j in range(k):
            i = position + 1 + j
            tok = self.sequence[i] if i < len(self.sequence) else 0
            if self.wrong_every and i % self.wrong_every == 0:
                tok = (tok + 1) % max(self.vocab_size, tok + 2)
            out.append(tok)
        return mx.array([out], dtype=mx.int32)
