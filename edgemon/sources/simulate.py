"""Synthetic ECG/PPG with exact ground truth: a scenario (or a ``Plan``) in, a signal,
its ``SimAnnotations`` and a ``Chunk`` stream out.

``simulate(scenario, duration_s, fs_hz, heart_rate_bpm, seed)`` returns
``(signal, annotations)``: a float64 1-D signal (mV for ECG, normalised units for
PPG) and the truth (beat samples and MIT symbols, rhythm episodes, a ``valid``
mask, noise spans). ``iter_simulated_chunks(...)`` replays it as chunks.
Scenarios (``SCENARIOS``):

- ``nsr``: sinus rhythm with normal heart-rate variability (LF 0.1 Hz and
  respiratory HF oscillation of the RR interval, SDNN ~ 5 % of RR).
- ``af``: atrial fibrillation: RR drawn independently from a log-normal (CV
  0.22, "irregularly irregular"), no P waves, f waves 4-9 Hz of 30-80 uV.
- ``pvc``: sinus with isolated PVCs (8/min): premature (60 % coupling), wide
  bizarre QRS with discordant T, no P, full compensatory pause.
- ``vt``: sinus with runs of ventricular tachycardia (8 and 4 V beats at 170 bpm).
- ``noise``: sinus with a muscle (EMG) burst and a motion-artefact burst.
- ``lead_off``: sinus with a lead-off span: railed flat line, ``valid`` False,
  no beats annotated in it.
- ``mixed``: sinus, AF, sinus with PVCs, a VT run, sinus, one noise burst.
- ``ppg_nsr`` / ``ppg_af``: PPG pulse waves driven by sinus / AF beat times;
  annotations are the systolic peaks.

``heart_rate_bpm`` is the mean rate of the scenario's main rhythm (sinus or AF).

How the waveform is built. neurokit2's ``ecg_simulate``/``ppg_simulate`` choose
their own beat times, so they cannot give AF RR sequences, PVC timing or exact
R-peak truth. Instead each beat is an ECGSYN-like sum of Gaussian waves (P, Q,
R, S and an asymmetric T; McSharry et al., IEEE TBME 2003) placed at beat times
chosen here, with QT following the preceding RR (Bazett) and respiratory
amplitude modulation; PPG pulses are an asymmetric systolic wave plus a
diastolic wave, delayed from the R peak and scaled by the preceding RR (short
cycles fill less). neurokit2 supplies the coloured noise (``signal_noise``:
pink background, brown baseline wander, motion artefact from brown plus
smoothed pink noise with electrode "pops", differenced white noise for EMG). It is
imported lazily here only; the daemon never imports it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from edgemon.events import Chunk
from edgemon.sources.errors import SourceError
from edgemon.sources.reference import Reference, rhythm_episodes

SCENARIOS = ("nsr", "af", "pvc", "vt", "noise", "lead_off", "mixed", "ppg_nsr", "ppg_af")

# Ventricular rate of VT runs; > 100 bpm by definition, 150-200 typical.
VT_RATE_BPM = 170.0
# Standard deviation / mean of AF RR intervals. Real AF episodes give 0.15-0.30.
AF_RR_CV = 0.22
# Value an amplifier rails to when an electrode comes off (mV input-referred).
LEAD_OFF_RAIL_MV = 5.0


@dataclass(frozen=True)
class Segment:
    """A stretch of one rhythm. rhythm: "N" (sinus), "AFIB", "VT" or "B" (bigeminy)."""

    rhythm: str
    duration_s: float
    heart_rate_bpm: float | None = None
    pvc_per_min: float = 0.0


@dataclass(frozen=True)
class Plan:
    """What to synthesise: rhythm segments plus noise bursts and lead-off spans (seconds)."""

    segments: tuple[Segment, ...]
    noise: tuple[tuple[float, float, str], ...] = ()  # (start_s, duration_s, "muscle"|"motion")
    lead_off: tuple[tuple[float, float], ...] = ()  # (start_s, duration_s)
    signal: str = "ecg"  # "ecg" or "ppg"

    @property
    def duration_s(self) -> float:
        return float(sum(s.duration_s for s in self.segments))


@dataclass(frozen=True, eq=False)
class SimAnnotations(Reference):
    """Ground truth of a simulated signal (a ``Reference`` plus what only a simulator knows).

    valid: bool mask, False in lead-off spans.
    noise_segments: [(start_sample, end_sample, "muscle"|"motion"|"lead_off")].
    """

    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    noise_segments: list[tuple[int, int, str]] = field(default_factory=list)
    signal_kind: str = "ecg"
    channel_name: str = "MLII"
    units: str = "mV"


# ------------------------------------------------------------------ scenarios

def scenario_plan(scenario: str, duration_s: float, heart_rate_bpm: float = 70.0) -> Plan:
    """The ``Plan`` behind a named scenario (see the module doc)."""
    d = float(duration_s)
    hr = float(heart_rate_bpm)
    if not (d > 0 and math.isfinite(d)):
        raise ValueError(f"duration_s must be positive, got {duration_s!r}")
    if scenario == "nsr":
        return Plan((Segment("N", d, hr),))
    if scenario == "af":
        return Plan((Segment("AFIB", d, hr),))
    if scenario == "pvc":
        return Plan((Segment("N", d, hr, pvc_per_min=8.0),))
    if scenario == "vt":
        run1 = 7.5 * 60.0 / VT_RATE_BPM  # ~8 beats
        run2 = 3.5 * 60.0 / VT_RATE_BPM  # ~4 beats
        rest = max(d - run1 - run2, 3.0)
        return Plan((Segment("N", 0.35 * rest, hr), Segment("VT", run1, VT_RATE_BPM),
                     Segment("N", 0.35 * rest, hr), Segment("VT", run2, VT_RATE_BPM),
                     Segment("N", 0.30 * rest, hr)))
    if scenario == "noise":
        return Plan((Segment("N", d, hr),),
                    noise=((0.25 * d, max(0.10 * d, 3.0), "muscle"), (0.60 * d, max(0.08 * d, 3.0), "motion")))
    if scenario == "lead_off":
        return Plan((Segment("N", d, hr),), lead_off=((0.40 * d, max(0.15 * d, 2.0)),))
    if scenario == "mixed":
        run = 7.5 * 60.0 / VT_RATE_BPM
        rest = max(d - run, 5.0)
        return Plan((Segment("N", 0.20 * rest, hr), Segment("AFIB", 0.40 * rest, max(hr, 100.0)),
                     Segment("N", 0.20 * rest, hr, pvc_per_min=6.0), Segment("VT", run, VT_RATE_BPM),
                     Segment("N", 0.20 * rest, hr)),
                    noise=((0.85 * d, max(0.05 * d, 2.0), "muscle"),))
    if scenario == "ppg_nsr":
        return Plan((Segment("N", d, hr),), signal="ppg")
    if scenario == "ppg_af":
        return Plan((Segment("AFIB", d, hr),), signal="ppg")
    raise ValueError(f"unknown scenario '{scenario}'; choose one of {', '.join(SCENARIOS)}")


def simulate(scenario: str, duration_s: float = 60.0, fs_hz: float = 250.0,
             heart_rate_bpm: float = 70.0, seed: int = 0) -> tuple[np.ndarray, SimAnnotations]:
    """Synthesise a scenario; same arguments -> identical output."""
    return synthesize(scenario_plan(scenario, duration_s, heart_rate_bpm), fs_hz, heart_rate_bpm, seed)


# ------------------------------------------------------------------ beat times

@dataclass
class _Beat:
    t: float
    symbol: str  # MIT symbol: N or V
    morph: str  # "sinus" (with P), "af" (no P), "pvc", "vt"
    rr_prev: float


def _sinus_modulation(duration_s: float, rng: np.random.Generator) -> Callable[[float], float]:
    """RR multiplier over time: LF (~0.1 Hz) + respiratory HF + slow drift."""
    f_lf = rng.uniform(0.08, 0.12)
    f_hf = rng.uniform(0.2, 0.3)
    ph1, ph2 = rng.uniform(0, 2 * np.pi, 2)
    a_lf, a_hf = rng.uniform(0.035, 0.045), rng.uniform(0.025, 0.035)
    knots_t = np.arange(0.0, duration_s + 30.0, 15.0)
    knots = np.cumsum(rng.normal(0.0, 0.012, len(knots_t)))
    knots -= knots.mean()

    def mod(t: float) -> float:
        drift = float(np.interp(t, knots_t, knots))
        return 1.0 + a_lf * math.sin(2 * math.pi * f_lf * t + ph1) + a_hf * math.sin(2 * math.pi * f_hf * t + ph2) + drift

    return mod


def _af_rr(mean_s: float, rng: np.random.Generator) -> float:
    sigma = math.sqrt(math.log(1.0 + AF_RR_CV ** 2))
    mu = math.log(mean_s) - sigma ** 2 / 2
    return float(np.clip(rng.lognormal(mu, sigma), 0.28, 2.0))


def _beat_times(plan: Plan, default_hr: float, rng: np.random.Generator):
    """Beats and rhythm boundaries (seconds) for a plan."""
    total = plan.duration_s
    mod = _sinus_modulation(total, rng)
    beats: list[_Beat] = []
    changes: list[tuple[float, str]] = []
    seg_start = 0.0
    last_t: float | None = None
    last_rr = 60.0 / default_hr
    since_pvc = 0
    for seg in plan.segments:
        seg_end = seg_start + seg.duration_s
        hr = seg.heart_rate_bpm or (VT_RATE_BPM if seg.rhythm == "VT" else default_hr)
        rr0 = 60.0 / hr
        first = True
        while True:
            if seg.rhythm in ("N", "B"):
                rr = rr0 * mod(last_t or 0.0) + rng.normal(0.0, 0.015 * rr0)
                if last_t is not None and beats and beats[-1].morph == "vt":
                    rr *= 1.25  # post-tachycardia pause
                t = (last_t + rr) if last_t is not None else rng.uniform(0.25, 0.25 + rr0)
            elif seg.rhythm == "AFIB":
                rr = _af_rr(rr0, rng)
                t = (last_t + rr) if last_t is not None else rng.uniform(0.1, 0.1 + rr0)
            elif seg.rhythm == "VT":
                rr = rr0 * (1.0 + rng.normal(0.0, 0.02))
                if first and last_t is not None:
                    rr = max(rr, 0.5 * last_rr)  # the run starts with a premature beat
                t = (last_t + rr) if last_t is not None else rng.uniform(0.1, 0.1 + rr0)
            else:
                raise ValueError(f"unknown rhythm '{seg.rhythm}' (use N, AFIB, VT or B)")
            if t >= seg_end or t >= total - 0.15:
                break
            if first:
                prev_t = last_t if last_t is not None else 0.0
                boundary = max(prev_t, t - min(0.2, 0.5 * (t - prev_t))) if changes else 0.0
                changes.append((boundary, seg.rhythm))
                first = False
            morph = {"N": "sinus", "B": "sinus", "AFIB": "af", "VT": "vt"}[seg.rhythm]
            beats.append(_Beat(t, "V" if seg.rhythm == "VT" else "N", morph, rr if last_t is not None else rr0))
            last_t, last_rr = t, (rr if seg.rhythm != "VT" else last_rr)
            since_pvc += 1
            # Ectopy in sinus: the PVC falls early and the sinus node is not
            # reset, so the next sinus beat comes 2 RR after the last one. In
            # bigeminy every sinus beat, the compensatory one too, has its PVC.
            # The factor 2 makes up for the beats a PVC and its 3-beat refractory take,
            # so the realised rate is close to pvc_per_min.
            cur = t
            while (seg.rhythm == "B" or (
                    seg.rhythm == "N" and seg.pvc_per_min > 0 and since_pvc >= 3
                    and rng.random() < seg.pvc_per_min * rr0 / 60.0 * 2.0)):
                rr_s = rr0 * mod(cur)
                t_v = cur + rng.uniform(0.55, 0.65) * rr_s
                t_next = cur + 2.0 * rr_s
                if t_next >= seg_end or t_next >= total - 0.15:
                    break
                beats.append(_Beat(t_v, "V", "pvc", t_v - cur))
                beats.append(_Beat(t_next, "N", "sinus", t_next - t_v))
                since_pvc = 0
                cur = last_t = t_next
                if seg.rhythm != "B":
                    break
        seg_start = seg_end
    return beats, changes


# ------------------------------------------------------------------ waveforms

def _agauss(t: np.ndarray, centre: float, amp: float, sd_left: float, sd_right: float) -> np.ndarray:
    sd = np.where(t < centre, sd_left, sd_right)
    return amp * np.exp(-0.5 * ((t - centre) / sd) ** 2)


def _ecg_waves(b: _Beat, jitter: np.ndarray, resp: float) -> list[tuple[float, float, float, float]]:
    """(offset_s from R, amplitude mV, sd_left s, sd_right s) of each wave of one beat."""
    rr = min(max(b.rr_prev, 0.3), 2.0)
    scale = (1.0 + 0.03 * jitter[0]) * (1.0 + resp)
    if b.morph in ("sinus", "af"):
        t_t = 0.24 * math.sqrt(rr) + 0.03  # T peak follows QT, which follows the preceding RR
        waves = [
            (-0.030, -0.08 * scale, 0.009, 0.008),  # Q
            (0.000, 1.15 * scale, 0.0105, 0.0095),  # R
            (0.027, -0.26 * scale, 0.009, 0.011),  # S
            (t_t, (0.28 + 0.02 * jitter[1]) * (1.0 + 0.5 * resp), 0.060, 0.038),  # T
        ]
        if b.morph == "sinus":
            waves.append((-0.165 + 0.004 * jitter[2], 0.11 * (1.0 + 0.05 * jitter[3]), 0.024, 0.020))  # P
        return waves
    if b.morph == "pvc":
        return [
            (-0.040, 0.45 * scale, 0.022, 0.020),  # slurred upstroke
            (0.000, 1.55 * scale, 0.026, 0.030),  # broad R
            (0.070, -0.60 * scale, 0.028, 0.032),  # deep broad S
            (0.31 * math.sqrt(max(rr / 0.6, 0.5)) ** 0.3, -0.42 * scale, 0.075, 0.055),  # discordant T
        ]
    # vt: monomorphic wide complexes, T merges into the next beat
    return [
        (-0.035, 0.35 * scale, 0.020, 0.020),
        (0.000, 1.35 * scale, 0.028, 0.030),
        (0.065, -0.70 * scale, 0.030, 0.030),
        (0.20, -0.30 * scale, 0.055, 0.045),
    ]


def _ppg_waves(b: _Beat, rr_ref: float, jitter: np.ndarray) -> tuple[float, list[tuple[float, float, float, float]]]:
    """Pulse arrival offset (s after R) and the pulse's waves relative to it."""
    fill = float(np.clip((b.rr_prev / rr_ref) ** 0.9, 0.25, 1.4))
    amp = fill * (1.0 + 0.03 * jitter[0])
    pat = 0.21 + 0.01 * jitter[1]
    waves = [
        (0.0, amp, 0.075, 0.13),  # systolic: fast upstroke, slower fall
        (0.29, 0.32 * amp, 0.07, 0.11),  # diastolic (reflected) wave
    ]
    return pat, waves


def _noise(kind: str, n: int, fs: float, rng: np.random.Generator, nk) -> np.ndarray:
    """Unit-SD coloured noise from neurokit2 (beta 1 pink, 2 brown; EMG is differenced white)."""
    beta = {"pink": 1.0, "brown": 2.0, "white": 0.0, "muscle": 0.0, "motion": 2.0}[kind]
    x = np.asarray(nk.signal_noise(duration=(n + 0.5) / fs, sampling_rate=fs, beta=beta, random_state=rng),
                   dtype=np.float64)[:n]
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)), mode="edge")
    if kind == "muscle":
        x = np.diff(x, prepend=x[0])  # EMG energy sits above ~20 Hz
    x = x - x.mean()
    sd = x.std()
    return x / sd if sd > 0 else x


def _envelope(n: int, fs: float, ramp_s: float = 0.3) -> np.ndarray:
    r = max(1, min(int(ramp_s * fs), n // 2))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, r))
    env[:r] = ramp
    env[n - r:] = ramp[::-1]
    return env


def synthesize(plan: Plan, fs_hz: float = 250.0, heart_rate_bpm: float = 70.0,
               seed: int = 0) -> tuple[np.ndarray, SimAnnotations]:
    """Synthesise a ``Plan``: (signal, SimAnnotations); deterministic for a seed."""
    try:
        import neurokit2 as nk  # optional [sim] extra; only the simulator needs it
    except ImportError:
        raise SourceError("simulate", "needs neurokit2: pip install 'edgemon[sim]'") from None
    if not (fs_hz > 0 and math.isfinite(fs_hz)):
        raise ValueError(f"fs_hz must be positive, got {fs_hz!r}")
    if plan.signal not in ("ecg", "ppg"):
        raise ValueError(f"plan.signal must be 'ecg' or 'ppg', got {plan.signal!r}")
    fs = float(fs_hz)
    rng = np.random.default_rng(seed)
    total = plan.duration_s
    n = int(round(total * fs))
    t_axis = np.arange(n) / fs
    beats, changes = _beat_times(plan, heart_rate_bpm, rng)

    f_resp = rng.uniform(0.2, 0.3)
    resp_phase = rng.uniform(0, 2 * np.pi)
    x = np.zeros(n)
    beat_samples = []
    ppg = plan.signal == "ppg"
    if ppg:
        sinus_rr = [b.rr_prev for b in beats if b.morph == "sinus"] or [b.rr_prev for b in beats]
        rr_ref = float(np.median(sinus_rr)) if sinus_rr else 60.0 / heart_rate_bpm
    for b in beats:
        jitter = rng.standard_normal(4)
        resp = 0.06 * math.sin(2 * math.pi * f_resp * b.t + resp_phase)
        if ppg:
            pat, waves = _ppg_waves(b, rr_ref, jitter)
            centre = b.t + pat
        else:
            waves = _ecg_waves(b, jitter, resp)
            centre = b.t
        lo = max(0, int((centre - 0.45) * fs))
        hi = min(n, int((centre + 0.9) * fs) + 1)
        if hi <= lo:
            continue
        seg_t = t_axis[lo:hi]
        for off, amp, sl, sr in waves:
            x[lo:hi] += _agauss(seg_t, centre + off, amp, sl, sr)
        beat_samples.append(centre)

    # Fiducials: R peaks at the R wave centre; PPG peaks where the clean pulse
    # train actually peaks (neighbouring pulses shift the maximum).
    fid = []
    for c in beat_samples:
        s = int(round(c * fs))
        if ppg:
            w = int(0.12 * fs)
            a, z = max(0, s - w), min(n, s + w + 1)
            if z > a:
                s = a + int(np.argmax(x[a:z]))
        fid.append(min(max(s, 0), n - 1))

    if not ppg:
        af = np.zeros(n, dtype=bool)
        bounds = [c[0] for c in changes[1:]] + [total]
        for (start, rhythm), end in zip(changes, bounds):
            if rhythm == "AFIB":
                af[int(start * fs):int(end * fs)] = True
        if af.any():
            x += _f_waves(n, fs, rng) * _smooth_mask(af, fs)
    # Baseline: respiration, brown wander, pink background, a little mains.
    resp_amp = 0.05 if not ppg else 0.08
    x += resp_amp * np.sin(2 * np.pi * f_resp * t_axis + resp_phase)
    x += (0.035 if not ppg else 0.06) * _noise("brown", n, fs, rng, nk)
    x += (0.010 if not ppg else 0.008) * _noise("pink", n, fs, rng, nk)
    if not ppg and fs > 120:
        x += 0.006 * np.sin(2 * np.pi * 50.0 * t_axis + rng.uniform(0, 2 * np.pi))

    noise_segments: list[tuple[int, int, str]] = []
    for start_s, dur_s, kind in plan.noise:
        a, z = int(round(start_s * fs)), min(n, int(round((start_s + dur_s) * fs)))
        if z - a < 2:
            continue
        if kind == "muscle":
            level = (0.12 if not ppg else 0.02) * (1.0 + 0.5 * np.abs(_noise("brown", z - a, fs, rng, nk)))
            burst = level * _noise("muscle", z - a, fs, rng, nk)
        elif kind == "motion":
            # Slow drift plus 1-10 Hz wobble (moving-average-smoothed pink noise):
            # electrode motion overlaps the ECG band but is not jagged like EMG.
            wobble = np.convolve(_noise("pink", z - a, fs, rng, nk), np.ones(max(1, int(0.08 * fs))), mode="same")
            wobble /= wobble.std() or 1.0
            burst = (0.45 if not ppg else 0.5) * _noise("motion", z - a, fs, rng, nk) + 0.25 * wobble
            # Electrode "pops": a step that decays as the half-cell potential settles.
            tt = np.arange(z - a) / fs
            for _ in range(max(1, int(dur_s / 3.0))):
                t_pop = rng.uniform(0.0, 0.8 * dur_s)
                step = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.5) * (1.0 if not ppg else 0.8)
                burst += np.where(tt >= t_pop, step * np.exp(-(tt - t_pop) / 0.4), 0.0)
        else:
            raise ValueError(f"unknown noise kind '{kind}' (muscle or motion)")
        x[a:z] += burst * _envelope(z - a, fs)
        noise_segments.append((a, z, kind))

    valid = np.ones(n, dtype=bool)
    off_spans = []
    for start_s, dur_s in plan.lead_off:
        a, z = int(round(start_s * fs)), min(n, int(round((start_s + dur_s) * fs)))
        if z <= a:
            continue
        rail = LEAD_OFF_RAIL_MV if not ppg else 0.0
        # The amplifier slews to the rail over ~20 ms, then stays flat.
        slew = min(z - a, max(1, int(0.02 * fs)))
        x[a:a + slew] = np.linspace(x[a], rail, slew)
        x[a + slew:z] = rail
        valid[a:z] = False
        noise_segments.append((a, z, "lead_off"))
        off_spans.append((a, z))

    fid_arr = np.asarray(fid, dtype=np.int64)
    symbols = [b.symbol for b in beats[:len(fid)]]
    keep = np.ones(len(fid_arr), dtype=bool)
    for a, z in off_spans:
        keep &= ~((fid_arr >= a) & (fid_arr < z))
    fid_arr = fid_arr[keep]
    symbols = [s for s, k in zip(symbols, keep) if k]

    anns: list[tuple[int, int, str, int, str]] = []  # (sample, order, symbol, subtype, aux)
    for start_s, rhythm in changes:
        anns.append((int(round(start_s * fs)), 0, "+", 0, f"({rhythm}"))
    for s, sym in zip(fid_arr, symbols):
        anns.append((int(s), 1, sym, 0, ""))
    for a, z, kind in noise_segments:
        # MIT "~" marks: subtype = bitmask of noisy signals, -1 = unreadable.
        anns.append((a, 2, "~", -1 if kind == "lead_off" else 1, ""))
        anns.append((min(z, n - 1), 2, "~", 0, ""))
    anns.sort(key=lambda r: (r[0], r[1]))
    ann_samples = np.asarray([r[0] for r in anns], dtype=np.int64)
    ann_symbols = tuple(r[2] for r in anns)
    ann_aux = tuple(r[4] for r in anns)
    ann = SimAnnotations(
        fs_hz=fs,
        n_samples=n,
        beat_samples=fid_arr,
        beat_symbols=tuple(symbols),
        rhythms=rhythm_episodes(ann_samples, ann_symbols, ann_aux, n),
        ann_samples=ann_samples,
        ann_symbols=ann_symbols,
        ann_subtypes=tuple(r[3] for r in anns),
        ann_aux=ann_aux,
        path="simulate",
        valid=valid,
        noise_segments=noise_segments,
        signal_kind=plan.signal,
        channel_name="PLETH" if ppg else "MLII",
        units="NU" if ppg else "mV",
    )
    return x, ann


def _f_waves(n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Fibrillatory waves: a sawtooth-like harmonic series whose rate wanders in 4-9 Hz."""
    t = np.arange(n) / fs
    f0 = rng.uniform(5.5, 6.5)
    knots_t = np.arange(0.0, n / fs + 2.0, 1.0)
    wander = np.clip(np.cumsum(rng.normal(0.0, 0.25, len(knots_t))), -1.5, 1.5)
    f_inst = np.clip(f0 + 0.6 * np.sin(2 * np.pi * 0.08 * t) + np.interp(t, knots_t, wander), 4.0, 9.0)
    phase = 2 * np.pi * np.cumsum(f_inst) / fs
    wave = np.zeros(n)
    for k, ph in zip((1, 2, 3), rng.uniform(0, 2 * np.pi, 3)):
        wave += np.sin(k * phase + ph) / k ** 1.3
    amp = 0.055 * (1.0 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.1, 0.2) * t + rng.uniform(0, 2 * np.pi)))
    return amp * wave / np.max(np.abs(wave[: int(fs * 5)] if n > fs * 5 else wave))


def _smooth_mask(mask: np.ndarray, fs: float, ramp_s: float = 0.3) -> np.ndarray:
    """A 0/1 mask with raised-cosine edges, so f waves fade in and out."""
    m = mask.astype(np.float64)
    r = max(1, int(ramp_s * fs))
    kernel = np.hanning(2 * r + 1)
    kernel /= kernel.sum()
    return np.convolve(m, kernel, mode="same")


# ------------------------------------------------------------------ streaming

def simulated_recording(scenario: str, duration_s: float = 60.0, fs_hz: float = 250.0,
                        heart_rate_bpm: float = 70.0, seed: int = 0):
    """The scenario as a ``replay.Recording`` (valid mask included) plus its annotations."""
    from edgemon.sources.replay import Recording

    x, ann = simulate(scenario, duration_s, fs_hz, heart_rate_bpm, seed)
    rec = Recording(
        path=f"simulate:{scenario}:seed={seed}",
        format="simulate",
        fs_hz=float(fs_hz),
        samples=x.reshape(-1, 1),
        valid=ann.valid.reshape(-1, 1),
        channel_names=(ann.channel_name,),
        channel_kinds=(ann.signal_kind,),
        units=(ann.units,),
    )
    return rec, ann


def iter_simulated_chunks(scenario: str, duration_s: float = 60.0, fs_hz: float = 250.0,
                          heart_rate_bpm: float = 70.0, seed: int = 0, chunk_s: float = 1.0,
                          realtime: bool = False, *, clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], None] = time.sleep) -> Iterator[Chunk]:
    """Chunks of ``simulate(...)``; the source field reads ``replay:simulate:<scenario>:seed=<seed>``."""
    from edgemon.sources.replay import iter_chunks

    rec, _ = simulated_recording(scenario, duration_s, fs_hz, heart_rate_bpm, seed)
    return iter_chunks(rec, chunk_s, realtime, clock=clock, sleep=sleep)
