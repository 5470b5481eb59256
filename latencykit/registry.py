"""One small registry mechanism for every named kind (devices, spaces, predictors, ...).

Built-ins register with a decorator; third parties add entries through an entry-point group,
loaded lazily the first time a name is looked up or listed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from latencykit.errors import UnknownNameError

T = TypeVar("T")


def load_object(path: str) -> object:
    """The object a 'package.module:attribute' path names (imported on first use)."""
    module, _, attr = path.partition(":")
    obj: object = import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Maps names to factories; `group` is the entry-point group third parties use."""

    def __init__(self, kind: str, group: str | None = None,
                 catalogue: "Callable[[Registry[T]], None] | None" = None) -> None:
        self.kind = kind
        self.group = group
        self.catalogue = catalogue
        """Adds entries read from data files, on first lookup (never at import)."""
        self._items: dict[str, T] = {}
        self._plugins_loaded = group is None and catalogue is None
        self.plugin_errors: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        if self.catalogue is not None:
            try:
                self.catalogue(self)
            except Exception:
                self._plugins_loaded = False  # a broken data file is reported on every lookup, not cached
                raise
        for ep in entry_points(group=self.group) if self.group else ():
            if ep.name in self._items:
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-ins
                self.plugin_errors[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            if name in self.plugin_errors:
                raise UnknownNameError(
                    f"{self.kind} {name!r} failed to load: {self.plugin_errors[name]}"
                ) from None
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
