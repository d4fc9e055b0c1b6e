"""AlertPayload: committed JSON Schema is current, messages round-trip and validate, strips quantise."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemon.alerts.conditions import CONDITIONS
from edgemon.alerts.engine import AlertEngine
from edgemon.alerts.payload import AlertPayload, Strip, schema_json
from edgemon.alerts.policy import AlertPolicy
from edgemon.events import Detection

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "alert-payload.schema.json"


def policy30(**kw) -> AlertPolicy:
    """The default policy with the 30-s resolve hysteresis these scripts are timed with."""
    return AlertPolicy(**{"resolve_after_s": 30.0, "resolve_after_s_by_condition": {},
                           "min_probability_by_condition": {}, **kw})


def _messages():
    def strip(t0, t1):
        x = np.sin(np.arange(2500) / 40.0) * 1.2
        return Strip.from_signal(x, 250.0, t0, channel="MLII", beats=[(t0 + 0.5, "N"), (t0 + 1.3, None)])

    eng = AlertEngine(policy30(), "dev-1", "site-a", "pt-1", software_version="0.1.0",
                      clock_offset_s=1_700_000_000.0)
    d = Detection("vt", 0.97, 10.0, 14.0, 0.95, "beats-v1", "1.2.0", "0" * 64,
                  evidence={"hr_bpm": 182.0, "rr_mean_ms": 330.0, "n_beats": 12, "run_beats": 12})
    out = eng.push([d], [], 14.0, strip_provider=strip)
    out += eng.push([], [], 60.0)
    return out


def test_committed_schema_is_generated_one():
    assert SCHEMA.read_text(encoding="utf-8") == schema_json(), "run: python tools/gen_schema.py"


def test_messages_round_trip_and_validate_against_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    msgs = _messages()
    assert [m.notification for m in msgs] == ["new", "resolved"]
    for m in msgs:
        doc = json.loads(m.to_json())
        jsonschema.validate(doc, schema)
        assert AlertPayload.model_validate_json(m.to_json()) == m
    new = msgs[0]
    assert new.onset.isoformat() == "2023-11-14T22:13:30+00:00"
    assert new.evidence.n_beats == 12 and new.evidence.extra == {"run_beats": 12}
    assert new.strip.channel == "MLII" and [b.label for b in new.strip.beats] == ["N", "?"]
    assert new.strip.start.timestamp() == 1_700_000_000.0 + 4.0  # 10 s ending at the detection's end


def test_schema_rejects_bad_documents():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    doc = json.loads(_messages()[0].to_json())
    for key, value in [("status", "firing!"), ("priority", "urgent"), ("fingerprint", "xyz"), ("sequence", -1)]:
        bad = dict(doc, **{key: value})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_strip_quantisation_error_below_half_a_count():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.8, 2500)
    x[100] = np.nan
    s = Strip.from_signal(x, 250.0, 5.0)
    y = s.to_physical()
    ok = np.isfinite(x)
    assert np.max(np.abs(y[ok] - x[ok])) <= s.scale / 2 + 1e-12
    assert y[100] == 0.0 and max(abs(v) for v in s.samples) <= 32767
    tiny = Strip.from_signal(np.zeros(10), 250.0, 0.0)
    assert tiny.scale == 1e-3


def test_codes_are_valid_sctids():
    # SNOMED CT ids end in a Verhoeff check digit: catches a mistyped code.
    d = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
         [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
         [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
         [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
    p = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
         [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
         [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]

    def verhoeff_ok(code: str) -> bool:
        c = 0
        for i, ch in enumerate(reversed(code)):
            c = d[c][p[i % 8][int(ch)]]
        return c == 0

    assert verhoeff_ok("138875005") and not verhoeff_ok("397829001")  # root concept; a mistyped asystole
    for info in CONDITIONS.values():
        if info.snomed_ct:
            code = info.snomed_ct[0]
            assert verhoeff_ok(code) and code[-3:-1] == "00", f"{info.code}: {code} is not a concept SCTID"
