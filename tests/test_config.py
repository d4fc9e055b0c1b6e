"""Device configs: shipped ones validate; every kind of error names file, field and reason."""
from pathlib import Path

import pytest

from edgemon.cli import main
from edgemon.config import ConfigError, DeviceConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "device-configs").glob("*.toml"))


def test_defaults_validate():
    cfg = DeviceConfig()
    assert cfg.dsp.bandpass_hz == (0.5, 40.0)
    assert cfg.source.type == "replay"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path, capsys):
    assert main(["check-config", str(path)]) == 0
    assert '"device"' in capsys.readouterr().out


@pytest.mark.parametrize("text,field,reason", [
    ("[dsp]\nmains_hz = 55\n", "dsp.mains_hz", "Input should be"),
    ("[dsp]\nbandpass_hz = [40.0, 0.5]\n", "bandpass_hz", "low < high"),
    ("[device]\nid = 'has space'\n", "device.id", "should match pattern"),
    ("[source]\ntype = 'serial_ecg'\nbaudrate = -1\n", "source.baudrate", "greater than 0"),
    ("[source]\ntype = 'carrier_pigeon'\n", "source", "does not match any of the expected tags"),
    ("[detect]\nnum_threads = 'many'\n", "detect.num_threads", "valid integer"),
    ("[nonsense]\nx = 1\n", "nonsense", "Extra inputs are not permitted"),
    ("[source]\ntype = 'simulate'\nduration_s = inf\n", "source.duration_s", "finite number"),
    ("[detect]\nsustained_s = nan\n", "detect.sustained_s", "finite number"),
    ("[dsp]\nppg_bandpass_hz = [8.0, 0.5]\n", "dsp.ppg_bandpass_hz", "low < high"),
    ("[detect]\npause_s = 6.0\n", "detect.pause_s (6) must not exceed detect.asystole_s (5)", "shorter gap"),
    ("[detect]\nbrady_bpm = 160.0\n", "detect.brady_bpm (160) must be below detect.tachy_bpm (150)", ""),
    # MQTT 5 carries it in 4 bytes: a larger value used to crash the MQTT thread at connect
    ("[mqtt]\nsession_expiry_s = 5000000000\n", "mqtt.session_expiry_s", "less than or equal to 4294967295"),
])
def test_config_errors_name_file_field_reason(tmp_path, text, field, reason, capsys):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and reason in msg, msg
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "Traceback" not in err


def test_serial_scale_defaults_from_the_front_end():
    """An AD8232 board that leaves lsb_uv out must not read 170x too small (the ADS1292R's scale)."""
    from edgemon.config import parse_config

    def lsb(**source):
        return parse_config({"source": {"type": "serial_ecg", **source}}).source.lsb_uv

    assert lsb() == lsb(front_end="ads1292r") == 0.0481
    assert lsb(front_end="ad8232") == 8.06
    assert lsb(front_end="ad8232", lsb_uv=2.0) == 2.0


def test_not_toml_and_missing_file(tmp_path, capsys):
    p = tmp_path / "broken.toml"
    p.write_text("[device\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    assert main(["check-config", str(tmp_path / "absent.toml")]) == 2


SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "device-config.schema.json"


def test_committed_config_schema_is_generated_one(capsys):
    from edgemon.config import schema_json

    assert SCHEMA.read_text(encoding="utf-8") == schema_json(), "run: python tools/gen_schema.py"
    assert main(["check-config", "--schema"]) == 0
    assert capsys.readouterr().out == schema_json()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate_against_the_schema(path):
    import json

    from edgemon.config import tomllib  # tomli on Python 3.10

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(tomllib.loads(path.read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError):  # an unknown field, as a typo would make it
        jsonschema.validate({"alerts": {"af_onset": 30}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"detect": {"af_fusion": "some"}}, schema)


def test_config_errors_name_the_field_as_written(tmp_path):
    """The source union's tag is not a level of the file (source.chunk_s, not source.replay.chunk_s); a
    check of the whole file names its fields in its message; a folder is not "no such file"; a rate the
    detectors cannot use is refused here, not by a crash of the daemon."""
    from edgemon.config import ConfigError, load_config

    cases = [("[source]\ntype = 'replay'\nchunk_s = 0\n", ": source.chunk_s: Input should be greater than 0"),
             ("[dsp]\nbandpass_hz = [40, 0.5]\n", "c.toml: dsp.bandpass_hz must be 0 < low < high"),
             ("[source]\ntype = 'simulate'\nfs_hz = 20\n", "fs_hz: ECG sampled at 20 Hz: edgemon needs ECG at 50 Hz"),
             ("[source]\ntype = 'serial_ecg'\nfs_hz = 40\n", "fs_hz: ECG sampled at 40 Hz")]
    for text, needle in cases:
        (tmp_path / "c.toml").write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(tmp_path / "c.toml")
        assert needle in str(err.value), str(err.value)
    (tmp_path / "c.toml").write_text("[source]\ntype = 'simulate'\nscenario = 'ppg_af'\nfs_hz = 25\n")
    assert load_config(tmp_path / "c.toml").source.fs_hz == 25   # PPG works from 20 Hz
    with pytest.raises(ConfigError, match="a folder, not a file"):
        load_config(tmp_path)


def test_a_patient_reference_in_a_topic_id_is_refused_without_repeating_it(tmp_path):
    """`edgemon run` died with a traceback (exit 1: systemd restarts it in a loop) that printed the patient
    reference; check-config had accepted the file."""
    from edgemon.config import ConfigError, load_config

    for field in ("id", "site"):
        (tmp_path / "c.toml").write_text(f'[device]\n{field} = "bed-PAT-999888"\npatient_ref = "PAT-999888"\n')
        with pytest.raises(ConfigError) as err:
            load_config(tmp_path / "c.toml")
        assert f"device.{field} contains the patient reference" in str(err.value)
        assert "999888" not in str(err.value)
