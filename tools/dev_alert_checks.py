"""Development checks of the ECG alert path on data no figure in the README comes from.

Takes a device config (``--config F``, else the defaults) and the shared data root; gives JSON.

    python tools/dev_alert_checks.py cinc  [--config F]   # CinC 2017 validation recordings
    python tools/dev_alert_checks.py noise [--config F]   # MITDB DS1 records + nstdb noise (channel 2)
    python tools/dev_alert_checks.py hf                   # quality windows' HF ratio, clean vs noisy DS1
    python tools/dev_alert_checks.py ppg-motion [--config F]  # sinus PPG (ltafdb/train) + em/ma artefact

``cinc`` streams each of the 1023 CinC 2017 inner-validation recordings (tools/splits/cinc2017.json;
9-61 s, AF from the first beat or not at all) through the pipeline as recorded and counts, per reference
class, the recordings that raised an AF alert and the median time of the first one: AF alerts on
normal/other/noisy recordings are false. Since rhythm card 2.0.0 the rhythm CNN trained on these recordings
too (on all of cinc2017/train), so for it the check is in-sample: it still tests the alert path (the tachogram
and the alert policy never saw them), but cannot show how the CNN does on new patients. ``noise`` adds nstdb ``bw``, ``ma`` and ``em`` at 6 and 0 dB
(nstdb's schedule) to the MITDB DS1 records without AF or VT episodes (118 left out: nstdb 118e* is a test
set) and counts, per kind and SNR, the rhythm alerts the noise made: those whose onset lies in a noisy
segment and that no rhythm alert of the same condition on the clean record overlaps. It takes the noise
records' second channel (``noise2``): the noise-stress test run (``edgemon evaluate alerts``) adds
``noise1`` to some of the same records, so the two never share a noisy signal. Neither check touches a
test set (cinc2017/test, MITDB DS2, nstdb 118e*, the noise-stress run's signals). ``hf`` gives, for
the quality windows of every DS1 record but 118, the HF ratio's percentiles and the share judged ``noise``:
clean, and with each noise (channel 2) at 6 and 0 dB inside the noisy segments.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemon.config import DeviceConfig, load_config  # noqa: E402
from edgemon.evaluate.alerts import (LEAD, TECHNICAL, _load, _overlaps, add_noise, alert_spans,  # noqa: E402
                                     noisy_segments, read_lead, run_signal)
from edgemon.evaluate.common import default_data_root  # noqa: E402

# MITDB DS1 records whose rhythm annotations hold no AF or VT (118: base of the nstdb 118e* test records)
DS1_NOISE_BASE = ["101", "108", "109", "112", "114", "115", "116", "119", "122", "124", "208", "209", "220", "230"]
NOISE_KINDS = ("bw", "ma", "em")  # the test run's bw and ma, and electrode motion


def cinc(root: Path, cfg, models) -> dict:
    from edgemon.evaluate.rhythm import read_ecg, read_reference

    folder = root / "cinc2017" / "train"
    labels = dict(read_reference(folder))
    first: dict[str, list] = {lab: [] for lab in "NAO~"}
    for name in json.loads((REPO / "tools" / "splits" / "cinc2017.json").read_text())["validation"]:
        x, fs = read_ecg(folder / name)
        sent = [m.sent_at.timestamp() for m in run_signal(x, fs, cfg, models)
                if m.condition == "af" and m.notification == "new"]
        first[labels[name]].append(min(sent) if sent else None)
    return {lab: {"recordings": len(t), "with_af_alert": sum(v is not None for v in t),
                  "median_first_af_alert_s": (round(float(np.median([v for v in t if v is not None])), 1)
                                              if any(v is not None for v in t) else None)}
            for lab, t in first.items()}


def noise(root: Path, cfg, models) -> dict:
    from edgemon.sources.reference import read_reference

    kinds = {k: read_lead(root / "nstdb" / k, "noise2")[0] for k in NOISE_KINDS}
    made: dict[str, Counter] = {}
    where: list[str] = []
    for rec in DS1_NOISE_BASE:
        x, fs, _ = read_lead(root / "mitdb" / rec)
        r_samples = read_reference(root / "mitdb" / rec).beat_samples
        segments = noisy_segments(len(x), fs)
        clean = alert_spans(run_signal(x, fs, cfg, models))
        for kind, n in kinds.items():
            for snr_db in (6.0, 0.0):
                run = f"{kind}/{int(snr_db)}dB"
                counts = made.setdefault(run, Counter())
                for cond, spans in alert_spans(run_signal(add_noise(x, n, r_samples, fs, snr_db), fs, cfg,
                                                          models)).items():
                    if cond in TECHNICAL:
                        counts[cond] += len(spans)
                        continue
                    for a in spans:
                        if (any(s <= a["onset"] <= e for s, e in segments) and not any(
                                _overlaps(a["onset"], a["end"], c["onset"], c["end"]) for c in clean.get(cond, []))):
                            counts[cond] += 1
                            where.append(f"{rec}+{kind}{int(snr_db)} {cond} at {a['onset']:.0f} s")
    return {"records": DS1_NOISE_BASE, "noise_channel": "noise2",
            "alerts": {run: dict(c) for run, c in made.items()}, "noise_made_rhythm_alerts": where}


def hf(root: Path, cfg, models) -> dict:
    from edgemon.daemon.pipeline import Pipeline
    from edgemon.events import Chunk, QualityWindow
    from edgemon.sources.reference import read_reference

    split = json.loads((REPO / "tools" / "splits" / "mitdb_ds.json").read_text())
    kinds = {k: read_lead(root / "nstdb" / k, "noise2")[0] for k in NOISE_KINDS}
    found: dict[str, list[tuple[float, bool]]] = {}
    for rec in [r for r in split["DS1"] if r != "118"]:
        x, fs, _ = read_lead(root / "mitdb" / rec)
        r_samples = read_reference(root / "mitdb" / rec).beat_samples
        segments = noisy_segments(len(x), fs)
        runs = {"clean": x, **{f"{k}/{int(snr)}dB": add_noise(x, n, r_samples, fs, snr)
                               for k, n in kinds.items() for snr in (6.0, 0.0)}}
        for run, y in runs.items():
            pipe = Pipeline(cfg, fs, "ecg", LEAD, models=None, alerts=False)
            step = int(fs)
            events = [e for k in range(0, len(y), step)
                      for e in pipe.push_chunk(Chunk(np.ascontiguousarray(y[k:k + step, None]), fs, (LEAD,),
                                                     ("ecg",), start_sample=k))] + pipe.flush()
            found.setdefault(run, []).extend(
                (q.features["hf_ratio"], q.reason == "noise") for q in events
                if isinstance(q, QualityWindow) and "hf_ratio" in q.features
                and (run == "clean" or any(a <= q.start_s < b for a, b in segments)))
    return {run: {"windows": len(v), "hf_ratio_p50_p95_p99": [round(float(p), 3) for p in
                                                             np.percentile([r for r, _ in v], (50, 95, 99))],
                  "noise_pct": round(100.0 * sum(f for _, f in v) / len(v), 1)} for run, v in found.items()}


def ppg_motion(root: Path, cfg, models) -> dict:
    """Sinus-rhythm PPG with real motion-like artefact: how many AF and technical alerts does it make?

    Per ltafdb/train record (development data), the first 30-min stretch whose reference beats hold no AF
    becomes PPG through ``evaluate.ppg_af.synth_ppg`` (100 Hz, seed = record index), streamed through the
    PPG pipeline in 1-s chunks: clean, and with nstdb ``em`` (electrode motion) or ``ma`` (muscle)
    channel 2, resampled to 100 Hz, added on nstdb's schedule (clean first 5 min, then alternate 2-min
    segments) at 6 and 0 dB SNR against the PPG's p1-p99 range (S = range^2 / 8, as nstdb takes the QRS).
    Every AF alert is false here; those of the noisy runs whose onset lies in a noisy segment and that no AF
    alert of the clean run overlaps are the ones the artefact made.
    """
    from scipy.signal import resample_poly

    from edgemon.evaluate.af import load_beat_record
    from edgemon.evaluate.common import list_records
    from edgemon.evaluate.ppg_af import synth_ppg

    fs, stretch_s = 100.0, 1800.0
    noises = {k: resample_poly(read_lead(root / "nstdb" / k, "noise2")[0], 5, 18) for k in ("em", "ma")}
    rec_dir = root / "ltafdb" / "train"
    hours = 0.0
    counts: dict[str, Counter] = {}
    made: list[str] = []
    for ri, name in enumerate(list_records(rec_dir)):
        rec = load_beat_record(rec_dir / name)
        t0 = next((float(t) for t in np.arange(rec.time_s[0], rec.time_s[-1] - stretch_s, stretch_s)
                   if not rec.is_af[(rec.time_s >= t) & (rec.time_s < t + stretch_s)].any()), None)
        if t0 is None:
            continue
        x, _ = synth_ppg(rec.time_s[(rec.time_s >= t0 - 2) & (rec.time_s < t0 + stretch_s + 2)], t0,
                         t0 + stretch_s, fs, np.random.default_rng(ri))
        hours += stretch_s / 3600
        s_power = float(np.subtract(*np.percentile(x, (99, 1)))) ** 2 / 8.0
        mask = np.zeros(x.size, bool)
        segments = noisy_segments(x.size, fs)
        for a, b in segments:
            mask[int(a * fs):int(b * fs)] = True
        clean = alert_spans(run_signal(x, fs, cfg, models, kind="ppg", channel="PPG"))
        runs = {"clean": clean}
        for kind, noise in noises.items():
            n = np.resize(noise, x.size)
            n = n - n.mean()
            for snr_db in (6.0, 0.0):
                gain = np.sqrt(s_power / (float(np.var(n)) * 10.0 ** (snr_db / 10.0)))
                runs[f"{kind}/{int(snr_db)}dB"] = alert_spans(
                    run_signal(x + gain * n * mask, fs, cfg, models, kind="ppg", channel="PPG"))
        for run, spans in runs.items():
            c = counts.setdefault(run, Counter())
            for cond, items in spans.items():
                c[cond] += len(items)
                if run == "clean" or cond in TECHNICAL:
                    continue
                for a in items:
                    if (any(s <= a["onset"] <= e for s, e in segments) and not any(
                            _overlaps(a["onset"], a["end"], o["onset"], o["end"]) for o in clean.get(cond, []))):
                        c[f"{cond}_made_by_noise"] += 1
                        made.append(f"{name}+{run} {cond} at {a['onset']:.0f} s")
    return {"set": "ltafdb/train, first 30-min stretch without AF per record, synthetic PPG",
            "hours_per_run": round(hours, 1), "alerts": {run: dict(c) for run, c in counts.items()},
            "noise_made_rhythm_alerts": made}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=("cinc", "noise", "hf", "ppg-motion"))
    ap.add_argument("--config", help="device config TOML (default: the built-in defaults)")
    ap.add_argument("--data-dir", help="shared data root (default: ../shared/data or EDGEMON_DATA)")
    a = ap.parse_args()
    cfg = load_config(a.config) if a.config else DeviceConfig()
    root = Path(a.data_dir) if a.data_dir else default_data_root()
    if root is None or not root.is_dir():
        print(f"no data folder: {a.data_dir or '../shared/data (or EDGEMON_DATA)'} not found", file=sys.stderr)
        return 1
    models, errors = _load(cfg)
    if errors:
        print(f"models not loaded: {errors}", file=sys.stderr)
        return 1
    out = {"cinc": cinc, "noise": noise, "hf": hf, "ppg-motion": ppg_motion}[a.check](root, cfg, models)
    print(json.dumps({"check": a.check, "config": a.config, **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
