"""Generation: a validated request → image-safe chunked prefill → one per-row decode loop → text and stats.

Where things are:
  request      ``GenerationRequest`` (every option, validated once) and the media-argument rule
  inputs       prompt (text / messages / ids) → ``PreparedInput``; vocabulary checks on ids
  prefill      chunked prefill that never splits a vision block
  sampling     checkpoint defaults, sampling settings, the token sampler (with mlx-lm style hooks)
  decode       token steps and the per-row loop (text stream, stops, limits, finish reason, stats)
  speculative  MTP drafting and verification
  engine       ``GenerationRun``: one run over one or more prompts
  single       ``stream_generate`` / ``generate``
  batch        ``stream_batch`` / ``batch_generate``
  session      ``ChatSession`` (multi-turn, KV cache kept)
  textstream   token ids → text pieces (thought / answer channels, stop strings)
  stats        ``GenerationStats`` (the one definition of every rate)
  device       generation stream and wired memory (no-ops off Apple silicon)
"""

from .batch import batch_generate, stream_batch
from .request import GenerationRequest
from .session import ChatSession
from .single import generate, stream_generate
from .stats import GenerationStats
from .types import GenerationChunk, GenerationResult

__all__ = [
    "ChatSession", "GenerationChunk", "GenerationRequest", "GenerationResult", "GenerationStats",
    "batch_generate", "generate", "stream_batch", "stream_generate",
]
