"""Finding the layer Grad-CAM reads: the last feature map of a model."""

from __future__ import annotations

import keras

#: How a model that averages several runs names each run's network
#: (:mod:`bcp_core.model.ensemble`): ``member_1``, ``member_2``, ...
MEMBER_PREFIX = "member_"

#: Separates nested model names in the paths returned by :func:`last_conv_layer_name`.
LAYER_PATH_SEPARATOR = "/"

#: Layers skipped when looking for the last feature map: they only shrink it.
_SKIPPED_LAYER_TYPES = (
    keras.layers.InputLayer,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)


def _has_4d_output(layer: keras.layers.Layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # a layer used more than once has no single output
        return False


def _feature_map_path(model: keras.Model) -> list[str] | None:
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            inner = _feature_map_path(layer)
            if inner is not None:
                return [layer.name, *inner]
        elif not isinstance(layer, _SKIPPED_LAYER_TYPES) and _has_4d_output(layer):
            return [layer.name]
    return None


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the last layer with a 4-D (batch, height, width, channels) output, for Grad-CAM.

    Plain pooling layers are skipped (their output is a coarser copy of their input). The
    result is a path: layer names joined by "/" from ``model`` down into nested models, e.g.
    "backbone/conv5_block3_out" for a model whose backbone pools internally. For every model
    built here it is a single top-level name ("feature_map" for the default CNN and the
    transfer models, "conv3" for the seed CNN), so the Keras Grad-CAM recipe works directly::

        keras.Model(model.input, [model.get_layer(name).output, model.output])

    A nested path cannot be wired that way (a nested model's inner outputs are not tensors of
    the outer graph).

    Raises:
        ValueError: The model has no layer with a 4-D output.
    """
    path = _feature_map_path(model)
    if path is None:
        raise ValueError(f"The model {model.name!r} has no layer with a 4-D output.")
    return LAYER_PATH_SEPARATOR.join(path)


def member_models(model: keras.Model) -> list[keras.Model]:
    """The runs' networks of a model that averages several (:mod:`bcp_core.model.ensemble`),
    in order; [] for any other model."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)
    ]
