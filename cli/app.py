"""The ``gemma4`` command line: a Typer root that command groups register themselves on.

Each command group lives in its own module under ``cli/`` with a ``register(app)`` function and is
listed in ``COMMAND_GROUPS``; the modules only parse arguments and format output (logic lives in the
library). Any ``Gemma4Error`` becomes one red line on stderr and exit status 1 (``--verbose`` adds the
traceback), both for the console script and for ``typer.testing.CliRunner``.
"""

from __future__ import annotations

from importlib import import_module

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from mlx_gemma4.errors import Gemma4Error

# Modules of cli/ that add commands; other engineers append theirs (generate, chat, caption, bench…).
COMMAND_GROUPS = ("convert", "generate", "caption")

err_console = Console(stderr=True)


class _Gemma4Group(TyperGroup):
    """Runs a command and turns the package's own errors into one readable line."""

    def invoke(self, ctx):  # noqa: D102 - click API
        try:
            return super().invoke(ctx)
        except Gemma4Error as e:
            if (ctx.obj or {}).get("verbose"):
                err_console.print_exception()
            err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/bold red]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Gemma4Group,
    help="Gemma 4 12B unified (encoder-free multimodal) on MLX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the full traceback of errors."),
) -> None:
    ctx.obj = {"verbose": verbose}


for _name in COMMAND_GROUPS:
    import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    """Console-script entry point (``gemma4``)."""
    app()


if __name__ == "__main__":
    main()
