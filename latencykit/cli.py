"""The command line: each command parses arguments, calls one library function, prints the result.

Every LatencykitError becomes one line on stderr and exit code 2; nothing below this module prints.
"""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Hardware-aware latency tables, predictors and latency-constrained NAS.")


def main() -> None:
    from latencykit.errors import LatencykitError

    try:
        app(standalone_mode=False)
    except LatencykitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2)
