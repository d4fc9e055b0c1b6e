"""Device configuration: TOML file -> validated pydantic ``DeviceConfig``.

``load_config(path)`` returns the model or raises ``ConfigError`` whose message
names the file, the field (dotted path) and the reason. Every field has a
default that is safe for a replay demo; hardware configs override ``source``.
Sections owned by a stage (alert policy, MQTT) are defined next to that stage
and composed here, so this module is the only place that knows the whole file.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgemon.alerts.policy import AlertPolicy
from edgemon.transport.settings import MqttSettings


class ConfigError(Exception):
    """A config problem, with the file, field and reason already in the message."""


class _Strict(BaseModel):
    # TOML accepts inf and nan: every number in a device config must be finite
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DeviceSection(_Strict):
    id: str = Field("edgemon-demo", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                    description="Device id used in MQTT topics; never a patient identifier.")
    site: str = Field("demo", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Site/programme id used in topics.")
    patient_ref: str = Field("", max_length=128,
                             description="Opaque patient reference carried in alert payloads only, never in topics.")

    @model_validator(mode="after")
    def _no_patient_in_topics(self) -> "DeviceSection":
        # the transport's rule for its topics, checked here so check-config refuses what run would
        from edgemon.transport.topics import TopicError, validate_id

        for what, value in (("device.id", self.id), ("device.site", self.site)):
            try:
                validate_id(value, what, self.patient_ref)
            except TopicError as err:
                raise ValueError(str(err)) from None
        return self


class ReplaySource(_Strict):
    type: Literal["replay"] = "replay"
    path: str = Field("sample-signals/af", description="WFDB record (no extension), .edf or .csv file.")
    channels: list[str] = Field(default_factory=list, description="Channel names to read; empty = first ECG/PPG channel.")
    realtime: bool = Field(False, description="Pace chunks at wall-clock speed (True) or as fast as possible.")
    chunk_s: float = Field(1.0, gt=0, le=60)
    expected_fs_hz: float | None = Field(None, gt=0, description="Refuse a record whose rate differs.")
    fs_hz: float | None = Field(None, gt=0, description="Rate of a CSV that has no '# fs_hz=' line or time_s column.")
    channel_kinds: dict[str, Literal["ecg", "ppg"]] = Field(
        default_factory=dict, description='Kind of channels whose name does not tell (e.g. {"ch1" = "ecg"}).')


class BeatTimesSource(_Strict):
    type: Literal["beat_times"] = "beat_times"
    path: str = Field(..., description="WFDB record whose annotation holds the beats.")
    annotator: str = "atr"
    realtime: bool = False


class SimulateSource(_Strict):
    type: Literal["simulate"] = "simulate"
    scenario: Literal["nsr", "af", "pvc", "vt", "noise", "lead_off", "mixed", "ppg_nsr", "ppg_af"] = "nsr"
    duration_s: float = Field(60.0, gt=0)
    fs_hz: float = Field(250.0, gt=0)
    heart_rate_bpm: float = Field(70.0, gt=20, lt=250)
    seed: int = 0
    chunk_s: float = Field(1.0, gt=0, le=60)
    realtime: bool = False

    @model_validator(mode="after")
    def _rate_usable(self) -> "SimulateSource":
        kind = "ppg" if self.scenario.startswith("ppg") else "ecg"
        _check_rate(kind, self.fs_hz)
        return self


def _check_rate(kind: str, fs_hz: float) -> None:
    """So that check-config refuses a rate the daemon's detectors could not run at."""
    from edgemon.dsp import rate_problem

    problem = rate_problem(kind, fs_hz)
    if problem:
        raise ValueError(f"fs_hz: {problem}")


# Microvolts per count of each front-end as docs/daemon.md describes it (until 2026-11-25 the default was
# 0.2861, the ADS1292R at PGA gain 1, whatever front_end said: an AD8232 read 28x too small).
FRONT_END_LSB_UV = {"ads1292r": 0.0481, "ad8232": 8.06}


class SerialEcgSource(_Strict):
    type: Literal["serial_ecg"] = "serial_ecg"
    port: str = Field("/dev/ttyAMA0", description="Serial device of the MCU front-end.")
    baudrate: int = Field(115200, gt=0)
    fs_hz: float = Field(250.0, gt=0)
    front_end: Literal["ads1292r", "ad8232"] = Field(
        "ads1292r", description="The analog front-end; it sets lsb_uv's default (docs/daemon.md).")
    lsb_uv: float | None = Field(None, gt=0, description=(
        "Microvolts per ADC count after the front-end gain. Default from front_end: ads1292r 0.0481 "
        "(2 x 2.42 V / (PGA gain 6 x 2^24)), ad8232 8.06 (a 12-bit MCU ADC at 3.3 V, AD8232 gain 100)."))
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _rate_usable(self) -> "SerialEcgSource":
        _check_rate("ecg", self.fs_hz)
        if self.lsb_uv is None:   # the front-end's usual scale: another board's gain or ADC must say its own
            self.lsb_uv = FRONT_END_LSB_UV[self.front_end]
        return self


class Max30102Source(_Strict):
    type: Literal["max30102"] = "max30102"
    bus: int = Field(1, ge=0, description="I2C bus number (/dev/i2c-N).")
    address: int = Field(0x57, ge=0, le=0x7F)
    fs_hz: Literal[50, 100, 200, 400] = 100
    led_current_ma: float = Field(7.0, gt=0, le=51)
    reconnect_max_s: float = Field(30.0, gt=0)


class PolarH10Source(_Strict):
    type: Literal["polar_h10"] = "polar_h10"
    address: str = Field(..., pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$", description="BLE MAC address.")
    ecg: bool = Field(True, description="Stream 130 Hz ECG over PMD; RR intervals always feed the beat-time path.")
    reconnect_max_s: float = Field(30.0, gt=0)


SourceConfig = Annotated[
    Union[ReplaySource, BeatTimesSource, SimulateSource, SerialEcgSource, Max30102Source, PolarH10Source],
    Field(discriminator="type"),
]


class DspSection(_Strict):
    bandpass_hz: tuple[float, float] = Field((0.5, 40.0), description="ECG band kept; 0.5 Hz keeps ST, 40 Hz drops EMG.")
    mains_hz: Literal[0, 50, 60] = Field(50, description="Mains notch; 0 disables it.")
    model_fs_hz: float = Field(250.0, gt=0, description="Not used: each model card states the rate its model "
                                                        "expects, and the pipeline resamples to that. Kept so "
                                                        "configs that set it still load.")
    quality_window_s: float = Field(2.0, gt=0.25, le=30)
    ppg_bandpass_hz: tuple[float, float] = (0.5, 8.0)
    invert_ecg: bool = Field(
        False, description="Multiply the ECG by -1 as it arrives: for electrodes placed so that the QRS points "
                           "down. The rhythm CNN was trained on upright QRS; on MITDB DS1 its AF recall per "
                           "10-s window falls from 0.88 to 0.75 on the inverted lead (tools/polarity.py).")


class ModelRef(_Strict):
    card: str = Field(..., description="Path to the model card JSON; the .tflite is named inside and sha256-verified.")
    enabled: bool = True


class DetectSection(_Strict):
    num_threads: int = Field(1, ge=1, le=8)
    kernels: Literal["default", "builtin"] = Field(
        "default", description="TFLite kernels: 'default' lets the runtime choose (LiteRT: XNNPACK, the "
                               "kernels all published figures were measured with); 'builtin' gives the same "
                               "integers under LiteRT and tflite-runtime, up to 2x slower per inference.")
    models_dir: str = Field("models", description="Folder holding the three model cards (rhythm_ecg, beat_aami, "
                                                  "af_tachogram) when none are listed; a missing one is a "
                                                  "model_load_failed alert. A relative folder is looked up in the "
                                                  "working folder, then beside the package. List [[detect.models]] "
                                                  "to run with fewer.")
    models: list[ModelRef] = Field(default_factory=list)
    pause_s: float = Field(3.0, ge=1.5, description="Gap without beats, with good signal, reported as a pause.")
    asystole_s: float = Field(5.0, ge=1.5, description="Gap without beats reported as asystole instead of pause.")
    brady_bpm: float = Field(40.0, gt=10)
    tachy_bpm: float = Field(150.0, gt=60)
    sustained_s: float = Field(10.0, gt=0)
    bigeminy_cycles: int = Field(
        4, ge=2, description="Ventricular bigeminy: this many N-V couplets in a row (each V premature). Monitors "
                             "use 3; one more on a single wearable lead, so a chance alternation of isolated "
                             "PVCs makes no advisory (docs/alerts.md, 'Ectopy rules').")
    pvc_per_min: int = Field(
        10, ge=1, description="Frequent PVCs: this many isolated or paired V beats within a sliding minute (a "
                              "bedside monitor's default 'PVCs/min high'; ~14 % of beats at 70 bpm).")
    af_fusion: Literal["all", "majority", "any"] = Field(
        "all", description="On ECG, a beat-timing AF window counts as AF only if the rhythm CNN's 10-s windows "
                           "overlapping its centre beats agree: all of them, a majority, or any one. 'all' was "
                           "chosen on MITDB DS1 (false AF alerts 3 -> 0, AF episodes found unchanged, 8 of 8).")
    af_rhythm_lookahead: bool = Field(
        True, description="On ECG, a beat-timing AF window the rhythm CNN confirmed also counts its look-ahead "
                          "(the beats after the ones it labels) toward alerts.af_onset_s, as far as every "
                          "completed rhythm-CNN window after its labelled beats says AF: the CNN that sees the "
                          "P waves vouches for the beats the beat-timing model has not labelled yet. Chosen on "
                          "development data (docs/alerts.md): MITDB DS1 median AF onset delay 54.8 -> 38.8 s, "
                          "CinC 2017 validation recordings' first AF alert 53 -> 41 s, with the same alerts "
                          "there and on nstdb 119e*. No effect on PPG or beat-time streams.")

    @model_validator(mode="after")
    def _ordered_limits(self) -> "DetectSection":
        # the rules would refuse these at start-up; say so while the config is read, naming the fields
        if self.pause_s > self.asystole_s:
            raise ValueError(f"detect.pause_s ({self.pause_s:g}) must not exceed detect.asystole_s "
                             f"({self.asystole_s:g}): a pause is the shorter gap")
        if self.brady_bpm >= self.tachy_bpm:
            raise ValueError(f"detect.brady_bpm ({self.brady_bpm:g}) must be below detect.tachy_bpm "
                             f"({self.tachy_bpm:g})")
        return self


class DaemonSection(_Strict):
    queue_chunks: int = Field(64, ge=2, description="Bound of each inter-stage queue.")
    backpressure: Literal["drop_oldest", "block"] = Field(
        "drop_oldest", description="When the pipeline falls behind a sensor: drop (and count) the oldest chunks, "
                                   "re-filled as invalid samples, or make the source wait. File and simulated "
                                   "sources always wait.")
    state_dir: str = Field("./state", description="Outbox and capture folder.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    telemetry_interval_s: float = Field(60.0, gt=0)
    source_silent_s: float = Field(10.0, gt=0)
    record_to: str | None = None
    record_max_mb: float = Field(
        1024.0, gt=0, description="--record-to keeps at most this much; the oldest closed files are deleted "
                                  "first. 1 GB is ~12 days of one 250 Hz ECG lead (86 MB/day): a field problem "
                                  "is looked at within days.")
    record_min_free_mb: float = Field(
        512.0, ge=0, description="--record-to also deletes its oldest files while the card has less free than "
                                 "this, and stops recording if that is not enough: the outbox and the OS need "
                                 "the space more than a recording does.")


class DeviceConfig(_Strict):
    device: DeviceSection = Field(default_factory=DeviceSection)
    source: SourceConfig = Field(default_factory=ReplaySource)
    dsp: DspSection = Field(default_factory=DspSection)
    detect: DetectSection = Field(default_factory=DetectSection)
    alerts: AlertPolicy = Field(default_factory=AlertPolicy)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    daemon: DaemonSection = Field(default_factory=DaemonSection)

    @model_validator(mode="after")
    def _bands_ordered(self) -> "DeviceConfig":
        for name in ("bandpass_hz", "ppg_bandpass_hz"):
            lo, hi = getattr(self.dsp, name)
            if not 0 < lo < hi:
                raise ValueError(f"dsp.{name} must be 0 < low < high, got {getattr(self.dsp, name)}")
        return self


_SOURCE_TYPES = frozenset(m.model_fields["type"].default for m in get_args(get_args(SourceConfig)[0]))


def _format_error(path: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-after")]
        if len(loc) >= 2 and loc[0] == "source" and loc[1] in _SOURCE_TYPES:
            del loc[1]   # the union's tag is source.type, not a level of the file: source.chunk_s
        msg = e["msg"].removeprefix("Value error, ")
        # a check of the whole file names its fields in the message itself
        lines.append(f"{path}: {'.'.join(loc)}: {msg}" if loc else f"{path}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict, path: str = "<config>") -> DeviceConfig:
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(path, err)) from None


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a TOML device config; raise ConfigError naming file/field/reason."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: cannot read config: {'a folder, not a file' if p.is_dir() else 'no such file'}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text: {err}") from None
    return parse_config(data, str(p))


def schema_json() -> str:
    """The JSON Schema of a device config file (as TOML parses it), committed as
    docs/device-config.schema.json for editors and provisioning tools."""
    import json

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **DeviceConfig.model_json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
