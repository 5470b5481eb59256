"""The package version, importable by every layer (the root package is the public facade)."""

__version__ = "0.1.0"
