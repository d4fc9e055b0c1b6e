"""Epoch progress for the training scripts: a Keras callback over ``edgemon.evaluate.progress``.

Takes the planned epoch count and a label; gives, on stderr, a bar with the
epoch count and an ETA on a terminal (or a plain line per epoch in a log), and
one line per epoch with Keras' numbers (loss, val_loss, ...). Use it with
``verbose=0`` so Keras' own printing does not tear the bar::

    model.fit(..., epochs=n, verbose=0, callbacks=[epoch_progress(n, "train tachogram")])

Early stopping simply ends the bar before its total.
"""
from __future__ import annotations

import sys
import time


def epoch_line(epoch: int, epochs: int, logs: dict | None, seconds: float, elapsed_s: float) -> str:
    """'epoch 3/30 12s loss 0.2100 val_loss 0.1900 (ETA 5:24)' from Keras' epoch logs; the ETA
    assumes the remaining epochs take the mean so far (early stopping may end sooner)."""
    from edgemon.evaluate.progress import format_duration

    nums = " ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                    if isinstance(v, (int, float)) or hasattr(v, "__float__"))
    eta = format_duration(elapsed_s / max(epoch, 1) * (epochs - epoch))
    return f"epoch {epoch}/{epochs} {seconds:.0f}s {nums} (ETA {eta})".replace("  ", " ")


def epoch_progress(epochs: int, desc: str):
    """A ``keras.callbacks.Callback`` advancing a progress bar once per epoch."""
    import keras

    from edgemon.evaluate.progress import progress

    class EpochProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.bar = progress(range(epochs), total=epochs, desc=desc, log_every_s=0.0)
            self._it = None
            self._t0 = self._start = 0.0

        def on_train_begin(self, logs=None):
            self._start = time.monotonic()
            self._it = iter(self.bar)
            next(self._it, None)

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            now = time.monotonic()
            if self._it is not None:
                next(self._it, None)
            self.bar.write(epoch_line(epoch + 1, epochs, logs, now - self._t0, now - self._start), file=sys.stderr)

        def on_train_end(self, logs=None):
            if self._it is not None:
                self._it.close()
                self._it = None

    return EpochProgress()
