"""The one table of input modalities (image, audio, video): everything that differs between them.

The processor, the placeholder expansion, ``ModelInputs`` and the chat session loop over
``MODALITIES`` instead of naming modalities; adding one is a new row here plus its decoder module
and the model's embedding method (``Gemma4Model.EMBEDDERS``, checked against this table in a test).

API (numpy only; never imports mlx):

- ``MODALITIES``: ``Modality`` rows in order image, audio, video; ``ARRAY_KEYS``: the model-input arrays
  of all of them in that order (``pixel_values``, ``image_position_ids``, ``input_features``,
  ``input_features_mask``, ``pixel_values_videos``, ``video_position_ids``); ``BY_NAME``, ``BY_MESSAGE_TYPE``.
- ``Modality`` fields: ``name``; ``message_type`` (the chat content item's ``"type"``); ``source_keys``
  (item keys that may name the source inline); ``argument`` (the keyword that passes sources:
  ``images=``, ``audio=``, ``videos=``); ``placeholder``/``begin``/``end`` (``SpecialTokens`` field names
  of the soft-token placeholder and the block's begin/end tokens) and ``placeholder_id``/``begin_id``/
  ``end_id`` (the same tokens as ``ModelConfig`` field names); ``arrays`` (the arrays it produces, in
  the model's argument order); ``preprocess`` (the decoder of one source: ``image.process_image``,
  ``audio.process_audio``, ``video.process_video``).
- ``Modality.rows(ids, soft_token_id)``: how many rows of each of its arrays a span of (expanded) token
  ids owns — one per maximal run of its soft token: an image, an audio clip, a video frame. Counting
  begin tokens would be wrong: video frames are framed by the image begin/end tokens. A chat session
  takes the last ``rows(new_turn_ids, getattr(model.config, m.placeholder_id))`` rows of each array
  in ``m.arrays``; a video's sound track is audio blocks, so it is counted (and stored) as audio rows.
- ``Settings`` (the preprocessing options of one processor call) and ``Piece`` (one decoded source: the
  text that replaces its placeholder and its rows) are used by the processor through
  ``Modality.decode(source, settings, tokens)`` and ``Modality.make_arrays(rows)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from . import audio as audio_mod
from . import image as image_mod
from . import video as video_mod

_PATHS = (str, os.PathLike, bytes, bytearray, memoryview)


@dataclass(frozen=True)
class Settings:
    """Preprocessing options of one processor call (defaults: the checkpoint's processor config)."""

    image_budget: int = image_mod.DEFAULT_BUDGET
    max_pixels: int | None = image_mod.DEFAULT_MAX_PIXELS
    split_audio: bool = True
    sampling_rate: int = audio_mod.SAMPLE_RATE
    audio_samples_per_token: int = audio_mod.FRAME
    audio_seq_length: int = audio_mod.MAX_CLIP_FRAMES
    video: video_mod.VideoOptions = field(default_factory=video_mod.VideoOptions)


@dataclass(frozen=True)
class Piece:
    """One decoded source: the text that replaces its placeholder, and its rows per modality name."""

    text: str
    rows: dict[str, list[tuple[np.ndarray, ...]]]  # one tuple per row: that row of each array
    info: Any  # ProcessedImage / ProcessedAudio / ProcessedVideo


@dataclass(frozen=True)
class Modality:
    """One input modality (see the module docstring for every field)."""

    name: str
    message_type: str
    source_keys: tuple[str, ...]
    argument: str
    source_types: tuple[type, ...]
    placeholder: str
    begin: str
    end: str
    placeholder_id: str
    begin_id: str
    end_id: str
    arrays: tuple[str, ...]
    preprocess: Callable[..., Any]
    prepare: Callable[[Modality, Any, Settings, Mapping[str, str]], Piece]
    stack: Callable[[Modality, list[tuple[np.ndarray, ...]]], dict[str, np.ndarray]]

    def block(self, count: int, tokens: Mapping[str, str]) -> str:
        """Begin token, ``count`` soft tokens, end token, as text."""
        return tokens[self.begin] + tokens[self.placeholder] * count + tokens[self.end]

    def decode(self, source: Any, settings: Settings, tokens: Mapping[str, str]) -> Piece:
        """Decode one source into its placeholder's replacement text and its array rows."""
        return self.prepare(self, source, settings, tokens)

    def make_arrays(self, rows: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
        """This modality's arrays from all its rows of one prompt, in order."""
        return self.stack(self, rows)

    def rows(self, ids: Sequence[int] | np.ndarray, soft_token_id: int) -> int:
        """Rows of this modality's arrays that belong to the token span ``ids`` (runs of its soft token)."""
        soft = np.asarray(ids).reshape(-1) == soft_token_id
        return int(soft[0]) + int((soft[1:] & ~soft[:-1]).sum()) if soft.size else 0


# -- per-modality glue: one source → Piece; rows → arrays ---------------------------------------------


def _image_piece(m: Modality, source: Any, s: Settings, tokens: Mapping[str, str]) -> Piece:
    done = m.preprocess(source, s.image_budget, max_pixels=s.max_pixels)
    return Piece(m.block(done.num_soft_tokens, tokens), {m.name: [(done.pixel_values, done.position_ids)]}, done)


def _audio_piece(m: Modality, source: Any, s: Settings, tokens: Mapping[str, str]) -> Piece:
    done = m.preprocess(source, split=s.split_audio, max_clip_frames=s.audio_seq_length,
                        frame=s.audio_samples_per_token, sample_rate=s.sampling_rate)
    # A long recording split into clips becomes consecutive audio blocks, one per clip.
    text = "".join(m.block(c.shape[0], tokens) for c in done.clips)
    return Piece(text, {m.name: [(c,) for c in done.clips]}, done)


def _video_piece(m: Modality, source: Any, s: Settings, tokens: Mapping[str, str]) -> Piece:
    done = m.preprocess(source, s.video)
    # As the reference: "mm:ss <|image>N×<|video|><image|>" per frame, frames joined by spaces.
    text = " ".join(f"{stamp} {m.block(done.num_soft_tokens, tokens)}" for stamp in done.stamps)
    rows: dict[str, list] = {m.name: list(zip(done.pixel_values, done.position_ids, strict=True))}
    if done.sound is not None:
        # The sound track right after the frames, as if an audio item followed the video item.
        sound = BY_NAME["audio"].decode((done.sound, done.sound_rate), s, tokens)
        text += sound.text
        rows.update(sound.rows)
    return Piece(text, rows, done)


def _stack_rows(m: Modality, rows: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """Equal-shaped rows (padded to the budget already) stacked per array."""
    return {key: np.stack([r[i] for r in rows]) for i, key in enumerate(m.arrays)}


def _stack_clips(m: Modality, rows: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """Audio clips right-padded with zero frames to the longest, with the mask of real frames."""
    clips = [r[0] for r in rows]
    features, mask = audio_mod.batch_clips(clips, clips[0].shape[1])
    return dict(zip(m.arrays, (features, mask), strict=True))


MODALITIES: tuple[Modality, ...] = (
    Modality(
        name="image", message_type="image", source_keys=("image", "path", "url"), argument="images",
        source_types=(*_PATHS, Image.Image), placeholder="image", begin="boi", end="eoi",
        placeholder_id="image_token_id", begin_id="boi_token_id", end_id="eoi_token_id",
        arrays=("pixel_values", "image_position_ids"), preprocess=image_mod.process_image,
        prepare=_image_piece, stack=_stack_rows,
    ),
    Modality(
        name="audio", message_type="audio", source_keys=("audio", "path", "url"), argument="audio",
        source_types=(*_PATHS, np.ndarray), placeholder="audio", begin="boa", end="eoa",
        placeholder_id="audio_token_id", begin_id="boa_token_id", end_id="eoa_token_id",
        arrays=("input_features", "input_features_mask"), preprocess=audio_mod.process_audio,
        prepare=_audio_piece, stack=_stack_clips,
    ),
    Modality(
        name="video", message_type="video", source_keys=("video", "path", "url"), argument="videos",
        source_types=_PATHS, placeholder="video", begin="boi", end="eoi",
        placeholder_id="video_token_id", begin_id="boi_token_id", end_id="eoi_token_id",
        arrays=("pixel_values_videos", "video_position_ids"), preprocess=video_mod.process_video,
        prepare=_video_piece, stack=_stack_rows,
    ),
)
BY_NAME: dict[str, Modality] = {m.name: m for m in MODALITIES}
BY_MESSAGE_TYPE: dict[str, Modality] = {m.message_type: m for m in MODALITIES}
ARRAY_KEYS: tuple[str, ...] = tuple(k for m in MODALITIES for k in m.arrays)
