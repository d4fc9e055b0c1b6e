"""Streaming rational resampler: samples at ``fs_in_hz`` -> samples at ``fs_out_hz``.

Takes 1-D chunks; gives the output samples that the input so far determines,
with ``next_output_index`` telling the stream index of the next one. Output
sample ``m`` sits exactly at time ``m / fs_out_hz`` (no time shift: the kernel
is centred), so events keep their timing; only latency grows by ``HALF_TAPS``
input samples. The kernel is a Kaiser-windowed sinc cut at 0.45 x the lower
Nyquist, applied polyphase (one weight row per output phase), vectorised per
chunk. Chunk-size invariant: each output is one fixed dot product.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

HALF_TAPS = 16


class Resampler:
    def __init__(self, fs_in_hz: float, fs_out_hz: float, half_taps: int = HALF_TAPS):
        if fs_in_hz <= 0 or fs_out_hz <= 0:
            raise ValueError(f"sampling rates must be positive, got {fs_in_hz} -> {fs_out_hz}")
        ratio = Fraction(fs_in_hz / fs_out_hz).limit_denominator(1000)
        self.fs_in_hz, self.fs_out_hz = float(fs_in_hz), float(fs_out_hz)
        self.down, self.up = ratio.numerator, ratio.denominator  # t_m = m * down / up input samples
        self.identity = self.down == self.up
        K = half_taps if not self.identity else 0
        self.half_taps = K
        scale = min(1.0, self.up / self.down)
        fc = 0.45 * scale  # cycles per input sample
        taps = np.arange(-K + 1, K + 1)  # x[floor + j] for j in taps
        phases = np.arange(self.up) / self.up
        d = phases[:, None] - taps[None, :]
        if K:
            window = np.i0(6.0 * np.sqrt(np.clip(1 - (d / K) ** 2, 0, None))) / np.i0(6.0)
            w = 2 * fc * np.sinc(2 * fc * d) * window
        else:
            w = np.ones((1, 1))
        self._weights = w / w.sum(axis=1, keepdims=True) if K else w
        self._taps = taps if K else np.array([0])
        self._buf = np.zeros(0)
        self._buf_start = -K  # stream index of _buf[0]; negative indices are zero padding
        if K:
            self._buf = np.zeros(K)
        self._n_in = 0
        self.next_output_index = 0

    def outputs_after(self, n_in: int) -> int:
        """How many output samples (stream indices 0..k-1) ``n_in`` input samples determine
        (what ``next_output_index`` will be once they have all been processed)."""
        if self.identity:
            return max(self.next_output_index, n_in)
        return max(self.next_output_index, ((n_in - self.half_taps) * self.up - 1) // self.down + 1)

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.identity:
            self.next_output_index += len(x)
            return x.copy()
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        return self._emit(self._n_in)

    def flush(self) -> np.ndarray:
        """Emit the outputs held back for look-ahead, treating the future as zeros."""
        if self.identity:
            return np.zeros(0)
        self._buf = np.concatenate([self._buf, np.zeros(self.half_taps)])
        out = self._emit(self._n_in + self.half_taps, limit=self._n_in)
        return out

    def _emit(self, available: int, limit: int | None = None) -> np.ndarray:
        # output m needs input up to floor(m*down/up) + K, exclusive bound available
        m0 = self.next_output_index
        K = self.half_taps
        last_ok = ((available - K) * self.up - 1) // self.down  # floor + K <= available - 1
        if limit is not None:
            last_ok = min(last_ok, (limit * self.up - 1) // self.down)
        if last_ok < m0:
            return np.zeros(0)
        m = np.arange(m0, last_ok + 1)
        num = m * self.down
        if self.up == 1:
            # integer decimation: output m's taps are buf[m*down + taps], a fixed stride apart, and
            # every output uses the one weight row: a strided view instead of a gathered copy
            # (the same rows, each summed the same way: same values)
            buf = np.ascontiguousarray(self._buf)
            item = buf.itemsize
            first = int(num[0]) + int(self._taps[0]) - self._buf_start
            rows = np.ndarray((len(num), len(self._taps)), dtype=buf.dtype, buffer=buf, offset=first * item,
                              strides=(self.down * item, item))
            y = np.einsum("ij,ij->i", rows, np.broadcast_to(self._weights[0], rows.shape))
        else:
            floor, phase = np.divmod(num, self.up)
            idx = (floor - self._buf_start)[:, None] + self._taps
            y = np.einsum("ij,ij->i", self._buf[idx], self._weights[phase])
        self.next_output_index = last_ok + 1
        keep_from = (self.next_output_index * self.down) // self.up - K + 1
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return y
