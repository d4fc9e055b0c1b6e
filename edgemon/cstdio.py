"""What C libraries print: capture a file descriptor while a call runs.

``captured(stream)`` is a context manager over ``sys.stdout`` or ``sys.stderr``;
it yields a list that holds, after the block, the text C code wrote to that
stream's file descriptor (whitespace runs folded to one space), or nothing.
Two C libraries print where edgemon's own output goes: pyedflib's reader
printf()s why a file is not EDF onto stdout, which carries ``edgemon replay``'s
JSON lines, and the TFLite runtimes write "INFO: Created TensorFlow Lite
XNNPACK delegate for CPU." onto stderr, which carries the daemon's one JSON log
object per line. Callers put the text into their error message or log.

The descriptor is process-wide, so the capture happens only while the process
has one thread: another thread's output must never vanish into it. Otherwise,
and when the stream has no descriptor (a test's capture), the block runs as is.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import threading
from typing import Iterator, TextIO


@contextlib.contextmanager
def captured(stream: TextIO) -> Iterator[list[str]]:
    said: list[str] = []
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None or threading.active_count() > 1:
        yield said
        return
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield said
        finally:
            try:
                ctypes.CDLL(None).fflush(None)  # C stdio buffers a redirected stream
            except (OSError, AttributeError):  # pragma: no cover - no C library handle
                pass
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = " ".join(tmp.read().decode("utf-8", "replace").split())
            if text:
                said.append(text)
