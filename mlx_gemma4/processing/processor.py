"""``Processor``: chat messages + image/audio/video files → model-ready numpy arrays, in one call."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelLoadError
from ..jsonfile import read_json_object
from . import audio as audio_mod
from . import image as image_mod
from . import video as video_mod
from .modalities import ARRAY_KEYS, MODALITIES, Modality, Piece, Settings
from .prompt import (
    MediaRef,
    SpecialTokens,
    encode,
    expand_text,
    load_tokenizer,
    normalize_messages,
    read_special_tokens,
    render,
    token_strings,
)
from .sources import content_key


@dataclass(frozen=True)
class ProcessorConfig:
    """Preprocessing settings from ``processor_config.json`` (or ``preprocessor_config.json``)."""

    image_budget: int = image_mod.DEFAULT_BUDGET  # image_processor.max_soft_tokens
    sampling_rate: int = audio_mod.SAMPLE_RATE
    audio_samples_per_token: int = audio_mod.FRAME
    audio_seq_length: int = audio_mod.MAX_CLIP_FRAMES  # longest clip, in soft tokens
    video_num_frames: int = video_mod.DEFAULT_NUM_FRAMES  # video_processor.num_frames
    video_budget: int = video_mod.DEFAULT_BUDGET  # video_processor.max_soft_tokens, per frame
    split_audio: bool = True  # a clip longer than the model's limit is sent as several clips

    @classmethod
    def from_folder(cls, folder: Path) -> ProcessorConfig:
        """Read the processor settings of a checkpoint folder; defaults where no file says otherwise."""
        image: dict[str, Any] = {}
        audio: dict[str, Any] = {}
        top: dict[str, Any] = {}
        video: dict[str, Any] = {}
        if (folder / "processor_config.json").is_file():
            top = _read_json(folder / "processor_config.json")
            image, audio = top.get("image_processor") or {}, top.get("feature_extractor") or {}
            video = top.get("video_processor") or {}
        elif (folder / "preprocessor_config.json").is_file():
            # Older layout: one flat dict; image and audio keys do not overlap.
            image = audio = _read_json(folder / "preprocessor_config.json")
        elif (folder / "config.json").is_file():
            vision = _read_json(folder / "config.json").get("vision_config") or {}
            vision = vision if isinstance(vision, dict) else {}
            image = {"max_soft_tokens": vision.get("num_soft_tokens", image_mod.DEFAULT_BUDGET)}
        if not all(isinstance(section, dict) for section in (image, audio, video)):
            raise ModelLoadError(f"{folder}: the image/audio/video sections of the processor config must be objects")
        _check_supported(folder, image)
        try:
            cfg = cls(
                image_budget=int(image.get("max_soft_tokens", image_mod.DEFAULT_BUDGET)),
                sampling_rate=int(audio.get("sampling_rate", audio_mod.SAMPLE_RATE)),
                audio_samples_per_token=int(
                    audio.get("audio_samples_per_token", audio.get("feature_size", audio_mod.FRAME))
                ),
                audio_seq_length=int(top.get("audio_seq_length", audio_mod.MAX_CLIP_FRAMES)),
                video_num_frames=int(video.get("num_frames") or video_mod.DEFAULT_NUM_FRAMES),
                video_budget=int(video.get("max_soft_tokens", video_mod.DEFAULT_BUDGET)),
            )
        except (TypeError, ValueError, AttributeError) as e:
            raise ModelLoadError(f"{folder}: a processor setting is not a number ({e})") from e
        for what, budget in (("image", cfg.image_budget), ("video", cfg.video_budget)):
            if budget not in image_mod.SUPPORTED_BUDGETS:
                raise ModelLoadError(f"{folder}: {what} max_soft_tokens {budget} is not a supported budget")
        if min(cfg.sampling_rate, cfg.audio_samples_per_token, cfg.audio_seq_length, cfg.video_num_frames) <= 0:
            raise ModelLoadError(f"{folder}: audio and video settings must be positive ({cfg})")
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
    pixel_values_videos: np.ndarray | None = None  # (total_frames, budget, 6912) float32
    video_position_ids: np.ndarray | None = None  # (total_frames, budget, 2) int64, −1 = padding
    num_soft_tokens_per_image: list[int] = field(default_factory=list)
    audio_frames_per_clip: list[int] = field(default_factory=list)  # incl. the clips of videos' sound
    videos: list[video_mod.ProcessedVideo] = field(default_factory=list)  # frame indices, timestamps, …
    prompt: str = ""  # rendered template text, before placeholder expansion

    _ARRAYS = ("input_ids", *ARRAY_KEYS)

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


def as_source_list(value: Any, modality: Modality) -> list[Any]:
    """A user's ``images=``/``audio=``/``videos=`` argument as a list (one source or a sequence of them)."""
    if value is None:
        return []
    if isinstance(value, modality.source_types):
        return [value]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, np.integer)):
        return [value]  # (waveform, rate)
    if isinstance(value, Sequence):
        return list(value)
    raise InputError(
        f"{modality.argument}=: expected a file path, bytes, an in-memory object or a list of them, "
        f"got {type(value).__name__}"
    )


def _assign_sources(media: list[MediaRef], modality: Modality, given: list[Any]) -> list[Any]:
    """Sources for one modality's items in conversation order: inline ones, then ``given`` for the rest."""
    kind = modality.name
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
                f"or pass them in order with {modality.argument}="
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
        self.token_strings = token_strings(tokenizer, self.special)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> Processor:
        """Tokenizer, chat template and preprocessing settings from a checkpoint folder."""
        path = Path(folder)
        if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
            raise ModelLoadError(f"{path}: no tokenizer.json (cannot build a processor)")
        return cls(load_tokenizer(path), ProcessorConfig.from_folder(path))

    def configure(self, image_budget: int | None = None, split_audio: bool | None = None) -> None:
        """Change the defaults every later call uses (None keeps the current one); the CLI's flags land here."""
        changes: dict[str, Any] = {}
        if image_budget is not None:
            changes["image_budget"] = image_mod.check_budget(image_budget)
        if split_audio is not None:
            changes["split_audio"] = bool(split_audio)
        self.config = dataclasses.replace(self.config, **changes)

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

    def settings(self, image_budget: int | None = None, **overrides: Any) -> Settings:
        """Preprocessing options: the checkpoint's processor config, then the caller's overrides."""
        cfg = self.config
        video = overrides.pop("video_options", None) or video_mod.VideoOptions(
            num_frames=cfg.video_num_frames, budget=cfg.video_budget)
        # Validate the budget even without images so a typo never passes silently.
        budget = image_mod.check_budget(cfg.image_budget if image_budget is None else image_budget)
        return Settings(image_budget=budget, sampling_rate=cfg.sampling_rate,
                        audio_samples_per_token=cfg.audio_samples_per_token, audio_seq_length=cfg.audio_seq_length,
                        video=video, **overrides)

    def __call__(
        self,
        messages: Sequence[Mapping[str, Any]] | str,
        images: Any = None,
        audio: Any = None,
        videos: Any = None,
        *,
        enable_thinking: bool = False,
        image_budget: int | None = None,
        add_generation_prompt: bool = True,
        split_audio: bool | None = None,
        max_pixels: int | None = image_mod.DEFAULT_MAX_PIXELS,
        video_options: video_mod.VideoOptions | None = None,
        decoded: MutableMapping | None = None,
        **template_kwargs: Any,
    ) -> ModelInputs:
        """Messages (or a raw prompt string) + images/audio/videos → ``ModelInputs``.

        Media items in the messages either name their source inline (``{"type": "image", "image": path}``;
        keys image/audio/video, path or url) or take the next one from ``images=``/``audio=``/``videos=``,
        in order. A raw prompt string is tokenized as is (``<bos>`` prepended if missing) with its
        placeholders filled from the given sources. ``video_options`` sets frame sampling and the sound
        track (default: 32 frames, ≤ 60 s, no sound). ``decoded``, a dict the caller keeps, memoises
        decoded files and bytes across calls (a chat re-renders its whole history every turn: without it,
        every earlier image, clip and video would be decoded again).
        """
        given = {"image": images, "audio": audio, "video": videos}
        lists = {m.name: as_source_list(given[m.name], m) for m in MODALITIES}
        if isinstance(messages, str):
            text, sources = messages, lists
        else:
            normalized, media = normalize_messages(messages)
            sources = {m.name: _assign_sources(media, m, lists[m.name]) for m in MODALITIES}
            text = render(self.tokenizer, normalized, enable_thinking=enable_thinking,
                          add_generation_prompt=add_generation_prompt, **template_kwargs)
        split_audio = self.config.split_audio if split_audio is None else split_audio
        settings = self.settings(image_budget, max_pixels=max_pixels, split_audio=split_audio,
                                 video_options=video_options)
        pieces = {m.name: [self._decode(m, src, settings, decoded) for src in sources[m.name]] for m in MODALITIES}
        expanded, order = expand_text(text, self.token_strings, {k: [p.text for p in v] for k, v in pieces.items()})
        ids = encode(self.tokenizer, expanded)
        if isinstance(messages, str) and self.special.bos is not None and (not ids or ids[0] != self.special.bos):
            ids = [self.special.bos] + ids
        return _inputs(ids, text, [pieces[name][i] for name, i in order])

    def _decode(self, m: Modality, source: Any, settings: Settings, decoded: MutableMapping | None) -> Piece:
        key = content_key(source) if decoded is not None else None
        if key is None:
            return m.decode(source, settings, self.token_strings)
        key = (m.name, key, settings)
        if key not in decoded:
            decoded[key] = m.decode(source, settings, self.token_strings)
        return decoded[key]


def _inputs(ids: list[int], prompt: str, pieces: list[Piece]) -> ModelInputs:
    """Stack the rows of the decoded sources (in prompt order) into each modality's arrays."""
    out = ModelInputs(input_ids=np.asarray([ids], dtype=np.int64), prompt=prompt)
    rows: dict[str, list] = {m.name: [] for m in MODALITIES}
    for piece in pieces:
        for name, more in piece.rows.items():
            rows[name] += more
        if isinstance(piece.info, video_mod.ProcessedVideo):
            out.videos.append(piece.info)
    for m in MODALITIES:
        if rows[m.name]:
            for key, array in m.make_arrays(rows[m.name]).items():
                setattr(out, key, array)
    out.num_soft_tokens_per_image = [int((r[1][:, 0] >= 0).sum()) for r in rows["image"]]
    out.audio_frames_per_clip = [r[0].shape[0] for r in rows["audio"]]
    return out
