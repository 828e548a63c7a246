"""The ``gemma4`` command line: a Typer root that command groups register themselves on.

Each command group lives in its own module under ``cli/`` with a ``register(app)`` function and is
listed in ``COMMAND_GROUPS``; the modules only parse arguments and format output (logic lives in the
library). Every failure is one red line on stderr and an exit status that says what kind it was:
2 for bad usage or input (a bad flag value, a missing or corrupt file or model folder), 1 for other
failures of the package, 130 when interrupted. ``-v/--verbose`` (before or after the command name)
adds the traceback. The same holds for the console script and ``typer.testing.CliRunner``.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from mlx_gemma4.errors import Gemma4Error, InputError, ModelLoadError

# Modules of cli/ that add commands; other engineers append theirs (generate, chat, caption, bench…).
COMMAND_GROUPS = ("convert", "generate", "chat", "bench", "serve", "caption")

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# A model folder or hub id is user input like a file: a bad one is a usage problem, not a crash.
_USAGE_ERRORS = (InputError, ModelLoadError)
_VERBOSE = ("-v", "--verbose")

err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """The one red line every failure is reported with (a message's inner line breaks folded into it)."""
    line = " ".join(message.split())
    err_console.print(f"[bold red]error:[/bold red] {escape(line)}", soft_wrap=True)


def _verbose_first(args: list[str]) -> list[str]:
    """``-v/--verbose`` anywhere before ``--`` moved in front of the command name, where the root reads it."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in _VERBOSE]
    if not flags:
        return args
    return ["--verbose", *[a for a in args[:end] if a not in _VERBOSE], *args[end:]]


class _Gemma4Group(TyperGroup):
    """Runs a command and turns errors, usage mistakes and Ctrl-C into one line and an exit status."""

    def invoke(self, ctx):  # noqa: D102 - click API
        try:
            return super().invoke(ctx)
        except Gemma4Error as e:
            if (ctx.obj or {}).get("verbose"):
                err_console.print_exception()
            print_error(str(e))
            raise typer.Exit(EXIT_USAGE if isinstance(e, _USAGE_ERRORS) else EXIT_FAILURE) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        args = _verbose_first(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except TyperException as e:  # click's usage errors (exit code 2) and its other errors
            message = e.format_message()
            ctx = getattr(e, "ctx", None)
            if not message.strip() or "\n" in message:  # no arguments: the help text is the answer
                if message.strip():
                    err_console.print(message, markup=False, highlight=False)
            else:
                command = ctx.command_path if ctx is not None else "gemma4"
                print_error(f"{command}: {message} (see {command} --help)")
            code = e.exit_code
        except (typer.Abort, KeyboardInterrupt, EOFError):
            code = EXIT_INTERRUPTED
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C inside a command into this exit code
            err_console.print("[bold red]interrupted[/bold red]")
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Gemma4Group,
    help="Gemma 4 12B unified (encoder-free multimodal) on MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from mlx_gemma4 import __version__

        typer.echo(f"gemma4 (mlx-gemma4) {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the full traceback of errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = {"verbose": verbose}


for _name in COMMAND_GROUPS:
    import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    """Console-script entry point (``gemma4``)."""
    # transformers (used for the tokenizer only) advises at import that without PyTorch "models won't be
    # available": true and irrelevant here, and the first thing a new user would read. Advice only: its
    # warnings and errors still show.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


if __name__ == "__main__":
    main()
