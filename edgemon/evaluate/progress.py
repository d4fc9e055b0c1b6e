"""Progress of long work on stderr: an iterable in, the same items out, a bar or log lines beside.

    for name in (bar := progress(records, total=len(records), desc="qrs", quiet=args.json)):
        ...
        bar.write(line)          # a result line for stdout, without tearing the bar

On a terminal (stderr is a TTY and ``quiet`` is false) a one-line bar with
count, percentage, elapsed time, ETA and the current item is redrawn at most
``redraw_s`` apart. Otherwise (a pipe, a CI log, or ``--json`` output) a plain
line is logged at most every ``log_every_s`` (default 30 s), and one at the
end if the work took that long; short runs print nothing. Progress never goes
to stdout, so ``--json`` output stays exactly one JSON object.

``EDGEMON_PROGRESS`` overrides the choice: ``bar``, ``log`` or ``off``.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Callable, Generic, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")
MODES = ("auto", "bar", "log", "off")


def format_duration(seconds: float) -> str:
    """'42s', '3:07', '1:02:09'."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress(Generic[T]):
    """Iterate to advance; see the module doc. ``mode``: auto, bar, log or off."""

    def __init__(self, iterable: Iterable[T], total: int | None = None, desc: str = "", *, quiet: bool = False,
                 mode: str = "auto", stream: TextIO | None = None, log_every_s: float = 30.0,
                 redraw_s: float = 0.1, item_label: Callable[[T], str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in MODES:
            raise ValueError(f"progress mode '{mode}': expected one of {', '.join(MODES)}")
        self.iterable = iterable
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.desc = desc
        self._stream = stream
        self.log_every_s = log_every_s
        self.redraw_s = redraw_s
        self.item_label = item_label
        self.clock = clock
        self.n = 0
        self._item = ""
        self._drawn = False
        self._running = False
        self._t0 = self._last_draw = self._last_log = 0.0
        env = os.environ.get("EDGEMON_PROGRESS", "").strip().lower()
        if mode == "auto" and env in ("bar", "log", "off"):
            mode = env
        if mode == "auto":
            mode = "bar" if (not quiet and _isatty(self.stream) and os.environ.get("TERM") != "dumb") else "log"
        self.mode = mode

    @property
    def stream(self) -> TextIO:
        # Looked up on use, so a replaced sys.stderr (pytest's capsys) is honoured.
        return self._stream if self._stream is not None else sys.stderr

    # -- iteration ---------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        self._t0 = self._last_log = self.clock()
        self._last_draw = -1e9
        self._running = True
        self._draw(force=True)
        try:
            for item in self.iterable:
                if self.item_label is not None:
                    self._item = self.item_label(item)
                self._draw()
                yield item
                self.n += 1
                self._draw()
        finally:
            self.close()

    def close(self) -> None:
        """Finish the bar (newline) or log the closing line; idempotent."""
        if self.mode == "bar" and self._drawn:
            self._draw(force=True, final=True)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
        elif self.mode == "log" and self._running and self.clock() - self._t0 >= self.log_every_s > 0:
            self._log_line(final=True)
        self._running = False

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print ``text`` (a result line, to stdout by default) without mixing it into the bar."""
        out = file if file is not None else sys.stdout
        if self.mode == "bar" and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
        out.write(text + "\n")
        out.flush()
        self._draw(force=True)

    # -- rendering ---------------------------------------------------------
    def _eta(self, now: float) -> float | None:
        if not self.total or self.n == 0:
            return None
        return (now - self._t0) / self.n * (self.total - self.n)

    def _draw(self, force: bool = False, final: bool = False) -> None:
        now = self.clock()
        if self.mode == "log":
            if self.log_every_s > 0 and now - self._last_log >= self.log_every_s:
                self._log_line()
            return
        if self.mode != "bar" or (not force and now - self._last_draw < self.redraw_s):
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 24)).columns
        self.stream.write("\r\033[K" + self.render(now, width, final))
        self.stream.flush()
        self._drawn = True

    def render(self, now: float, width: int = 100, final: bool = False) -> str:
        """The bar text for the current state (no control characters)."""
        elapsed = now - self._t0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            frac = min(1.0, self.n / self.total)
            eta = self._eta(now)
            tail = (f" {self.n}/{self.total} {100 * frac:3.0f}% {format_duration(elapsed)}"
                    + ("" if final else f" ETA {format_duration(eta) if eta is not None else '?'}"))
        else:
            frac = None
            tail = f" {self.n} {format_duration(elapsed)}"
        item = f" {self._item}" if self._item and not final else ""
        bar_w = max(10, min(40, width - len(head) - len(tail) - len(item) - 4))
        if frac is None:
            bar = ""
        else:
            filled = int(round(frac * bar_w))
            bar = "[" + "#" * filled + "." * (bar_w - filled) + "]"
        return (head + bar + tail + item)[: max(20, width - 1)]

    def _log_line(self, final: bool = False) -> None:
        now = self.clock()
        self._last_log = now
        elapsed = format_duration(now - self._t0)
        if self.total:
            eta = self._eta(now)
            state = (f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%) in {elapsed}"
                     + ("" if final else f", ETA {format_duration(eta) if eta is not None else '?'}"))
        else:
            state = f"{self.n} done in {elapsed}"
        word = "done" if final else "progress"
        self.stream.write(f"edgemon: {self.desc or 'work'}: {word} {state}\n")
        self.stream.flush()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", *, quiet: bool = False,
             **kwargs) -> Progress[T]:
    """Wrap ``iterable`` in a ``Progress`` (bar on a TTY, occasional log lines otherwise).

    quiet: the command prints machine output (``--json``): no bar, log lines only.
    """
    return Progress(iterable, total, desc, quiet=quiet, **kwargs)


class BarStack:
    """Nested progress bars of one command plus a logger that writes through the innermost one.

    ``each(items, total, desc)`` is the loop wrapper the evaluate functions take;
    ``log(msg)`` prints a line (to ``log_file``, stderr by default) without tearing a
    running terminal bar. ``quiet``: the command prints --json (no bar, plain log lines).
    """

    def __init__(self, quiet: bool, log_file: TextIO | None = None, prefix: str = "",
                 item_label: Callable[[object], str] | None = None):
        self.quiet = quiet
        self.log_file = log_file
        self.prefix = prefix
        self.item_label = item_label
        self._bars: list[Progress] = []

    def each(self, items: Iterable[T], total: int | None, desc: str) -> Iterator[T]:
        bar = progress(items, total=total, desc=desc, quiet=self.quiet, item_label=self.item_label)
        self._bars.append(bar)
        try:
            yield from bar
        finally:
            self._bars.remove(bar)

    def log(self, msg: str) -> None:
        line = self.prefix + msg
        out = self.log_file if self.log_file is not None else sys.stderr
        if self._bars:
            self._bars[-1].write(line, file=out)
        else:
            print(line, file=out, flush=True)


def first_item_label(item) -> str:
    """Item label for loops over (name, ...) tuples or plain names."""
    return str(item[0] if isinstance(item, tuple) else item)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
