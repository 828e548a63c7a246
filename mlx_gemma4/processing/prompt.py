"""Chat messages → token ids: the checkpoint's own chat template, then placeholder expansion (spec §7).

The template is rendered by the tokenizer (transformers' AutoTokenizer reading the checkpoint's
``chat_template.jinja``); nothing here re-implements it. Each ``<|image|>`` the template emits becomes
``<|image>`` + N × ``<|image|>`` + ``<image|>`` and each ``<|audio|>`` one ``<|audio>`` + F × ``<|audio|>``
+ ``<audio|>`` block per clip. mlx-lm's TokenizerWrapper is not used here because importing it imports
mlx; the generation layer wraps this same tokenizer for streaming detokenization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from ..errors import InputError, ModelLoadError
from ..jsonfile import read_json_object

# JSON files AutoTokenizer reads (checked only when it fails, to name the broken one).
TOKENIZER_JSON_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json",
                        "chat_template.json")

# Field → (tokenizer_config name, default spelling) of the named special tokens (spec §7.1); a checkpoint's
# tokenizer_config may spell them differently, so the name wins over the default.
_NAMED: dict[str, tuple[str | None, str]] = {
    "sot": ("sot_token", "<|turn>"),
    "eot": ("eot_token", "<turn|>"),
    "image": ("image_token", "<|image|>"),
    "boi": ("boi_token", "<|image>"),
    "eoi": ("eoi_token", "<image|>"),
    "audio": ("audio_token", "<|audio|>"),
    "boa": ("boa_token", "<|audio>"),
    "eoa": ("eoa_token", "<audio|>"),
    "video": ("video_token", "<|video|>"),
    "think": ("think_token", "<|think|>"),
    "soc": ("soc_token", "<|channel>"),
    "eoc": ("eoc_token", "<channel|>"),
    # Looked up by spelling only: the meaning of the config's "str_token" name is not documented.
    "tool_response": (None, "<|tool_response>"),
}
_REQUIRED = ("image", "boi", "eoi", "audio", "boa", "eoa")
_MEDIA_KEYS = {"image": ("image", "path", "url"), "audio": ("audio", "path", "url")}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens, read from the tokenizer (None where the tokenizer lacks one)."""

    bos: int | None
    eos: int | None
    pad: int | None
    sot: int | None
    eot: int | None
    image: int
    boi: int
    eoi: int
    audio: int
    boa: int
    eoa: int
    video: int | None
    think: int | None
    soc: int | None
    eoc: int | None
    tool_response: int | None

    @property
    def stop_ids(self) -> list[int]:
        """Tokens that end a model turn: ``<eos>``, ``<turn|>`` and ``<|tool_response>`` (spec §7.4)."""
        return [i for i in (self.eos, self.eot, self.tool_response) if i is not None]

    def as_dict(self) -> dict[str, int | None]:
        """Field name → id."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_tokenizer(folder: str | Path) -> Any:
    """The checkpoint's tokenizer (transformers AutoTokenizer; picks up ``chat_template.jinja``)."""
    from transformers import AutoTokenizer  # heavy import, only when a tokenizer is actually loaded

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as e:
        _check_tokenizer_json(Path(folder))  # a broken JSON file: name it (transformers does not)
        raise ModelLoadError(f"{folder}: cannot load the tokenizer ({e})") from e


def _check_tokenizer_json(folder: Path) -> None:
    """Raise ModelLoadError naming the first tokenizer JSON file of ``folder`` that is not a JSON object."""
    for name in TOKENIZER_JSON_FILES:
        if (folder / name).exists():
            read_json_object(folder / name, ModelLoadError)


def _token_id(tokenizer: Any, token: str | None) -> int | None:
    """Id of a token string, or None when the vocabulary does not have it (it would map to <unk>)."""
    if not token:
        return None
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return int(tid)


def read_special_tokens(tokenizer: Any) -> SpecialTokens:
    """Resolve every special token id from the tokenizer; the multimodal ones are required."""
    ids: dict[str, int | None] = {}
    for name, (attr, default) in _NAMED.items():
        try:
            named = getattr(tokenizer, attr, None) if attr else None  # named in tokenizer_config
        except (AttributeError, ValueError):
            named = None
        token = named if isinstance(named, str) else default
        ids[name] = _token_id(tokenizer, token)
    missing = [_NAMED[n][1] for n in _REQUIRED if ids[n] is None]
    if missing:
        raise ModelLoadError(f"the tokenizer has no {', '.join(missing)} token (not a Gemma 4 unified tokenizer?)")
    return SpecialTokens(
        bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id, **ids
    )


@dataclass(frozen=True)
class MediaRef:
    """One image/audio item of a conversation, in order: its kind and an inline source (or None)."""

    kind: str  # "image" or "audio"
    source: Any


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[MediaRef]]:
    """Check the message structure; return template-ready copies and the media items in order."""
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence) or isinstance(messages, str):
        raise InputError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise InputError("messages is empty")
    out: list[dict[str, Any]] = []
    media: list[MediaRef] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InputError(f"message {i} must be a dict with a string 'role'")
        # Keys with None values are dropped, as transformers does: templates test for presence.
        msg = {k: v for k, v in message.items() if v is not None}
        content = msg.get("content")
        if isinstance(content, str) or content is None:
            out.append(msg)
            continue
        if not isinstance(content, Sequence):
            raise InputError(f"message {i}: content must be a string or a list of items")
        items = []
        for j, item in enumerate(content):
            if isinstance(item, str):
                item = {"type": "text", "text": item}
            if not isinstance(item, Mapping) or "type" not in item:
                raise InputError(f"message {i} item {j}: expected a dict with a 'type' (text, image or audio)")
            kind = item["type"]
            if kind == "text":
                if not isinstance(item.get("text"), str):
                    raise InputError(f"message {i} item {j}: a text item needs a string 'text'")
                items.append({"type": "text", "text": item["text"]})
            elif kind in _MEDIA_KEYS:
                sources = [item[k] for k in _MEDIA_KEYS[kind] if item.get(k) is not None]
                if len(sources) > 1:
                    raise InputError(f"message {i} item {j}: give one of {', '.join(_MEDIA_KEYS[kind])}, not several")
                media.append(MediaRef(kind, sources[0] if sources else None))
                # The template needs only the type; sources (PIL images, arrays) stay out of Jinja.
                items.append({"type": kind})
            else:
                raise InputError(f"message {i} item {j}: unsupported content type {kind!r} (use text, image or audio)")
        msg["content"] = items
        out.append(msg)
    return out, media


def render(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    enable_thinking: bool = False,
    add_generation_prompt: bool = True,
    **template_kwargs: Any,
) -> str:
    """Render normalized messages with the checkpoint's chat template (thinking switch passed through)."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("this checkpoint has no chat template; pass a plain prompt string instead of messages")
    try:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
            **template_kwargs,
        )
    except (TemplateError, ValueError, TypeError) as e:  # incl. raise_exception() calls in the template
        raise InputError(f"the chat template rejected the messages: {e}") from e


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text; the template already wrote ``<bos>``, so nothing is added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def expand_placeholders(
    ids: Sequence[int],
    special: SpecialTokens,
    image_tokens: Sequence[int],
    audio_clip_frames: Sequence[Sequence[int]],
) -> list[int]:
    """Replace the i-th image/audio placeholder id with its begin/soft-token/end block(s)."""
    n_img = sum(1 for t in ids if t == special.image)
    n_aud = sum(1 for t in ids if t == special.audio)
    if n_img != len(image_tokens):
        raise InputError(
            f"the prompt has {n_img} image placeholder(s) but {len(image_tokens)} image(s) were given "
            f"(is {_NAMED['image'][1]} typed into the text?)"
        )
    if n_aud != len(audio_clip_frames):
        raise InputError(
            f"the prompt has {n_aud} audio placeholder(s) but {len(audio_clip_frames)} audio input(s) were given "
            f"(is {_NAMED['audio'][1]} typed into the text?)"
        )
    images, audios = iter(image_tokens), iter(audio_clip_frames)
    out: list[int] = []
    for t in ids:
        if t == special.image:
            out += [special.boi] + [special.image] * next(images) + [special.eoi]
        elif t == special.audio:
            # A long recording split into clips becomes consecutive audio blocks, one per clip.
            for frames in next(audios):
                out += [special.boa] + [special.audio] * frames + [special.eoa]
        else:
            out.append(t)
    return out
