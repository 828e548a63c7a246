"""Text-only prefill: the fused kernel's causal mask vs an explicit boolean mask, and the last-token split.

Run from the repository root:  nice -n 5 python -m benchmarks.prefill_causal [--tokens 1024] [--chunk 512]
Three variants of the same prefill (same random model, same prompt, caches evaluated after every chunk):
  * "boolean mask": every multi-token chunk gets an explicit boolean mask (what prefill did before);
  * "fused causal": a text-only chunk hands ``mx.fast.scaled_dot_product_attention`` ``mask="causal"``
    wherever no sliding window cuts into its keys (chunk + cached keys ≤ window), as mlx-lm does;
  * "fused + last split": the prompt's last token gets its own forward, so the earlier chunks run only
    what their KV caches need (no last-layer MLP / final norm over them).
Timings are the median of ``--repeats`` runs after one warm-up, read back (``mx.eval``) before the clock stops.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

import mlx_gemma4.generation.prefill as prefill_mod
from benchmarks.generate_bench import REAL2, TINY, build
from mlx_gemma4.model.cache import make_cache
from mlx_gemma4.model.masks import attention_mask
from mlx_gemma4.presets import SMALL_VOCAB_MEDIA_IDS


def force_boolean_masks(model) -> None:
    """Make every "causal" mask an explicit boolean one (the behaviour before the fused path)."""
    original = model.attention_context

    def context(ids, cache, left_padding=None, host_ids=None):
        ctx = original(ids, cache, left_padding, host_ids)
        build_mask = ctx._build
        blocks = mx.full(ids.shape, -1, mx.int32)

        def explicit(num_keys: int, window: int | None):
            mask = build_mask(num_keys, window)
            return attention_mask(blocks, ctx.offset, num_keys, window) if isinstance(mask, str) else mask

        ctx._build = explicit
        return ctx

    model.attention_context = context


def no_last_split() -> None:
    """Chunk bounds without the separate last-token forward."""
    bounds = prefill_mod.chunk_bounds
    prefill_mod.chunk_bounds = lambda ids, vision, size, split_last=False: bounds(ids, vision, size)


def time_prefill(model, ids: np.ndarray, chunk: int, repeats: int) -> float:
    """Median seconds of one prefill of ``ids`` into fresh caches (logits and caches read back)."""
    embeds = model.embed_inputs(ids)
    mx.eval(embeds)
    times = []
    for i in range(repeats + 1):
        cache = make_cache(model)
        t0 = time.perf_counter()
        logits, _ = prefill_mod.prefill(model, ids, embeds, cache, chunk)
        mx.eval(logits, [c.state for c in cache])
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(name: str, text: dict, dtype, top: dict | None, tokens: int, chunk: int, repeats: int) -> None:
    """Print the three variants side by side for one geometry."""
    vocab = text["vocab_size"]
    ids = np.random.default_rng(0).integers(10, min(vocab, 900), (1, tokens)).astype(np.int32)
    ids[0, 0] = 2
    results = {}
    split = prefill_mod.chunk_bounds
    for variant in ("boolean mask", "fused causal", "fused + last split"):
        model = build(text, dtype, top)
        if variant == "boolean mask":
            force_boolean_masks(model)
        if variant != "fused + last split":
            no_last_split()
        results[variant] = time_prefill(model, ids, chunk, repeats)
        prefill_mod.chunk_bounds = split
        del model
        mx.clear_cache()
    base = results["boolean mask"]
    window = text["sliding_window"]
    print(f"{name} ({text['num_hidden_layers']} layers, hidden {text['hidden_size']}, window {window}, {dtype}), "
          f"{tokens} tokens, chunk {chunk}:")
    for variant, t in results.items():
        print(f"  {variant:20s} {t * 1e3:9.1f} ms  {tokens / t:9.0f} tok/s  × {base / t:.2f} vs boolean mask")


def main() -> None:
    """Parse arguments and run both geometries."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-real", action="store_true", help="only the tiny geometry")
    args = ap.parse_args()
    print(f"mlx {mx.__version__}, device {mx.default_device()}")
    # Tiny: window 16, so only chunks of ≤ 16 tokens with no cache take the fused path; use chunk 16.
    run("tiny", TINY, mx.float32, None, args.tokens, 16, args.repeats)
    run("tiny", TINY, mx.float32, None, args.tokens, args.chunk, args.repeats)
    if not args.skip_real:
        run("12B-size layers", REAL2, mx.float32, SMALL_VOCAB_MEDIA_IDS, args.tokens, args.chunk, args.repeats)


if __name__ == "__main__":
    main()
