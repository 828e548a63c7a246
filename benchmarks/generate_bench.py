"""Generation benchmarks: long multimodal prefill memory, per-token overhead vs mlx-lm, MTP best case, batching.

Run from the repository root:  python -m benchmarks.generate_bench [--long-tokens 16384]
Models are built in memory with random weights (no download):
  * "tiny": the test geometry (hidden 64, 6 layers, vocab 262144) — per-token overhead;
  * "real2": two layers of the real 12B sizes (one sliding, one full; hidden 3840, vocab 262144 → 1024
    here to keep weights small) in bfloat16 — memory and compute-bound figures.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlx_gemma4.config import ModelConfig
from mlx_gemma4.generation import batch_generate, generate, stream_generate
from mlx_gemma4.generation.prefill import prefill
from mlx_gemma4.model.cache import kv_nbytes, make_cache
from mlx_gemma4.model.gemma4 import Gemma4Model
from mlx_gemma4.presets import SMALL_VOCAB, SMALL_VOCAB_MEDIA_IDS, VISION_WIDTH, text_preset
from tests.forced_drafter import ForcedDrafter

TINY = text_preset("tiny")
REAL2 = text_preset("12b", layers=2, vocab_size=SMALL_VOCAB)
SMALL_IDS = SMALL_VOCAB_MEDIA_IDS
TINY_VISION = {"mm_embed_dim": VISION_WIDTH["tiny"], "output_proj_dims": VISION_WIDTH["tiny"]}

def build(text: dict, dtype=mx.float32, top: dict | None = None, vision: dict | None = None) -> Gemma4Model:
    """A random model of the given geometry (q/k norms tempered as in the reference fixtures)."""
    cfg = ModelConfig.from_dict({"model_type": "gemma4_unified", "text_config": text,
                                 "vision_config": vision or TINY_VISION,
                                 "audio_config": {}, **(top or {})})
    model = Gemma4Model(cfg)
    params = [(k, v * 0.02 if v.ndim > 1 else v) for k, v in tree_flatten(model.parameters())]
    model.load_weights(params)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    model.eval()
    return model


def nbytes(model: nn.Module) -> int:
    """Bytes of all parameters."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def long_prompt(model: Gemma4Model, total: int, n_images: int = 4, image_tokens: int = 280, chunk: int = 2048):
    """Peak memory of prefilling a ``total``-token prompt with ``n_images`` images vs weights + KV cache."""
    cfg = model.config
    rng = np.random.default_rng(0)
    text_len = (total - n_images * (image_tokens + 2)) // (n_images + 1)
    ids, pix, pos = [2], [], []
    side = int(np.sqrt(image_tokens))
    cols, rows = image_tokens // side, side
    for _ in range(n_images):
        ids += rng.integers(10, 900, text_len).tolist() + [cfg.boi_token_id] + [cfg.image_token_id] * (cols * rows)
        ids += [cfg.eoi_token_id]
        pix.append(rng.random((cols * rows, 6912), dtype=np.float32))
        pos.append(np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2))
    ids += rng.integers(10, 900, total - len(ids)).tolist()
    ids = np.array([ids], np.int32)
    emb = model.embed_inputs(ids, pixel_values=np.stack(pix), image_position_ids=np.stack(pos))
    mx.eval(emb)
    cache = make_cache(model)
    mx.clear_cache()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    logits, _ = prefill(model, ids, emb, cache, chunk)
    mx.eval(logits, [c.state for c in cache])
    dt = time.perf_counter() - t0
    peak = mx.get_peak_memory()
    weights, kv, embeds = nbytes(model), kv_nbytes(cache), emb.nbytes
    print(f"long prompt: {ids.shape[1]} tokens, {n_images} images × {cols * rows} soft tokens, chunk {chunk}: "
          f"prefill {dt:.1f} s ({ids.shape[1] / dt:.0f} tok/s)")
    print(f"  peak {peak / 2**20:.0f} MiB; weights {weights / 2**20:.0f} MiB + KV cache {kv / 2**20:.0f} MiB "
          f"= {(weights + kv) / 2**20:.0f} MiB (+ prompt embeddings {embeds / 2**20:.0f} MiB) → "
          f"overhead {(peak - weights - kv - embeds) / 2**20:.0f} MiB")


def per_token_vs_mlx_lm(n: int = 200):
    """Decode ms/token of our stream_generate vs mlx-lm's stream_generate on same-size models."""
    from mlx_lm.generate import stream_generate as lm_stream
    from mlx_lm.models import gemma3_text
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(262144)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1")
    ours = build(TINY)
    args = gemma3_text.ModelArgs(model_type="gemma3_text", hidden_size=64, num_hidden_layers=6,
                                 intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 vocab_size=262144, sliding_window=16, sliding_window_pattern=3,
                                 rms_norm_eps=1e-6, query_pre_attn_scalar=16)
    theirs = gemma3_text.Model(args)
    mx.eval(theirs.parameters())
    prompt = list(range(10, 42))
    results = {}
    for name, run in (
        ("mlx-gemma4", lambda: stream_generate(ours, hf, prompt, max_tokens=n, temperature=0, stop=[])),
        ("mlx-lm", lambda: lm_stream(theirs, TokenizerWrapper(hf), prompt, max_tokens=n)),
    ):
        best = None
        for _ in range(3):
            last = None
            for r in run():
                last = r
            tps = last.stats.generation_tps if name == "mlx-gemma4" else last.generation_tps
            best = max(best or 0, tps)
        results[name] = best
        print(f"  {name:11s} decode {best:7.1f} tok/s = {1000 / best:.2f} ms/token")
    print(f"per-token time ratio mlx-gemma4 / mlx-lm: {results['mlx-lm'] / results['mlx-gemma4']:.2f}")


def mtp_best_case(model, n: int = 48, k: int = 4):
    """Forced-agreement drafter: acceptance 1, tokens per target step and speed vs plain decoding."""
    prompt = np.array([[2, *range(10, 74)]], np.int32)
    plain = generate(model, None, prompt, max_tokens=n, temperature=0)
    plain = min((generate(model, None, prompt, max_tokens=n, temperature=0) for _ in range(2)),
                key=lambda r: r.stats.decode_s)
    seq = prompt[0].tolist() + plain.token_ids
    spec = min((generate(model, None, prompt, max_tokens=n, temperature=0, draft_model=ForcedDrafter(seq),
                         num_draft_tokens=k) for _ in range(2)), key=lambda r: r.stats.decode_s)
    assert spec.token_ids == plain.token_ids
    s = spec.stats
    print(f"  MTP forced agreement (k={k}): acceptance {s.acceptance_rate:.2f}, {s.tokens_per_step:.2f} tokens per "
          f"target step, decode {s.generation_tps:.1f} tok/s vs plain {plain.stats.generation_tps:.1f} tok/s "
          f"(× {s.generation_tps / plain.stats.generation_tps:.2f})")


def batch_speedup(model, b: int = 4, n: int = 32):
    """Tokens/s of b prompts generated together vs one after another (greedy, identical outputs)."""
    rng = np.random.default_rng(1)
    prompts = [np.array([[2, *rng.integers(10, 900, 20 + 7 * i).tolist()]], np.int32) for i in range(b)]
    t0 = time.perf_counter()
    seq = [generate(model, None, p, max_tokens=n, temperature=0, stop=[]).token_ids for p in prompts]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    bat = batch_generate(model, None, prompts, max_tokens=n, temperature=0)
    t_bat = time.perf_counter() - t0
    assert [r.token_ids for r in bat] == seq
    print(f"  batch of {b} × {n} tokens: {b * n / t_bat:.1f} tok/s vs sequential {b * n / t_seq:.1f} tok/s "
          f"(× {t_seq / t_bat:.2f}), outputs identical")


def main() -> None:
    """Run every benchmark and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--long-tokens", type=int, default=16384)
    ap.add_argument("--skip-long", action="store_true")
    a = ap.parse_args()
    print("== per-token overhead (tiny geometry, float32) ==")
    per_token_vs_mlx_lm()
    tiny = build(TINY)
    print("== tiny geometry ==")
    mtp_best_case(tiny)
    batch_speedup(tiny)
    real = build(REAL2, mx.bfloat16, SMALL_IDS, vision={})
    print("== two real-geometry layers (bf16) ==")
    mtp_best_case(real, n=24)
    batch_speedup(real, n=16)
    if not a.skip_long:
        long_prompt(real, a.long_tokens)


if __name__ == "__main__":
    main()
