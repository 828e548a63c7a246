"""One side of the comparison: load one runtime, warm it up, time greedy generations → one JSON line.

Run by ``benchmarks/compare.py`` as a script with the Python of the runtime's own environment (mlx-vlm
lives in a separate virtual environment and never imports this project). Every runtime is timed the
same way, from outside: the clock starts before the prompt's files are read (preprocessing included),
the first token is the first streamed item (each runtime reads its token back to the host before
yielding it), decode speed is (tokens − 1) / (last − first), and peak memory is MLX's own counter.
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx
from mlx.utils import tree_flatten


def _words(n: int) -> str:
    return " ".join(["the"] * n)


def ours(model_path: str, dtype: str | None):
    """This project: a generator factory (kind, media, text, n) → streamed token counts."""
    from mlx_gemma4 import load, stream_generate

    model, processor = load(model_path, dtype=dtype)

    def run(kind: str, media: str | None, text: str, n: int):
        kw = {"images": [media]} if kind == "image" else {"audio": [media]} if kind == "audio" else {}
        prompt_tokens = None
        for chunk in stream_generate(model, processor, text, max_tokens=n, temperature=0, **kw):
            if chunk.stats is not None:
                prompt_tokens = chunk.stats.prompt_tokens
            yield from chunk.token_ids
        yield ("prompt", prompt_tokens)

    return run, model


def vlm(model_path: str, dtype: str | None):
    """mlx-vlm's own load, chat template and stream_generate."""
    from mlx_vlm import load, stream_generate
    from mlx_vlm.prompt_utils import apply_chat_template

    model, processor = load(model_path)
    if dtype:
        model.set_dtype(getattr(mx, dtype))

    def run(kind: str, media: str | None, text: str, n: int):
        prompt = apply_chat_template(processor, model.config, text, num_images=int(kind == "image"),
                                     num_audios=int(kind == "audio"))
        kw = {"image": [media]} if kind == "image" else {"audio": [media]} if kind == "audio" else {}
        seen = prompt_tokens = 0
        for r in stream_generate(model, processor, prompt, max_tokens=n, temperature=0.0, **kw):
            prompt_tokens = r.prompt_tokens
            if r.generation_tokens > seen:  # its last item repeats the last token with the totals
                seen = r.generation_tokens
                yield int(r.token)
        yield ("prompt", prompt_tokens)

    return run, model


def lm(model_path: str, dtype: str | None):
    """mlx-lm's load and stream_generate (text only; its gemma4 model on the same text weights)."""
    from mlx_lm import load, stream_generate

    model, tokenizer = load(model_path)
    if dtype:
        model.set_dtype(getattr(mx, dtype))

    def run(kind: str, media: str | None, text: str, n: int):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        seen = 0
        for r in stream_generate(model, tokenizer, ids, max_tokens=n):  # greedy: mlx-lm's default sampler
            if r.generation_tokens > seen:
                seen = r.generation_tokens
                yield int(r.token)
        yield ("prompt", len(ids))

    return run, model


def timed(run, kind: str, media: str | None, text: str, n: int) -> dict:
    """One generation timed from outside → ttft, decode tok/s, peak memory, token counts and ids.

    ``run`` yields each generated token id as it arrives, then the prompt length (as ``("prompt", n)``)."""
    mx.clear_cache()
    mx.reset_peak_memory()
    times, cpu, tokens = [], [], []
    t0, c0 = time.perf_counter(), time.process_time()
    prompt_tokens = None
    for item in run(kind, media, text, n):
        if isinstance(item, tuple):
            prompt_tokens = item[1]
        else:
            times.append(time.perf_counter())
            cpu.append(time.process_time())
            tokens.append(item)
    ttft = times[0] - t0
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    # CPU seconds of this process (all its threads): on a machine shared with other jobs, the work done,
    # which waiting for a core does not inflate as it inflates wall time.
    cpu_times = {"cpu_ttft_s": cpu[0] - c0,
                 "cpu_s_per_token": (cpu[-1] - cpu[0]) / (len(cpu) - 1) if len(cpu) > 1 else None}
    return {"ttft_s": ttft, "decode_tps": decode, "generated_tokens": len(times), "prompt_tokens": prompt_tokens,
            "prefill_tps": prompt_tokens / ttft if prompt_tokens else None,
            "peak_memory_bytes": mx.get_peak_memory(), "tokens": tokens, **cpu_times}


def main() -> None:
    """Parse, load, warm up, measure, print one JSON line per trial."""
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=("ours", "vlm", "lm"), required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--kinds", default="text", help="comma-separated: text, image, audio")
    p.add_argument("--image")
    p.add_argument("--audio")
    p.add_argument("--prompt-words", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=8)
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--dtype")
    a = p.parse_args()
    t0 = time.perf_counter()
    run, model = {"ours": ours, "vlm": vlm, "lm": lm}[a.impl](a.model, a.dtype)
    mx.eval(model.parameters())
    load_s = time.perf_counter() - t0
    # Bytes of every parameter as loaded (dtype casts included): the floor under each peak-memory figure.
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    text = _words(a.prompt_words)
    for kind in a.kinds.split(","):
        media = {"image": a.image, "audio": a.audio}.get(kind)
        for _ in run(kind, media, text, 2):  # warm-up: first-call allocations and compilation
            pass
        for _ in range(a.trials):
            rec = timed(run, kind, media, text, a.gen_tokens)
            print(json.dumps({"impl": a.impl, "kind": kind, "load_s": load_s, "weights_bytes": weights, **rec}),
                  flush=True)


if __name__ == "__main__":
    main()
