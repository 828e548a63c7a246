"""Generation statistics (what ``stream_generate`` reports at the end)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx


@dataclass
class GenerationStats:
    """Counts, timings and memory of one generation."""

    prompt_tokens: int = 0  # tokens prefilled by this call (a chat turn: only the new ones)
    prefill_s: float = 0.0
    time_to_first_token_s: float = 0.0
    generation_tokens: int = 0
    decode_s: float = 0.0
    peak_memory_gb: float = 0.0
    finish_reason: str = ""  # "stop" (stop token or string), "length" (max tokens)
    kv_cache_gb: float = 0.0
    # Speculative decoding (zero without a drafter).
    target_steps: int = 0  # target forwards after the prefill
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def prefill_tps(self) -> float:
        """Prompt tokens per second of the prefill."""
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        """Generated tokens per second after the first one."""
        return (self.generation_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0

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

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    @staticmethod
    def peak_gb() -> float:
        """MLX peak memory since the start, in GB."""
        return mx.get_peak_memory() / 1e9
