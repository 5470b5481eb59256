"""The command line: each command parses arguments, calls one library function, prints the result.

Every LatencykitError becomes one line on stderr and exit code 2; nothing below the CLI prints.
The commands live in the other modules of this package, one per subsystem; each imports `app`
from here, and `latencykit.cli` imports them all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hardware-aware latency tables, predictors and latency-constrained NAS.")


def _console() -> Console:
    """Rich's console; when the output is not a terminal (a pipe, a file) and COLUMNS is not set, lines
    are as long as their content, so tables do not wrap at rich's default 80 columns."""
    if Console().is_terminal or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=100_000)


console = _console()


@app.callback()
def _root() -> None:
    """latencykit: per-device latency lookup tables, predictors and latency-constrained search."""


JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")

SEED_MAX = 2**32 - 1
"""Seeds are checked at the edge: numpy and torch take 0 .. 2**32-1 (torch raises on larger ones)."""


def non_empty_file(value: Path | None) -> Path | None:
    """Typer callback for input files (with exists=True, dir_okay=False, readable=True): refuse an empty one."""
    if value is not None and value.stat().st_size == 0:
        raise typer.BadParameter(f"file {str(value)!r} is empty.")
    return value


def one_of(choices: Callable[[], Iterable[str]]) -> Callable[[Any], Any]:
    """Typer callback: the value must be one of `choices()` (a registry's names, plugins included)."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        known = list(choices())
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in known:
                raise typer.BadParameter(f"{v!r} is not one of {', '.join(map(repr, known))}.")
        return value

    return check


def positive(value: float | None) -> float | None:
    """Typer callback for a float that must be > 0 (and finite)."""
    if value is not None and not (0 < value < float("inf")):
        raise typer.BadParameter(f"{value!r} must be a positive number.")
    return value


def emit(data: Any, as_json: bool, render: Callable[[Any], Any] | None = None) -> None:
    """Print `data` as JSON, or through `render` (which returns a rich renderable) for people."""
    if as_json or render is None:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(render(data))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def main(argv: list[str] | None = None) -> None:
    """Run the command line; every error a user can act on ends as one `error: ...` line and exit code 2."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from latencykit.errors import LatencykitError

    try:
        code = app(args=argv, prog_name="latencykit", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `latencykit` or `latencykit lut` alone: the help, as before
        exc.show()
        raise SystemExit(exc.exit_code)
    except (ClickException, LatencykitError) as exc:
        message = exc.format_message() if isinstance(exc, ClickException) else str(exc)
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        raise SystemExit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:
        typer.echo("interrupted: finished work is saved; run the same command again to resume", err=True)
    raise SystemExit(code if isinstance(code, int) else 0)
