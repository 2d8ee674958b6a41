"""Grad-CAM heatmaps: where in the image the network found evidence of cancer.

Grad-CAM (Selvaraju et al., 2017), as in the keras-io recipe: the gradient of the cancer score
with respect to the last feature map, averaged per channel, weights the channels; the weighted
sum, without its negative part, says which regions raised the score. The score is the logit of
the probability (the output unit's input, before the sigmoid) so that a confident prediction,
whose sigmoid is flat, still has a usable gradient.

Computing (:func:`gradcam_heatmap`), mapping back to the image (:func:`heatmap_to_image`) and
drawing (:func:`overlay_heatmap`) are separate, so a page can redraw at another opacity without
running the network again.
"""

from __future__ import annotations

import threading
import weakref

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from bcp_core.imaging.preparation import Geometry
from bcp_core.model.architectures import OUTPUT_LAYER
from bcp_core.model.layers import LAYER_PATH_SEPARATOR, last_conv_layer_name, member_models

#: Colour stops of the built-in "jet"-like map: position in [0, 1] -> RGB in [0, 1].
_JET_STOPS = (
    (0.00, (0.0, 0.0, 0.5)),
    (0.11, (0.0, 0.0, 1.0)),
    (0.36, (0.0, 1.0, 1.0)),
    (0.62, (1.0, 1.0, 0.0)),
    (0.87, (1.0, 0.0, 0.0)),
    (1.00, (0.5, 0.0, 0.0)),
)


def gradcam_heatmap(
    model: keras.Model,
    image: np.ndarray,
    *,
    layer_name: str | None = None,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Grad-CAM heatmap of the cancer probability for one network input.

    Args:
        model: a model of :mod:`bcp_core.model.architectures` (one gray input, one sigmoid output).
        image: float32 (H, W, 1), the preprocessed network input.
        layer_name: a top-level layer with a 4-D output; default
            :func:`bcp_core.model.architectures.last_conv_layer_name` ("feature_map" or "conv3").
        metadata: for a model that also takes workbook values, the image's encoded values
            (float32 (k,)); the heatmap is of the same probability, its gradient taken through
            the image alone.

    For a model that averages several runs (:mod:`bcp_core.model.ensemble`) it is the mean of
    the runs' own heatmaps, each scaled to [0, 1] first, so that each run weighs as much in
    the map as in the probability (``layer_name`` then names a layer of each run).

    Returns:
        float32 (H, W) in [0, 1], at the network input size; all zeros when nothing in the
        feature map raised the score.

    Raises:
        ValueError: for an image of the wrong shape or a layer that cannot be used.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 1:
        raise ValueError(f"Grad-CAM needs one (H, W, 1) image; got shape {image.shape}.")
    members = member_models(model)
    if members:
        if metadata is not None:
            raise ValueError("A model that averages runs takes the image alone.")
        maps = [gradcam_heatmap(m, image, layer_name=layer_name) for m in members]
        return _normalise(np.mean(maps, axis=0))
    name = layer_name or last_conv_layer_name(model)
    if LAYER_PATH_SEPARATOR in name:
        raise ValueError(
            f"Grad-CAM needs a layer of the model's own graph, not the nested layer {name!r}."
        )
    batch = (
        image[None] if metadata is None else [image[None], np.asarray(metadata, np.float32)[None]]
    )
    features, weights = _features_and_weights(model, name, batch)
    cam = np.maximum(features @ weights, 0.0)  # ReLU: only evidence for cancer
    return _normalise(_resize(cam, image.shape[0], image.shape[1]))


def _features_and_weights(
    model: keras.Model, layer_name: str, batch
) -> tuple[np.ndarray, np.ndarray]:
    """The feature map (h, w, c) and its channel weights (c,): mean gradient of the score."""
    features, weights = _traced_gradients(model, layer_name)(batch)
    return np.asarray(features[0], dtype=np.float64), np.asarray(weights, dtype=np.float64)


#: Per model, per layer: the traced gradient step. Building the gradient model and running it
#: eagerly cost 594 ms an image for a pretrained backbone at 320 x 256 (its ~150 layers), so
#: both are done once per loaded model; the entry goes with the model.
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TRACED_LOCK = threading.Lock()


def _traced_gradients(model: keras.Model, layer_name: str):
    with _TRACED_LOCK:
        per_layer = _TRACED.setdefault(model, {})
        if layer_name not in per_layer:
            grad_model, dense = _gradient_model(model, layer_name)

            @tf.function(reduce_retracing=True)
            def step(batch):
                with tf.GradientTape() as tape:
                    features, head = grad_model(batch, training=False)
                    score = _score(head, dense)
                grads = tape.gradient(score, features)
                if grads is None:  # seen while tracing
                    raise ValueError(f"The score does not depend on layer {layer_name!r}.")
                return features, tf.reduce_mean(grads, axis=(0, 1, 2))

            per_layer[layer_name] = step
        return per_layer[layer_name]


def _gradient_model(model: keras.Model, layer_name: str):
    """A model from the input to (feature map, score input), and the output Dense if usable.

    When the output is this package's sigmoid Dense, the model returns the Dense layer's
    input, and the logit is computed in the tape from its kernel and bias; otherwise the
    model's own output (a probability) is the score.
    """
    feature_map = model.get_layer(layer_name).output
    try:
        dense = model.get_layer(OUTPUT_LAYER)
    except ValueError:
        dense = None
    is_sigmoid_dense = (
        isinstance(dense, keras.layers.Dense)
        and dense.activation is keras.activations.sigmoid
        and dense.output is model.outputs[0]
    )
    if is_sigmoid_dense:
        return keras.Model(model.input, [feature_map, dense.input]), dense
    return keras.Model(model.input, [feature_map, model.outputs[0]]), None


def _score(head: tf.Tensor, dense: keras.layers.Dense | None) -> tf.Tensor:
    if dense is None:
        return head[:, 0]
    x = tf.cast(head, dense.kernel.dtype)
    return (tf.matmul(x, dense.kernel) + dense.bias)[:, 0]


def _resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D float map (pixel centres aligned, as PIL does)."""
    img = Image.fromarray(np.asarray(values, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _normalise(heat: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the maximum; an all-zero (or non-finite) map stays zeros."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    heat = np.maximum(heat, 0.0)
    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(heat, dtype=np.float32)
    return np.clip(heat / peak, 0.0, 1.0).astype(np.float32)


def heatmap_to_image(heatmap: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Undo the preparation's geometry: a network-size heatmap on the decoded image.

    :func:`bcp_core.imaging.preparation.prepare` mirrored the image (when ``geometry.flipped``),
    cropped it to ``geometry.crop_box`` and placed the resized crop in the network input as
    ``geometry.placement`` records. This takes the heatmap's part at that placement, resizes it
    to the crop, mirrors it back and puts it in the crop box; outside the crop the heatmap is 0.

    Args:
        heatmap: (H, W) at the network input size, as from :func:`gradcam_heatmap`.
        geometry: the network input's :class:`~bcp_core.imaging.preparation.Geometry`.

    Returns:
        float32 (height, width) of ``geometry.original_shape``, in [0, 1].

    Raises:
        ValueError: for a crop box outside the image.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    height, width = (int(v) for v in geometry.original_shape[:2])
    top, bottom, left, right = (int(v) for v in geometry.crop_box)
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(
            f"Crop box {tuple(geometry.crop_box)} lies outside an image of {height}x{width}."
        )
    (row, col), (fit_h, fit_w) = geometry.placement.offset, geometry.placement.fitted_size
    on_crop = _resize(heatmap[row : row + fit_h, col : col + fit_w], bottom - top, right - left)
    if geometry.flipped:
        on_crop = on_crop[:, ::-1]
    out = np.zeros((height, width), dtype=np.float32)
    out[top:bottom, left:right] = on_crop
    return np.clip(out, 0.0, 1.0)


def colormap_lut(size: int = 256) -> np.ndarray:
    """A "jet"-like colour map as a uint8 (size, 3) table: dark blue -> cyan -> yellow -> red."""
    positions = np.linspace(0.0, 1.0, size)
    stops = np.array([s for s, _ in _JET_STOPS])
    colours = np.array([c for _, c in _JET_STOPS])
    table = np.stack([np.interp(positions, stops, colours[:, i]) for i in range(3)], axis=1)
    return np.round(table * 255).astype(np.uint8)


_LUT = colormap_lut()


def overlay_heatmap(gray: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """Draw a heatmap over a grey image: uint8 RGB (h, w, 3).

    Each pixel's colour weight is ``alpha * heat``, so regions without evidence keep the plain
    grey film and the radiologist still sees the anatomy under the hot spots.

    Args:
        gray: (h, w) in [0, 1].
        heatmap: (h, w) in [0, 1], e.g. from :func:`heatmap_to_image`.
        alpha: opacity of the colour where the heat is 1, in [0, 1].

    Raises:
        ValueError: for mismatched shapes or alpha outside [0, 1].
    """
    gray = np.clip(np.nan_to_num(np.asarray(gray, dtype=np.float32)), 0.0, 1.0)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if gray.ndim != 2 or gray.shape != heat.shape:
        raise ValueError(
            f"The grey image and the heatmap must be 2-D of one shape; got {gray.shape} "
            f"and {heat.shape}."
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1; got {alpha!r}.")
    colour = _LUT[np.round(heat * (len(_LUT) - 1)).astype(np.intp)].astype(np.float32)
    weight = (alpha * heat)[..., None]
    rgb = (1.0 - weight) * (gray[..., None] * 255.0) + weight * colour
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
