"""Model builders: every model maps one gray image to P(cancer).

The contract every builder keeps (the dataset, training, bundle and explain modules rely on it):

* one input, ``keras.Input(shape=(height, width, 1))``: float32 gray values in [0, 1], exactly
  what the shared preprocessing produces for every model;
* one output, the layer named ``"probability"``: a sigmoid of shape ``(batch, 1)``;
* whatever a backbone needs (three channels, its own ImageNet normalisation) happens inside the
  model with built-in, serialisable layers (no ``Lambda``, no custom classes), so a saved model
  loads with ``keras.models.load_model(path, safe_mode=True)``;
* models are built with the functional API from ``keras.Input`` (always built, always callable)
  and returned uncompiled.

Builders raise :class:`bcp_core.errors.UserError` (a ``ValueError``) for settings a user can get
wrong: unknown model names, images too small for a backbone, missing or unfitting weight files.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bcp_core.config import (
    HEADS,
    SHARED_HEAD_MODELS,
    TRANSFER_MODELS,
    WEIGHTS_DEFAULT,
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    model_spec,
)
from bcp_core.errors import UserError
from bcp_core.model import pretrained as packaged
from bcp_core.values import is_whole_number

# --- Layer names and architecture constants ----------------------------------------------


DEFAULT_DROPOUT = 0.3
#: The user's original recipe, kept unchanged so the baseline stays comparable.
SEED_CNN_FILTERS = (32, 64, 128)
SEED_CNN_DENSE_UNITS = 128
SEED_CNN_DROPOUT = 0.5
#: Default CNN widths: a cheap 5x5 strided stem, then one stage per entry (two 3x3 convs each)
#: after a 2x2 max pool. 320x256 input -> 160x128 stem -> 80x64 ... 10x8 in the last stage.
DEFAULT_CNN_STEM_FILTERS = 24
DEFAULT_CNN_STEM_KERNEL = 5
DEFAULT_CNN_STAGE_FILTERS = (32, 64, 128, 192)
#: Multiple-instance CNN: stem width, then one stage per entry; the first three end in a 2x2
#: max pool, the last keeps the resolution (stride 16: a 512 x 416 input gives 32 x 26 patches).
MIL_CNN_STAGE_FILTERS = (24, 48, 96, 128)
#: Width of the gated attention that weighs the patches.
MIL_ATTENTION_UNITS = 64
#: BatchNorm momentum of the product's CNN. Keras' 0.99 needs hundreds of steps before the
#: moving statistics used at inference catch up; a few hundred images give ~20 steps an epoch,
#: so validation scores would lag far behind training for many epochs.
DEFAULT_CNN_BN_MOMENTUM = 0.9

#: Layer names other modules look up.
BACKBONE_LAYER = "backbone"
PREPROCESSING_LAYER = "backbone_preprocessing"  # output: exactly what the backbone receives
FEATURE_MAP_LAYER = "feature_map"  # the last spatial features, before the global pooling
OUTPUT_LAYER = "probability"

#: ImageNet statistics used by the backbones' own preprocessing.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # ResNet50 / VGG19, on [0, 255] pixels, BGR order
IMAGENET_RGB_STDDEV = (0.229, 0.224, 0.225)  # EfficientNet, stored as its "variance" (see below)


# --- Validation -----------------------------------------------------------------------------


def _check_image_size(name: str, image_size: Sequence[int]) -> tuple[int, int]:
    """Return ``(height, width)`` as ints, or raise if the model cannot take that size."""
    try:
        height, width = (int(side) for side in image_size)
        integral = all(int(side) == side for side in image_size)
    except (TypeError, ValueError):
        integral = False
    if not integral:
        raise UserError(
            f"The image size must be two whole numbers (height, width); got {image_size!r}."
        )
    minimum = model_spec(name).min_side
    if height < minimum or width < minimum:
        raise UserError(
            f"The {name} model needs images of at least {minimum}x{minimum} pixels; "
            f"got {height}x{width}. Choose a larger image size."
        )
    return height, width


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"Dropout must be at least 0 and below 1; got {dropout!r}.")
    return float(dropout)


def _check_output_bias(output_bias: float | None) -> float | None:
    if output_bias is not None and not math.isfinite(output_bias):
        raise UserError(f"The output bias must be a finite number; got {output_bias!r}.")
    return output_bias


def _resolve_weights(name: str, weights: str | os.PathLike | None) -> str | Path:
    """Return ``"none"``, ``"imagenet"`` or the weights file as a Path (not yet checked);
    ``"default"`` is the model's own default (ImageNet for the packaged backbones)."""
    if weights is None:
        return WEIGHTS_NONE
    if isinstance(weights, str) and weights.strip().lower() in (WEIGHTS_DEFAULT, ""):
        return model_spec(name).default_weights
    if isinstance(weights, str) and weights.strip().lower() in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        return weights.strip().lower()
    return Path(weights).expanduser()


# --- Shared pieces --------------------------------------------------------------------------


def _image_input(height: int, width: int) -> keras.KerasTensor:
    return keras.Input(shape=(height, width, 1), dtype="float32", name="image")


def _probability_layer(output_bias: float | None) -> keras.layers.Dense:
    """The single sigmoid unit every model ends with.

    A bias of ``initial_bias(prior)`` makes the untrained model predict the class prior, so the
    first epochs are not spent unlearning a 50 % guess on 1:57 data. float32 even under mixed
    precision, so probabilities near 0 or 1 keep their resolution.
    """
    bias = "zeros" if output_bias is None else keras.initializers.Constant(float(output_bias))
    return keras.layers.Dense(
        1, activation="sigmoid", bias_initializer=bias, dtype="float32", name=OUTPUT_LAYER
    )


def _gated_attention(
    cells: keras.KerasTensor, prefix: str = "", *, start_equal: bool = False
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Gated attention (Ilse et al., 2018) over ``cells`` (batch, n, channels): the softmax
    weight of each cell, shape (batch, n, 1), named ``{prefix}attention``, and the weighted
    mean of the cells (batch, channels). With ``start_equal`` the score layer starts at zero,
    so the weights start equal and the mean starts as the plain average."""
    gate_v = keras.layers.Dense(
        MIL_ATTENTION_UNITS, activation="tanh", name=f"{prefix}attention_v"
    )(cells)
    gate_u = keras.layers.Dense(
        MIL_ATTENTION_UNITS, activation="sigmoid", name=f"{prefix}attention_u"
    )(cells)
    gated = keras.layers.Multiply(name=f"{prefix}attention_gate")([gate_v, gate_u])
    scores = keras.layers.Dense(
        1,
        kernel_initializer="zeros" if start_equal else "glorot_uniform",
        name=f"{prefix}attention_score",
    )(gated)
    weights = keras.layers.Softmax(axis=1, name=f"{prefix}attention")(scores)
    weighted = keras.layers.Multiply(name=f"{prefix}weighted_cells")([cells, weights])
    # the weights sum to 1 over the n cells: their mean times n is the weighted mean
    mean = keras.layers.GlobalAveragePooling1D(name=f"{prefix}weighted_mean")(weighted)
    n = int(cells.shape[1])
    return weights, keras.layers.Rescaling(float(n), name=f"{prefix}attention_pool")(mean)


def _classification_head(
    features: keras.KerasTensor,
    *,
    dropout: float,
    output_bias: float | None,
    head: str = "pool",
) -> keras.KerasTensor:
    """Global max pooling beside an average of the feature map, dropout, one sigmoid unit.

    Max pooling keeps a small bright finding (a calcification cluster covers a few feature-map
    cells) from being averaged away by the rest of the breast; the average keeps the overall
    texture: with ``head="pool"`` the plain average, with ``head="attention"`` an
    attention-weighted one (:func:`_gated_attention`, layer ``head_attention``: one weight per
    cell) that starts as the plain average and learns which cells to weigh. The named identity
    layer marks the feature map for Grad-CAM: its output is a tensor of this model's own graph,
    which a nested backbone's internal outputs are not.
    """
    features = keras.layers.Identity(name=FEATURE_MAP_LAYER)(features)
    max_pooled = keras.layers.GlobalMaxPooling2D(name="head_max_pool")(features)
    if head == "attention":
        rows, cols, channels = features.shape[1], features.shape[2], features.shape[3]
        cells = keras.layers.Reshape((rows * cols, channels), name="head_cells")(features)
        _, averaged = _gated_attention(cells, prefix="head_", start_equal=True)
    else:
        averaged = keras.layers.GlobalAveragePooling2D(name="head_avg_pool")(features)
    x = keras.layers.Concatenate(name="head_pool")([max_pooled, averaged])
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return _probability_layer(output_bias)(x)


# --- The CNNs trained from scratch ----------------------------------------------------------


def build_seed_cnn_model(
    image_size: Sequence[int], *, output_bias: float | None = None
) -> keras.Model:
    """The user's original 3-conv-layer CNN, kept as the baseline to beat.

    Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(128)-MaxPool-Flatten-Dense(128)-Dropout(0.5)-
    Dense(1, sigmoid), 3x3 "valid" convolutions with ReLU, as in the user's notebook. The user
    fed 224x224 RGB; here the input is the shared one-channel image. Its Flatten-Dense layer
    grows with the image (about 19M weights at 320x256).

    Args:
        image_size: (height, width) in pixels, at least 32 each.
        output_bias: Initial bias of the output unit (see :func:`initial_bias`).

    Returns:
        The uncompiled model, named "seed_cnn".
    """
    height, width = _check_image_size("seed_cnn", image_size)
    _check_output_bias(output_bias)
    inputs = _image_input(height, width)
    x = inputs
    for index, filters in enumerate(SEED_CNN_FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(SEED_CNN_DENSE_UNITS, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(SEED_CNN_DROPOUT, name="dropout")(x)
    outputs = _probability_layer(output_bias)(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


def _conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    *,
    prefix: str,
    index: str = "",
    kernel_size: int = 3,
    strides: int = 1,
) -> keras.KerasTensor:
    """Conv without bias (BatchNorm has one) -> BatchNorm -> ReLU: ``{prefix}_conv{index}`` etc."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{prefix}_conv{index}",
    )(x)
    x = keras.layers.BatchNormalization(
        momentum=DEFAULT_CNN_BN_MOMENTUM, name=f"{prefix}_bn{index}"
    )(x)
    return keras.layers.ReLU(name=f"{prefix}_relu{index}")(x)


def _cnn_trunk(
    name: str,
    image_size: Sequence[int],
    dropout: float,
    output_bias: float | None,
    stem_filters: int,
    stage_filters: Sequence[int],
    *,
    pool_last: bool,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Checked settings, the input and the conv trunk the product's CNNs share.

    A 5x5 stride-2 stem, then one stage per width of two 3x3 conv-BN-ReLU blocks, each stage
    after a 2x2 max pool (max, not strided convs, so a few bright calcification pixels survive
    the downsampling); with ``pool_last=False`` the last stage keeps its input's resolution.

    Returns:
        ``(inputs, features)``.
    """
    height, width = _check_image_size(name, image_size)
    _check_dropout(dropout)
    _check_output_bias(output_bias)
    inputs = _image_input(height, width)
    x = _conv_bn_relu(
        inputs, stem_filters, prefix="stem", kernel_size=DEFAULT_CNN_STEM_KERNEL, strides=2
    )
    last = len(stage_filters)
    for stage, filters in enumerate(stage_filters, start=1):
        if pool_last or stage < last:
            x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        x = _conv_bn_relu(x, filters, prefix=f"stage{stage}", index="1")
        x = _conv_bn_relu(x, filters, prefix=f"stage{stage}", index="2")
    return inputs, x


def build_default_cnn_model(
    image_size: Sequence[int],
    *,
    dropout: float = DEFAULT_DROPOUT,
    output_bias: float | None = None,
    head: str = "pool",
) -> keras.Model:
    """The product's default: a compact batch-norm CNN that learns from a few hundred images.

    A 5x5 stride-2 stem, then four stages of two 3x3 conv-BN-ReLU blocks
    (widths ``DEFAULT_CNN_STAGE_FILTERS``), each stage after a 2x2 max pool (max, not strided
    convs, so a few bright calcification pixels survive the downsampling), then global max and
    average pooling, dropout and one sigmoid unit. About 0.87M weights.

    Args:
        image_size: (height, width) in pixels, at least 32 each.
        dropout: Dropout rate before the output unit, in [0, 1).
        output_bias: Initial bias of the output unit (see :func:`initial_bias`).
        head: "pool" or "attention" (:func:`_classification_head`).

    Returns:
        The uncompiled model, named "default_cnn".
    """
    inputs, x = _cnn_trunk(
        "default_cnn", image_size, dropout, output_bias,
        DEFAULT_CNN_STEM_FILTERS, DEFAULT_CNN_STAGE_FILTERS, pool_last=True,
    )  # fmt: skip
    outputs = _classification_head(x, dropout=dropout, output_bias=output_bias, head=head)
    return keras.Model(inputs, outputs, name="default_cnn")


def build_mil_cnn_model(
    image_size: Sequence[int],
    *,
    dropout: float = DEFAULT_DROPOUT,
    output_bias: float | None = None,
) -> keras.Model:
    """A multiple-instance CNN for small findings in large images.

    The image is a bag of overlapping patches: a fully convolutional trunk (the default CNN's
    blocks, widths ``MIL_CNN_STAGE_FILTERS``, stopping at stride 16 so a patch stays small)
    gives one feature vector per patch; gated attention (Ilse et al., 2018) weighs the
    patches, and the attention-weighted sum is joined by the strongest response of each
    feature (global max). A lesion of a few millimetres then speaks through the patches that
    hold it instead of being averaged with the whole breast. Built from standard Keras layers
    only, so it saves and loads in safe mode; ``feature_map`` (the patch grid) serves Grad-CAM
    and ``attention`` is the per-patch weight map.

    Args:
        image_size, dropout, output_bias: as for :func:`build_default_cnn_model`.

    Returns:
        The uncompiled model, named "mil_cnn".
    """
    inputs, x = _cnn_trunk(
        "mil_cnn", image_size, dropout, output_bias,
        MIL_CNN_STAGE_FILTERS[0], MIL_CNN_STAGE_FILTERS, pool_last=False,
    )  # fmt: skip
    x = keras.layers.Identity(name=FEATURE_MAP_LAYER)(x)
    rows, cols, channels = x.shape[1], x.shape[2], x.shape[3]
    patches = keras.layers.Reshape((rows * cols, channels), name="patches")(x)
    _, bag = _gated_attention(patches)
    strongest = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    pooled = keras.layers.Concatenate(name="pooled")([bag, strongest])
    pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
    outputs = _probability_layer(output_bias)(pooled)
    return keras.Model(inputs, outputs, name="mil_cnn")


# --- Transfer learning ----------------------------------------------------------------------


def _caffe_preprocessing(rgb: keras.KerasTensor) -> keras.KerasTensor:
    """ResNet50 / VGG19 ("caffe" mode): [0, 255] pixels minus the ImageNet BGR means.

    The three channels are identical copies of the gray image, so the RGB -> BGR flip of
    ``preprocess_input`` changes nothing; the per-channel means stay in BGR order.
    """
    x = keras.layers.Rescaling(255.0, name="to_pixel_values")(rgb)
    return keras.layers.Normalization(
        mean=list(CAFFE_BGR_MEAN), variance=[1.0, 1.0, 1.0], name=PREPROCESSING_LAYER
    )(x)


def _tf_preprocessing(rgb: keras.KerasTensor) -> keras.KerasTensor:
    """InceptionV3 ("tf" mode): pixels / 127.5 - 1, i.e. 2x - 1 on [0, 1] values."""
    return keras.layers.Rescaling(2.0, offset=-1.0, name=PREPROCESSING_LAYER)(rgb)


def _efficientnet_preprocessing(rgb: keras.KerasTensor) -> keras.KerasTensor:
    """EfficientNet normalises inside the Keras application and expects [0, 255] pixels."""
    return keras.layers.Rescaling(255.0, name=PREPROCESSING_LAYER)(rgb)


@dataclass(frozen=True)
class _BackboneSpec:
    """How to build one keras.applications backbone and feed it."""

    constructor: Callable[..., keras.Model]
    preprocessing: Callable[[keras.KerasTensor], keras.KerasTensor]
    notop_file: str  # the file Keras downloads for weights="imagenet", include_top=False


_BACKBONES = {
    "resnet50": _BackboneSpec(
        keras.applications.ResNet50,
        _caffe_preprocessing,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg19": _BackboneSpec(
        keras.applications.VGG19,
        _caffe_preprocessing,
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "inceptionv3": _BackboneSpec(
        keras.applications.InceptionV3,
        _tf_preprocessing,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "efficientnetb0": _BackboneSpec(
        keras.applications.EfficientNetB0,
        _efficientnet_preprocessing,
        "efficientnetb0_notop.h5",
    ),
}


def _load_local_weights(backbone: keras.Model, name: str, path: Path) -> None:
    """Load a weights file (legacy ``.h5`` or Keras 3 ``.weights.h5``) into a fresh backbone."""
    notop_file = _BACKBONES[name].notop_file
    if not path.is_file():
        raise UserError(
            f"The weights file {str(path)!r} does not exist. Pass 'none', 'imagenet' or the path "
            f"of the {name} no-top weights file ({notop_file})."
        )
    unfit = (
        f"The weights file {str(path)!r} does not fit the {name} backbone ({{reason}}). "
        f"Pass the {name} no-top weights file ({notop_file})."
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backbone.load_weights(path)
        except (ValueError, OSError, KeyError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(unfit.format(reason=reason)) from exc
    # A Keras 3 ".weights.h5" file of another architecture can load partly, leaving the rest
    # random with only a warning per layer: treat that as a file that does not fit.
    skipped = [w for w in caught if "skipping" in str(w.message).lower()]
    if skipped:
        raise UserError(unfit.format(reason=str(skipped[0].message).splitlines()[0]))
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if name == "efficientnetb0":
        _fix_efficientnet_variance(backbone)


def _fix_efficientnet_variance(backbone: keras.Model) -> None:
    """Make a file-loaded EfficientNet normalise as the ``weights="imagenet"`` one does.

    The published EfficientNet files store the ImageNet standard deviations as the
    Normalization layer's *variance* (tensorflow/tensorflow#49930). With ``weights="imagenet"``
    Keras adds a compensating Rescaling layer, but only then: a backbone built with
    ``weights=None`` and given the same file would divide by sqrt(std) instead of std. Squaring
    the stored values gives (x - mean) / std, the normalisation the weights were trained with.
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Normalization):
            variance = keras.ops.convert_to_numpy(layer.adapt_variance)
            if np.allclose(variance, IMAGENET_RGB_STDDEV, atol=1e-4):
                layer.adapt_variance.assign(np.square(variance))
                layer.finalize_state()  # the layer caches mean and variance as tensors
            return


def _build_backbone(
    name: str, input_shape: tuple[int, int, int], weights: str | Path
) -> keras.Model:
    if name in packaged.PACKAGES:
        if isinstance(weights, Path):
            raise UserError(
                f"The {name} backbone takes its ImageNet weights from the installed package "
                f"{packaged.PACKAGES[name].distribution}; pass 'imagenet' or 'none', not a file."
            )
        return packaged.build_backbone(
            name, input_shape, weights=weights == WEIGHTS_IMAGENET, model_name=BACKBONE_LAYER
        )
    spec = _BACKBONES[name]
    if weights == WEIGHTS_IMAGENET:
        try:
            return spec.constructor(
                include_top=False, weights="imagenet", input_shape=input_shape, name=BACKBONE_LAYER
            )
        except Exception as exc:  # a failed download raises a bare Exception, among others
            raise UserError(
                f"Could not get the ImageNet weights for {name} ({exc}). Without internet access, "
                f"download the no-top weights file {spec.notop_file} on another machine and pass "
                "its path as the weights."
            ) from exc
    backbone = spec.constructor(
        include_top=False, weights=None, input_shape=input_shape, name=BACKBONE_LAYER
    )
    if isinstance(weights, Path):
        _load_local_weights(backbone, name, weights)
    return backbone


def _set_backbone_trainable(backbone: keras.Model, n_layers: int | None = None) -> None:
    """Make the top ``n_layers`` of ``backbone.layers`` (all if None) trainable, BatchNorm excepted.

    Frozen BatchNorm layers run in inference mode in Keras 3, so their ImageNet statistics are
    not overwritten by a few small mammogram batches (Keras transfer-learning guide).
    """
    backbone.trainable = True  # propagates to every sub-layer; now freeze the exceptions
    first = 0 if n_layers is None else max(len(backbone.layers) - n_layers, 0)
    for position, layer in enumerate(backbone.layers):
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = position >= first and not is_batch_norm


def _set_initial_trainable(
    backbone: keras.Model, name: str, *, fine_tune: bool, pretrained: bool
) -> None:
    if not fine_tune:
        backbone.trainable = False
        if not pretrained:
            warnings.warn(
                f"The {name} backbone is randomly initialised and frozen, so only the output "
                "layer will learn; pass fine_tune=True or pretrained weights.",
                UserWarning,
                stacklevel=3,
            )
    elif pretrained:
        _set_backbone_trainable(backbone)
    else:
        # Random BatchNorm statistics (mean 0, variance 1) are meaningless: freezing them turns
        # a deep backbone into an unnormalised one whose training is unstable.
        backbone.trainable = True


def build_transfer_model(
    name: str,
    image_size: Sequence[int],
    *,
    weights: str | os.PathLike = WEIGHTS_NONE,
    fine_tune: bool = False,
    dropout: float = DEFAULT_DROPOUT,
    output_bias: float | None = None,
    frozen_stages: int = 0,
    batch_norm: str = "frozen",
    head: str = "pool",
) -> keras.Model:
    """A pretrained backbone (no top) behind a gray-to-RGB input and a sigmoid head.

    Layers: "image" -> "gray_to_rgb" (the gray channel copied three times) -> the backbone's
    own normalisation, ending in the layer "backbone_preprocessing" -> "backbone" ->
    "feature_map" -> global max + average pooling -> "head_dropout" -> "probability".

    With pretrained weights the backbone is called with ``training=False`` and fine-tuning
    leaves its BatchNormalization layers frozen, so they keep the ImageNet statistics (Keras
    transfer-learning guide). A backbone trained from scratch (``weights="none"``,
    ``fine_tune=True``) trains everything, BatchNorm included, in the usual training mode.

    Args:
        name: One of ``TRANSFER_MODELS``.
        image_size: (height, width) in pixels (at least 75 for InceptionV3, 32 for the others).
        weights: "none" (random initialisation), "imagenet" (the packaged backbones read
            the installed package's file, offline; a keras.applications backbone downloads its
            no-top file: needs internet), "default" (the model's own default) or the path of a
            no-top weights file downloaded elsewhere (keras.applications backbones only, e.g.
            resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5).
        fine_tune: False freezes the whole backbone (only the head learns; warns when the
            backbone is random). True makes it trainable, except the BatchNormalization layers
            of a pretrained backbone.
        dropout: Dropout rate before the output unit, in [0, 1).
        output_bias: Initial bias of the output unit (see :func:`initial_bias`).
        frozen_stages: EfficientNet-Lite fine-tuned from ImageNet weights: the stem and this
            many of its 7 stages stay frozen (cheaper epochs).
        batch_norm: a fine-tuned pretrained backbone's batch norm: "frozen" (ImageNet
            statistics, inference mode) or "train" (learns from the batches).
        head: "pool" or "attention" (:func:`_classification_head`).

    Returns:
        The uncompiled model, named after the backbone.

    Raises:
        UserError: Unknown name, image too small, missing or unfitting weights file, or a
            failed ImageNet download.
    """
    if name not in TRANSFER_MODELS:
        raise UserError(
            f"{name!r} is not a pretrained backbone; choose one of: {', '.join(TRANSFER_MODELS)}."
        )
    height, width = _check_image_size(name, image_size)
    _check_dropout(dropout)
    _check_output_bias(output_bias)
    resolved = _resolve_weights(name, weights)
    pretrained = resolved != WEIGHTS_NONE
    backbone = _build_backbone(name, (height, width, 3), resolved)
    _set_initial_trainable(backbone, name, fine_tune=fine_tune, pretrained=pretrained)
    bn_learns = fine_tune and pretrained and batch_norm == "train"
    if bn_learns:  # batch norm too: its statistics and scales follow the mammograms
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
    if frozen_stages and fine_tune and pretrained and name in packaged.PACKAGES:
        packaged.freeze_stages(backbone, frozen_stages)
    inputs = _image_input(height, width)
    rgb = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([inputs, inputs, inputs])
    if name in packaged.PACKAGES:
        x = packaged.imagenet_normalisation(rgb, PREPROCESSING_LAYER)
    else:
        x = _BACKBONES[name].preprocessing(rgb)
    if (pretrained or not fine_tune) and not bn_learns:
        # Inference-mode BatchNorm keeps the pretrained statistics, even after unfreezing.
        features = backbone(x, training=False)
    else:
        # Trained from scratch: BatchNorm has no statistics yet and must learn them from the
        # batches, so the training flag follows fit / predict.
        features = backbone(x)
    outputs = _classification_head(features, dropout=dropout, output_bias=output_bias, head=head)
    return keras.Model(inputs, outputs, name=name)


# --- Dispatch -------------------------------------------------------------------------------


def build_model(
    name: str,
    image_size: Sequence[int],
    *,
    weights: str | os.PathLike = WEIGHTS_NONE,
    fine_tune: bool = False,
    dropout: float = DEFAULT_DROPOUT,
    output_bias: float | None = None,
    seed: int | None = None,
    metadata_width: int = 0,
    frozen_stages: int = 0,
    batch_norm: str = "frozen",
    head: str = "pool",
) -> keras.Model:
    """Build any model of ``config.MODEL_SPECS`` by name.

    Args:
        name: One of ``config.MODEL_NAMES``.
        image_size: (height, width) in pixels.
        weights: "none", "imagenet" or a weights file path; only transfer models take
            pretrained weights.
        fine_tune: Transfer models only: train the backbone too (BatchNorm layers excepted).
        dropout: Dropout before the output unit (the seed CNN keeps its original 0.5).
        output_bias: Initial bias of the output unit (see :func:`initial_bias`).
        seed: When given, seeds Python, NumPy and the backend (``keras.utils.set_random_seed``,
            a process-wide setting) so the same seed gives the same initial weights.
        metadata_width: When above 0, the model also takes that many encoded workbook values
            (:func:`with_metadata`).
        frozen_stages: EfficientNet-Lite fine-tuning only (see :func:`build_transfer_model`).
        batch_norm: transfer models only (see :func:`build_transfer_model`).
        head: "pool" or "attention": default_cnn and the transfer models
            (:func:`_classification_head`); the other models have heads of their own.

    Returns:
        The uncompiled model.

    Raises:
        UserError: Unknown name, unusable image size or weights (see the builders).
    """
    image_model = _build_image_model(
        name, image_size, weights=weights, fine_tune=fine_tune, dropout=dropout,
        output_bias=output_bias, seed=seed, frozen_stages=frozen_stages, batch_norm=batch_norm,
        head=head,
    )  # fmt: skip
    if metadata_width:
        return with_metadata(image_model, metadata_width, output_bias=output_bias)
    return image_model


#: Name of the image input of a model that also takes workbook values, and of that input.
IMAGE_INPUT, METADATA_INPUT = "image", "metadata"
#: Units the workbook values go through before they meet the image features.
METADATA_UNITS = 8


def with_metadata(
    image_model: keras.Model, width: int, *, output_bias: float | None = None
) -> keras.Model:
    """The image model with a second input of ``width`` encoded workbook values.

    The image model's pooled features (the input of its output unit) are joined with the
    values, passed through one small ReLU layer, and a new sigmoid unit (named like every
    model's output, so Grad-CAM finds it) gives the probability. The image layers stay
    top-level layers of the new model, so Grad-CAM works on it as on the image model.
    """
    if not is_whole_number(width) or width < 1:
        raise UserError(f"The metadata input needs at least one value, got {width!r}.")
    features = image_model.get_layer(OUTPUT_LAYER).input
    values = keras.Input(shape=(width,), name=METADATA_INPUT)
    hidden = keras.layers.Dense(METADATA_UNITS, activation="relu", name="metadata_dense")(values)
    joined = keras.layers.Concatenate(name="image_and_metadata")([features, hidden])
    output = _probability_layer(output_bias)(joined)  # the image model's own unit is left out
    return keras.Model(
        [image_model.input, values], output, name=f"{image_model.name}_with_metadata"
    )


def _build_image_model(
    name: str,
    image_size: Sequence[int],
    *,
    weights: str | os.PathLike,
    fine_tune: bool,
    dropout: float,
    output_bias: float | None,
    seed: int | None,
    frozen_stages: int = 0,
    batch_norm: str = "frozen",
    head: str = "pool",
) -> keras.Model:
    """The image-only model of ``name`` (see :func:`build_model`)."""
    spec = model_spec(name)
    _check_image_size(name, image_size)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if not spec.transfer and _resolve_weights(name, weights) != WEIGHTS_NONE:
        raise UserError(
            f"The {name} model is trained from scratch and has no pretrained weights; use "
            f"weights='none' or one of the transfer models ({', '.join(TRANSFER_MODELS)})."
        )
    options: dict = {"frozen_stages": frozen_stages} if frozen_stages else {}
    if batch_norm != "frozen":
        options["batch_norm"] = batch_norm
    if head != "pool":
        if head not in HEADS or name not in SHARED_HEAD_MODELS:
            raise UserError(
                f"Heads ({', '.join(HEADS)}) apply to {', '.join(SHARED_HEAD_MODELS)}; "
                f"got {head!r} for {name}."
            )
        options["head"] = head
    return _BUILDERS[name](
        name, image_size, weights=weights, fine_tune=fine_tune, dropout=dropout,
        output_bias=output_bias, **options,
    )  # fmt: skip


# --- The registry: one builder per ``config.MODEL_SPECS`` entry ------------------------------

#: A builder takes ``(name, image_size, *, weights, fine_tune, dropout, output_bias)``; the
#: CNNs ignore what they do not use. ``tests/test_model_architectures.py`` checks that every
#: spec has one.
_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "seed_cnn": lambda name, size, *, output_bias, **_: build_seed_cnn_model(
        size, output_bias=output_bias
    ),
    "default_cnn": lambda name, size, *, dropout, output_bias, head="pool", **_: (
        build_default_cnn_model(size, dropout=dropout, output_bias=output_bias, head=head)
    ),
    "mil_cnn": lambda name, size, *, dropout, output_bias, **_: build_mil_cnn_model(
        size, dropout=dropout, output_bias=output_bias
    ),
    **dict.fromkeys(TRANSFER_MODELS, build_transfer_model),
}
