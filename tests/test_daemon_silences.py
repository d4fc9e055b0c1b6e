"""A hub's silence of a live device survives a daemon restart (state_dir/silences.json)."""
import json

from edgemon.alerts.engine import AlertEngine
from edgemon.alerts.policy import AlertPolicy
from edgemon.daemon.silences import FILE_NAME, keep_silences

NOW = 1_800_000_000.0


def _handler(engine):
    def handle(cmd):
        return {"silence_id": engine.add_silence({"condition": "af"}, NOW + 900, created_by="dr x", now_s=NOW)}
    return handle


def test_silences_are_saved_after_each_command_and_restored_at_start(tmp_path):
    first = AlertEngine(AlertPolicy(), device_id="d1")
    handle = keep_silences(first, tmp_path, _handler(first))
    sid = handle(object())["silence_id"]
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert [s["silence_id"] for s in saved] == [sid] and saved[0]["until_s"] == NOW + 900

    second = AlertEngine(AlertPolicy(), device_id="d1")   # the daemon after a crash
    keep_silences(second, tmp_path, _handler(second))
    restored = second.silences()
    assert [(s.silence_id, s.matchers, s.until_s) for s in restored] == [(sid, {"condition": "af"}, NOW + 900)]
    second.tick(NOW + 901)                                  # it still expires when it would have
    assert second.silences() == []


def test_an_unreadable_silences_file_is_set_aside(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    engine = AlertEngine(AlertPolicy(), device_id="d1")
    keep_silences(engine, tmp_path, _handler(engine))
    assert engine.silences() == [] and (tmp_path / f"{FILE_NAME}.unreadable").is_file()
