"""Accuracy-signal scores computed once and reused: across devices, budgets and repeated runs.

`ScoreCache` is a SQLite file (stdlib `sqlite3`, default `$LATENCYKIT_HOME/scores.sqlite`) keyed by
(space name, space digest, architecture, signal name, signal settings, weights hash). A signal that
offers `cache_key() -> (settings, weights)` is cached; one without it (the parameter count, cheaper
than a lookup) is computed each time. `Scorer` puts a per-run memory, the file and a thread pool
in front of a signal: `scorer.many(archs)` looks every architecture up, scores the misses on
`threads` worker threads and writes them back in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

from latencykit.arch import Arch
from latencykit.paths import home
from latencykit.space import SearchSpace

_SCHEMA = """CREATE TABLE IF NOT EXISTS scores (
    space TEXT NOT NULL, space_digest TEXT NOT NULL, arch TEXT NOT NULL, signal TEXT NOT NULL,
    settings TEXT NOT NULL, weights TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (space, space_digest, signal, settings, weights, arch))"""


def arch_key(arch: Arch) -> str:
    """An architecture as compact, key-sorted JSON: the cache's row key."""
    return json.dumps(arch.to_dict(), sort_keys=True, separators=(",", ":"))


def default_cache_path() -> Path:
    return home() / "scores.sqlite"


class ScoreCache:
    """Persistent (space, arch, signal, settings, weights) -> score; safe for several processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_cache_path()  # made on the first write, not before

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        return db

    def get_many(self, space: SearchSpace, signal: str, key: tuple[str, str],
                 archs: Iterable[Arch]) -> dict[Arch, float]:
        by_text = {arch_key(a): a for a in archs}
        found: dict[Arch, float] = {}
        texts = list(by_text)
        if not self.path.exists():
            return found
        db = self._connect()
        try:
            for i in range(0, len(texts), 500):  # SQLite's host-parameter limit
                chunk = texts[i: i + 500]
                rows = db.execute(
                    f"SELECT arch, score FROM scores WHERE space=? AND space_digest=? AND signal=? AND settings=? "
                    f"AND weights=? AND arch IN ({','.join('?' * len(chunk))})",
                    (space.name, space.digest, signal, key[0], key[1], *chunk)).fetchall()
                found.update((by_text[t], float(s)) for t, s in rows)
        finally:
            db.close()
        return found

    def put_many(self, space: SearchSpace, signal: str, key: tuple[str, str], scores: dict[Arch, float]) -> None:
        if not scores:
            return
        db = self._connect()
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                               [(space.name, space.digest, arch_key(a), signal, key[0], key[1], float(s))
                                for a, s in scores.items()])
        finally:
            db.close()

    def count(self) -> int:
        if not self.path.exists():
            return 0
        db = self._connect()
        try:
            return int(db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
        finally:
            db.close()


class Scorer:
    """An accuracy signal behind a memory, an optional persistent cache and a thread pool.

    Callable on one architecture (what `search` needs) and on many (`many`); counts what it computed
    (`computed`) and what it found (`hits`)."""

    def __init__(self, space: SearchSpace, signal, cache: Optional[ScoreCache] = None, threads: int = 1) -> None:
        self.space, self.signal, self.threads = space, signal, max(1, threads)
        key = getattr(signal, "cache_key", None)
        self.key = key() if key else None
        self.cache = cache if self.key is not None else None
        self.memory: dict[Arch, float] = {}
        self.computed = self.hits = 0

    @property
    def name(self) -> str:
        return self.signal.name

    @property
    def kind(self) -> str:
        return self.signal.kind

    def __call__(self, arch: Arch) -> float:
        return self.many([arch])[0]

    def many(self, archs: list[Arch]) -> list[float]:
        todo = list(dict.fromkeys(a for a in archs if a not in self.memory))
        if todo and self.cache is not None:
            found = self.cache.get_many(self.space, self.signal.name, self.key, todo)
            self.memory.update(found)
            self.hits += len(found)
            todo = [a for a in todo if a not in found]
        if todo:
            if self.threads > 1 and len(todo) > 1:
                import torch

                torch_threads = torch.get_num_threads()
                try:
                    with ThreadPoolExecutor(min(self.threads, len(todo))) as pool:
                        values = list(pool.map(self.signal.score, todo))
                finally:
                    torch.set_num_threads(torch_threads)
            else:
                values = [self.signal.score(a) for a in todo]
            new = dict(zip(todo, (float(v) for v in values)))
            self.memory.update(new)
            self.computed += len(new)
            if self.cache is not None:
                self.cache.put_many(self.space, self.signal.name, self.key, new)
        return [self.memory[a] for a in archs]
