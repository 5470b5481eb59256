"""Files latencykit writes: one atomic-write helper, and one writer per table.

A reader sees the old file or the new one, never half of one: every file goes to a temporary file
in the same folder, is flushed to disk and replaces the target with `os.replace`. When the write
fails (a full disk, a read-only folder) the old file stays as it was and the error is one line.

A table has one writer at a time: `writer_lock` holds a file lock beside it (`TABLE.lock`, with
the holder's pid in `TABLE.lock.pid`) for as long as a `profile` or an import writes it; a second
writer is refused at once, naming the holder.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from latencykit.errors import LatencykitError


class FileWriteError(LatencykitError):
    """A file that could not be written (full disk, no permission); the previous one is unchanged."""


class TableBusyError(LatencykitError):
    """Another process is writing the same table."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write `path` through `write(temporary_path)`, then move it into place in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(name)
    try:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _pid_file(table: Path) -> Path:
    return table.with_name(table.name + ".lock.pid")


@contextmanager
def writer_lock(table: str | Path) -> Iterator[None]:
    """Hold the one-writer lock of `table` (refused at once when another process holds it)."""
    table = Path(table)
    try:
        table.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(f"cannot write {table}: {exc.strerror or exc}") from None
    lock = FileLock(str(table.with_name(table.name + ".lock")), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = f"process {int(_pid_file(table).read_text().strip())}"
        except (OSError, ValueError):
            holder = "another process"
        raise TableBusyError(f"{holder} is already writing {table}; wait for it to finish "
                             "(or stop it: what it measured is kept and resumes)") from None
    except OSError as exc:
        raise FileWriteError(f"cannot lock {table}: {exc.strerror or exc}") from None
    try:
        atomic_write_text(_pid_file(table), f"{os.getpid()}\n")
        yield
    finally:
        _pid_file(table).unlink(missing_ok=True)
        lock.release()
