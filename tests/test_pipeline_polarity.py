"""dsp.invert_ecg: a lead with downward QRS, flipped back before every stage."""
from __future__ import annotations

from pathlib import Path


def test_invert_ecg_undoes_an_inverted_lead():
    """dsp.invert_ecg: the inverted recording with the switch gives exactly the events of the
    recording as it was."""
    import numpy as np
    import wfdb

    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.events import Chunk

    rec = wfdb.rdrecord(str(Path(__file__).resolve().parents[1] / "sample-signals" / "af"), sampto=90 * 250)
    x = rec.p_signal[:, :1]
    fs = float(rec.fs)

    def events(signal, invert):
        cfg = DeviceConfig.model_validate({"dsp": {"invert_ecg": invert}})
        pipe = Pipeline(cfg, fs, "ecg", "ECG", models=load_models(cfg), alerts=False)
        out = []
        for k in range(0, len(signal), int(fs)):
            out += pipe.push_chunk(Chunk(np.ascontiguousarray(signal[k:k + int(fs)]), fs, ("ECG",), ("ecg",),
                                         start_sample=k))
        return [repr(e) for e in out]

    as_is = events(x, False)
    assert len(as_is) > 100
    assert events(-x, True) == as_is
    assert events(-x, False) != as_is
