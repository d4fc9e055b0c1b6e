"""Model runtime: card path -> verified, ready-to-run TFLite model.

``load_model(card_path)`` reads the card, checks the .tflite file's sha256
against the card BEFORE any interpreter sees the bytes (a tampered or
swapped model is refused with ``ModelIntegrityError``), then builds a LiteRT
interpreter (``ai_edge_litert``; ``tflite_runtime`` as fallback) and checks
that the tensor shapes and int8 parameters match the card.
``LoadedModel.predict(x)`` takes float32 features and gives float32
probabilities; int8 quantise/dequantise happens here so callers never see
integers. Imports numpy and pydantic only (no tensorflow, no scipy).
"""
from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemon.cstdio import captured
from edgemon.detect.card import ModelCard, ModelCardError, load_card, model_path

log = logging.getLogger(__name__)

RUNTIMES = ("ai_edge_litert", "tflite_runtime")
# "default": the runtime's own choice. LiteRT 2.x runs int8 models through its XNNPACK
# delegate, whose int8 kernels round differently from the built-in ones (up to 18 output
# steps of 1/256 on MITDB windows); tflite-runtime 2.14 keeps int8 on the built-in kernels.
# "builtin" skips the default delegates: the same integers under both runtimes, up to 2x slower
# (tools/compare_runtimes.py). The evaluation figures were measured with "default" on LiteRT.
KERNELS = ("default", "builtin")
_MAX_BLOCK = 512  # windows per interpreter call when the model's batch dimension is resizable


class ModelIntegrityError(Exception):
    """The model file does not match its card (hash, size or tensor layout)."""


class ModelInputError(ValueError):
    """Input of the wrong shape, dtype or sample rate for this model."""


class ModelRuntimeError(Exception):
    """No TFLite runtime importable, or the interpreter refused the file."""


def _resolver_kwargs(rt_name: str, kernels: str) -> dict:
    if kernels not in KERNELS:
        raise ModelRuntimeError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    if kernels == "default":
        return {}
    if rt_name == "ai_edge_litert":
        from ai_edge_litert.interpreter import OpResolverType
    else:
        from tflite_runtime.interpreter import OpResolverType  # type: ignore[import-not-found]
    return {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def _interpreter_class(runtime: str | None) -> tuple[Any, str]:
    names = RUNTIMES if runtime is None else (runtime,)
    errors = []
    for name in names:
        if name not in RUNTIMES:
            raise ModelRuntimeError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter
            else:
                from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]
            return Interpreter, name
        except ImportError as err:
            errors.append(f"{name}: {err}")
    raise ModelRuntimeError("no TFLite runtime importable (" + "; ".join(errors)
                            + "); install ai-edge-litert (or tflite-runtime)")


def available_runtimes() -> list[str]:
    out = []
    for name in RUNTIMES:
        try:
            _interpreter_class(name)
            out.append(name)
        except ModelRuntimeError:
            pass
    return out


@dataclass
class LoadedModel:
    """A verified model and its interpreter. Not thread-safe: one per worker."""

    card: ModelCard
    card_path: Path
    model_path: Path
    runtime: str
    num_threads: int
    _interp: Any = field(repr=False)
    _in: dict = field(repr=False)
    _out: dict = field(repr=False)
    _resizable: bool = field(repr=False)
    _batch: int = field(default=1, repr=False)
    kernels: str = "default"

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def sha256(self) -> str:
        return self.card.sha256

    @property
    def window_shape(self) -> tuple[int, ...]:
        """Shape of one input example (the card's input_shape without the batch dimension)."""
        return tuple(self.card.input_shape[1:])

    def threshold(self, cls: str, default: float = 0.5) -> float:
        return float(self.card.decision_thresholds.get(cls, default))

    def check_rate(self, fs_hz: float | None) -> None:
        """Refuse a stream whose sample rate differs from the card's (interval models take any rate)."""
        want = self.card.input_rate_hz
        if want is None:
            return
        if fs_hz is None or abs(float(fs_hz) - want) > 1e-6 * want:
            raise ModelInputError(
                f"model {self.name} {self.version} ({self.card_path.name}) expects input at {want:g} Hz, "
                f"got {fs_hz if fs_hz is None else format(float(fs_hz), 'g')} Hz; resample first")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for one example (shape = window_shape) -> (n_outputs,),
        or for a batch (n, *window_shape) -> (n, n_outputs). float32 in, float32 out."""
        x = np.asarray(x)
        if self._batch == 1 and x.dtype == np.float32 and x.shape == self._one_shape:
            return self._predict_one(x)
        if x.dtype.kind not in "fiu":
            raise ModelInputError(f"model {self.name}: input must be numeric, got dtype {x.dtype}")
        win = self.window_shape
        single = x.shape == win
        if single:
            x = x[None]
        elif x.ndim != len(win) + 1 or tuple(x.shape[1:]) != win:
            raise ModelInputError(
                f"model {self.name} {self.version}: expected input shape {win} or (batch, *{win}), got {tuple(x.shape)}")
        x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise ModelInputError(f"model {self.name}: input contains NaN or infinity")
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self._n_outputs()), np.float32)
        xq = self._quantize(x)
        if self._resizable:
            block = min(n, _MAX_BLOCK)
            outs = []
            for s in range(0, n, block):
                part = xq[s:s + block]
                m = part.shape[0]
                if m < block:  # pad so the interpreter keeps one allocation
                    pad = np.zeros((block - m,) + part.shape[1:], part.dtype)
                    part = np.concatenate([part, pad])
                outs.append(self._invoke(part)[:m])
            y = np.concatenate(outs)
        else:
            y = np.concatenate([self._invoke(xq[i:i + 1]) for i in range(n)])
        y = self._dequantize(y).reshape(n, -1)
        return y[0] if single else y

    # -- internals -------------------------------------------------------
    @property
    def _one_shape(self) -> tuple[int, ...]:
        shape = self.__dict__.get("_one_shape_v")
        if shape is None:
            shape = self._one_shape_v = (1, *self.window_shape)
        return shape

    def _predict_one(self, x: np.ndarray) -> np.ndarray:
        """``predict`` for a float32 batch of one while the interpreter is at batch 1 (the
        streaming case: once per beat or window): the same checks and arithmetic, without
        the batching machinery, whose per-call overhead was larger than the int8 model's run."""
        if not np.isfinite(x).all():
            raise ModelInputError(f"model {self.name}: input contains NaN or infinity")
        interp = self._interp
        interp.set_tensor(self._in["index"], self._quantize(x))
        interp.invoke()
        return self._dequantize(interp.get_tensor(self._out["index"])).reshape(1, -1)

    def _n_outputs(self) -> int:
        return int(np.prod(self._out["shape"][1:])) or 1

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dt = self._in["dtype"]
        if dt == np.float32:
            return x
        q = self.__dict__.get("_q_in")
        if q is None:  # per call np.iinfo and tuple unpacking cost more than the int8 model itself
            scale, zp = self._in["quantization"]
            info = np.iinfo(dt)
            q = self._q_in = (np.float32(scale), zp, info.min, info.max, dt)
        scale, zp, lo, hi, dt = q
        # np.round / np.clip spelled as their ufuncs (rint, maximum, minimum): same values,
        # a third of the per-call cost, which matters once per beat
        y = np.divide(x, scale)
        np.rint(y, out=y)
        y += zp
        np.maximum(y, lo, out=y)
        np.minimum(y, hi, out=y)
        return y.astype(dt)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self._out["dtype"] == np.float32:
            return y.astype(np.float32)
        scale, zp = self._out["quantization"]
        return ((y.astype(np.float32) - zp) * scale).astype(np.float32)

    def _invoke(self, xq: np.ndarray) -> np.ndarray:
        b = xq.shape[0]
        if b != self._batch:
            self._interp.resize_tensor_input(self._in["index"], [b, *self.window_shape])
            self._interp.allocate_tensors()
            self._batch = b
        self._interp.set_tensor(self._in["index"], xq)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"]).copy()


def verify_file(card: ModelCard, card_path: str | Path) -> Path:
    """Check the model file named by a card: exists, size and sha256 match. Returns its path."""
    mp = model_path(card, card_path)
    if not mp.is_file():
        raise ModelIntegrityError(f"model file {mp} (named by card {card_path}): not found")
    data = mp.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.sha256:
        raise ModelIntegrityError(
            f"model file {mp}: sha256 mismatch, card {card_path} expects {card.sha256}, file has {actual}; "
            "refusing to load a model that is not the one the card describes")
    if len(data) != card.size_bytes:
        raise ModelIntegrityError(
            f"model file {mp}: size {len(data)} bytes, card {card_path} says {card.size_bytes}")
    return mp


def load_model(card_path: str | Path, num_threads: int = 1, runtime: str | None = None,
               kernels: str = "default") -> LoadedModel:
    """Card -> verified ``LoadedModel``.

    runtime: None tries ai_edge_litert then tflite_runtime; a name forces one.
    kernels: "default" or "builtin" (see ``KERNELS``).
    Raises ModelCardError (bad card), ModelIntegrityError (hash/size/layout),
    ModelRuntimeError (no runtime, interpreter refused the file).
    """
    card_path = Path(card_path)
    card = load_card(card_path)
    mp = verify_file(card, card_path)  # before any interpreter touches the bytes
    cls, rt_name = _interpreter_class(runtime)
    extra = _resolver_kwargs(rt_name, kernels)
    # The runtime writes its own lines ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.") onto
    # stderr, where the daemon keeps one JSON object per line: they go through logging instead.
    with captured(sys.stderr) as said:
        try:
            interp = cls(model_path=str(mp), num_threads=int(num_threads), **extra)
            interp.allocate_tensors()
            failure = None
        except (ValueError, RuntimeError) as err:
            failure = err
    if failure is not None:
        detail = f" ({said[0]})" if said else ""
        raise ModelRuntimeError(f"model file {mp}: {rt_name} cannot load it: {failure}{detail}") from None
    for line in re.split(r"\s(?=(?:INFO|WARNING|ERROR): )", said[0]) if said else ():
        log.log(logging.WARNING if line.startswith(("WARNING", "ERROR")) else logging.DEBUG,
                "%s (%s): %s", rt_name, mp.name, line)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ModelIntegrityError(f"model file {mp}: expected 1 input and 1 output tensor, "
                                  f"got {len(ins)} and {len(outs)}")
    inp, out = ins[0], outs[0]
    shape = [int(d) for d in inp["shape"]]
    if shape != list(card.input_shape):
        raise ModelIntegrityError(f"model file {mp}: input tensor shape {shape} differs from card "
                                  f"{card_path} input_shape {card.input_shape}")
    if np.dtype(inp["dtype"]).name != card.input_dtype:
        raise ModelIntegrityError(f"model file {mp}: input dtype {np.dtype(inp['dtype']).name} differs from card "
                                  f"input_dtype {card.input_dtype}")
    n_out = int(np.prod(out["shape"][1:]))
    if n_out != len(card.classes):
        raise ModelIntegrityError(f"model file {mp}: {n_out} outputs but card lists classes {card.classes}")
    if card.quantization is not None and card.input_dtype != "float32":
        q = card.quantization
        got = (*inp["quantization"], *out["quantization"])
        want = (q.input_scale, q.input_zero_point, q.output_scale, q.output_zero_point)
        if not np.allclose(got, want, rtol=1e-5, atol=0):
            raise ModelIntegrityError(f"model file {mp}: quantization {got} differs from card {card_path} {want}")
    sig = inp.get("shape_signature")
    resizable = sig is not None and len(sig) > 0 and int(sig[0]) == -1
    return LoadedModel(card=card, card_path=card_path.resolve(), model_path=mp, runtime=rt_name,
                       num_threads=int(num_threads), _interp=interp, _in=inp, _out=out,
                       _resizable=resizable, _batch=shape[0], kernels=kernels)


__all__ = ["LoadedModel", "ModelCardError", "ModelInputError", "ModelIntegrityError", "ModelRuntimeError",
           "available_runtimes", "load_model", "verify_file"]
