"""The command line: each command parses arguments, calls one library function, prints the result.

Every LatencykitError becomes one line on stderr and exit code 2; nothing below the CLI prints.
The commands live in the other modules of this package, one per subsystem; each imports `app`
from here, and `latencykit.cli` imports them all.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hardware-aware latency tables, predictors and latency-constrained NAS.")
console = Console()


@app.callback()
def _root() -> None:
    """latencykit: per-device latency lookup tables, predictors and latency-constrained search."""


JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


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


def main() -> None:
    from latencykit.errors import LatencykitError

    try:
        app(standalone_mode=True)
    except LatencykitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is saved; run the same command again to resume", err=True)
        raise SystemExit(130)
