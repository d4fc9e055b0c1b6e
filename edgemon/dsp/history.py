"""Append-only sample history for streaming stages.

Takes chunks of samples (``append``) and the stream index before which they
are no longer needed (``trim``); gives views of any kept stream span.

Why: the streaming stages keep a few seconds of past samples and used to
``np.concatenate`` the whole history with every chunk (one allocation and one
copy of seconds of signal per chunk per buffer). Here a chunk is copied once
into spare capacity and trimming only moves an index; the buffer is
reallocated (live samples copied once) when the capacity runs out. Values are
the samples themselves, so results do not change. A view stays valid after
later appends and trims: old memory is never overwritten, only replaced.
"""
from __future__ import annotations

import numpy as np


class History:
    def __init__(self, dtype=np.float64, start: int = 0, capacity: int = 1024):
        self._a = np.empty(max(1, int(capacity)), dtype=dtype)
        self._lo = 0             # index in _a of the first kept sample
        self._hi = 0             # one past the last
        self.start = int(start)  # stream index of the first kept sample

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def end(self) -> int:
        """Stream index one past the last sample."""
        return self.start + self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if self._hi + n > len(self._a):
            live = self._hi - self._lo
            new = np.empty(max(2 * (live + n), 1024), dtype=self._a.dtype)
            new[:live] = self._a[self._lo:self._hi]
            self._a, self._lo, self._hi = new, 0, live
        self._a[self._hi:self._hi + n] = x
        self._hi += n

    def trim(self, keep_from: int) -> None:
        """Forget the samples before stream index keep_from."""
        cut = min(int(keep_from) - self.start, self._hi - self._lo)
        if cut > 0:
            self._lo += cut
            self.start += cut

    def values(self) -> np.ndarray:
        """All kept samples (a view), the first at stream index ``start``."""
        return self._a[self._lo:self._hi]

    def span(self, a: int, b: int) -> np.ndarray:
        """Samples of stream indices [a, b) (a view; clipped to what is kept, like a slice)."""
        lo = self._lo + max(0, a - self.start)
        hi = self._lo + max(0, b - self.start)
        return self._a[min(lo, self._hi):min(hi, self._hi)]
