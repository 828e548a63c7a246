"""Text-only prefill: the fused kernel's causal mask vs an explicit boolean mask, and the last-token split.

Run from the repository root:  nice -n 5 python -m benchmarks.prefill_causal [--tokens 1024] [--chunk 512]
Three variants of the same prefill (same random model, same prompt, caches evaluated after every chunk):
  * "boolean mask": every multi-token chunk gets an explicit boolean mask (what prefill did before);
  * "fused causal": a text-only chunk hands ``mx.fast.scaled_dot_product_attention`` ``mask="causal"``
    wherever no sliding window cuts into its keys (chunk + cached keys ≤ window), as mlx-lm does;
  * "fused + last split": the prompt's last token gets its own forward, so the earlier chunks run only
    what their KV caches need (no last-layer MLP / final norm over them).
The variants run interleaved on one model (warm-up round first); each figure is the best of ``--repeats``
runs, read back (``mx.eval``) before the clock stops.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import numpy as np

import mlx_gemma4.generation.prefill as prefill_mod
from benchmarks.generate_bench import REAL2, TINY, build
from mlx_gemma4.model.cache import make_cache
from mlx_gemma4.model.masks import attention_mask
from mlx_gemma4.presets import SMALL_VOCAB_MEDIA_IDS

VARIANTS = ("boolean mask", "fused causal", "fused + last split")


def install_switches(model) -> dict:
    """Switches for the variants on one model: explicit boolean masks, and the last-token split."""
    switches = {"boolean": False, "split": True}
    original_context = model.attention_context

    def context(ids, cache, left_padding=None, host_ids=None):
        ctx = original_context(ids, cache, left_padding, host_ids)
        if not switches["boolean"]:
            return ctx
        build_mask = ctx._build
        blocks = mx.full(ids.shape, -1, mx.int32)

        def explicit(num_keys: int, window: int | None):
            mask = build_mask(num_keys, window)
            return attention_mask(blocks, ctx.offset, num_keys, window) if isinstance(mask, str) else mask

        ctx._build = explicit
        return ctx

    model.attention_context = context
    bounds = prefill_mod.chunk_bounds
    prefill_mod.chunk_bounds = lambda ids, vision, size, split_last=False, **kw: bounds(
        ids, vision, size, split_last=split_last and switches["split"], **kw)
    return switches


def time_prefill(model, ids: np.ndarray, embeds: mx.array, chunk: int) -> float:
    """Seconds of one prefill of ``ids`` into fresh caches (logits and caches read back)."""
    cache = make_cache(model)
    t0 = time.perf_counter()
    logits, _ = prefill_mod.prefill(model, ids, embeds, cache, chunk)
    mx.eval(logits, [c.state for c in cache])
    return time.perf_counter() - t0


def run(name: str, text: dict, dtype, top: dict | None, tokens: int, chunk: int, repeats: int) -> None:
    """Print the three variants side by side for one geometry (runs interleaved, best of ``repeats``)."""
    vocab = text["vocab_size"]
    ids = np.random.default_rng(0).integers(10, min(vocab, 900), (1, tokens)).astype(np.int32)
    ids[0, 0] = 2
    model = build(text, dtype, top)
    switches = install_switches(model)
    embeds = model.embed_inputs(ids)
    mx.eval(embeds)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(repeats + 1):
        for variant in VARIANTS:
            switches["boolean"] = variant == "boolean mask"
            switches["split"] = variant == "fused + last split"
            t = time_prefill(model, ids, embeds, chunk)
            if i:  # the first round warms up
                times[variant].append(t)
    best = {v: min(ts) for v, ts in times.items()}
    base = best["boolean mask"]
    print(f"{name} ({text['num_hidden_layers']} layers, hidden {text['hidden_size']}, window "
          f"{text['sliding_window']}, {dtype}), {tokens} tokens, chunk {chunk}:")
    for variant, t in best.items():
        print(f"  {variant:20s} {t * 1e3:9.1f} ms  {tokens / t:9.0f} tok/s  × {base / t:.2f} vs boolean mask")


def main() -> None:
    """Parse arguments and run both geometries."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--real-tokens", type=int, default=1024, help="prompt length for the 12B-size layers")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-real", action="store_true", help="only the tiny geometry")
    args = ap.parse_args()
    print(f"mlx {mx.__version__}, device {mx.default_device()}")
    # Tiny: window 16, so its sliding layers keep the boolean mask; only its full layers take the fused path.
    run("tiny", TINY, mx.float32, None, args.tokens, args.chunk, args.repeats)
    if not args.skip_real:
        run("12B-size layers", REAL2, mx.float32, SMALL_VOCAB_MEDIA_IDS, args.real_tokens, args.chunk, args.repeats)


if __name__ == "__main__":
    main()
