"""``Processor``: chat messages + image/audio files → model-ready numpy arrays, in one call."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, ModelLoadError
from ..jsonfile import read_json_object
from . import audio as audio_mod
from . import image as image_mod
from .prompt import (
    MediaRef,
    SpecialTokens,
    encode,
    expand_placeholders,
    load_tokenizer,
    normalize_messages,
    read_special_tokens,
    render,
)


@dataclass(frozen=True)
class ProcessorConfig:
    """Preprocessing settings from ``processor_config.json`` (or ``preprocessor_config.json``)."""

    image_budget: int = image_mod.DEFAULT_BUDGET  # image_processor.max_soft_tokens
    sampling_rate: int = audio_mod.SAMPLE_RATE
    audio_samples_per_token: int = audio_mod.FRAME
    audio_seq_length: int = audio_mod.MAX_CLIP_FRAMES  # longest clip, in soft tokens

    @classmethod
    def from_folder(cls, folder: Path) -> ProcessorConfig:
        """Read the processor settings of a checkpoint folder; defaults where no file says otherwise."""
        image: dict[str, Any] = {}
        audio: dict[str, Any] = {}
        top: dict[str, Any] = {}
        if (folder / "processor_config.json").is_file():
            top = _read_json(folder / "processor_config.json")
            image, audio = top.get("image_processor") or {}, top.get("feature_extractor") or {}
        elif (folder / "preprocessor_config.json").is_file():
            # Older layout: one flat dict; image and audio keys do not overlap.
            image = audio = _read_json(folder / "preprocessor_config.json")
        elif (folder / "config.json").is_file():
            vision = _read_json(folder / "config.json").get("vision_config") or {}
            vision = vision if isinstance(vision, dict) else {}
            image = {"max_soft_tokens": vision.get("num_soft_tokens", image_mod.DEFAULT_BUDGET)}
        if not (isinstance(image, dict) and isinstance(audio, dict)):
            raise ModelLoadError(f"{folder}: the image/audio sections of the processor config must be JSON objects")
        _check_supported(folder, image)
        try:
            cfg = cls(
                image_budget=int(image.get("max_soft_tokens", image_mod.DEFAULT_BUDGET)),
                sampling_rate=int(audio.get("sampling_rate", audio_mod.SAMPLE_RATE)),
                audio_samples_per_token=int(
                    audio.get("audio_samples_per_token", audio.get("feature_size", audio_mod.FRAME))
                ),
                audio_seq_length=int(top.get("audio_seq_length", audio_mod.MAX_CLIP_FRAMES)),
            )
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"{folder}: a processor setting is not a number ({e})") from e
        if cfg.image_budget not in image_mod.SUPPORTED_BUDGETS:
            raise ModelLoadError(f"{folder}: image max_soft_tokens {cfg.image_budget} is not a supported budget")
        if min(cfg.sampling_rate, cfg.audio_samples_per_token, cfg.audio_seq_length) <= 0:
            raise ModelLoadError(f"{folder}: audio settings must be positive ({cfg})")
        return cfg


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a checkpoint file, or ModelLoadError naming it."""
    return read_json_object(path, ModelLoadError)


def _check_supported(folder: Path, image: Mapping[str, Any]) -> None:
    """Refuse image settings this port does not implement instead of silently ignoring them."""
    expected = {
        "patch_size": image_mod.PATCH_SIZE,
        "pooling_kernel_size": image_mod.POOLING_KERNEL,
        "resample": 3,  # bicubic
        "do_resize": True,
        "do_rescale": True,
        "do_convert_rgb": True,
    }
    for key, want in expected.items():
        if key in image and image[key] != want:
            raise ModelLoadError(f"{folder}: image processor {key}={image[key]!r} is not supported (only {want!r})")
    factor = image.get("rescale_factor")
    if factor is not None and not math.isclose(factor, 1 / 255, rel_tol=1e-12):
        raise ModelLoadError(f"{folder}: image rescale_factor {factor} is not supported (only 1/255)")
    if image.get("do_normalize") and (
        any(m != 0 for m in image.get("image_mean", [0])) or any(s != 1 for s in image.get("image_std", [1]))
    ):
        raise ModelLoadError(f"{folder}: image normalisation with mean/std is not supported")


@dataclass(eq=False)
class ModelInputs(Mapping):
    """Model-ready arrays (a Mapping of the non-None arrays, so ``model(**inputs)`` works) plus metadata."""

    input_ids: np.ndarray  # (1, T) int64
    pixel_values: np.ndarray | None = None  # (num_images, budget, 6912) float32
    image_position_ids: np.ndarray | None = None  # (num_images, budget, 2) int64, −1 = padding
    input_features: np.ndarray | None = None  # (num_clips, F, 640) float32
    input_features_mask: np.ndarray | None = None  # (num_clips, F) bool
    num_soft_tokens_per_image: list[int] = field(default_factory=list)
    audio_frames_per_clip: list[int] = field(default_factory=list)
    prompt: str = ""  # rendered template text, before placeholder expansion

    _ARRAYS = ("input_ids", "pixel_values", "image_position_ids", "input_features", "input_features_mask")

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._ARRAYS or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._ARRAYS if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # Mapping's value equality would compare arrays element-wise; identity is the useful meaning here.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


def _as_list(value: Any, single_types: tuple[type, ...]) -> list[Any]:
    """A user's ``images=``/``audio=`` argument as a list (one source or a sequence of them)."""
    if value is None:
        return []
    if isinstance(value, single_types):
        return [value]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, np.integer)):
        return [value]  # (waveform, rate)
    if isinstance(value, Sequence):
        return list(value)
    raise InputError(f"expected a file path, bytes, an in-memory object or a list of them, got {type(value).__name__}")


def _assign_sources(media: list[MediaRef], kind: str, given: list[Any]) -> list[Any]:
    """Sources for the ``kind`` items in conversation order: inline ones, then ``given`` for the rest."""
    refs = [m for m in media if m.kind == kind]
    pending = iter(given)
    sources = []
    for ref in refs:
        if ref.source is not None:
            sources.append(ref.source)
            continue
        try:
            sources.append(next(pending))
        except StopIteration:
            raise InputError(
                f"the messages have {len(refs)} {kind} item(s) but fewer {kind} sources; add a path to the item "
                f"or pass {kind}s in order with {kind}{'s' if kind == 'image' else ''}="
            ) from None
    extra = sum(1 for _ in pending)
    if extra:
        raise InputError(f"{extra} {kind} input(s) given but not referenced by any {kind} item in the messages")
    return sources


class Processor:
    """Chat messages + images + audio → ``ModelInputs`` (numpy only; never imports mlx)."""

    def __init__(self, tokenizer: Any, config: ProcessorConfig | None = None):
        self.tokenizer = tokenizer
        self.config = config or ProcessorConfig()
        self.special: SpecialTokens = read_special_tokens(tokenizer)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> Processor:
        """Tokenizer, chat template and preprocessing settings from a checkpoint folder."""
        path = Path(folder)
        if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
            raise ModelLoadError(f"{path}: no tokenizer.json (cannot build a processor)")
        return cls(load_tokenizer(path), ProcessorConfig.from_folder(path))

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end a model turn."""
        return self.special.stop_ids

    def render(self, messages: Sequence[Mapping[str, Any]], *, enable_thinking: bool = False,
               add_generation_prompt: bool = True, **template_kwargs: Any) -> str:
        """The chat template's text for ``messages`` (placeholders not yet expanded)."""
        normalized, _ = normalize_messages(messages)
        return render(self.tokenizer, normalized, enable_thinking=enable_thinking,
                      add_generation_prompt=add_generation_prompt, **template_kwargs)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Token ids → text."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def process_images(
        self, images: Sequence[Any], budget: int | None = None, max_pixels: int | None = image_mod.DEFAULT_MAX_PIXELS
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Images → pixel_values (n, budget, 6912), image_position_ids (n, budget, 2), soft-token counts."""
        budget = image_mod.check_budget(self.config.image_budget if budget is None else budget)
        done = [image_mod.process_image(src, budget, max_pixels=max_pixels) for src in images]
        if not done:
            return (np.zeros((0, budget, image_mod.PATCH_DIM), np.float32), np.zeros((0, budget, 2), np.int64), [])
        return (np.stack([d.pixel_values for d in done]), np.stack([d.position_ids for d in done]),
                [d.num_soft_tokens for d in done])

    def process_audio(self, audio: Sequence[Any], split_audio: bool = True) -> list[audio_mod.ProcessedAudio]:
        """Audio inputs → per input, its clips of 640-sample frames (long inputs split unless told not to)."""
        cfg = self.config
        return [
            audio_mod.process_audio(src, split=split_audio, max_clip_frames=cfg.audio_seq_length,
                                    frame=cfg.audio_samples_per_token, sample_rate=cfg.sampling_rate)
            for src in audio
        ]

    def __call__(
        self,
        messages: Sequence[Mapping[str, Any]] | str,
        images: Any = None,
        audio: Any = None,
        *,
        enable_thinking: bool = False,
        image_budget: int | None = None,
        add_generation_prompt: bool = True,
        split_audio: bool = True,
        max_pixels: int | None = image_mod.DEFAULT_MAX_PIXELS,
        **template_kwargs: Any,
    ) -> ModelInputs:
        """Messages (or a raw prompt string) + images/audio → ``ModelInputs``.

        Image/audio items in the messages either name their source inline (``{"type": "image", "image":
        path}``; keys image/audio, path or url) or take the next one from ``images=``/``audio=``, in order.
        A raw prompt string is tokenized as is (``<bos>`` prepended if missing) with its placeholders
        filled from ``images``/``audio``.
        """
        image_types = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)
        audio_types = (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)
        given_images, given_audio = _as_list(images, image_types), _as_list(audio, audio_types)
        if isinstance(messages, str):
            text = messages
            image_sources, audio_sources = given_images, given_audio
        else:
            normalized, media = normalize_messages(messages)
            image_sources = _assign_sources(media, "image", given_images)
            audio_sources = _assign_sources(media, "audio", given_audio)
            text = render(self.tokenizer, normalized, enable_thinking=enable_thinking,
                          add_generation_prompt=add_generation_prompt, **template_kwargs)
        # Validate the budget even without images so a typo never passes silently.
        budget = image_mod.check_budget(self.config.image_budget if image_budget is None else image_budget)
        ids = encode(self.tokenizer, text)
        if isinstance(messages, str) and self.special.bos is not None and (not ids or ids[0] != self.special.bos):
            ids = [self.special.bos] + ids

        out = ModelInputs(input_ids=np.zeros((1, 0), np.int64), prompt=text)
        if image_sources:
            out.pixel_values, out.image_position_ids, out.num_soft_tokens_per_image = self.process_images(
                image_sources, budget, max_pixels)
        clips_per_input: list[list[int]] = []
        if audio_sources:
            processed = self.process_audio(audio_sources, split_audio)
            clips = [c for p in processed for c in p.clips]
            out.input_features, out.input_features_mask = audio_mod.batch_clips(
                clips, self.config.audio_samples_per_token)
            out.audio_frames_per_clip = [c.shape[0] for c in clips]
            clips_per_input = [p.frame_counts for p in processed]
        ids = expand_placeholders(ids, self.special, out.num_soft_tokens_per_image, clips_per_input)
        out.input_ids = np.asarray([ids], dtype=np.int64)
        return out
