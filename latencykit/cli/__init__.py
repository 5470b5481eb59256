"""The command line, a thin shell over the library (`latencykit.api`): `latencykit --help`."""

from latencykit.cli import core, lut, models, search, train  # noqa: F401  (each registers its commands)
from latencykit.cli.app import app, main

__all__ = ["app", "main"]
