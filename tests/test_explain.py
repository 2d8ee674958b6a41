"""Grad-CAM on every model of the zoo (tiny, random), on a trained tiny CNN, and the overlay."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from bcp_core.config import MODEL_NAMES, TRANSFER_MODELS, PreprocessSpec
from bcp_core.imaging.preparation import Geometry, Placement, prepare
from bcp_core.inference.explain import (
    colormap_lut,
    gradcam_heatmap,
    heatmap_to_image,
    overlay_heatmap,
)
from bcp_core.model.architectures import build_model

SMALL = (64, 48)


def small_size(name: str) -> tuple[int, int]:
    return (75, 75) if name == "inceptionv3" else SMALL


def breast(size=SMALL, *, blob_at: tuple[int, int] | None = None, right: bool = False):
    """A half-disc "breast" against the left (or right) edge, optionally with a bright blob."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    cols = (w - 1 - xx) if right else xx
    img = (((cols / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2) < 1) * 0.4
    img = img + np.random.default_rng(h * w).normal(0, 0.04, size) * (img > 0)
    if blob_at is not None:
        img = img + ((yy - blob_at[0]) ** 2 + (xx - blob_at[1]) ** 2 < 16) * 0.5
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in TRANSFER_MODELS else n for n in MODEL_NAMES],
)
def test_heatmap_has_the_input_size_and_is_finite_in_unit_range(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # frozen random backbone
        model = build_model(name, small_size(name), seed=1)
    image = np.random.default_rng(0).random((*small_size(name), 1), dtype=np.float32)
    heat = gradcam_heatmap(model, image)
    assert heat.shape == small_size(name) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0


def test_all_zero_map_gives_zeros_without_dividing_by_zero():
    model = build_model("seed_cnn", SMALL, seed=1)
    conv3 = model.get_layer("conv3")
    conv3.set_weights([np.zeros_like(w) for w in conv3.get_weights()])  # ReLU(0): no features
    with np.errstate(all="raise"):
        heat = gradcam_heatmap(model, breast()[..., None])
    assert heat.shape == SMALL and not heat.any()


def test_the_traced_gradient_step_follows_the_weights_and_goes_with_its_model():
    import gc
    import weakref

    from bcp_core.inference import explain

    model = build_model("seed_cnn", SMALL, seed=1)
    image = breast()[..., None]
    first = gradcam_heatmap(model, image)
    assert first.any() and len(explain._TRACED[model]) == 1
    conv3 = model.get_layer("conv3")  # weights changed after the first heatmap are read anew
    conv3.set_weights([np.zeros_like(w) for w in conv3.get_weights()])
    assert not gradcam_heatmap(model, image).any()
    gone = weakref.ref(model)
    del model, conv3
    gc.collect()
    assert gone() is None  # its traced step does not keep a model alive


def test_bad_arguments_are_refused():
    model = build_model("seed_cnn", SMALL, seed=1)
    with pytest.raises(ValueError, match="one"):
        gradcam_heatmap(model, np.zeros(SMALL, np.float32))
    with pytest.raises(ValueError, match="nested"):
        gradcam_heatmap(model, np.zeros((*SMALL, 1), np.float32), layer_name="backbone/x")


def blob_set(n: int, seed: int):
    """Every other image carries a blob; returns images, labels, blob centres."""
    rng = np.random.default_rng(seed)
    images, labels, centres = [], [], []
    for i in range(n):
        centre = (int(rng.integers(16, 48)), int(rng.integers(6, 30)))
        positive = i % 2 == 0
        images.append(breast(blob_at=centre if positive else None))
        labels.append(float(positive))
        centres.append(centre)
    return np.stack(images)[..., None], np.asarray(labels, np.float32), centres


@pytest.mark.slow
def test_trained_model_heatmap_points_at_the_blob():
    x, y, _ = blob_set(40, seed=0)
    model = build_model("seed_cnn", SMALL, seed=5)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    xt, _, centres = blob_set(8, seed=1)
    yy, xx = np.mgrid[0 : SMALL[0], 0 : SMALL[1]]
    ratios, distances = [], []
    for image, centre in list(zip(xt, centres))[::2]:  # the positives
        heat = gradcam_heatmap(model, image)
        assert heat.std() > 0.01  # not constant
        blob = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 16
        ratios.append(heat[blob].mean() / heat.mean())
        peak = np.unravel_index(heat.argmax(), heat.shape)
        distances.append(np.hypot(peak[0] - centre[0], peak[1] - centre[1]))
    # A random peak lies about 20 px from the blob in a 64 x 48 image.
    assert np.mean(ratios) > 1.3 and np.median(distances) < 12


@pytest.mark.parametrize("right", [False, True])
def test_heatmap_to_image_undoes_crop_flip_and_resize(right):
    """Mapping the network input itself back must reproduce the image inside the crop."""
    gray = np.zeros((120, 150), np.float32)
    gray[10:110, :] = np.pad(
        breast((100, 80), right=right), ((0, 0), (70, 0) if right else (0, 70))
    )
    prepared = prepare(gray, PreprocessSpec(64, 48))
    geo = prepared.geometry
    assert geo.flipped == right
    back = heatmap_to_image(prepared.net_input[..., 0], geo)
    assert back.shape == gray.shape and back.dtype == np.float32
    top, bottom, left, right_edge = geo.crop_box
    inside = np.zeros_like(gray, bool)
    inside[top:bottom, left:right_edge] = True
    assert not back[~inside].any()
    corr = np.corrcoef(back[inside], gray[inside])[0, 1]
    assert corr > 0.9


def test_heatmap_to_image_rejects_a_box_outside_the_image():
    geometry = Geometry((40, 30), False, (0, 50, 0, 30), Placement(1.0, (0, 0), SMALL))
    with pytest.raises(ValueError, match="outside"):
        heatmap_to_image(np.zeros(SMALL), geometry)


def test_overlay_keeps_grey_where_cold_and_colours_where_hot():
    gray = np.full((4, 5), 0.5, np.float32)
    heat = np.zeros((4, 5), np.float32)
    heat[0, 0] = 1.0
    rgb = overlay_heatmap(gray, heat, alpha=0.5)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb[1:, :] == 128).all()  # no heat: the plain grey film
    expected = np.round(0.5 * 127.5 + 0.5 * colormap_lut()[-1].astype(float))
    np.testing.assert_array_equal(rgb[0, 0], expected)
    np.testing.assert_array_equal(overlay_heatmap(gray, heat, alpha=0.0), rgb * 0 + 128)
    with pytest.raises(ValueError, match="one shape"):
        overlay_heatmap(gray, heat[:3])
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(gray, heat, alpha=1.5)


def test_colormap_runs_from_blue_to_red():
    lut = colormap_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0, 2] > lut[0, 0] and lut[-1, 0] > lut[-1, 2]
