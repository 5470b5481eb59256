"""Silence native libraries that write to the process's stdout/stderr (LiteRT, absl, tqdm bars).

Nothing below the CLI prints, but the TFLite runtime and converters log from C++ straight to file
descriptors 1 and 2, which `contextlib.redirect_stdout` cannot catch. `silenced` points both
descriptors at a temporary file for the duration and hands back what was written, so an error
can still quote it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


class Captured:
    """What the silenced block wrote; `text` is filled in when the block ends."""

    text: str = ""

    def tail(self, lines: int = 5) -> str:
        return " | ".join(line.strip() for line in self.text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def silenced() -> Iterator[Captured]:
    captured = Captured()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
