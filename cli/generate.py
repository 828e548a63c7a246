"""``gemma4 generate`` (one prompt, streamed) and ``gemma4 chat`` (a REPL with KV reuse across turns)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)

Model = Annotated[str, typer.Option("--model", "-m", help="Checkpoint folder or hub id.")]
Images = Annotated[list[Path] | None, typer.Option("--image", "-i", help="Image file (repeatable).")]
Audio = Annotated[list[Path] | None, typer.Option("--audio", "-a", help="Audio file (repeatable).")]
Videos = Annotated[
    list[Path] | None, typer.Option("--video", help="Video file, ≤ 60 s: 32 frames with timestamps (repeatable).")
]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens to generate.")]
Temp = Annotated[float | None, typer.Option("--temp", help="Temperature (0 = greedy; default: checkpoint's).")]
TopP = Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling (default: checkpoint's).")]
TopK = Annotated[int | None, typer.Option("--top-k", help="Top-k sampling (default: checkpoint's).")]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed (same seed, same output).")]
Thinking = Annotated[bool, typer.Option("--thinking/--no-thinking", help="Let the model think first.")]


def _stats_line(stats) -> str:
    return (
        f"prompt {stats.prompt_tokens} tok, TTFT {stats.time_to_first_token_s:.2f} s, "
        f"prefill {stats.prompt_tokens / max(stats.prefill_s, 1e-9):.1f} tok/s, "
        f"decode {stats.generation_tokens} tok at {stats.generation_tokens / max(stats.decode_s, 1e-9):.1f} tok/s, "
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
    """Answer one prompt (with images / audio), streaming the text."""
    from mlx_gemma4 import stream_generate

    m, processor = _load(model)
    _print_stream(
        stream_generate(
            m, processor, prompt, images=[str(p) for p in image or ()], audio=[str(p) for p in audio or ()],
            videos=[str(p) for p in video or ()], max_tokens=max_tokens, temperature=temp, top_p=top_p, top_k=top_k,
            seed=seed, thinking=thinking,
        )
    )


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
    """Multi-turn chat; --image/--audio/--video go with the first message (dropped if unreadable). /reset
    forgets, /quit (or Ctrl-D) exits."""
    from mlx_gemma4 import ChatSession
    from mlx_gemma4.errors import InputError

    m, processor = _load(model)
    session = ChatSession(m, processor, thinking=thinking)
    pending_images, pending_audio = [str(p) for p in image or ()], [str(p) for p in audio or ()]
    pending_videos = [str(p) for p in video or ()]
    err.print("chat started: /reset forgets the conversation, /quit exits", style="dim")
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            typer.echo()
            return
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            session.reset()
            continue
        if not line:
            continue
        try:
            _print_stream(
                session.send(
                    line, images=pending_images, audio=pending_audio, videos=pending_videos, max_tokens=max_tokens,
                    temperature=temp, seed=seed,
                )
            )
        except InputError as e:  # a bad file or argument: report it, drop the files, keep the conversation
            err.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
        pending_images, pending_audio, pending_videos = [], [], []


def register(app: typer.Typer) -> None:
    """Add ``generate`` and ``chat`` to the root app."""
    app.command("generate")(generate_cmd)
    app.command("chat")(chat_cmd)
