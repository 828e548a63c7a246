"""Token ids → text pieces: streaming detokenization, thought-block separation and stop strings.

Gemma 4 thinks inside ``<|channel>thought\\n … <channel|>``. The two marker ids are
looked up in the tokenizer, never hard-coded. Pieces are tagged "thought" or "answer"; the markers
and the channel name are never part of any text. With thinking off, a thought block the model opens
anyway is still kept out of the answer, and if it was all the model said, its text becomes the
answer rather than returning nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..processing.prompt import token_id

THOUGHT, ANSWER = "thought", "answer"
_CHANNEL_NAME = "thought"


@dataclass
class Piece:
    """A piece of decoded text and the channel it belongs to."""

    channel: str
    text: str


def _detokenizer(tokenizer):
    """mlx-lm's streaming detokenizer, imported on first use (its package __init__ imports transformers)."""
    from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer

    return NaiveStreamingDetokenizer(tokenizer)


def channel_token_ids(tokenizer) -> tuple[int | None, int | None]:
    """Ids of ``<|channel>`` / ``<channel|>`` in this tokenizer (None where it has no such token)."""
    if tokenizer is None:
        return None, None
    # One lookup per token: get_vocab() would build a 262K-entry dict (about a second) per generation.
    return token_id(tokenizer, "<|channel>"), token_id(tokenizer, "<channel|>")


class TextStream:
    """Feeds generated token ids, returns text pieces; ``answer``/``thinking`` accumulate the totals."""

    def __init__(self, tokenizer=None, stop_strings=(), thinking: bool = False, in_thought: bool = False):
        self.tokenizer = tokenizer
        self.soc, self.eoc = channel_token_ids(tokenizer)
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.holdback = max((len(s) for s in self.stop_strings), default=1) - 1
        self.thinking_enabled = thinking
        self.channel = THOUGHT if in_thought else ANSWER
        self._detok = _detokenizer(tokenizer) if tokenizer is not None else None
        self._pending = ""  # decoded but not yet released (stop-string look-behind, channel header)
        self._header_done = not in_thought
        self.answer = ""
        self.thinking = ""
        self.stopped = False  # a stop string was found

    # -- feeding ----------------------------------------------------------------------------------

    def add(self, token: int) -> list[Piece]:
        """One generated token (stop tokens must not be fed)."""
        if self.stopped:
            return []
        if token == self.soc:
            out = self._switch(THOUGHT)
            self._header_done = False
            return out
        if token == self.eoc:
            return self._switch(ANSWER)
        if self._detok is None:
            return []
        self._detok.add_token(token)
        self._pending += self._detok.last_segment
        return self._release(final=False)

    def finish(self) -> list[Piece]:
        """Flush what is held back; applies the thinking-off fallback (never an empty answer)."""
        out = self._flush()
        if not self.thinking_enabled and not self.answer.strip() and self.thinking.strip():
            text, self.thinking = self.thinking, ""
            self.answer += text
            out.append(Piece(ANSWER, text))
        return out

    # -- internals --------------------------------------------------------------------------------

    def _switch(self, channel: str) -> list[Piece]:
        out = self._flush()
        self.channel = channel
        return out

    def _flush(self) -> list[Piece]:
        if self._detok is not None:
            self._detok.finalize()
            self._pending += self._detok.last_segment
            self._detok.reset()
        out = self._release(final=True)
        self._pending = ""
        return out

    def _release(self, final: bool) -> list[Piece]:
        if self.channel == THOUGHT and not self._header_done:
            # Drop the channel name line ("thought\n") that follows <|channel>.
            head = self._pending.lstrip()
            if "\n" in head or final or len(head) > len(_CHANNEL_NAME) + 1:
                if head.startswith(_CHANNEL_NAME):
                    head = head[len(_CHANNEL_NAME):]
                    head = head[1:] if head.startswith("\n") else head
                self._pending, self._header_done = head, True
            else:
                return []
        text = self._pending
        if self.channel == ANSWER and self.stop_strings:
            hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
            if hits:
                self.stopped = True
                return self._emit(text[: min(hits)], "")
            if not final and self.holdback:
                cut = max(0, len(text) - self.holdback)
                return self._emit(text[:cut], text[cut:])
        return self._emit(text, "")

    def _emit(self, text: str, keep: str) -> list[Piece]:
        self._pending = keep
        if not text:
            return []
        if self.channel == THOUGHT:
            self.thinking += text
        else:
            self.answer += text
        return [Piece(self.channel, text)]
