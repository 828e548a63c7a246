"""Sampling settings, their checkpoint defaults (``generation_config.json``) and the token sampler.

The filters are mlx-lm's (``apply_top_k`` / ``apply_top_p`` / ``apply_min_p``), applied in the
reference's order (temperature → top-k → top-p → min-p) with a renormalisation between them, so
each threshold means what it means in transformers. ``filtered_logprobs`` is exposed separately
because speculative sampling needs the target's distribution, not just a draw from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import ModelLoadError
from ..jsonfile import read_json_object
from .request import GenerationRequest

# The official checkpoint's generation_config.json (sampling defaults; eos = <eos>, <turn|>, <|tool_response>),
# used when a checkpoint has none.
_FALLBACK = {"temperature": 1.0, "top_k": 64, "top_p": 0.95, "eos_token_id": [1, 106, 50]}


@dataclass(frozen=True)
class GenerationDefaults:
    """The checkpoint's ``generation_config.json`` fields that generation uses."""

    temperature: float = 1.0
    top_k: int = 64
    top_p: float = 0.95
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = (1, 106, 50)
    suppress_tokens: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any], extra_suppress: tuple[int, ...] = ()) -> GenerationDefaults:
        """From a parsed generation config; ``extra_suppress`` is always suppressed too (eoi/eoa rows)."""
        d = {**_FALLBACK, **{k: v for k, v in d.items() if v is not None}}
        eos = d["eos_token_id"]
        eos = [eos] if isinstance(eos, int) else list(eos)
        if not d.get("do_sample", True):
            d["temperature"] = 0.0
        return cls(
            temperature=float(d["temperature"]),
            top_k=int(d.get("top_k") or 0),
            top_p=float(d.get("top_p") or 1.0),
            min_p=float(d.get("min_p") or 0.0),
            repetition_penalty=float(d.get("repetition_penalty") or 1.0),
            eos_token_ids=tuple(int(i) for i in eos),
            suppress_tokens=tuple(sorted({*map(int, d.get("suppress_tokens") or []), *extra_suppress})),
        )

    @classmethod
    def from_folder(cls, folder: str | Path, extra_suppress: tuple[int, ...] = ()) -> GenerationDefaults:
        """Read ``folder/generation_config.json`` (the published 12B values when the file is absent)."""
        path = Path(folder) / "generation_config.json"
        d = read_json_object(path, ModelLoadError) if path.exists() else {}
        try:
            return cls.from_dict(d, extra_suppress)
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"{path}: a field has the wrong type ({e})") from e


def model_defaults(model) -> GenerationDefaults:
    """The defaults attached to a loaded model, else the published 12B defaults with the model's eoi/eoa suppressed."""
    found = getattr(model, "generation_defaults", None)
    if found is not None:
        return found
    cfg = model.config
    return GenerationDefaults.from_dict({}, (cfg.eoi_token_id, cfg.eoa_token_id))


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling settings for one generation (None in the API means 'checkpoint default')."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    repetition_context: int = 64
    suppress_tokens: tuple[int, ...] = field(default_factory=tuple)

    @property
    def greedy(self) -> bool:
        """Temperature 0 means argmax."""
        return self.temperature == 0.0

    def with_suppressed(self, ids) -> SamplingParams:
        """A copy that also suppresses ``ids``."""
        return replace(self, suppress_tokens=tuple(sorted({*self.suppress_tokens, *ids})))


def resolve_params(
    defaults: GenerationDefaults,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
) -> SamplingParams:
    """Merge user settings over the checkpoint defaults and validate them (InputError on nonsense)."""
    t = defaults.temperature if temperature is None else temperature
    k = defaults.top_k if top_k is None else top_k
    p = defaults.top_p if top_p is None else top_p
    m = defaults.min_p if min_p is None else min_p
    r = defaults.repetition_penalty if repetition_penalty is None else repetition_penalty
    # The caller's values were checked by GenerationRequest; this catches a checkpoint's odd defaults.
    GenerationRequest(temperature=t, top_k=k, top_p=p, min_p=m, repetition_penalty=r)
    return SamplingParams(float(t), int(k), float(p), float(m), float(r), suppress_tokens=defaults.suppress_tokens)


def _renorm(lp: mx.array) -> mx.array:
    return lp - mx.logsumexp(lp, axis=-1, keepdims=True)


def filtered_logprobs(logits: mx.array, params: SamplingParams) -> mx.array:
    """Normalised log-probabilities of the distribution actually sampled from (temperature + filters).

    Greedy settings give a one-hot distribution on the argmax (so speculative sampling degenerates to
    exact greedy verification).
    """
    logits = logits.astype(mx.float32)
    if params.greedy:
        best = mx.argmax(logits, axis=-1, keepdims=True)
        hot = mx.arange(logits.shape[-1]) == best
        return mx.where(hot, 0.0, -mx.inf)
    # mlx-lm's filters, imported here: any mlx_lm import runs its __init__ (transformers, seconds).
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    lp = _renorm(logits / params.temperature)
    vocab = lp.shape[-1]
    if 0 < params.top_k < vocab:
        lp = _renorm(apply_top_k(lp, params.top_k))
    if params.top_p < 1.0:
        lp = _renorm(apply_top_p(lp, params.top_p))
    if params.min_p > 0.0:
        lp = _renorm(apply_min_p(lp, params.min_p))
    return lp


def make_sampler(params: SamplingParams, key: mx.array | None = None) -> Callable[[mx.array], mx.array]:
    """logits (B, V) → token ids (B,), following ``params``. Draws use MLX's global key (seeded per call),
    or with ``key`` a stream of their own (split at each draw): a row of a shared decode batch draws the
    same tokens whatever the other rows do."""
    if params.greedy:
        return lambda logits: mx.argmax(logits, axis=-1)
    if key is None:
        return lambda logits: mx.random.categorical(filtered_logprobs(logits, params))
    state = [key]

    def draw(logits: mx.array) -> mx.array:
        state[0], sub = mx.random.split(state[0])
        return mx.random.categorical(filtered_logprobs(logits, params), key=sub)

    return draw


def make_processors(params: SamplingParams, vocab_size: int) -> list[Callable[[mx.array, mx.array], mx.array]]:
    """Logits processors (history, logits) → logits: token suppression, then the repetition penalty."""
    procs = []
    if params.suppress_tokens:
        ids = mx.array(list(params.suppress_tokens), dtype=mx.int32)

        def suppress(_history, logits):
            # -inf written at the few suppressed ids: no vocabulary-sized bias kept, cast or added per token.
            where = mx.broadcast_to(ids, (*logits.shape[:-1], ids.size))
            return mx.put_along_axis(logits, where, mx.array(-mx.inf, dtype=logits.dtype), axis=-1)

        procs.append(suppress)
    if params.repetition_penalty != 1.0:
        procs.append(_repetition_penalty(params.repetition_penalty, params.repetition_context))
    return procs


def _repetition_penalty(penalty: float, context: int):
    # Per-row history (B, n): mlx-lm's processor shares one history across the batch.
    def process(history: mx.array, logits: mx.array) -> mx.array:
        recent = history[:, -context:]
        seen = mx.take_along_axis(logits, recent, axis=-1)
        seen = mx.where(seen < 0, seen * penalty, seen / penalty)
        return mx.put_along_axis(logits, recent, seen, axis=-1)

    return process


def apply_processors(procs, history: mx.array | None, logits: mx.array) -> mx.array:
    """Run the processors in order (history may be None when no processor needs it)."""
    for p in procs:
        logits = p(history, logits)
    return logits


def sampling_params(model, request: GenerationRequest, thought_open_id: int | None) -> SamplingParams:
    """The request's sampling settings over the checkpoint's; with thinking off the model cannot open a thought."""
    r = request
    params = resolve_params(model_defaults(model), r.temperature, r.top_k, r.top_p, r.min_p, r.repetition_penalty)
    if not r.thinking and thought_open_id is not None:
        params = params.with_suppressed([thought_open_id])
    return params


class TokenSampler:
    """Logits (B, V) → token ids (B,): our processors, then the caller's (mlx-lm style), then the sampler.

    The caller's processors get ``(tokens, logits)`` one row at a time, as mlx-lm passes them: the
    row's token history (prompt and generated, 1-D) and its logits (1, V).
    """

    def __init__(self, params: SamplingParams, request: GenerationRequest, vocab_size: int, prompt_ids: mx.array,
                 key: mx.array | None = None):
        self.procs = make_processors(params, vocab_size)
        self.user_procs = request.logits_processors
        self.sample = request.sampler or make_sampler(params, key)
        self.history = None
        if self.user_procs:
            self.history = prompt_ids.astype(mx.int32)
        elif params.repetition_penalty != 1.0:
            self.history = prompt_ids[:, -params.repetition_context:].astype(mx.int32)

    def __call__(self, logits: mx.array) -> mx.array:
        """Sample the next token of every row (and remember it)."""
        logits = apply_processors(self.procs, self.history, logits)
        if self.user_procs:
            rows = []
            for r in range(logits.shape[0]):
                row = logits[r : r + 1]
                for p in self.user_procs:
                    row = p(self.history[r], row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
        y = self.sample(logits).astype(mx.int32).reshape(-1)
        if self.history is not None:
            self.history = mx.concatenate([self.history, y[:, None]], axis=1)
        return y
