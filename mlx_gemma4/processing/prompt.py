"""Chat messages → prompt text: the checkpoint's own chat template, then placeholder expansion.

The template is rendered by the tokenizer (transformers' AutoTokenizer reading the checkpoint's
``chat_template.jinja``); nothing here re-implements it. The template writes one placeholder per
image/audio/video item; ``expand_text`` replaces each with its blocks (``<|image>`` + N × ``<|image|>``
+ ``<image|>``; one ``<|audio>`` … ``<audio|>`` block per audio clip; per video frame "mm:ss " and an
image-framed block of ``<|video|>`` tokens) in the text, before tokenizing, as the reference processor
does, so the text around the placeholders tokenizes exactly as there. mlx-lm's TokenizerWrapper is not
used here because importing it imports mlx; the generation layer wraps this same tokenizer for
streaming detokenization.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from ..errors import InputError, ModelLoadError
from ..jsonfile import read_json_object
from .modalities import BY_MESSAGE_TYPE, MODALITIES

# JSON files AutoTokenizer reads (checked only when it fails, to name the broken one).
TOKENIZER_JSON_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json",
                        "chat_template.json")

# Field → (tokenizer_config name, default spelling) of the named special tokens; a checkpoint's
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
        """Tokens that end a model turn: ``<eos>``, ``<turn|>`` and ``<|tool_response>``."""
        return [i for i in (self.eos, self.eot, self.tool_response) if i is not None]


def load_tokenizer(folder: str | Path) -> Any:
    """The checkpoint's tokenizer (transformers AutoTokenizer; picks up ``chat_template.jinja``)."""
    from transformers import AutoTokenizer  # heavy import, only when a tokenizer is actually loaded

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as e:
        _check_tokenizer_json(Path(folder))  # a broken JSON file: name it (transformers does not)
        raise ModelLoadError(f"{folder}: cannot load the tokenizer ({e})") from e
    if getattr(tokenizer, "chat_template", None):
        check_chat_template(_template_file(Path(folder)), tokenizer.chat_template, ModelLoadError)
    return tokenizer


def _generation_tag():
    """transformers' ``{% generation %}…{% endgeneration %}`` block (marks assistant text): parsed as a
    plain block, so templates that use it compile here too."""
    import jinja2.ext
    import jinja2.nodes

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    return GenerationTag


def check_chat_template(where: str, template: Any, error: type[Exception]) -> None:
    """A chat template (a string, named ones as a list of ``{"name", "template"}`` or a dict) must compile:
    a syntax error would otherwise surface as "the chat template rejected the messages" on the first
    prompt, naming no file. ``error`` names ``where`` (a file) and the line."""
    import jinja2

    if isinstance(template, dict):
        sources = list(template.items())
    elif isinstance(template, list):
        sources = [(t.get("name", "?"), t.get("template")) for t in template if isinstance(t, dict)]
    else:
        sources = [(None, template)]
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols", _generation_tag()])
    for label, text in sources:
        place = f"{where} (template {label!r})" if label else where
        if not isinstance(text, str):
            raise error(f"{place}: the chat template is not a string")
        try:
            env.parse(text)
        except jinja2.TemplateSyntaxError as e:
            raise error(f"{place}: the chat template does not compile (line {e.lineno}: {e.message})") from e


def _template_file(folder: Path) -> str:
    """The file a loaded tokenizer's chat template came from (as AutoTokenizer looks for it)."""
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        if (folder / name).exists():
            return str(folder / name)
    return str(folder)


def _check_tokenizer_json(folder: Path) -> None:
    """Raise ModelLoadError naming the first tokenizer JSON file of ``folder`` that is not a JSON object."""
    for name in TOKENIZER_JSON_FILES:
        if (folder / name).exists():
            read_json_object(folder / name, ModelLoadError)


def token_id(tokenizer: Any, token: str | None) -> int | None:
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
        ids[name] = token_id(tokenizer, token)
    missing = [_NAMED[n][1] for n in _REQUIRED if ids[n] is None]
    if missing:
        raise ModelLoadError(f"the tokenizer has no {', '.join(missing)} token (not a Gemma 4 unified tokenizer?)")
    return SpecialTokens(
        bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id, **ids
    )


_TYPES = ", ".join(["text", *BY_MESSAGE_TYPE])


@dataclass(frozen=True)
class MediaRef:
    """One media item of a conversation, in order: its modality name and an inline source (or None)."""

    kind: str  # a modality name: "image", "audio", "video"
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
                raise InputError(f"message {i} item {j}: expected a dict with a 'type' ({_TYPES})")
            kind = item["type"]
            if kind == "text":
                if not isinstance(item.get("text"), str):
                    raise InputError(f"message {i} item {j}: a text item needs a string 'text'")
                items.append({"type": "text", "text": item["text"]})
            elif kind in BY_MESSAGE_TYPE:
                keys = BY_MESSAGE_TYPE[kind].source_keys
                sources = [item[k] for k in keys if item.get(k) is not None]
                if len(sources) > 1:
                    raise InputError(f"message {i} item {j}: give one of {', '.join(keys)}, not several")
                media.append(MediaRef(BY_MESSAGE_TYPE[kind].name, sources[0] if sources else None))
                # The template needs only the type; sources (PIL images, arrays) stay out of Jinja.
                items.append({"type": kind})
            else:
                raise InputError(f"message {i} item {j}: unsupported content type {kind!r} (use {_TYPES})")
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


def valid_text(text: str) -> str:
    """``text`` with lone surrogates decoded: bytes that were not UTF-8 become U+FFFD.

    Python hands non-UTF-8 command-line bytes over as surrogate escapes (``b"\\xff"`` → ``"\\udcff"``),
    and the tokenizer cannot encode those. Escapes are turned back into their bytes and decoded with
    replacement, so valid UTF-8 around them is kept; any other lone surrogate becomes U+FFFD too.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escapes (e.g. half of a pair from JSON)
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text; the template already wrote ``<bos>``, so nothing is added."""
    return list(tokenizer.encode(valid_text(text), add_special_tokens=False))


def token_strings(tokenizer: Any, special: SpecialTokens) -> dict[str, str]:
    """``SpecialTokens`` field → the token's text, for the tokens a modality's blocks are written with."""
    names = {f for m in MODALITIES for f in (m.placeholder, m.begin, m.end)}
    return {f: tokenizer.convert_ids_to_tokens(getattr(special, f)) for f in names if getattr(special, f) is not None}


def expand_text(
    text: str, tokens: Mapping[str, str], replacements: Mapping[str, Sequence[str]]
) -> tuple[str, list[tuple[str, int]]]:
    """Replace the i-th placeholder of each modality with ``replacements[name][i]``.

    Returns the expanded text and the placeholders met, in text order, as (modality name, i).
    """
    kinds = {tokens[m.placeholder]: m.name for m in MODALITIES if m.placeholder in tokens}
    for m in MODALITIES:
        found = text.count(tokens[m.placeholder]) if m.placeholder in tokens else 0
        given = len(replacements.get(m.name, ()))
        if m.placeholder not in tokens and given:
            raise InputError(f"this tokenizer has no {m.name} placeholder token: it cannot take {m.argument}")
        if found != given:
            raise InputError(
                f"the prompt has {found} {m.name} placeholder(s) but {given} {m.name} input(s) were given "
                f"(is {tokens.get(m.placeholder, m.placeholder)} typed into the text?)"
            )
    order: list[tuple[str, int]] = []
    seen = dict.fromkeys(kinds.values(), 0)

    def replace(match: re.Match) -> str:
        name = kinds[match.group(0)]
        order.append((name, seen[name]))
        seen[name] += 1
        return replacements[name][seen[name] - 1]

    if not kinds:
        return text, order
    pattern = re.compile("|".join(re.escape(t) for t in sorted(kinds, key=len, reverse=True)))
    return pattern.sub(replace, text), order
