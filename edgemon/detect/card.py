"""Model cards: the JSON file that travels with every .tflite model.

Takes a card path, gives a validated ``ModelCard``. The card names the model
file (relative to the card), its sha256 and size (checked by
``edgemon.detect.runtime.load_model`` before the interpreter exists), the
input contract (shape, dtype, rate, window, hop), the classes and decision
thresholds, the int8 quantisation parameters, where the training data and the
committed split came from, and every reported metric with the command that
produced it. Pure pydantic + json: safe for the daemon's start-up path.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ModelCardError(Exception):
    """A card that cannot be read or does not validate; the message names file, field and reason."""


class _Strict(BaseModel):
    # a card is JSON, and Python's parser accepts NaN and Infinity: no threshold or scale may be one
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Metric(_Strict):
    """One reported figure and how to reproduce it."""

    name: str = Field(..., description="e.g. 'beat_sensitivity_pct'.")
    value: float
    data: str = Field(..., description="Data set and part it was measured on, e.g. 'ltafdb/test (12 records)'.")
    command: str = Field(..., description="Exact command that printed the figure.")


class Quantization(_Strict):
    """Affine int8 parameters: real = scale * (q - zero_point)."""

    input_scale: float = Field(..., gt=0)
    input_zero_point: int = Field(..., ge=-128, le=127)
    output_scale: float = Field(..., gt=0)
    output_zero_point: int = Field(..., ge=-128, le=127)


class FloatVsInt8(_Strict):
    """How far the int8 model is from the float model it came from."""

    data: str = Field(..., description="Where compared (never test data).")
    n_windows: int = Field(..., ge=0)
    max_abs_prob_diff: float = Field(..., ge=0)
    mean_abs_prob_diff: float = Field(..., ge=0)
    decision_agreement_pct: float = Field(..., ge=0, le=100)
    float_metrics: dict[str, float] = Field(default_factory=dict)
    int8_metrics: dict[str, float] = Field(default_factory=dict)


class RecordingHead(_Strict):
    """A recording-level decision over a recording's windows (the CinC 2017 task: one label per
    recording): multinomial logistic regression on z = (features - mean) / scale, where the
    features are [log mean, log max, log min] over the windows of each class probability (in
    card class order, each probability floored at prob_floor; with polarity "mean_with_inverted"
    each window's probabilities are the mean of the model's on the window and on its negative).
    Class = argmax(coef @ z + intercept).
    """

    features: str = Field(..., description="What the feature vector holds, in order.")
    polarity: Literal["as_recorded", "mean_with_inverted"] = Field(
        "as_recorded", description="Window probabilities from the ECG as recorded, or the mean of those of "
                                   "the ECG and of its inverse (a handheld lead held the other way round).")
    prob_floor: float = Field(..., gt=0, lt=1)
    mean: list[float] = Field(..., min_length=1)
    scale: list[float] = Field(..., min_length=1)
    coef: list[list[float]] = Field(..., min_length=1, description="One row per class, one column per feature.")
    intercept: list[float] = Field(..., min_length=1)
    fitted_on: str = Field(..., description="Data the head was fitted on (never test data).")

    @model_validator(mode="after")
    def _shapes(self) -> "RecordingHead":
        n = len(self.mean)
        if len(self.scale) != n:
            raise ValueError(f"scale has {len(self.scale)} values, mean has {n}")
        if any(not v > 0 for v in self.scale):
            raise ValueError("scale values must be > 0")
        if any(len(row) != n for row in self.coef):
            raise ValueError(f"every coef row needs {n} values (one per feature)")
        if len(self.intercept) != len(self.coef):
            raise ValueError(f"intercept has {len(self.intercept)} values, coef has {len(self.coef)} rows")
        return self


class SupraventricularRule(_Strict):
    """Beat model: the rhythm before a beat decides with the model whether it is S
    (``edgemon.detect.beats.apply_supraventricular_rule``). After an irregular rhythm (irregularity
    feature >= ``irregularity_max``: AF) the model's S becomes N; after a regular one, a beat the model
    calls N whose pre-RR is below ``pre_rr_over_long_max`` x the long-term mean RR becomes S."""

    pre_rr_over_long_max: float = Field(..., gt=0, lt=1)
    irregularity_max: float = Field(..., gt=0)
    chosen_on: str = Field(..., description="Data the two values were chosen on (never test data).")
    cv_out_of_fold_ds1: dict[str, Any] = Field(default_factory=dict,
                                               description="Figures on that data without and with the rule.")


class ModelCard(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str = Field(..., min_length=1, max_length=32)
    file: str = Field(..., description="TFLite file name, relative to the card's folder.")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(..., gt=0)
    input_shape: list[int] = Field(..., min_length=1, description="Including batch dimension (1).")
    input_dtype: str = Field("int8", description="Dtype of the model's input tensor (int8 or float32).")
    input_rate_hz: float | None = Field(..., description="Sample rate the input expects; null for interval inputs.")
    input_description: str = Field("", description="What each channel of the input holds and how it is normalised.")
    window: str = Field(..., description="e.g. '64 beats' or '10 s'.")
    hop: str = Field(..., description="e.g. '8 beats' or '2 s'.")
    classes: list[str] = Field(..., min_length=1)
    decision_thresholds: dict[str, float] = Field(default_factory=dict)
    training_data: str
    split: str = Field(..., description="Path (repo-relative) of the committed split file.")
    metrics: list[Metric] = Field(default_factory=list)
    float_vs_int8: FloatVsInt8 | None = None
    quantization: Quantization | None = None
    report: str | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict,
                                          description="Constants the feature builder needs (clip ranges, ...).")
    supraventricular_rule: SupraventricularRule | None = Field(
        None, description="Optional rule beside the model's decision (beat model): S only after a regular "
                          "rhythm, and there also a beat early against the long-term RR.")
    recording_head: RecordingHead | None = Field(None, description="Optional decision for a whole recording "
                                                 "from its window probabilities (rhythm model).")

    @field_validator("file")
    @classmethod
    def _plain_relative(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or not v.endswith(".tflite"):
            raise ValueError(f"must be a .tflite file name relative to the card, got {v!r}")
        return v

    @field_validator("input_dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in ("int8", "uint8", "float32"):
            raise ValueError(f"must be int8, uint8 or float32, got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        if any(d <= 0 for d in self.input_shape):
            raise ValueError(f"input_shape dimensions must be positive, got {self.input_shape}")
        for key, thr in self.decision_thresholds.items():
            # '<class>' or '<class>:<variant>' (e.g. 'af:short' for a threshold tuned on short sequences)
            if key.split(":", 1)[0] not in self.classes:
                raise ValueError(f"decision_thresholds key {key!r} does not name one of classes {self.classes}")
            if not 0.0 <= thr <= 1.0:
                raise ValueError(f"decision_thresholds[{key!r}] = {thr} is outside [0, 1]")
        h = self.recording_head
        if h is not None and (len(h.coef) != len(self.classes) or len(h.mean) != 3 * len(self.classes)):
            raise ValueError(f"recording_head needs {len(self.classes)} coef rows and {3 * len(self.classes)} "
                             f"features (log mean, max, min per class), got {len(h.coef)} and {len(h.mean)}")
        if self.input_dtype in ("int8", "uint8") and self.quantization is None:
            raise ValueError("an int8/uint8 model needs a quantization section")
        return self


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card; ``ModelCardError`` names the file, field and reason."""
    p = Path(path)
    if not p.is_file():
        raise ModelCardError(f"model card {p}: file not found")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ModelCardError(f"model card {p}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise ModelCardError(f"model card {p}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(raw, dict):
        raise ModelCardError(f"model card {p}: top level must be a JSON object, got {type(raw).__name__}")
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as err:
        msgs = "; ".join(f"{_field_path(e['loc'])}: {e['msg']}" for e in err.errors())
        raise ModelCardError(f"model card {p}: {msgs}") from None


def model_path(card: ModelCard, card_path: str | Path) -> Path:
    """The .tflite file a card names, resolved next to the card."""
    return Path(card_path).resolve().parent / card.file


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def write_card(card: ModelCard, path: str | Path) -> None:
    """Write a card as stable, human-diffable JSON."""
    Path(path).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
