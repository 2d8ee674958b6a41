"""An exponential moving average of a model's weights, validated and kept instead of the
weights as trained (``train --weight-ema``).

At a constant learning rate the weights after the last step of an epoch are one point of a
noisy walk; their moving average over the last few hundred steps sits nearer the middle of
it. The average covers every weight, batch-norm statistics included, so the statistics the
averaged network normalises with come from the same span of steps as its kernels.

The callback keeps the average in NumPy, float32: for EfficientNet-Lite0 (3.4 million weights
in 247 variables) about 60 ms a step on two busy CPU cores, most of it reading the weights out
of TensorFlow, against a training step of 1.5-2 s. It swaps the average into the model at the
end of each epoch, so the callbacks listed after it (the validation scoring, the keeping of
the best epoch, early stopping) see the averaged network; the weights as trained come back at
the start of the next epoch. After the last epoch the averaged network stays in the model.
"""

from __future__ import annotations

import keras
import numpy as np


class WeightAverage(keras.callbacks.Callback):
    """Keeps ``average = momentum * average + (1 - momentum) * weights`` after every training
    step, starting from the weights the run starts with, and puts the average into the model
    at the end of each epoch. List it before the callbacks that should see the average."""

    def __init__(self, momentum: float) -> None:
        super().__init__()
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must lie between 0 and 1, got {momentum!r}")
        self.momentum = float(momentum)
        self.average: list[np.ndarray | None] | None = None
        self.steps = 0  # steps averaged so far
        self._as_trained: list[np.ndarray] | None = None  # while the average is in the model

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.average is None:  # a later phase of the same run goes on averaging
            # Floating weights are averaged; any others (counters, seeds) are taken as they are.
            self.average = [
                np.array(w, dtype=np.float32) if np.issubdtype(w.dtype, np.floating) else None
                for w in self.model.get_weights()
            ]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._as_trained is not None:
            self.model.set_weights(self._as_trained)
            self._as_trained = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self.average is not None
        keep = self.momentum
        for average, weight in zip(self.average, self.model.get_weights(), strict=True):
            if average is None:
                continue
            delta = np.subtract(weight, average, dtype=np.float32)
            delta *= 1.0 - keep
            average += delta
        self.steps += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.average is None or self._as_trained is not None:
            return
        current = self.model.get_weights()
        self._as_trained = current
        self.model.set_weights(
            [
                w if a is None else a.astype(w.dtype)
                for a, w in zip(self.average, current, strict=True)
            ]
        )
