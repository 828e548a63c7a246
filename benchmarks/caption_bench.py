"""Items/min of ``caption`` by batch size: the old fixed batches against the continuous-batching engine.

    python -m benchmarks.caption_bench CHECKPOINT [--items 16] [--max-tokens 16] [--batch-sizes 1,2,4,8]
        [--lengths mixed|equal] [--modes fixed,continuous] [--repeats 1] [--image-tokens N] [--warmup 2]

One process, the model loaded once; every run captions the same items (the example images resized to
several sizes, so prompt lengths differ), greedy. ``--lengths equal``: stop ids masked, every row decodes
exactly ``--max-tokens``. ``--lengths mixed`` (the default; captions differ in length, which is where a
fixed batch waits for its longest row): a stop token is forced where a row's length (prompt + caption)
is a multiple of ``--max-tokens``, so each caption gets 1 to ``--max-tokens`` tokens, a deterministic
mix. ``fixed`` is the loop caption had before the engine (preprocess ahead, ``stream_batch`` per batch
of B, each row written when it ends, the next batch starting after the longest row); ``continuous`` is
``run_job`` (finished rows replaced at once). Runs alternate (fixed, continuous, fixed, …) per batch
size so both see the same machine load; each line is one run, timed by wall clock and by this process's
CPU seconds (every thread); the rows are read back (written) before the clock stops.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from mlx_gemma4 import GenerationRequest, load
from mlx_gemma4.jobs.inputs import collect_items
from mlx_gemma4.jobs.records import FileSink
from mlx_gemma4.jobs.runner import JobOptions, preprocess, run_job, stream_texts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZES = [(640, 480), (480, 640), (320, 240), (200, 300), (512, 256), (256, 512), (400, 400), (160, 120)]


def make_items(folder: Path, n: int):
    """``n`` images: the three examples at several sizes (prompt lengths differ)."""
    sources = [EXAMPLES / "chart.png", EXAMPLES / "scene.jpg", EXAMPLES / "rotated_note.jpg"]
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            im.convert("RGB").resize(SIZES[i % len(SIZES)]).save(folder / f"img{i:03d}.png")
    return collect_items([str(folder)])[0]


def fixed_batches(model, processor, items, sink, opts: JobOptions) -> int:
    """The pre-engine caption loop: fixed batches, two batches preprocessed ahead → generated tokens."""
    tokens, b = 0, opts.batch_size
    pending: deque = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:

        def top_up():
            while len(pending) < 2 * b and (item := next(source, None)) is not None:
                pending.append((item, pool.submit(preprocess, processor, item, opts)))

        top_up()
        while pending:
            batch = []
            while pending and len(batch) < b:
                item, fut = pending.popleft()
                top_up()
                batch.append((item, fut.result()))
            for r, text, st, seconds in stream_texts(model, processor, [inp for _, inp in batch], opts.request):
                sink.write({"file_name": batch[r][0].file_name, "caption": text.strip(),
                            "prompt_tokens": st.prompt_tokens, "generation_tokens": st.generation_tokens,
                            "seconds": seconds, "finish_reason": st.finish_reason, "error": None})
                tokens += st.generation_tokens
    return tokens


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(mode: str, model, processor, items, path: Path, opts: JobOptions) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, generated tokens) of one captioning run over ``items``."""
    sink = FileSink(path, "jsonl")
    wall, cpu = time.perf_counter(), cpu_seconds()
    if mode == "fixed":
        tokens = fixed_batches(model, processor, items, sink, opts)
    else:
        s = run_job(model, processor, items, sink, opts)
        assert s.failed == 0 and s.done == len(items)
        tokens = s.generation_tokens
    sink.close()
    return time.perf_counter() - wall, cpu_seconds() - cpu, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--lengths", choices=["mixed", "equal"], default="mixed")
    ap.add_argument("--modes", default="fixed,continuous")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--image-tokens", type=int, default=None, help="image budget (default: the checkpoint's)")
    ap.add_argument("--warmup", type=int, default=2, help="items captioned per mode before the timed runs")
    args = ap.parse_args()
    model, processor = load(args.checkpoint)
    rule = _stop_by_length(model, args.max_tokens) if args.lengths == "mixed" else _no_stop(model)
    request = GenerationRequest(max_tokens=args.max_tokens, temperature=0.0, logits_processors=(rule,))
    modes = args.modes.split(",")
    print("| batch | mode | items/min | tok/s | wall s | CPU s | tokens |\n| --- | --- | --- | --- | --- | --- | --- |",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        items = make_items(Path(tmp), args.items)
        for mode in modes if args.warmup else ():  # first-call compilation and allocations out of the figures
            timed(mode, model, processor, items[: args.warmup], Path(tmp) / f"warm-{mode}.jsonl",
                  JobOptions(batch_size=2, request=request, image_tokens=args.image_tokens))
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            opts = JobOptions(batch_size=b, request=request, image_tokens=args.image_tokens)
            for rep in range(args.repeats):
                for mode in modes:  # alternating: fixed, continuous, fixed, continuous …
                    wall, cpu, tokens = timed(mode, model, processor, items, Path(tmp) / f"{mode}{b}-{rep}.jsonl",
                                              opts)
                    print(f"| {b} | {mode} | {60 * len(items) / wall:.1f} | {tokens / wall:.1f} | {wall:.1f} | "
                          f"{cpu:.1f} | {tokens} |", flush=True)


def _mask_stops(model, logits, force):
    """Stop ids masked; where ``force`` (an mx bool) holds, the first stop id forced instead."""
    import mlx.core as mx

    from mlx_gemma4.generation.sampling import model_defaults

    stops = sorted(model_defaults(model).eos_token_ids)
    is_stop = mx.zeros((logits.shape[-1],), dtype=mx.bool_)
    is_stop[mx.array(stops)] = True
    masked = mx.where(is_stop, mx.array(-float("inf"), logits.dtype), logits)
    only = mx.arange(logits.shape[-1]) == stops[0]
    return mx.where(force & only, mx.array(1e9, logits.dtype), masked)


def _no_stop(model):
    """A logits processor that masks the checkpoint's stop ids (equal work per row)."""
    import mlx.core as mx

    return lambda tokens, logits: _mask_stops(model, logits, mx.array(False))


def _stop_by_length(model, every: int):
    """Stop ids masked except where the row's length is a multiple of ``every`` (then one is forced). The
    length leaves out a fixed batch's left padding (the prompt starts with BOS, never a pad), so both modes
    stop every caption at the same token."""
    import mlx.core as mx

    pad = model.config.text_config.pad_token_id

    def process(tokens, logits):
        length = tokens.shape[0] - mx.argmax(tokens != pad)
        return _mask_stops(model, logits, length % every == 0)

    return process


if __name__ == "__main__":
    main()
