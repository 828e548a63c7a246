"""Generation statistics: one definition of every rate, read by the CLI, the server and the benchmarks.

Rates: ``prompt_tps`` is prompt tokens over the prefill time; ``generation_tps`` is the tokens
after the first over the time after the first (the first token's cost is the prefill's). With no
generated token both generation figures are 0 and the time to first token is the prefill time.

In a batch (``batch_size`` > 1) the counts are the row's own, while ``prefill_s`` and
``time_to_first_token_s`` are batch-level: one prefill served every row, so ``prompt_tps`` divides
the batch's prompt tokens (``batch_prompt_tokens``) by it. ``decode_s`` runs until the row finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx


@dataclass
class GenerationStats:
    """Counts, timings and memory of one generation (one row of a batch)."""

    prompt_tokens: int = 0  # tokens prefilled for this row by this call (a chat turn: only the new ones)
    prefill_s: float = 0.0  # batch-level when batch_size > 1
    time_to_first_token_s: float = 0.0  # batch-level when batch_size > 1
    generation_tokens: int = 0
    decode_s: float = 0.0  # from the first token to this row's last
    peak_memory_gb: float = 0.0  # MLX's peak (mx.get_peak_memory) during the call
    finish_reason: str = ""  # "stop" (stop token or string), "length" (max_tokens), "context" (context full)
    kv_cache_gb: float = 0.0  # batch-level when batch_size > 1
    batch_size: int = 1
    batch_prompt_tokens: int = 0  # prompt tokens of the whole batch (0 = this row's alone)
    # Speculative decoding (zero without a drafter).
    target_steps: int = 0  # target forwards after the prefill
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def prompt_tps(self) -> float:
        """Prompt tokens per second of the prefill (the batch's prefill rate in a batch)."""
        tokens = self.batch_prompt_tokens or self.prompt_tokens
        return tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        """Generated tokens per second after the first one (0 with fewer than two tokens)."""
        return (self.generation_tokens - 1) / self.decode_s if self.generation_tokens > 1 and self.decode_s > 0 else 0.0

    # The names used before ``prompt_tps`` / ``generation_tps`` (same values).
    prefill_tps = prompt_tps
    decode_tps = generation_tps

    @property
    def acceptance_rate(self) -> float:
        """Share of drafted tokens the target accepted."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Generated tokens per target forward (1.0 without speculation)."""
        return (self.generation_tokens - 1) / self.target_steps if self.target_steps else 0.0


class Timer:
    """Wall-clock checkpoints and MLX peak memory for one generation."""

    def __init__(self):
        mx.reset_peak_memory()
        self.start = time.perf_counter()
        self.first_token_at: float | None = None

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def mark_first_token(self) -> None:
        """Record the end of the prefill (the first token read back, or the prefill evaluated)."""
        if self.first_token_at is None:
            self.first_token_at = self.elapsed()

    def since_first_token(self) -> float:
        """Seconds since the first token (0 before it)."""
        return 0.0 if self.first_token_at is None else self.elapsed() - self.first_token_at

    @staticmethod
    def peak_gb() -> float:
        """MLX peak memory since the start, in GB."""
        return mx.get_peak_memory() / 1e9
