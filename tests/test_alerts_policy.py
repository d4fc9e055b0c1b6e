"""AlertPolicy defaults are valid and documented; invalid values fail with clear errors."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgemon.alerts.policy import AlertPolicy
from edgemon.config import ConfigError, load_config, parse_config


def test_defaults_are_valid_and_each_has_a_reason():
    pol = AlertPolicy()
    assert pol.af_onset_s == 30.0 and pol.group_wait_s.high == 0.0
    for name, f in AlertPolicy.model_fields.items():
        assert f.description and len(f.description) > 40, f"{name} needs its reason in the description"


def test_defaults_are_documented_in_docs():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text(encoding="utf-8")
    for name in AlertPolicy.model_fields:
        assert f"`{name}`" in doc, f"docs/alerts.md does not describe alerts.{name}"


def test_the_documented_alerts_section_is_the_default_policy():
    """docs/alerts.md's `[alerts]` example is copied into configs: it must keep every default, and a
    `[alerts.inhibit]` table replaces the default rules as a whole (it once listed only `vt`)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    snippet = re.search(r"```toml\n(\[alerts\]\n.*?)```", doc, re.S).group(1)
    assert parse_config(tomllib.loads(snippet)).alerts == AlertPolicy()
    assert parse_config(tomllib.loads('[alerts.inhibit]\nvt = ["pvc"]\n')).alerts.inhibit == {"vt": ["pvc"]}


@pytest.mark.parametrize("values, message", [
    ({"af_onset_s": -5}, "greater than 0"),
    ({"resolve_after_s": -1}, "greater than or equal to 0"),
    ({"group_wait_s": {"high": 0, "medium": -1, "low": 0}}, "greater than or equal to 0"),
    ({"repeat_interval_s": {"high": 300, "medium": 5, "low": 3600}},
     "repeat_interval_s.medium (5.0) must be >= group_wait_s.medium (10.0)"),
    ({"repeat_interval_s": {"high": 0, "medium": 600, "low": 3600},
      "group_wait_s": {"high": 0, "medium": 0, "low": 0}}, "repeat_interval_s.high must be > 0"),
    ({"af_onset_s": 100}, "af_window_s (90.0) must be >= af_onset_s (100.0)"),
    ({"onset_s": {"vt": 5}}, "vt fires on first detection"),
    ({"onset_s": {"af": 5}}, "af_onset_s"),
    ({"onset_s": {"pvcs": 5}}, "unknown physiological condition"),
    ({"onset_s": {"pause": -2}}, "must be >= 0"),
    ({"quality_after_s": float("inf")}, "finite number"),
    ({"group_wait_s": {"high": 0, "medium": float("nan"), "low": 0}}, "finite number"),
    ({"min_probability_by_condition": {"af": float("nan")}}, "finite number"),
    ({"resolve_after_s_by_condition": {"lead_off": 60}}, "resolve_after_s_by_condition.lead_off: unknown"),
    ({"resolve_after_s_by_condition": {"af": -1}}, "resolve_after_s_by_condition.af must be >= 0"),
    ({"min_probability_by_condition": {"lead_off": 0.9}}, "min_probability_by_condition.lead_off: unknown"),
    ({"min_probability_by_condition": {"af": 1.5}}, "min_probability_by_condition.af must be in "),
    ({"inhibit": {"vt": ["pvcs"]}}, "unknown target 'pvcs'"),
    ({"inhibit": {"ventricular": ["pvc"]}}, "inhibit.ventricular: unknown condition"),
    ({"inhibit": {"af": ["@physiological"]}}, "cannot inhibit itself"),
    ({"max_messages_per_hour": 0}, "greater than or equal to 1"),
    ({"sqi_min": 1.5}, "less than or equal to 1"),
    ({"af_onset": 30}, "Extra inputs are not permitted"),
])
def test_invalid_values_are_rejected(values, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        AlertPolicy(**values)


@pytest.mark.parametrize("value, reason", [("-3", "greater than or equal to 0"), ("inf", "finite number")])
def test_config_error_names_file_and_field(tmp_path, value, reason):
    p = tmp_path / "device.toml"
    p.write_text(f"[alerts]\nresolve_after_s = {value}\n", encoding="utf-8")   # TOML accepts inf
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and "alerts.resolve_after_s" in str(err.value) and reason in str(err.value)


def test_toml_section_round_trips():
    cfg = parse_config({"alerts": {"af_onset_s": 45, "af_window_s": 90, "onset_s": {"pause": 2},
                                   "repeat_interval_s": {"high": 120, "medium": 900, "low": 7200},
                                   "inhibit": {"vt": ["pvc"]}, "quality_channels": ["MLII"]}})
    assert cfg.alerts.onset_rule("af") == (45, 90)
    assert cfg.alerts.onset_rule("pause") == (2, 4)
    assert cfg.alerts.onset_rule("vt") == (0, 0)
    assert cfg.alerts.onset_rule("lead_off") == (10, 10)
    assert AlertPolicy.model_validate(cfg.alerts.model_dump(mode="json")) == cfg.alerts
