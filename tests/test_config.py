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
    ("[source]\ntype = 'serial_ecg'\nbaudrate = -1\n", "source.serial_ecg.baudrate", "greater than 0"),
    ("[source]\ntype = 'carrier_pigeon'\n", "source", "does not match any of the expected tags"),
    ("[detect]\nnum_threads = 'many'\n", "detect.num_threads", "valid integer"),
    ("[nonsense]\nx = 1\n", "nonsense", "Extra inputs are not permitted"),
    ("[source]\ntype = 'simulate'\nduration_s = inf\n", "source.simulate.duration_s", "finite number"),
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
