"""Causal streaming IIR filters that equal ``scipy.signal.sosfilt`` with carried state.

Takes: 1-D (or 2-D ``(n, channels)``) float arrays, chunk after chunk.
Gives: the filtered samples, same length, immediately.

Why not scipy at run time: ``import scipy.signal`` costs ~1.3 s and ~70 MB on
start-up, more than the daemon's whole budget. Filters are therefore designed
here in numpy (Butterworth via the bilinear transform, the notch in closed form;
tests prove them equal to ``scipy.signal.butter``/``iirnotch``) and run as a
block state-space recursion: per block of ``L`` samples, ``y = T x + O s`` and
``s' = A^L s + Q x``, where ``T`` is the impulse-response Toeplitz matrix and
``O``/``Q`` map the state in and out. This is exact linear algebra (tests:
equal to ``sosfilt`` within 1e-9) and costs a few matrix products per block
instead of a Python loop per sample. The state layout equals sosfilt's ``zi``
(transposed direct form II, shape ``(n_sections, 2)``). Blocks are aligned to
the stream, so the output is bit-identical for any chunking.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

BLOCK = 128  # samples per state-space block: measured fastest of 32..256 at 250 Hz, 1 s chunks


# --------------------------------------------------------------------------- design

def _bilinear_zpk(z: np.ndarray, p: np.ndarray, k: float, fs_hz: float):
    fs2 = 2.0 * fs_hz
    z_d = (fs2 + z) / (fs2 - z)
    p_d = (fs2 + p) / (fs2 - p)
    # zeros at analog infinity land at Nyquist (z = -1)
    z_d = np.append(z_d, -np.ones(len(p) - len(z)))
    k_d = k * np.real(np.prod(fs2 - z) / np.prod(fs2 - p))
    return z_d, p_d, k_d


def _zpk_to_sos(z: np.ndarray, p: np.ndarray, k: float) -> np.ndarray:
    """Pair conjugate poles (and zeros) into biquads; gain in the first section.

    Only what Butterworth low/high-pass needs: real zeros (all at +1 or -1) and
    conjugate pole pairs plus at most one real pole.
    """
    poles = sorted(p, key=lambda c: (abs(c.imag) < 1e-12, -abs(c)))
    pairs: list[list[complex]] = []
    used = [False] * len(poles)
    for i, pi in enumerate(poles):
        if used[i]:
            continue
        used[i] = True
        if abs(pi.imag) > 1e-12:
            j = min((j for j in range(len(poles)) if not used[j]),
                    key=lambda j: abs(poles[j] - np.conj(pi)))
            used[j] = True
            pairs.append([pi, poles[j]])
        else:
            pairs.append([pi])
    zeros = list(np.real(z))
    sos = []
    for pr in pairs:
        a = np.real(np.poly(pr))
        zz = [zeros.pop() for _ in range(len(pr))]
        b = np.real(np.poly(zz))
        if len(a) == 2:  # first-order section, padded to a biquad
            a = np.append(a, 0.0)
            b = np.append(b, 0.0)
        sos.append(np.concatenate([b, a]))
    sos = np.array(sos, dtype=float)
    sos[0, :3] *= k
    return sos


def butter_sos(order: int, cutoff_hz: float, fs_hz: float, btype: str) -> np.ndarray:
    """Digital Butterworth low- or high-pass as second-order sections (== scipy.signal.butter)."""
    if btype not in ("low", "high"):
        raise ValueError(f"btype must be 'low' or 'high', got {btype!r}")
    if not 0 < cutoff_hz < fs_hz / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie between 0 and Nyquist ({fs_hz / 2} Hz)")
    warped = 2.0 * fs_hz * math.tan(math.pi * cutoff_hz / fs_hz)
    m = np.arange(-order + 1, order, 2)
    p = -np.exp(1j * np.pi * m / (2 * order))  # analog prototype poles, cutoff 1 rad/s
    if btype == "low":
        z, p, k = np.array([]), warped * p, warped ** order
    else:
        z, p, k = np.zeros(order), warped / p, 1.0
    return _zpk_to_sos(*_bilinear_zpk(z, p, k, fs_hz))


def notch_sos(f0_hz: float, fs_hz: float, quality: float = 30.0) -> np.ndarray:
    """Second-order IIR notch (== scipy.signal.iirnotch) as one section."""
    if not 0 < f0_hz < fs_hz / 2:
        raise ValueError(f"notch {f0_hz} Hz must lie between 0 and Nyquist ({fs_hz / 2} Hz)")
    w0 = 2.0 * f0_hz / fs_hz
    beta = math.tan(w0 / quality * math.pi / 2.0)
    gain = 1.0 / (1.0 + beta)
    c = math.cos(math.pi * w0)
    return np.array([[gain, -2.0 * gain * c, gain, 1.0, -2.0 * gain * c, 2.0 * gain - 1.0]])


def ecg_sos(fs_hz: float, band_hz: tuple[float, float] = (0.5, 40.0), mains_hz: float = 50,
            order: int = 2) -> np.ndarray:
    """The ECG chain: baseline removal (high-pass), anti-EMG low-pass, mains notch.

    The low-pass is dropped when its corner is at or above Nyquist (e.g. 40 Hz
    at 64 Hz), the notch when mains is 0 or above Nyquist (a 50 Hz notch means
    nothing at 100 Hz sampling).
    """
    low, high = band_hz
    parts = [butter_sos(order, low, fs_hz, "high")]
    if high < fs_hz / 2:
        parts.append(butter_sos(order, high, fs_hz, "low"))
    if mains_hz and mains_hz < fs_hz / 2 * 0.98:
        parts.append(notch_sos(mains_hz, fs_hz))
    return np.vstack(parts)


# --------------------------------------------------------------------------- execution

@lru_cache(maxsize=32)
def _block_matrices(sos_key: bytes, n_sections: int, block: int):
    """State-space (A, B, C, D) of the cascade and its per-block matrices."""
    sos = np.frombuffer(sos_key, dtype=float).reshape(n_sections, 6)
    sos = sos / sos[:, 3:4]
    n = 2 * n_sections
    A = np.zeros((n, n)); Bv = np.zeros(n); C = np.zeros(n); D = 1.0
    # Cascade: section i's input is section i-1's output y_{i-1} = C_{i-1} s + D_{i-1} u.
    # Track the input of the current section as (row over states, coefficient on u).
    in_s = np.zeros(n); in_u = 1.0
    for i, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        r = 2 * i
        # TDF-II: y = b0*v + z1; z1' = (b1 - a1 b0) v - a1 z1 + z2; z2' = (b2 - a2 b0) v - a2 z1
        g1, g2 = b1 - a1 * b0, b2 - a2 * b0
        A[r] += g1 * in_s; A[r, r] += -a1; A[r, r + 1] += 1.0
        A[r + 1] += g2 * in_s; A[r + 1, r] += -a2
        Bv[r] = g1 * in_u; Bv[r + 1] = g2 * in_u
        out_s = b0 * in_s; out_s[r] += 1.0
        in_s, in_u = out_s, b0 * in_u
    C, D = in_s, in_u
    powers = [np.eye(n)]
    for _ in range(block):
        powers.append(A @ powers[-1])
    O = np.array([C @ powers[i] for i in range(block)])                 # (L, n): state -> outputs
    h = np.array([D] + [C @ powers[i] @ Bv for i in range(block - 1)])  # impulse response
    T = np.zeros((block, block))
    for i in range(block):
        T[i, : i + 1] = h[i::-1]
    Q = np.array([powers[block - 1 - k] @ Bv for k in range(block)]).T  # (n, L): inputs -> end state
    return T, O, Q, np.array(powers)


class SosFilter:
    """A cascade of biquads applied causally with carried state, per channel.

    ``process`` accepts any chunk length and returns the same values as
    ``scipy.signal.sosfilt(sos, whole_signal)`` (within rounding, < 1e-9), and
    *bit-identical* values whatever the chunking: blocks are aligned to the
    stream's sample index and every block is computed by the same fixed-shape
    products (a partial block is zero-padded, its outputs re-emitted from the
    same sums once it completes). Non-finite input samples are replaced by the
    previous finite sample so a NaN cannot poison the state; callers mark them
    invalid.
    """

    def __init__(self, sos: np.ndarray, n_channels: int = 1, block: int = BLOCK):
        self.sos = np.ascontiguousarray(np.atleast_2d(sos), dtype=float)
        if self.sos.shape[1] != 6:
            raise ValueError(f"sos must have shape (n_sections, 6), got {self.sos.shape}")
        self.block = block
        T, O, Q, Apow = _block_matrices(self.sos.tobytes(), self.sos.shape[0], block)
        self._T, self._O, self._Q, self._Apow = T, O, Q, Apow
        self._P = Apow[block]
        n_state = 2 * self.sos.shape[0]
        self.state = np.zeros((n_channels, n_state))      # state at the start of the open block
        self._partial = np.zeros((n_channels, block))     # inputs of the open block so far
        self._filled = 0                                  # how many of them
        self._last = np.zeros(n_channels)
        # O @ state for the open block (constant until the block completes), so a block that
        # spans several chunks costs one T product per chunk and nothing else of this size
        self._os = np.zeros((n_channels, block))

    @property
    def zi(self) -> np.ndarray:
        """State after the last sample, in scipy's layout: (n_sections, 2) for one channel."""
        n_sec = self.sos.shape[0]
        states = []
        for ch in range(len(self.state)):
            s = self.state[ch]
            r = self._filled
            if r:
                s = self._Apow[r] @ s + self._Q[:, self.block - r:] @ self._partial[ch, :r]
            states.append(s)
        zi = np.array(states).reshape(len(states), n_sec, 2).transpose(1, 0, 2)
        return zi[:, 0, :] if len(states) == 1 else zi

    def reset(self) -> None:
        self.state[:] = 0.0
        self._partial[:] = 0.0
        self._os[:] = 0.0
        self._filled = 0
        self._last[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim == 1 and len(self.state) == 1:  # the streaming case: no 2-D copies
            y, self._filled = self._run(self._clean(x, 0), 0, self._filled)
            return y
        one_d = x.ndim == 1
        x2 = x[:, None] if one_d else x
        if x2.shape[1] != self.state.shape[0]:
            raise ValueError(f"filter has {self.state.shape[0]} channels, chunk has {x2.shape[1]}")
        out = np.empty_like(x2)
        filled = self._filled
        for ch in range(x2.shape[1]):
            out[:, ch], self._filled = self._run(self._clean(x2[:, ch], ch), ch, filled)
        return out[:, 0] if one_d else out

    def _clean(self, x: np.ndarray, ch: int) -> np.ndarray:
        if np.isfinite(x).all():
            if len(x):
                self._last[ch] = x[-1]
            return x
        finite = np.isfinite(x)
        idx = np.where(finite, np.arange(len(x)), -1)
        np.maximum.accumulate(idx, out=idx)
        x = np.where(idx >= 0, x[np.maximum(idx, 0)], self._last[ch])
        if len(x):
            self._last[ch] = x[-1]
        return x

    def _run(self, x: np.ndarray, ch: int, filled: int) -> tuple[np.ndarray, int]:
        y, filled = _run_blocks(self._T, self._os[ch][None], [(self._O, self._P, self._Q)], [self.state[ch]],
                                self._partial[ch], x, filled)
        return y[0], filled


def _run_blocks(T_all: np.ndarray, os_all: np.ndarray, mats: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                states: list[np.ndarray], part: np.ndarray, x: np.ndarray, filled: int) -> tuple[np.ndarray, int]:
    """Advance K filters (same block length L) over the same cleaned input x.

    ``T_all``: their input->output block matrices stacked, (K*L, L); ``os_all`` (K, L): each
    one's cached ``O @ state`` for the open block; ``mats``: each one's (O, P, Q); ``states``:
    each one's state vector. ``os_all`` and ``states`` are views into the filters and are
    updated in place. ``part`` holds the open block's inputs, zero beyond ``filled``: it is
    the zero-padded block itself, always the same memory, so every output comes from the
    same fixed-shape products whatever the chunking (a row of the stacked product equals
    that filter's own ``T @ part``: gemv computes each row on its own; tests check it).
    Returns the outputs (K, len(x)) and the new fill.
    (``ndarray.dot`` is the same BLAS product as ``@`` with less call overhead.)
    """
    K, L = os_all.shape
    n = len(x)
    y = np.empty((K, n))
    add = np.add
    pos = 0
    while pos < n:
        take = min(L - filled, n - pos)
        end = filled + take
        part[filled: end] = x[pos: pos + take]
        add(T_all.dot(part).reshape(K, L)[:, filled: end], os_all[:, filled: end], out=y[:, pos: pos + take])
        pos += take
        if end == L:  # block complete: advance the states once, with fixed-shape products
            for k, ((O, P, Q), st) in enumerate(zip(mats, states)):
                st[:] = P.dot(st) + Q.dot(part)
                os_all[k] = O.dot(st)
            part.fill(0.0)
            filled = 0
        else:
            filled = end
    return y, filled


class SosBank:
    """Several single-channel ``SosFilter``s run over the same input in one pass.

    ``process(x) -> [y_0, y_1, ...]``, each bit-identical to what its own
    ``SosFilter(sos).process`` gives (same products on the same block buffer):
    the per-chunk work that does not depend on the filter (cleaning the input,
    filling the block buffer, the block loop) is shared, and the block products
    of all filters are one product of their stacked matrices (each row computed
    as in the filter's own product). All filters use the same block length.
    ``filters[i]`` stay usable for ``sos`` and ``zi``.
    """

    def __init__(self, sos_list: list[np.ndarray], block: int = BLOCK):
        if not sos_list:
            raise ValueError("SosBank needs at least one filter")
        self.filters = [SosFilter(sos, 1, block) for sos in sos_list]
        self.block = block
        # one shared open-block buffer: every filter's _partial is this memory
        self._partial = self.filters[0]._partial
        for f in self.filters[1:]:
            f._partial = self._partial
        # their block matrices stacked, so one product per pass serves every filter; each
        # filter's cached O @ state is a row of one (K, L) array (its own _os is a view of it)
        self._T_all = np.ascontiguousarray(np.vstack([f._T for f in self.filters]))
        self._os_all = np.zeros((len(self.filters), block))
        for k, f in enumerate(self.filters):
            f._os = self._os_all[k:k + 1]
        self._mats = [(f._O, f._P, f._Q) for f in self.filters]
        self._filled = 0

    def reset(self) -> None:
        for f in self.filters:
            f.reset()
        self._filled = 0

    def process(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(x, dtype=float)
        if x.ndim != 1:
            raise ValueError(f"SosBank takes a 1-D chunk, got shape {x.shape}")
        first = self.filters[0]
        x = first._clean(x, 0)
        y, self._filled = _run_blocks(self._T_all, self._os_all, self._mats, [f.state[0] for f in self.filters],
                                      self._partial[0], x, self._filled)
        for f in self.filters:
            f._filled = self._filled
            f._last[0] = first._last[0]
        return list(y)


class EcgFilter(SosFilter):
    """Band-pass + mains notch for ECG, streaming. ``process(x_mV) -> filtered mV``."""

    def __init__(self, fs_hz: float, band_hz: tuple[float, float] = (0.5, 40.0), mains_hz: float = 50,
                 n_channels: int = 1):
        self.fs_hz = float(fs_hz)
        super().__init__(ecg_sos(fs_hz, band_hz, mains_hz), n_channels=n_channels)


class PpgFilter(SosFilter):
    """Band-pass for PPG (baseline and respiration out, pulse shape kept), streaming."""

    def __init__(self, fs_hz: float, band_hz: tuple[float, float] = (0.5, 8.0), n_channels: int = 1):
        self.fs_hz = float(fs_hz)
        super().__init__(ecg_sos(fs_hz, band_hz, mains_hz=0), n_channels=n_channels)
