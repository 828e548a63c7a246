"""Benchmarks: load time, preprocessing, time to first token, prefill/decode speed and memory per prompt kind.

One ``Measurement`` per prompt kind (text, image, audio, video) over ``trials`` timed runs after
``warmup`` untimed ones. Timings come from the generation engine's own statistics: the first token
is read back before decode timing starts, and every decoded token is read back to the host (MLX is
lazy; a timer around unevaluated arrays measures nothing). ``Measurement.record()`` is the stable
JSON form (``SCHEMA``), documented in the README's "gemma4 bench" section.
"""

from __future__ import annotations

import fcntl
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .errors import InputError

SCHEMA = 1
KINDS = ("text", "image", "audio", "video")
IMAGE_BUDGETS = (70, 140, 280, 560, 1120)
SYNTHETIC_GEOMETRIES = ("12b", "tiny")


def cache_root() -> Path:
    """Where synthetic checkpoints are kept: ``$XDG_CACHE_HOME/mlx-gemma4/synthetic`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mlx-gemma4" / "synthetic"


@dataclass(frozen=True)
class BenchConfig:
    """What to measure (the ``gemma4 bench`` flags)."""

    model: str | None = None
    synthetic: str | None = None  # "12b" | "tiny": a cached random checkpoint of that geometry
    layers: int | None = None  # synthetic only: decoder layers (default: the geometry's own)
    bits: int = 4  # synthetic only: 4 / 8 (affine, group 64) or 16 (bfloat16, not quantized)
    prompt_tokens: int = 128
    gen_tokens: int = 32
    image: bool = False
    image_tokens: int = 280
    audio_s: float | None = None
    video_s: float | None = None
    batch: int = 1
    draft: str | None = None
    trials: int = 3
    warmup: int = 1
    dtype: str | None = None
    bandwidth_gbps: float | None = None

    def check(self) -> None:
        """Every flag in range, else InputError naming it."""
        if (self.model is None) == (self.synthetic is None):
            raise InputError("give exactly one of --model or --synthetic")
        if self.synthetic is not None and self.synthetic not in SYNTHETIC_GEOMETRIES:
            raise InputError(f"--synthetic must be one of {', '.join(SYNTHETIC_GEOMETRIES)}, not {self.synthetic!r}")
        if self.model is not None and (self.layers is not None or self.bits != 4):
            raise InputError("--layers and --bits apply to --synthetic checkpoints only")
        positive = {"--prompt-tokens": self.prompt_tokens, "--gen-tokens": self.gen_tokens, "--batch": self.batch,
                    "--trials": self.trials, "--layers": self.layers or 1}
        for flag, value in positive.items():
            if value < 1:
                raise InputError(f"{flag} must be at least 1, got {value}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.gen_tokens < 2:
            raise InputError("--gen-tokens must be at least 2 (decode speed is timed after the first token)")
        if self.bits not in (4, 8, 16):
            raise InputError(f"--bits must be 4, 8 or 16, got {self.bits}")
        if self.image_tokens not in IMAGE_BUDGETS:
            raise InputError(f"--image-tokens must be one of {', '.join(map(str, IMAGE_BUDGETS))}")
        for flag, secs in (("--audio", self.audio_s), ("--video", self.video_s)):
            if secs is not None and not 0 < secs <= 600:
                raise InputError(f"{flag} takes seconds in (0, 600], got {secs}")
        if self.bandwidth_gbps is not None and self.bandwidth_gbps <= 0:
            raise InputError(f"--bandwidth-gbps must be positive, got {self.bandwidth_gbps}")
        if self.draft is not None and self.batch > 1:
            raise InputError("--draft and --batch cannot be combined (speculative decoding runs one row)")

    @property
    def kinds(self) -> list[str]:
        """Prompt kinds to measure: text always, then the media asked for."""
        asked = {"image": self.image, "audio": self.audio_s is not None, "video": self.video_s is not None}
        return ["text"] + [k for k in KINDS[1:] if asked[k]]


@dataclass
class Measurement:
    """One prompt kind measured over the trials (the unit of ``--json`` output)."""

    kind: str
    available: bool = True
    note: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    preprocess_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    prefill_tps: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    peak_memory_bytes: int = 0
    kv_cache_bytes: int = 0
    tokens_per_step: float = 1.0

    def record(self, header: dict[str, Any], weights_bytes: int, decode_bytes: int, bandwidth_gbps: float) -> dict:
        """The flat JSON object (schema ``SCHEMA``): header fields, then medians/min/max and memory split."""
        out = {**header, "kind": self.kind, "available": self.available, "note": self.note,
               "prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
               "trials": len(self.decode_tps)}
        for name in ("preprocess_s", "ttft_s", "prefill_tps", "decode_tps"):
            values = getattr(self, name)
            for stat, fn in (("median", statistics.median), ("min", min), ("max", max)):
                out[f"{name}_{stat}"] = fn(values) if values else None
        read = (decode_bytes + self.kv_cache_bytes) / header["batch"] / (self.tokens_per_step or 1.0)
        decode = out["decode_tps_median"]
        out.update(
            peak_memory_bytes=self.peak_memory_bytes or None,
            weights_bytes=weights_bytes,
            kv_cache_bytes=self.kv_cache_bytes if self.available else None,
            activations_bytes=self.peak_memory_bytes - weights_bytes - self.kv_cache_bytes if self.available else None,
            bytes_per_token=int(read) if self.available else None,
            bandwidth_share=read * decode / (bandwidth_gbps * 1e9) if self.available and decode else None,
            tokens_per_step=self.tokens_per_step if self.available else None,
        )
        return out


# -- device ---------------------------------------------------------------------------------------


def measure_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Device memory bandwidth in GB/s: the best of ``repeats`` timed copies (read + write) of ``nbytes``."""
    a = mx.random.uniform(shape=(nbytes // 4,))
    mx.eval(a)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        b = a + 1.0  # a full read of a and a full write of b: no op that MLX could skip
        mx.eval(b)
        best = min(best, time.perf_counter() - t0)
        del b
    del a
    mx.clear_cache()
    return 2 * nbytes / best / 1e9


def package_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def device_name() -> str:
    """The MLX device in words (backend, chip or CPU, OS)."""
    dev = mx.default_device()
    if dev.type == mx.gpu:
        try:
            info = mx.device_info()
            return f"gpu ({info.get('device_name') or info.get('architecture', '?')}, {platform.system()})"
        except (AttributeError, RuntimeError):
            return f"gpu ({platform.system()})"
    return f"cpu ({platform.machine()}, {platform.system()}, {_cpu_count()} cores)"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


# -- model facts ----------------------------------------------------------------------------------


def compute_dtype(model) -> str:
    """The dtype activations run in: that of the final norm's weight (cast with the rest at load time)."""
    return str(model.language_model.norm.weight.dtype).removeprefix("mlx.core.")


def quantization_label(model) -> str:
    """'none', or e.g. '4-bit affine, group 64' (per-module overrides counted)."""
    q = model.config.quantization
    if not q:
        return "none"
    overrides = sum(1 for v in q.values() if isinstance(v, dict))
    more = f", {overrides} modules overridden" if overrides else ""
    return f"{q.get('bits')}-bit {q.get('mode', 'affine')}, group {q.get('group_size')}{more}"


def nbytes(module, prefix: str = "") -> int:
    """Bytes of a module's parameters (those whose path starts with ``prefix``)."""
    return sum(v.nbytes for k, v in tree_flatten(module.parameters()) if k.startswith(prefix))


def kv_bytes_per_1k(model) -> int:
    """KV-cache bytes that 1,000 tokens add (every layer keeps K and V, before any sliding window is full)."""
    text = model.config.text_config
    item = model.language_model.norm.weight.dtype.size
    per_token = sum(2 * h * d * item for h, d in zip(text.layer_kv_heads, text.layer_head_dims, strict=True))
    return per_token * 1000


def make_header(model, cfg: BenchConfig, label: str, load_s: float, bandwidth: float, source: str) -> dict:
    """Fields shared by every record of a run."""
    return {
        "schema": SCHEMA, "model": label, "device": device_name(), "mlx": package_version("mlx"),
        "mlx_lm": package_version("mlx-lm"), "mlx_gemma4": package_version("mlx-gemma4"),
        "dtype": compute_dtype(model), "quantization": quantization_label(model),
        "layers": model.config.text_config.num_hidden_layers, "batch": cfg.batch,
        "draft": cfg.draft, "load_s": load_s, "bandwidth_gbps": bandwidth, "bandwidth_source": source,
        "kv_bytes_per_1k_tokens": kv_bytes_per_1k(model),
    }


# -- inputs ---------------------------------------------------------------------------------------


def synthetic_checkpoint(geometry: str, layers: int | None, bits: int, root: Path | None = None,
                         progress: Callable[[str], None] | None = None) -> Path:
    """A cached random checkpoint of the real geometry (synthesised, then converted); built on first use."""
    from mlx_gemma4.convert.convert import ConvertOptions, convert
    from mlx_gemma4.convert.synth import synthesize

    root = (root or cache_root()).expanduser()
    out = root / f"{geometry}-{layers or 'all'}-{bits}"
    if (out / "config.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    # One builder at a time: a second bench (another terminal, a parallel test run) waits for the first
    # and then uses its checkpoint, instead of failing on, or replacing, the half-built source folder.
    with open(root / f".{out.name}.build.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                progress(f"waiting for another process building {out.name} in {root}")
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if that process dies
        if (out / "config.json").is_file():
            return out
        hf = root / f".{out.name}.hf"
        if progress:
            progress(f"synthesising {out.name} (once; cached in {root})")
        synthesize(hf, geometry, layers, "bfloat16", force=True)
        try:
            if progress:
                progress(f"converting {out.name} to {bits} bits")
            convert(hf, out, ConvertOptions(bits=bits, dtype="bfloat16"))
        finally:
            shutil.rmtree(hf, ignore_errors=True)
    return out


def write_media(folder: Path, cfg: BenchConfig, seed: int = 0) -> dict[str, Path]:
    """Random media files for the prompt kinds asked for (noise: the cost does not depend on content)."""
    rng = np.random.default_rng(seed)
    out = {}
    if cfg.image:
        from PIL import Image

        side = int(math.sqrt(cfg.image_tokens)) * 48  # fills the budget without a large resize
        out["image"] = folder / "bench.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out["image"])
    if cfg.video_s is not None:
        out["video"] = write_video(folder / "bench.mp4", cfg.video_s, rng)
    if cfg.audio_s is not None:
        import soundfile as sf

        out["audio"] = folder / "bench.wav"
        sf.write(out["audio"], (0.1 * rng.standard_normal(int(cfg.audio_s * 16000))).astype(np.float32), 16000)
    return out


def write_video(path: Path, seconds: float, rng: np.random.Generator, fps: int = 2, side: int = 336) -> Path:
    """A noise clip at ``fps`` frames per second (H.264 when this FFmpeg has it, else MPEG-4 part 2)."""
    import av

    with av.open(str(path), "w") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = out.add_stream(codec, rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for _ in range(max(1, round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def text_of(processor, n_tokens: int) -> str:
    """A user text whose whole text-only prompt (chat template included) is about ``n_tokens`` tokens."""
    words = n_tokens
    for _ in range(3):  # the template's own tokens are measured, then subtracted
        got = processor(_messages("the " * words)).input_ids.shape[1]
        if got == n_tokens or words == 1:
            break
        words = max(1, words - (got - n_tokens))
    return ("the " * words).strip()


def _messages(text: str, media: tuple[tuple[str, Path], ...] = ()) -> list[dict]:
    content = [{"type": kind, "path": str(path)} for kind, path in media] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def preprocess(processor, kind: str, text: str, media: dict[str, Path], cfg: BenchConfig):
    """Decode the kind's media and build the model inputs → (inputs, seconds)."""
    items = ((kind, media[kind]),) if kind != "text" else ()
    t0 = time.perf_counter()
    inputs = processor(_messages(text, items), enable_thinking=False, image_budget=cfg.image_tokens)
    return inputs, time.perf_counter() - t0


# -- measurement ----------------------------------------------------------------------------------


def _never_stop(model) -> Callable:
    """A logits processor that rules out the stop tokens, so every trial decodes the same number of tokens."""
    from .generation.sampling import model_defaults

    stops = mx.array(sorted(model_defaults(model).eos_token_ids))

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        logits[:, stops] = -mx.inf
        return logits

    return processor


def run_trial(model, processor, inputs, cfg: BenchConfig, draft) -> dict[str, float]:
    """One greedy generation of ``gen_tokens`` → ttft, prefill/decode tok/s, peak and KV bytes, tokens/step."""
    from .generation import GenerationRequest, batch_generate, generate

    mx.clear_cache()
    # Speculative decoding takes no logits processors: with a drafter a stop token may end a trial early.
    request = GenerationRequest(max_tokens=cfg.gen_tokens, temperature=0.0, draft_model=draft,
                                speculative="on" if draft is not None else "auto",
                                logits_processors=(_never_stop(model),) if draft is None else ())
    if cfg.batch == 1:
        results = [generate(model, processor, inputs, request=request)]
    else:
        results = batch_generate(model, processor, [inputs] * cfg.batch, request=request)
    stats = [r.stats for r in results]
    first = stats[0]
    return {
        "generated": first.generation_tokens,
        "ttft": first.time_to_first_token_s,
        "prefill_tps": cfg.batch * first.prompt_tokens / first.time_to_first_token_s,
        "decode_tps": sum(s.generation_tps for s in stats),  # rows decode together: their rates add up
        "peak": int(first.peak_memory_gb * 1e9),
        "kv": int(first.kv_cache_gb * 1e9),
        "tokens_per_step": first.tokens_per_step if draft is not None else 1.0,
    }


def measure_kind(model, processor, kind: str, text: str, media: dict[str, Path], cfg: BenchConfig, draft,
                 tick: Callable[[], None] = lambda: None) -> Measurement:
    """Warm-up runs, then ``trials`` timed runs of one prompt kind (unavailable if the checkpoint cannot take it)."""
    missing = {"image": "vision", "video": "vision", "audio": "audio"}.get(kind)
    if missing and getattr(model.config, f"{missing}_config") is None:
        for _ in range(cfg.warmup + cfg.trials):
            tick()
        return Measurement(kind, available=False, note=f"this checkpoint has no {missing} embedder")
    m = Measurement(kind)
    for i in range(cfg.warmup + cfg.trials):
        inputs, prep_s = preprocess(processor, kind, text, media, cfg)
        trial = run_trial(model, processor, inputs, cfg, draft)
        tick()
        if i < cfg.warmup:
            continue
        m.prompt_tokens = int(inputs.input_ids.shape[1])
        m.generated_tokens = trial["generated"]
        m.preprocess_s.append(prep_s)
        m.ttft_s.append(trial["ttft"])
        m.prefill_tps.append(trial["prefill_tps"])
        m.decode_tps.append(trial["decode_tps"])
        m.peak_memory_bytes = max(m.peak_memory_bytes, trial["peak"])
        m.kv_cache_bytes = max(m.kv_cache_bytes, trial["kv"])
        m.tokens_per_step = trial["tokens_per_step"]
    if m.generated_tokens < cfg.gen_tokens:
        m.note = f"stopped after {m.generated_tokens} tokens (a stop token)"
    return m


def run(cfg: BenchConfig, progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """Load, probe the bandwidth, measure every prompt kind → one JSON-ready record per kind.

    ``progress(description, done, total)`` is called as the work advances."""
    from .loader import load, load_drafter

    cfg.check()
    report = progress or (lambda *_: None)
    path = cfg.model or synthetic_checkpoint(cfg.synthetic, cfg.layers, cfg.bits, progress=lambda s: report(s, 0, 0))
    label = cfg.model or f"synthetic {cfg.synthetic}, {cfg.layers or 'all'} layers, {cfg.bits}-bit"
    report(f"loading {label}", 0, 0)
    t0 = time.perf_counter()
    model, processor = load(path, dtype=cfg.dtype)
    load_s = time.perf_counter() - t0
    if processor is None:
        raise InputError(f"{path}: no tokenizer files, so prompts cannot be built")
    draft = load_drafter(cfg.draft, model, dtype=cfg.dtype) if cfg.draft else None
    report("measuring memory bandwidth", 0, 0)
    bandwidth = cfg.bandwidth_gbps or measure_bandwidth()
    header = make_header(model, cfg, label, load_s, bandwidth, "flag" if cfg.bandwidth_gbps else "copy probe")
    weights = nbytes(model) + (nbytes(draft) if draft is not None else 0)
    decode_bytes = nbytes(model, "language_model.") + (nbytes(draft) if draft is not None else 0)
    text = text_of(processor, cfg.prompt_tokens)
    total, done = len(cfg.kinds) * (cfg.warmup + cfg.trials), 0
    records = []
    with tempfile.TemporaryDirectory(prefix="gemma4-bench-") as tmp:
        media = write_media(Path(tmp), cfg)
        for kind in cfg.kinds:
            def tick(kind=kind):
                nonlocal done
                done += 1
                report(f"{kind} prompts", done, total)

            report(f"{kind} prompts", done, total)
            m = measure_kind(model, processor, kind, text, media, cfg, draft, tick)
            records.append(m.record(header, weights, decode_bytes, bandwidth))
    return records
