"""OpenAI request bodies → our chat messages and generation settings (pure functions, no model).

Unknown top-level fields are ignored (clients send many optional ones); a known field with a value
this server cannot honour is a 400 naming the field, never a silent change of meaning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import bad_request
from .media import decode_base64, read_media_url

JSON_HINT = "Respond with one valid JSON object and nothing else (no prose, no code fences)."
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "opus", "webm", "m4a", "aac", "pcm16"}
_EFFORT = {"none": False, "minimal": False, "low": True, "medium": True, "high": True}


@dataclass
class Settings:
    """Generation settings of one request (None = the checkpoint's default)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    json_mode: bool = False
    thinking: bool = False


@dataclass
class ChatRequest:
    """A parsed chat-completions request: processor-ready messages (media as bytes) and settings."""

    model: str | None
    messages: list[dict[str, Any]]
    settings: Settings = field(default_factory=Settings)


@dataclass
class CompletionRequest:
    """A parsed plain-text completions request."""

    model: str | None
    prompt: str
    settings: Settings = field(default_factory=Settings)


def _number(body: dict, key: str, lo: float, hi: float, integer: bool = False) -> Any:
    v = body.get(key)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise bad_request(f"{key} must be {kind} in [{lo}, {hi}], got {v!r}", key)
    return int(v) if integer else float(v)


def _bool(body: dict, key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad_request(f"{key} must be true or false, got {v!r}", key)
    return v


def _stop(body: dict) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or len(items) > 16 or not all(isinstance(s, str) and s for s in items):
        raise bad_request("stop must be a non-empty string or a list of up to 16 non-empty strings", "stop")
    return tuple(items)


def _thinking(body: dict) -> bool:
    """The thinking switch: ``reasoning_effort``, ``thinking`` (bool or {"type": ...}), or vLLM's
    ``chat_template_kwargs.enable_thinking``."""
    on = False
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _EFFORT:
            raise bad_request(f"reasoning_effort must be one of {', '.join(_EFFORT)}, got {effort!r}",
                              "reasoning_effort")
        on = _EFFORT[effort]
    t = body.get("thinking")
    if isinstance(t, dict):
        t = {"enabled": True, "disabled": False}.get(t.get("type"), t.get("type"))
    if t is not None:
        if not isinstance(t, bool):
            raise bad_request("thinking must be true/false or {\"type\": \"enabled\"|\"disabled\"}", "thinking")
        on = t
    kwargs = body.get("chat_template_kwargs") or {}
    if isinstance(kwargs, dict) and isinstance(kwargs.get("enable_thinking"), bool):
        on = kwargs["enable_thinking"]
    return on


def parse_settings(body: dict, chat: bool) -> Settings:
    """The sampling/limit fields shared by both endpoints."""
    if body.get("n") not in (None, 1):
        raise bad_request("only n=1 is supported", "n")
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise bad_request(f"{key} is not supported (only 0)", key)
    unsupported = {"logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False), "tools": (None, []),
                   "functions": (None, []), "tool_choice": (None, "none"), "suffix": (None, ""), "best_of": (None, 1)}
    for key, fine in unsupported.items():
        if body.get(key) not in fine:
            raise bad_request(f"{key} is not supported by this server", key)
    max_tokens = _number(body, "max_completion_tokens", 1, 1 << 30, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, 1 << 30, integer=True)
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    return Settings(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 1e-9, 1.0),
        top_k=_number(body, "top_k", 0, 1 << 20, integer=True),
        min_p=_number(body, "min_p", 0.0, 0.999999),
        seed=_number(body, "seed", 0, (1 << 64) - 1, integer=True),
        stop=_stop(body),
        stream=_bool(body, "stream"),
        include_usage=_bool(opts or {}, "include_usage"),
        json_mode=_response_format(body) if chat else False,
        thinking=_thinking(body) if chat else False,
    )


def _response_format(body: dict) -> bool:
    rf = body.get("response_format")
    if rf is None:
        return False
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind not in ("text", "json_object"):
        raise bad_request(f"response_format type must be 'text' or 'json_object', got {kind!r}", "response_format")
    return kind == "json_object"


def _text_of(content: Any, param: str) -> str:
    """Content that may only hold text (system, assistant): a string or text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise bad_request(f"{param}: only text content is supported in this role", param)


def _part(part: Any, allow_dir: Path | None, param: str) -> dict[str, Any]:
    """One user content part → one processor item (media decoded into bytes)."""
    if not isinstance(part, dict):
        raise bad_request(f"{param}: a content part must be an object with a 'type'", param)
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise bad_request(f"{param}.text: expected a string", f"{param}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        return {"type": "image", "image": read_media_url(url, allow_dir, f"{param}.image_url")}
    if kind == "video_url":  # vLLM's spelling; OpenAI has no video part
        ref = part.get("video_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        return {"type": "video", "video": read_media_url(url, allow_dir, f"{param}.video_url")}
    if kind == "input_audio":
        ref = part.get("input_audio")
        if not isinstance(ref, dict):
            raise bad_request(f"{param}.input_audio: expected {{\"data\": base64, \"format\": ...}}", param)
        fmt = ref.get("format")
        if fmt is not None and fmt not in _AUDIO_FORMATS:
            raise bad_request(f"{param}.input_audio.format: unsupported audio format {fmt!r}",
                              f"{param}.input_audio.format")
        return {"type": "audio", "audio": decode_base64(ref.get("data"), f"{param}.input_audio.data")}
    raise bad_request(f"{param}: unsupported content part type {kind!r} (text, image_url, input_audio, video_url)",
                      param)


def parse_messages(raw: Any, allow_dir: Path | None = None) -> list[dict[str, Any]]:
    """OpenAI ``messages`` → processor messages; images/audio decoded into bytes."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{param}: expected an object with 'role' and 'content'", param)
        role = _ROLES.get(m.get("role"))
        if role is None:
            raise bad_request(f"{param}.role: unsupported role {m.get('role')!r} (system, developer, user, "
                              "assistant)", f"{param}.role")
        content = m.get("content")
        if content is None:
            raise bad_request(f"{param}.content: missing (tool calls are not supported)", f"{param}.content")
        if role == "user" and isinstance(content, list):
            items = [_part(p, allow_dir, f"{param}.content[{j}]") for j, p in enumerate(content)]
            out.append({"role": role, "content": items})
        elif role == "user" and isinstance(content, str):
            out.append({"role": role, "content": content})
        else:
            out.append({"role": role, "content": _text_of(content, f"{param}.content")})
    return out


def add_json_hint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ask for a JSON object in the system prompt (appended to an existing one)."""
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{JSON_HINT}"}, *messages[1:]]
    return [{"role": "system", "content": JSON_HINT}, *messages]


def _model(body: dict) -> str | None:
    m = body.get("model")
    if m is not None and not isinstance(m, str):
        raise bad_request("model must be a string", "model")
    return m


def parse_chat(body: Any, allow_dir: Path | None = None) -> ChatRequest:
    """A ``/v1/chat/completions`` body → ChatRequest (400 on anything malformed)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    settings = parse_settings(body, chat=True)
    messages = parse_messages(body.get("messages"), allow_dir)
    if settings.json_mode:
        messages = add_json_hint(messages)
    return ChatRequest(_model(body), messages, settings)


def parse_completion(body: Any) -> CompletionRequest:
    """A ``/v1/completions`` body (one text prompt) → CompletionRequest."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("prompt must be one non-empty string", "prompt")
    return CompletionRequest(_model(body), prompt, parse_settings(body, chat=False))


def extract_json(text: str) -> str | None:
    """The JSON object in a model's answer (code fences and surrounding prose tolerated), or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    candidate = text[start : end + 1]
    try:
        value = json.loads(candidate)
    except ValueError:
        return None
    return candidate if isinstance(value, dict) else None
