"""Items/min of ``caption`` for batch sizes 1, 2, 4, 8 on one checkpoint (one process, model loaded once).

    python -m benchmarks.caption_bench CHECKPOINT [--items 16] [--max-tokens 16] [--batch-sizes 1,2,4,8]

Every batch size captions the same items (copies of the example images, 280-token budget) with greedy
decoding and a fixed number of new tokens (``ignore`` stop: a stop token is never sampled so every
row decodes ``--max-tokens``), so the rows differ only in how they are batched. The figure is
finished items per minute of the whole job (preprocessing, prefill, decode, writing), from the
job's own clock; results are read back before the clock stops because each row is written.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from mlx_gemma4 import GenerationRequest, load
from mlx_gemma4.jobs.inputs import collect_items
from mlx_gemma4.jobs.records import FileSink
from mlx_gemma4.jobs.runner import JobOptions, run_job

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def make_items(folder: Path, n: int):
    """``n`` copies of the example images."""
    sources = [EXAMPLES / "chart.png", EXAMPLES / "scene.jpg", EXAMPLES / "rotated_note.jpg"]
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copy(src, folder / f"img{i:03d}{src.suffix}")
    return collect_items([str(folder)])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    args = ap.parse_args()
    model, processor = load(args.checkpoint)
    # No stop ids: every row decodes exactly max_tokens, so batch sizes are compared on equal work.
    request = GenerationRequest(max_tokens=args.max_tokens, temperature=0.0,
                                logits_processors=(_no_stop(model),))
    print("| batch | items/min | tok/s | seconds | vs batch 1 |\n| --- | --- | --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        items = make_items(Path(tmp), args.items)
        base = None
        warm = FileSink(Path(tmp) / "warm.jsonl", "jsonl")
        run_job(model, processor, items[:2], warm, JobOptions(batch_size=2, request=request))
        warm.close()
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            sink = FileSink(Path(tmp) / f"b{b}.jsonl", "jsonl")
            s = run_job(model, processor, items, sink, JobOptions(batch_size=b, request=request))
            sink.close()
            assert s.failed == 0 and s.done == len(items)
            base = base or s.items_per_min  # printed as it goes: a long run killed midway keeps its rows
            print(f"| {b} | {s.items_per_min:.1f} | {s.tokens_per_s:.1f} | {s.seconds:.1f} | "
                  f"{s.items_per_min / base:.2f}× |", flush=True)


def _no_stop(model):
    """A logits processor that masks the checkpoint's stop ids (equal work per row)."""
    import mlx.core as mx

    from mlx_gemma4.generation.sampling import model_defaults

    stops = sorted(model_defaults(model).eos_token_ids)

    def process(tokens, logits):
        mask = mx.zeros((logits.shape[-1],), dtype=mx.bool_)
        mask[mx.array(stops)] = True
        return mx.where(mask, mx.array(-float("inf"), logits.dtype), logits)

    return process


if __name__ == "__main__":
    main()
