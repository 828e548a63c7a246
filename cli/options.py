"""The one set of option definitions every model command shares, and the objects built from them.

``generate``, ``chat`` (and ``caption``/``serve``/``bench`` when they adopt them) declare their flags
with these ``Annotated`` types, so names, help and defaults are the same everywhere. Values are
checked by click where it can (ranges, choices) and by ``GenerationRequest`` for the rest; either
way a bad value exits with status 2 and one line naming the flag.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import sys
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from mlx_gemma4.errors import InputError
from mlx_gemma4.hub import BITS_CHOICES, DEFAULT_DRAFTER, DEFAULT_MODEL

DEFAULT_MAX_TOKENS = 512  # generate and chat alike
IMAGE_TOKENS = (70, 140, 280, 560, 1120)


def _finite(value: float | None) -> float | None:
    """Reject NaN and infinity, which pass click's range checks (every comparison with NaN is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _above(low: float):
    """A callback refusing values <= ``low`` (and NaN/infinity), for ranges open at the bottom."""

    def check(value: float | None) -> float | None:
        if _finite(value) is not None and value <= low:
            raise typer.BadParameter(f"{value} must be greater than {low:g}")
        return value

    return check


def _one_of(allowed: tuple[int, ...]):
    def check(value: int | None) -> int | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value} is not one of {', '.join(map(str, allowed))}")
        return value

    return check



Model = Annotated[str, typer.Option("--model", "-m", help="Checkpoint folder or hub id.")]
Bits = Annotated[int, typer.Option("--bits", callback=_one_of(BITS_CHOICES),
                                   help="Hub originals: convert once to 4, 8 or 16 bits (cached).")]
# Strings, not Paths: a Path would fold "http://x/y" into "http:/x/y" before the library can say that
# URLs are not fetched.
Images = Annotated[list[str] | None, typer.Option("--image", "-i", help="Image file (repeatable).")]
Audio = Annotated[list[str] | None, typer.Option("--audio", "-a", help="Audio file (repeatable).")]
Videos = Annotated[
    list[str] | None, typer.Option("--video", help="Video file, ≤ 60 s: 32 frames with timestamps (repeatable).")
]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=0,
                                        help="Most tokens to generate (0: prefill only, for its statistics).")]
Temp = Annotated[float | None, typer.Option("--temp", min=0.0, callback=_finite,
                                            help="Temperature (0 = greedy; default: checkpoint's).")]
TopP = Annotated[float | None, typer.Option("--top-p", max=1.0, callback=_above(0.0),
                                            help="Nucleus sampling (default: checkpoint's).")]
TopK = Annotated[int | None, typer.Option("--top-k", min=0, help="Top-k sampling, 0 = off (default: checkpoint's).")]
MinP = Annotated[float | None, typer.Option("--min-p", min=0.0, max=1.0, callback=_finite,
                                            help="Min-p sampling (default: checkpoint's).")]
RepetitionPenalty = Annotated[float | None, typer.Option("--repetition-penalty", callback=_above(0.0),
                                                         help="1 = off (default: off).")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, max=2**64 - 1,
                                          help="Random seed (same seed, same output).")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")]
System = Annotated[str | None, typer.Option("--system", help="System prompt.")]
ImageTokens = Annotated[int | None, typer.Option(
    "--image-tokens", callback=_one_of(IMAGE_TOKENS),
    help="Soft tokens per image: 70, 140, 280, 560 or 1120 (default: checkpoint's, 280).")]
KvBits = Annotated[int | None, typer.Option("--kv-bits", callback=_one_of((4, 8)),
                                            help="Quantize the full-attention KV cache to 4 or 8 bits.")]
MaxKvSize = Annotated[int | None, typer.Option("--max-kv-size", min=1,
                                               help="Keep at most this many KV entries per layer.")]
DraftOpt = Annotated[str, typer.Option(
    "--draft", metavar="PATH|auto|off",
    help=f"Speculative decoding drafter. auto: {DEFAULT_DRAFTER} when --model is the default, else none.")]
SplitAudio = Annotated[bool, typer.Option("--split-audio/--no-split-audio",
                                          help="Send audio longer than the model's limit as several clips.")]
Thinking = Annotated[bool, typer.Option("--thinking/--no-thinking", help="Let the model think first.")]


def read_prompt(arg: str) -> str:
    """The prompt argument: ``-`` reads stdin, ``@FILE`` reads a file, anything else is the text itself."""
    if arg == "-":
        return sys.stdin.read()
    if arg.startswith("@") and len(arg) > 1:
        path = Path(arg[1:]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"prompt file {path}: {getattr(e, 'strerror', None) or e}") from None
    return arg


def check_files(images: list[str], audio: list[str], videos: list[str]) -> None:
    """InputError naming the flag for a media file that is missing or unreadable (before any model loads)."""
    for flag, paths in (("--image", images), ("--audio", audio), ("--video", videos)):
        for p in paths:
            check_file(flag, p)


def check_file(flag: str, p: str) -> None:
    """InputError unless ``p`` is a readable, non-empty file (URLs are left to the library to refuse)."""
    if "://" in p:
        return
    path = Path(p).expanduser()
    if not path.is_file():
        raise InputError(f"{flag} {p}: no such file" if not path.exists() else f"{flag} {p}: not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{flag} {p}: not readable")
    if path.stat().st_size == 0:
        raise InputError(f"{flag} {p}: the file is empty")


def build_request(*, max_tokens: int, temp: float | None, top_p: float | None, top_k: int | None,
                  min_p: float | None, repetition_penalty: float | None, seed: int | None, stop: list[str] | None,
                  thinking: bool, kv_bits: int | None, max_kv_size: int | None, draft_model: Any = None):
    """The ``GenerationRequest`` the shared flags describe (InputError, exit 2, for what click let through)."""
    from mlx_gemma4 import GenerationRequest

    return GenerationRequest(
        max_tokens=max_tokens, temperature=temp, top_p=top_p, top_k=top_k, min_p=min_p,
        repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()), thinking=thinking,
        kv_bits=kv_bits, max_kv_size=max_kv_size, draft_model=draft_model,
    )


# Flag groups: a command declares ``sampling: SamplingFlags = SAMPLING_FLAGS`` (the default instance
# carries that command's defaults) and ``with_flag_groups`` shows Typer the group's flags one by one.


@dataclass(frozen=True)
class SamplingFlags:
    """How to sample and when to stop: the flags of every command that generates text."""

    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS
    temp: Temp = None
    top_p: TopP = None
    top_k: TopK = None
    min_p: MinP = None
    repetition_penalty: RepetitionPenalty = None
    seed: Seed = None
    stop: Stop = None
    thinking: Thinking = False

    def request(self, kv_bits: int | None = None, max_kv_size: int | None = None):
        """The validated ``GenerationRequest`` (before any model loads: a bad value exits 2 at once)."""
        return build_request(max_tokens=self.max_tokens, temp=self.temp, top_p=self.top_p, top_k=self.top_k,
                             min_p=self.min_p, repetition_penalty=self.repetition_penalty, seed=self.seed,
                             stop=self.stop, thinking=self.thinking, kv_bits=kv_bits, max_kv_size=max_kv_size)


@dataclass(frozen=True)
class ModelFlags:
    """Which checkpoint, how it is loaded, and the cache and drafter settings of ``generate`` and ``chat``."""

    model: Model = DEFAULT_MODEL
    bits: Bits = 4
    image_tokens: ImageTokens = None
    split_audio: SplitAudio = True
    kv_bits: KvBits = None
    max_kv_size: MaxKvSize = None
    draft: DraftOpt = "auto"


@dataclass(frozen=True)
class MessageFlags:
    """What goes with the (first) message: the system prompt and files, checked before any model loads."""

    system: System = None
    image: Images = None
    audio: Audio = None
    video: Videos = None

    def by_kind(self) -> dict[str, list[str]]:
        """``{"image": [...], "audio": [...], "video": [...]}``, each file checked (InputError naming the flag)."""
        media = {"image": list(self.image or ()), "audio": list(self.audio or ()), "video": list(self.video or ())}
        check_files(media["image"], media["audio"], media["video"])
        return media


# The usual defaults, as instances a signature can name (flag groups are frozen: sharing them is safe).
MODEL_FLAGS, MESSAGE_FLAGS, SAMPLING_FLAGS = ModelFlags(), MessageFlags(), SamplingFlags()


def with_flag_groups(command):
    """Typer reads a command's flags from its signature: show it each flag group's fields as flags, and call
    the command with them gathered back into the group (one declaration serves every command)."""
    signature = inspect.signature(command, eval_str=True)
    groups = {name: p.annotation for name, p in signature.parameters.items() if is_dataclass(p.annotation)}
    flat = []
    for name, param in signature.parameters.items():
        if name not in groups:
            flat.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = get_type_hints(groups[name], include_extras=True)
        flat += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                   default=getattr(param.default, f.name)) for f in fields(groups[name])]

    @functools.wraps(command)
    def run(**flags):
        for name, group in groups.items():
            flags[name] = group(**{f.name: flags.pop(f.name) for f in fields(group)})
        return command(**flags)

    run.__signature__ = signature.replace(parameters=flat)
    run.__annotations__ = {p.name: p.annotation for p in flat}
    return run


def draft_source(draft: str, model: str) -> str | None:
    """What ``--draft`` names: None (no drafter), the default drafter's hub id, or a path/hub id given."""
    if draft == "off":
        return None
    if draft == "auto":
        return DEFAULT_DRAFTER if model == DEFAULT_MODEL else None
    return draft
