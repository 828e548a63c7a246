"""``gemma4 chat``: a multi-turn REPL (KV cache kept across turns), or JSON lines when stdin is piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlx_gemma4.errors import InputError

from . import options as o
from .generate import print_stream
from .report import PrefillProgress, err, load_generation, print_stats, result_json, stats_line

HELP = """commands (a leading // sends a literal /):
  /image FILE   /audio FILE   /video FILE   attach a file to the next message
  /system TEXT  set the system prompt and start a new conversation
  /think on|off let the model think first (or not) from the next message
  /stats        the last answer's statistics and the conversation's length in tokens
  /save FILE    write the conversation to FILE as JSON
  /reset        forget the conversation      /help  this text      /quit  exit (or Ctrl-D)
multi-line input: end a line with \\ to continue it, or put the text between two lines of \"\"\"
Ctrl-C stops the current answer and keeps the conversation; Ctrl-D exits"""


@dataclass
class ChatState:
    """What the REPL's commands act on: the session, files for the next message, the last statistics."""

    session: Any
    request: Any
    make_session: Callable[[str | None, Any], Any]
    media: dict[str, list[str]] = field(default_factory=lambda: {"image": [], "audio": [], "video": []})
    last_stats: Any = None
    verbose: bool = False
    as_json: bool = False


def note(text: str, style: str = "dim") -> None:
    """A line for the person chatting, on stderr (stdout carries only answers)."""
    err.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _attach(kind: str) -> Callable[[ChatState, str], bool]:
    def attach(chat: ChatState, arg: str) -> bool:
        if not arg:
            note(f"usage: /{kind} FILE", "yellow")
            return True
        try:
            o.check_file(f"/{kind}", arg)
        except InputError as e:
            note(f"error: {e}", "bold red")
            return True
        chat.media[kind].append(arg)
        note(f"{arg} goes with the next message")
        return True

    return attach


def _reset(chat: ChatState, _arg: str) -> bool:
    chat.session.reset()
    note("conversation reset: the model remembers nothing of it")
    return True


def _system(chat: ChatState, arg: str) -> bool:
    chat.session = chat.make_session(arg or None, chat.request)
    note("system prompt " + ("set" if arg else "cleared") + "; new conversation started")
    return True


def _think(chat: ChatState, arg: str) -> bool:
    if arg not in ("on", "off"):
        note("usage: /think on|off", "yellow")
        return True
    chat.request = chat.request.replace(thinking=arg == "on")
    note(f"thinking {arg}")
    return True


def _stats(chat: ChatState, _arg: str) -> bool:
    if chat.last_stats is not None:
        note(stats_line(chat.last_stats), "cyan")
    else:
        note("no answer yet")
    note(f"conversation: {len(chat.session.tokens)} tokens in the cache")
    return True


def _save(chat: ChatState, arg: str) -> bool:
    if not arg:
        note("usage: /save FILE", "yellow")
        return True
    path = Path(arg).expanduser()
    try:
        path.write_text(json.dumps({"messages": chat.session.conversation()}, ensure_ascii=False, indent=2, default=str)
                        + "\n", encoding="utf-8")
    except OSError as e:
        note(f"error: /save {arg}: {e.strerror or e}", "bold red")
        return True
    note(f"conversation saved to {path}")
    return True


def _help(_chat: ChatState, _arg: str) -> bool:
    note(HELP, "")
    return True


def _quit(_chat: ChatState, _arg: str) -> bool:
    return False


# Slash command → handler(state, rest of the line) → whether the REPL goes on. New commands go here.
COMMANDS: dict[str, Callable[[ChatState, str], bool]] = {
    "/image": _attach("image"), "/audio": _attach("audio"), "/video": _attach("video"),
    "/system": _system, "/think": _think, "/stats": _stats, "/save": _save, "/reset": _reset, "/help": _help,
    "/quit": _quit, "/exit": _quit,
}


def run_command(chat: ChatState, line: str) -> bool:
    """Run one ``/command`` line; an unknown one is answered here and never reaches the model."""
    name, _, arg = line.partition(" ")
    handler = COMMANDS.get(name)
    if handler is None:
        note(f"unknown command {name}; commands: {', '.join(COMMANDS)} (start with // to send a leading /)", "yellow")
        return True
    return handler(chat, arg.strip())


def answer(chat: ChatState, text: str) -> None:
    """One turn: stream the reply (or print its JSON line); Ctrl-C stops only this reply, a bad file only
    this turn's files."""
    from mlx_gemma4.generation.types import collect

    progress = PrefillProgress()
    media = {"images": chat.media["image"], "audio": chat.media["audio"], "videos": chat.media["video"]}
    try:
        stream = chat.session.send(text, **media, request=chat.request, progress=progress)
        try:
            if chat.as_json:
                result = collect(stream)
                typer.echo(json.dumps(result_json(result), ensure_ascii=False))
                chat.last_stats = result.stats
                print_stats(result.stats, chat.verbose)
            else:
                chat.last_stats = print_stream(stream, chat.verbose)
        finally:
            stream.close()  # the session settles a reply that was cut short
    except KeyboardInterrupt:
        progress.close()
        typer.echo()
        note("(answer stopped)")
    except InputError as e:  # a bad file or argument: report it, drop the files, keep the conversation
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
    finally:
        progress.close()
        chat.media = {"image": [], "audio": [], "video": []}


def _input(prompt: str) -> str | None:
    """One raw line; None at end of input (Ctrl-D). Ctrl-C on a prompt line drops that line."""
    while True:
        try:
            return input(prompt)
        except KeyboardInterrupt:
            typer.echo()
        except EOFError:
            if prompt:
                typer.echo()
            return None


def read_message(tty: bool) -> str | None:
    """The next message: one line, lines joined by a trailing ``\\``, or a block between two ``\"\"\"`` lines."""
    first = _input(">>> " if tty else "")
    if first is None:
        return None
    more = "... " if tty else ""
    if first.strip() == '"""':
        lines = []
        while (line := _input(more)) is not None and line.strip() != '"""':
            lines.append(line)
        return "\n".join(lines)
    lines = [first]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        line = _input(more)
        if line is None:
            break
        lines.append(line)
    return "\n".join(lines).strip()


@o.with_flag_groups
def chat_cmd(
    ctx: typer.Context,
    flags: o.ModelFlags = o.MODEL_FLAGS,
    message: o.MessageFlags = o.MESSAGE_FLAGS,
    sampling: o.SamplingFlags = o.SAMPLING_FLAGS,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer on stdout (JSON lines).")] = False,
) -> None:
    """Multi-turn chat. --image/--audio/--video go with the first message; /help lists the commands
    (/image FILE, /system TEXT, /think on|off, /stats, /save FILE, /reset…). Ctrl-C stops an answer,
    Ctrl-D exits. With stdin piped, each line is a message and no prompt is printed."""
    from mlx_gemma4 import ChatSession

    first_files = message.by_kind()
    m, processor, request = load_generation(flags, sampling.request(flags.kv_bits, flags.max_kv_size))

    def make_session(system_prompt: str | None, req) -> Any:
        return ChatSession(m, processor, system=system_prompt, request=req)

    chat = ChatState(make_session(message.system, request), request, make_session, first_files,
                     verbose=bool((ctx.obj or {}).get("verbose")), as_json=as_json)
    tty = sys.stdin.isatty()
    if tty:
        import readline  # noqa: F401 - line editing and history for input()

        note("chat started: /help lists the commands, Ctrl-C stops an answer, Ctrl-D exits")
    while (line := read_message(tty)) is not None:
        if line.startswith("/") and not line.startswith("//"):
            if not run_command(chat, line):
                return
        elif line:
            answer(chat, line[1:] if line.startswith("//") else line)


def register(app: typer.Typer) -> None:
    """Add ``chat`` to the root app."""
    app.command("chat")(chat_cmd)
