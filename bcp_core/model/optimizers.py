"""Adam with a rate of its own for some weights (``train --rate-decay``: layer-wise rates).

A pretrained backbone fine-tuned on few images is often trained at a rate that falls with depth:
the new head learns at the full rate, the backbone's last layers a little more slowly, its first
layers much more slowly, so that what ImageNet taught the early layers is kept while the late
ones adapt. :func:`bcp_core.model.pretrained.rate_factors` gives the factor of each of the
backbone's weights; :class:`LayerwiseAdam` applies them.

Scaling the gradients instead would not do it: Adam divides each step by the gradient's own
running size, so a constant factor on a gradient cancels. The factor has to multiply the rate.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras


@keras.saving.register_keras_serializable(package="bcp_core")
class LayerwiseAdam(keras.optimizers.Adam):
    """Adam whose step for the weight at path ``p`` is ``rate_factors[p]`` times Adam's step
    (1 for a weight not named), with any learning rate or schedule Adam takes.

    Args:
        learning_rate: the full rate (a float or a schedule), as for Adam.
        rate_factors: weight path (``variable.path``, e.g. ``"block3_dwconv/kernel"``) ->
            factor, each in (0, 1]; paths of weights the optimiser never sees are ignored.
        **kwargs: Adam's other arguments.
    """

    def __init__(
        self, learning_rate=0.001, rate_factors: Mapping[str, float] | None = None, **kwargs
    ) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        factors = {str(path): float(f) for path, f in (rate_factors or {}).items()}
        bad = {path: f for path, f in factors.items() if not 0.0 < f <= 1.0}
        if bad:
            raise ValueError(f"Rate factors must be in (0, 1]; got {bad}.")
        self.rate_factors = factors
        self._factor_of_index: dict[int, float] = {}

    def build(self, var_list) -> None:
        super().build(var_list)
        # The index Adam keeps each weight's moments under: the same one update_step finds.
        self._factor_of_index = {
            index: self.rate_factors[variable.path]
            for index, variable in enumerate(var_list)
            if self.rate_factors.get(variable.path, 1.0) != 1.0
        }

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor_of_index.get(self._get_variable_index(variable))
        if factor is not None:  # traced once per weight: a constant in the step's graph
            learning_rate = keras.ops.multiply(learning_rate, factor)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate_factors": dict(self.rate_factors)}
