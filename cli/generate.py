"""``gemma4 generate`` (one prompt, streamed) and ``gemma4 chat`` (a REPL with KV reuse across turns)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)

def _finite(value: float | None) -> float | None:
    """Reject NaN and infinity, which pass click's range checks (every comparison with NaN is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


Model = Annotated[str, typer.Option("--model", "-m", help="Checkpoint folder or hub id.")]
# Strings, not Paths: a Path would fold "http://x/y" into "http:/x/y" before the library can say that
# URLs are not fetched.
Images = Annotated[list[str] | None, typer.Option("--image", "-i", help="Image file (repeatable).")]
Audio = Annotated[list[str] | None, typer.Option("--audio", "-a", help="Audio file (repeatable).")]
Videos = Annotated[
    list[str] | None, typer.Option("--video", help="Video file, ≤ 60 s: 32 frames with timestamps (repeatable).")
]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Most tokens to generate.")]
Temp = Annotated[float | None, typer.Option("--temp", min=0.0, callback=_finite,
                                            help="Temperature (0 = greedy; default: checkpoint's).")]
TopP = Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0, callback=_finite,
                                            help="Nucleus sampling (default: checkpoint's).")]
TopK = Annotated[int | None, typer.Option("--top-k", min=0, help="Top-k sampling (default: checkpoint's).")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, max=2**64 - 1,
                                          help="Random seed (same seed, same output).")]
Thinking = Annotated[bool, typer.Option("--thinking/--no-thinking", help="Let the model think first.")]


def _stats_line(stats) -> str:
    # Rates come from GenerationStats (one definition); they are 0 when nothing was generated.
    return (
        f"prompt {stats.prompt_tokens} tok, TTFT {stats.time_to_first_token_s:.2f} s, "
        f"prefill {stats.prompt_tps:.1f} tok/s, "
        f"decode {stats.generation_tokens} tok at {stats.generation_tps:.1f} tok/s, "
        f"peak {stats.peak_memory_gb:.2f} GB, {stats.finish_reason}"
    )


def _print_stream(chunks) -> None:
    """Thoughts dimmed on stderr, the answer on stdout, statistics last on stderr."""
    last = None
    for chunk in chunks:
        if chunk.channel == "answer":
            typer.echo(chunk.text, nl=False)
        else:
            err.print(chunk.text, style="dim", end="", markup=False, highlight=False)
        last = chunk.stats or last
    typer.echo()
    if last is not None:
        err.print(_stats_line(last), style="cyan", markup=False, highlight=False)


def _load(model: str):
    from mlx_gemma4 import load

    with err.status(f"loading {model}…"):
        return load(model)


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: Model,
    image: Images = None,
    audio: Audio = None,
    video: Videos = None,
    max_tokens: MaxTokens = 256,
    temp: Temp = None,
    top_p: TopP = None,
    top_k: TopK = None,
    seed: Seed = None,
    thinking: Thinking = False,
) -> None:
    """Answer one prompt (with images / audio / videos), streaming the text."""
    from mlx_gemma4 import stream_generate

    m, processor = _load(model)
    _print_stream(
        stream_generate(
            m, processor, prompt, images=list(image or ()), audio=list(audio or ()), videos=list(video or ()),
            max_tokens=max_tokens, temperature=temp, top_p=top_p, top_k=top_k, seed=seed, thinking=thinking,
        )
    )


@dataclass
class ChatState:
    """What the REPL's commands act on: the session, files for the next message, generation settings."""

    session: Any
    options: dict[str, Any]
    images: list[str] = field(default_factory=list)
    audio: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)


def _reset(chat: ChatState, _arg: str) -> bool:
    chat.session.reset()
    err.print("conversation forgotten", style="dim")
    return True


def _quit(_chat: ChatState, _arg: str) -> bool:
    return False


def _video(chat: ChatState, arg: str) -> bool:
    if arg:
        chat.videos.append(arg)
        err.print(f"{arg} goes with the next message", style="dim", markup=False, highlight=False)
    else:
        err.print("usage: /video FILE", style="yellow")
    return True


# Slash command → handler(state, rest of the line) → whether the REPL goes on. New commands go here.
COMMANDS: dict[str, Callable[[ChatState, str], bool]] = {
    "/reset": _reset, "/quit": _quit, "/exit": _quit, "/video": _video,
}


def run_command(chat: ChatState, line: str) -> bool:
    """Run one ``/command`` line; an unknown one is answered here and never reaches the model."""
    name, _, arg = line.partition(" ")
    handler = COMMANDS.get(name)
    if handler is None:
        err.print(f"unknown command {name}; commands: {', '.join(COMMANDS)} (start with // to send a leading /)",
                  style="yellow", markup=False, highlight=False)
        return True
    return handler(chat, arg.strip())


def _answer(chat: ChatState, text: str) -> None:
    """One turn: stream the reply; Ctrl-C stops only this reply, a bad file only this turn's files."""
    from mlx_gemma4.errors import InputError

    try:
        stream = chat.session.send(text, images=chat.images, audio=chat.audio, videos=chat.videos, **chat.options)
        try:
            _print_stream(stream)
        finally:
            stream.close()  # the session settles a reply that was cut short
    except KeyboardInterrupt:
        typer.echo()
        err.print("(answer stopped)", style="dim")
    except InputError as e:  # a bad file or argument: report it, drop the files, keep the conversation
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
    finally:
        chat.images, chat.audio, chat.videos = [], [], []


def _read_line() -> str | None:
    """The next input line; None at end of input (Ctrl-D). Ctrl-C on the prompt line clears it."""
    while True:
        try:
            return input(">>> ").strip()
        except KeyboardInterrupt:
            typer.echo()
        except EOFError:
            typer.echo()
            return None


def chat_cmd(
    model: Model,
    image: Images = None,
    audio: Audio = None,
    video: Videos = None,
    max_tokens: MaxTokens = 1024,
    temp: Temp = None,
    seed: Seed = None,
    thinking: Thinking = False,
) -> None:
    """Multi-turn chat; --image/--audio/--video go with the first message (dropped if unreadable), /video FILE
    with the next one. /reset forgets, /quit (or Ctrl-D) exits; Ctrl-C stops the current answer."""
    from mlx_gemma4 import ChatSession

    m, processor = _load(model)
    options = {"max_tokens": max_tokens, "temperature": temp, "seed": seed}
    chat = ChatState(ChatSession(m, processor, thinking=thinking), options, list(image or ()), list(audio or ()),
                     list(video or ()))
    err.print("chat started: /reset forgets the conversation, /quit exits, Ctrl-C stops an answer", style="dim")
    while (line := _read_line()) is not None:
        if line.startswith("/") and not line.startswith("//"):
            if not run_command(chat, line):
                return
        elif line:
            _answer(chat, line[1:] if line.startswith("//") else line)


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``chat`` to the root app."""
    app.command("generate")(generate_cmd)
    app.command("chat")(chat_cmd)
