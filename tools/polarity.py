"""How much does the rhythm CNN depend on the ECG's polarity?

Takes MITDB records (the DS1 half by default; MLII, upright QRS in most records) and scores the
rhythm CNN's 10-s windows (every 5 s, as ``edgemon evaluate rhythm --mitdb``) three ways: the ECG
as recorded, inverted, and the mean of the two windows' probabilities. Windows fully inside
``(AFIB`` are AF, windows with no AF sample are not; the rest are left out. Prints AF recall and
specificity per variant.

    python tools/polarity.py [--data-dir ../shared/data/mitdb] [--records 101 ...] [--json]

Why it matters: a worn sensor's lead can point the QRS down (``dsp.invert_ecg`` flips it back),
and CinC 2017's handheld recordings are often inverted (the card's recording head averages both).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from edgemon.detect import rhythm  # noqa: E402
from edgemon.detect.runtime import load_model  # noqa: E402
from edgemon.evaluate.rhythm import mitdb_rhythm_per_sample, prepare_ecg, read_ecg  # noqa: E402
from mitdb_args import parse_mitdb_args  # noqa: E402

HOP_S = 5.0


def main() -> int:
    import wfdb

    data_dir, records, as_json = parse_mitdb_args(__doc__, "DS1")
    model = load_model(REPO / "models" / "rhythm_ecg.card.json")
    thr = rhythm.decision_weights(model.card.decision_thresholds)
    counts = {k: {"tp": 0, "fn": 0, "tn": 0, "fp": 0} for k in ("as_recorded", "inverted", "mean_with_inverted")}
    for r in records:
        sig, fs = read_ecg(data_dir / r, prefer="MLII")
        lab = mitdb_rhythm_per_sample(wfdb.rdann(str(data_dir / r), "atr"), len(sig))
        w = rhythm.recording_windows(prepare_ecg(sig, fs), int(HOP_S * rhythm.MODEL_FS_HZ))
        p_up = model.predict(w[..., None])
        p_down = model.predict(-w[..., None])
        for k, p in (("as_recorded", p_up), ("inverted", p_down), ("mean_with_inverted", (p_up + p_down) / 2)):
            for j, c in enumerate(rhythm.decide(p, thr)):
                a = int(j * HOP_S * fs)
                b = min(int((j * HOP_S + rhythm.WINDOW_S) * fs), len(lab))
                is_af = lab[a:b] == "AFIB"
                said_af = rhythm.CLASSES[c] == "af"
                if is_af.all():
                    counts[k]["tp" if said_af else "fn"] += 1
                elif not is_af.any():
                    counts[k]["fp" if said_af else "tn"] += 1
    res = {"data": f"{data_dir} records {' '.join(records)}, MLII, 10-s windows every {HOP_S:g} s",
           "model": {"name": model.name, "version": model.version}, "variants": {}}
    for k, c in counts.items():
        res["variants"][k] = {**c, "af_recall": round(c["tp"] / max(c["tp"] + c["fn"], 1), 4),
                              "af_specificity": round(c["tn"] / max(c["tn"] + c["fp"], 1), 4)}
    if as_json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res["variants"].items():
            print(f"{k:19s} AF recall {v['af_recall']:.4f} ({v['tp']}/{v['tp'] + v['fn']} windows), "
                  f"specificity {v['af_specificity']:.4f} ({v['fp']} false AF of {v['tn'] + v['fp']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
