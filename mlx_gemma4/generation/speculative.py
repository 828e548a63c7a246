"""MTP speculative decoding: the drafter proposes k tokens, the target checks them in one forward.

A round, with L tokens in the target's caches and the next token ``y`` already chosen:
  1. the drafter drafts d1..dk from ``y``, the target's final hidden state that predicted ``y`` and
     the K/V of the target's last sliding and last full layer, at position L (HF's convention);
  2. the target runs [y, d1..dk] → k + 1 distributions p0..pk;
  3. d(j+1) is accepted with probability p_j(d(j+1)) — drafts are greedy, so the draft distribution is
     one-hot and this is exactly speculative (rejection) sampling; at the first rejection the
     replacement is drawn from p_j with d(j+1) removed, and if all are accepted a bonus token is drawn
     from pk. Greedy settings make every p one-hot, so the output equals plain greedy decoding;
  4. the caches drop the k − m rejected entries; the hidden state at index m seeds the next round.

``speculative="auto"`` measures seconds per emitted token of speculative rounds and of plain steps
and keeps whichever is faster, re-trying the other now and then (an epsilon-greedy choice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import mlx.core as mx

from ..errors import InputError
from ..model import cache as kv
from ..model.cache import cache_offset, trim_cache
from .sampling import SamplingParams, apply_processors, filtered_logprobs, make_processors
from .stats import GenerationStats

EXPLORE_EVERY = 16  # auto mode: one iteration of the slower mode every this many iterations
EMA = 0.3


def shared_kv(model, cache: list) -> dict[str, tuple[mx.array, mx.array]]:
    """K/V (temporal order) of the target's last layer of each attention type (for the 12B: layers 46 and 47)."""
    types = model.config.text_config.layer_types
    out = {}
    for kind in set(types):
        c = cache[max(i for i, t in enumerate(types) if t == kind)]
        if isinstance(c, kv.QuantizedKVCache):
            raise InputError("speculative decoding needs an unquantized KV cache (kv_bits=None)")
        out[kind] = c.ordered() if isinstance(c, kv.SlidingKVCache) else (c.keys[..., : c.offset, :],
                                                                        c.values[..., : c.offset, :])
    return out


def _sample_row(lp: mx.array, params: SamplingParams) -> mx.array:
    return mx.argmax(lp, axis=-1) if params.greedy else mx.random.categorical(lp)


def verify(lp: mx.array, drafts: mx.array, params: SamplingParams) -> tuple[mx.array, mx.array]:
    """(accepted count m, next token) from target log-probs ``lp`` (k + 1, V) and drafts (k,)."""
    k = drafts.shape[0]
    p_draft = mx.exp(mx.take_along_axis(lp[:k], drafts[:, None], axis=-1)[:, 0])
    u = mx.random.uniform(shape=(k,)) if not params.greedy else mx.full((k,), 0.5)
    m = mx.cumprod((u < p_draft).astype(mx.int32)).sum() if k else mx.array(0)
    row = lp[m]
    rejected = drafts[mx.minimum(m, max(k - 1, 0))] if k else mx.array(-1)
    # Residual distribution max(p − q, 0) with a one-hot q: p without the rejected draft.
    row = mx.where((mx.arange(row.shape[-1]) == rejected) & (m < k), -mx.inf, row)
    return m, _sample_row(row, params)


def speculative_steps(
    model,
    drafter,
    cache: list,
    logits: mx.array,
    hidden: mx.array,
    params: SamplingParams,
    max_tokens: int,
    num_draft: int,
    stats: GenerationStats,
    mode: str = "on",
    stream=None,
) -> Iterator[list[list[int]]]:
    """Yield the tokens of each target step (1 to k + 1 at a time, as a one-row step); counts go into ``stats``."""
    procs = make_processors(params, logits.shape[-1])

    def dist(lg: mx.array) -> mx.array:
        return filtered_logprobs(apply_processors(procs, None, lg), params)

    if max_tokens == 0:
        return
    y = _sample_row(dist(logits), params).reshape(1).astype(mx.int32)
    h = hidden
    yield [y.tolist()]
    n = 1
    cost = {"spec": None, "plain": None}  # seconds per emitted token (EMA)
    it = 0
    while n < max_tokens:
        it += 1
        k = min(num_draft, max_tokens - n - 1)  # never put more in the cache than will be emitted
        use_spec = k > 0 and (mode == "on" or _choose(cost, it) == "spec")
        t0 = time.perf_counter()
        with mx.stream(stream):
            tokens, h = _round(model, drafter, cache, y, h, k, dist, params, stats) if use_spec else _plain(
                model, cache, y, dist, params)
        stats.target_steps += 1
        spent = (time.perf_counter() - t0) / len(tokens)
        key = "spec" if use_spec else "plain"
        cost[key] = spent if cost[key] is None else (1 - EMA) * cost[key] + EMA * spent
        y = mx.array(tokens[-1:], dtype=mx.int32)
        n += len(tokens)
        yield [tokens]


def _round(model, drafter, cache, y, h, k: int, dist, params: SamplingParams, stats: GenerationStats):
    """One speculative round → (emitted tokens, the hidden state that seeds the next round)."""
    drafts = drafter.draft(model, y, h, shared_kv(model, cache), cache_offset(cache), k)  # (1, k)
    out, hs = model(mx.concatenate([y[:, None], drafts], axis=1), cache=cache, return_hidden=True)
    m, nxt = verify(dist(out[0]), drafts[0], params)
    mx.eval(m, nxt, drafts)
    m_host = int(m.item())
    trim_cache(cache, k - m_host)
    stats.draft_tokens += k
    stats.accepted_tokens += m_host
    return [*drafts[0, :m_host].tolist(), int(nxt.item())], hs[:, m_host]


def _plain(model, cache, y, dist, params: SamplingParams):
    """One plain target step → ([token], its hidden state)."""
    out, hs = model(y[:, None], cache=cache, return_hidden=True)
    nxt = _sample_row(dist(out[0, -1]), params)
    return [int(nxt.item())], hs[:, -1]


def _choose(cost: dict, it: int) -> str:
    """Auto mode: try each mode once, then the cheaper per token, exploring the other every EXPLORE_EVERY."""
    if cost["spec"] is None:
        return "spec"
    if cost["plain"] is None:
        return "plain"
    best, other = ("spec", "plain") if cost["spec"] <= cost["plain"] else ("plain", "spec")
    return other if it % EXPLORE_EVERY == 0 else best
