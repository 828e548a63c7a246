"""OpenAI response objects (whole and streamed) built from the engine's events."""

from __future__ import annotations

import json
import time
import uuid

from ..batching.rows import Delta, Done


def new_id(prefix: str) -> str:
    """A response id in OpenAI's style."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(done: Done) -> dict:
    """The ``usage`` object (cached = prompt tokens that came from the prompt cache)."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def chat_completion(rid: str, model: str, done: Done, content: str, token_ids: bool) -> dict:
    """A whole ``chat.completion``; the thought (thinking mode) goes to ``reasoning_content``."""
    message = {"role": "assistant", "content": content, "reasoning_content": done.thinking or None}
    choice = {"index": 0, "message": message, "finish_reason": done.finish_reason, "logprobs": None}
    if token_ids:
        choice["token_ids"] = done.token_ids
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(done)}


def text_completion(rid: str, model: str, done: Done, token_ids: bool) -> dict:
    """A whole ``text_completion``."""
    choice = {"index": 0, "text": done.answer, "finish_reason": done.finish_reason, "logprobs": None}
    if token_ids:
        choice["token_ids"] = done.token_ids
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(done)}


def sse(obj: dict | str) -> str:
    """One server-sent event."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


class ChunkWriter:
    """Streamed chunks of one response (``chat.completion.chunk`` or ``text_completion``)."""

    def __init__(self, rid: str, model: str, chat: bool):
        self.rid, self.model, self.chat = rid, model, chat
        self.created = int(time.time())

    def _chunk(self, choices: list, **extra) -> str:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({"id": self.rid, "object": kind, "created": self.created, "model": self.model,
                    "choices": choices, **extra})

    def start(self) -> str:
        """The opening chunk (the assistant role)."""
        if self.chat:
            return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        return ""

    def delta(self, d: Delta) -> str:
        """New text of the answer or of the thought."""
        if not d.text:
            return ""
        if not self.chat:
            return self._chunk([{"index": 0, "text": d.text, "finish_reason": None, "logprobs": None}])
        key = "content" if d.channel == "answer" else "reasoning_content"
        return self._chunk([{"index": 0, "delta": {key: d.text}, "finish_reason": None}])

    def end(self, done: Done, include_usage: bool) -> str:
        """The finishing chunk, the usage chunk if asked for, and ``[DONE]``."""
        if self.chat:
            out = self._chunk([{"index": 0, "delta": {}, "finish_reason": done.finish_reason}])
        else:
            out = self._chunk([{"index": 0, "text": "", "finish_reason": done.finish_reason, "logprobs": None}])
        if include_usage:
            out += self._chunk([], usage=usage(done))
        return out + sse("[DONE]")
