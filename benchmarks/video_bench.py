"""Video benchmarks: time to the sampled frames and peak memory for a 60 s 1080p clip; TTFT of a 32-frame prompt.

Run from the repository root (figures and commands in benchmarks/video.md):
    nice -n 5 python -m benchmarks.video_bench clip /tmp/clip1080.mp4 [KEYINT]  # the 60 s 1080p clip (x264: 250)
    nice -n 5 python -m benchmarks.video_bench frames /tmp/clip1080.mp4        # ours vs a sequential decode
    nice -n 5 python -m benchmarks.video_bench ttft MODEL_FOLDER /tmp/clip1080.mp4
    nice -n 5 python -m benchmarks.video_bench ttft12b MODEL_FOLDER /tmp/clip1080.mp4 [LAYERS] [DTYPE]  # 12B sizes

``frames`` runs each reader in a fresh subprocess and reports CPU time of all its threads (the fair
figure on a shared machine), wall time and the peak resident memory it added (VmHWM − VmRSS before
reading). The sequential reader is transformers' own PyAV reader (``read_video_pyav``: decode every
frame up to the last chosen one), the reference's way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _measure(reader: str, clip: str) -> dict:
    """One reader in this process: seconds and MiB of peak memory added."""
    from functools import partial

    if reader == "ours":
        from mlx_gemma4.processing.video import process_video

        run = partial(process_video, clip)
    else:
        from transformers.video_utils import default_sample_indices_fn, read_video_pyav

        run = partial(read_video_pyav, clip, partial(default_sample_indices_fn, num_frames=32))
    before = _rss_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"reader": reader, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_added_mib": round((_rss_kb("VmHWM") - before) / 1024)}


def make_clip(path: Path, keyint: int) -> None:
    """60 s of 1920×1080 at 30 fps (H.264, a keyframe every ``keyint`` frames), moving shapes."""
    from tests.video_clips import write_clip

    start = time.perf_counter()
    write_clip(path, frames=1800, size=(1920, 1080), fps=30, keyint=keyint)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB written in {time.perf_counter() - start:.0f} s")


def frames(clip: str) -> None:
    """Each reader in a fresh process, side by side."""
    rows = []
    for reader in ("ours", "sequential"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.video_bench", "_one", reader, clip],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| reader | CPU time to 32 sampled frames (all threads) | wall time | peak memory added |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['reader']} | {r['cpu_seconds']} s | {r['seconds']} s | {r['peak_added_mib']} MiB |")
    print(f"ratio sequential / ours: {rows[1]['cpu_seconds'] / rows[0]['cpu_seconds']:.1f}× CPU time")


def ttft(model_path: str, clip: str) -> None:
    """Processing time, then time to first token (prefill of the whole prompt) with the frames ready."""
    from mlx_gemma4 import generate, load

    model, processor = load(model_path)
    messages = [{"role": "user", "content": [{"type": "video", "path": clip},
                                             {"type": "text", "text": "What happens here?"}]}]
    start, cpu = time.perf_counter(), time.process_time()
    inputs = processor(messages)
    processing, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"processing: {processing:.2f} s wall, {cpu:.2f} s CPU")
    generate(model, processor, inputs, max_tokens=1, temperature=0)  # warm-up (kernels, allocations)
    cpu = time.process_time()
    result = generate(model, processor, inputs, max_tokens=1, temperature=0)
    cpu = time.process_time() - cpu
    s = result.stats
    # Side by side: a text-only prompt of the same length (the video soft tokens as an ordinary word).
    text_ids = np.where(np.isin(inputs.input_ids, [model.config.video_token_id]), 1000, inputs.input_ids)
    generate(model, processor, text_ids, max_tokens=1, temperature=0)
    text = generate(model, processor, text_ids, max_tokens=1, temperature=0).stats
    print(f"text-only prompt of the same length: TTFT {text.time_to_first_token_s:.2f} s; "
          f"video / text = {s.time_to_first_token_s / text.time_to_first_token_s:.2f}")
    print(f"{model_path}: {inputs.input_ids.shape[1]} prompt tokens ({len(inputs.videos[0].frame_indices)} frames × "
          f"{inputs.videos[0].num_soft_tokens}); processing {processing:.2f} s; TTFT {s.time_to_first_token_s:.2f} s "
          f"({s.prompt_tps:.0f} tok/s prefill; CPU time of all threads {cpu:.2f} s); peak {s.peak_memory_gb:.2f} GB")


def ttft_12b_layers(model_path: str, clip: str, layers: int = 2, dtype: str = "bfloat16") -> None:
    """The same prompt through ``layers`` layers of the real 12B sizes with a 1024-word vocabulary (in memory).

    ``model_path`` (any checkpoint folder) only provides the processor; the prompt's media ids are
    moved into the small vocabulary and its words folded into it, so the structure (frames as
    bidirectional blocks, stamps, text) is the real prompt's. The full 262144-word embedding would add
    2 GB of weights that the prefill barely touches. One layer is a full-attention layer, two are a
    sliding and a full one (the real model has 40 and 8). The warm-up is a short prompt: on a CPU one
    2420-token prefill at these sizes takes minutes, and the kernels are the same.
    """
    import mlx.core as mx

    from benchmarks.generate_bench import SMALL_IDS, build
    from mlx_gemma4 import generate
    from mlx_gemma4.presets import SMALL_VOCAB, text_preset
    from mlx_gemma4.processing import Processor

    processor = Processor.from_pretrained(model_path)
    inputs = processor([{"role": "user", "content": [{"type": "video", "path": clip},
                                                     {"type": "text", "text": "What happens here?"}]}])
    model = build(text_preset("12b", layers=layers, vocab_size=SMALL_VOCAB), getattr(mx, dtype), SMALL_IDS, vision={})
    special = processor.special
    moved = {special.video: SMALL_IDS["video_token_id"], special.boi: SMALL_IDS["boi_token_id"],
             special.eoi: SMALL_IDS["eoi_token_id"]}
    ids = np.array([[moved.get(int(t), int(t) % 900) for t in inputs.input_ids[0]]])
    arrays = {"input_ids": ids, "pixel_values_videos": inputs.pixel_values_videos,
              "video_position_ids": inputs.video_position_ids}
    text_ids = np.where(ids == SMALL_IDS["video_token_id"], 500, ids)
    generate(model, None, {"input_ids": text_ids[:, :64]}, max_tokens=1, temperature=0)  # warm-up
    for label, prompt in (("video", arrays), ("text-only, same length", {"input_ids": text_ids})):
        cpu = time.process_time()
        s = generate(model, None, prompt, max_tokens=1, temperature=0).stats
        print(f"12B sizes, {layers} layer(s), {dtype}, {label}: {ids.shape[1]} tokens, TTFT "
              f"{s.time_to_first_token_s:.2f} s (CPU {time.process_time() - cpu:.2f} s), "
              f"peak {s.peak_memory_gb:.2f} GB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["clip", "frames", "ttft", "ttft12b", "_one"])
    parser.add_argument("args", nargs="+")
    a = parser.parse_args()
    if a.what == "clip":
        make_clip(Path(a.args[0]), int(a.args[1]) if len(a.args) > 1 else 250)
    elif a.what == "frames":
        frames(a.args[0])
    elif a.what == "ttft":
        ttft(a.args[0], a.args[1])
    elif a.what == "ttft12b":
        ttft_12b_layers(a.args[0], a.args[1], *([int(a.args[2])] if len(a.args) > 2 else []), *a.args[3:4])
    else:
        print(json.dumps(_measure(a.args[0], a.args[1])))


if __name__ == "__main__":
    main()
