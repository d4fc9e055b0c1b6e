"""Compare the two TFLite runtimes on real windows: do the models decide the same?

Takes MITDB records (the DS2 half by default) and builds each model's real inputs the way
the evaluation commands do: 10-s rhythm windows every 5 s (``prepare_ecg``), beat vectors at
the reference R peaks (``beat_features``), 64-beat RR windows every 8 beats from the
reference beat times. Runs them under LiteRT (``ai_edge_litert``) and ``tflite_runtime``, each
with its default kernels and with the built-in kernels (``edgemon.detect.runtime.KERNELS``),
and prints per model: the largest output difference in int8 steps, the share of outputs that
differ, the share of windows with the same decision, and LiteRT's median time for one window
with each kind of kernel (including edgemon's quantise/dequantise).

    python tools/compare_runtimes.py [--data-dir ../shared/data/mitdb] [--records 100 ...] [--json]

Needs both runtimes: tflite-runtime 2.14 has wheels for Python <= 3.11 only and imports only
under numpy < 2 (``pip install -e ".[tflite]"``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from edgemon.detect import beats as beat_model  # noqa: E402
from edgemon.detect import rhythm  # noqa: E402
from edgemon.detect.rr_features import WINDOW_BEATS, HOP_BEATS  # noqa: E402
from edgemon.detect.runtime import available_runtimes, load_model  # noqa: E402
from mitdb_args import parse_mitdb_args  # noqa: E402

CARDS = {"rhythm_ecg": REPO / "models" / "rhythm_ecg.card.json",
         "beat_aami": REPO / "models" / "beat_aami.card.json",
         "af_tachogram": REPO / "models" / "af_tachogram.card.json"}


def real_inputs(data_dir: Path, records: list[str]) -> dict[str, np.ndarray]:
    from edgemon.evaluate.beats import load_mitdb_record
    from edgemon.detect.rr_features import window_features
    from edgemon.evaluate.rhythm import prepare_ecg, read_ecg

    win, vec, rr_windows = [], [], []
    for r in records:
        sig, fs = read_ecg(data_dir / r, prefer="MLII")
        win.append(rhythm.recording_windows(prepare_ecg(sig, fs), int(5 * rhythm.MODEL_FS_HZ)))
        rec = load_mitdb_record(data_dir / r)
        f = beat_model.beat_features(rec.x_filtered, rec.ref_samples, rec.fs_hz)
        vec.append(f[np.isfinite(f).all(axis=1)])
        rr = np.diff(rec.ref_samples / rec.fs_hz) * 1000.0
        rr_windows += [rr[s:s + WINDOW_BEATS] for s in range(0, len(rr) - WINDOW_BEATS + 1, HOP_BEATS)]
    return {"rhythm_ecg": np.concatenate(win)[..., None],
            "beat_aami": np.concatenate(vec),
            "af_tachogram": window_features(np.stack(rr_windows))}


def decisions(model, probs: np.ndarray) -> np.ndarray:
    """Each stage's own decision rule on its model's outputs."""
    p = probs.reshape(len(probs), -1)
    if model.name == "rhythm_ecg":
        return rhythm.decide(p, rhythm.decision_weights(model.card.decision_thresholds))
    if model.name == "beat_aami":
        return beat_model.decide(p, model.card.decision_thresholds)
    return p[:, 0] >= model.threshold("af")


def one_window_ms(model, x: np.ndarray, n: int = 300) -> float:
    """Median time of one single-window inference (after 20 warm-up calls)."""
    one = x[:1]
    for _ in range(20):
        model.predict(one)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.predict(one)
        ts.append(time.perf_counter() - t0)
    return round(float(np.median(ts)) * 1e3, 4)


def compare(name: str, x: np.ndarray) -> dict:
    out = {"windows": int(len(x))}
    for kernels in ("default", "builtin"):
        a, t = (load_model(CARDS[name], runtime=r, kernels=kernels) for r in ("ai_edge_litert", "tflite_runtime"))
        pa, pt = a.predict(x), t.predict(x)
        steps = np.abs(pa - pt) / a.card.quantization.output_scale
        out[kernels] = {"max_diff_steps": int(round(float(steps.max()))),
                        "outputs_differing_pct": round(float((steps > 0.5).mean() * 100), 3),
                        "decision_agreement_pct": round(float((decisions(a, pa) == decisions(t, pt)).mean() * 100), 3),
                        "litert_one_window_ms": one_window_ms(a, x)}
    return out


def main() -> int:
    data_dir, records, as_json = parse_mitdb_args(__doc__, "DS2")
    rts = available_runtimes()
    if len(rts) < 2:
        print(f"compare_runtimes: needs both runtimes, only {rts} importable "
              "(tflite-runtime: Python <= 3.11, numpy < 2; pip install -e '.[tflite]')", file=sys.stderr)
        return 2
    x = real_inputs(data_dir, records)
    res = {"data": f"{data_dir} records {' '.join(records)}", "runtimes": rts,
           "models": {n: compare(n, x[n]) for n in CARDS}}
    if as_json:
        print(json.dumps(res, indent=1))
    else:
        for n, r in res["models"].items():
            for k in ("default", "builtin"):
                print(f"{n:13s} {k:8s} {r['windows']:7d} windows: max diff {r[k]['max_diff_steps']} steps, "
                      f"{r[k]['outputs_differing_pct']} % of outputs differ, "
                      f"decisions agree {r[k]['decision_agreement_pct']} %, "
                      f"LiteRT {r[k]['litert_one_window_ms']} ms per window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
