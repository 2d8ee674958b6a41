"""Tests for bcp_demo.synth: synthetic mammogram-like images (tiny sizes, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bcp_demo import synth as synth
from bcp_demo.synth import LESION_KINDS, Lesion

H, W = 64, 52


def _render(seed: int, **kwargs) -> np.ndarray:
    args = {"height": H, "width": W, "view": "CC", "laterality": "L", **kwargs}
    return synth.render_mammogram(np.random.default_rng(seed), **args)


def _pair(seed: int, lesion: Lesion, height: int = 128, width: int = 104, **kwargs):
    """Render the same woman and view with and without a lesion from the same seed."""
    images = []
    for les in (None, lesion):
        rng = np.random.default_rng(seed)
        anatomy = synth.breast_params(rng)
        images.append(
            synth.render_mammogram(
                rng,
                height=height,
                width=width,
                view=kwargs.get("view", "CC"),
                laterality=kwargs.get("laterality", "L"),
                lesion=les,
                anatomy=anatomy,
            ).astype(np.int32)
        )
    return images[0], images[1], anatomy


@pytest.mark.parametrize("view", ["CC", "MLO"])
@pytest.mark.parametrize("laterality", ["L", "R"])
@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 52), (101, 77)])
def test_shape_and_dtype(view: str, laterality: str, height: int, width: int) -> None:
    img = _render(0, height=height, width=width, view=view, laterality=laterality)
    assert img.shape == (height, width)
    assert img.dtype == np.uint8


def test_deterministic_for_same_seed_and_different_for_another() -> None:
    lesion = Lesion("spiculated", depth=0.5, offset=0.1, size=0.04, contrast=50.0)
    a = _render(3, view="MLO", lesion=lesion)
    b = _render(3, view="MLO", lesion=lesion)
    c = _render(4, view="MLO", lesion=lesion)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 5


@pytest.mark.parametrize("seed", range(5))
def test_chest_wall_side_follows_laterality(seed: int) -> None:
    left = _render(seed, laterality="L").astype(float)
    right = _render(seed, laterality="R").astype(float)
    half = W // 2
    assert left[:, :half].mean() > left[:, half:].mean() + 20
    assert right[:, half:].mean() > right[:, :half].mean() + 20
    # Same seed: R is L mirrored, up to the independent sensor noise.
    assert np.abs(right[:, ::-1] - left).mean() < 4


@pytest.mark.parametrize("seed", range(5))
def test_mlo_has_bright_muscle_in_upper_chest_wall_corner(seed: int) -> None:
    corner = (slice(0, H // 5), slice(0, W // 6))
    cc = _render(seed, view="CC")[corner].astype(float)
    mlo = _render(seed, view="MLO")[corner].astype(float)
    assert mlo.mean() > cc.mean() + 50
    assert 165 <= np.median(mlo) <= 235  # muscle intensity range


def test_intensity_ranges() -> None:
    img = _render(1, height=128, width=104).astype(float)
    assert img[-6:, -6:].mean() < 12  # background corner away from the chest wall
    inside = img[54:74, 5:40]  # near the chest wall, on the breast axis
    assert 55 < inside.mean() < 230


@pytest.mark.parametrize("kind", LESION_KINDS)
def test_lesion_raises_intensity_only_near_its_location(kind: str) -> None:
    lesion = Lesion(kind, depth=0.5, offset=0.2, size=0.04, contrast=60.0)
    without, with_lesion, anatomy = _pair(11, lesion)
    row, col = synth.lesion_center(
        lesion, height=128, width=104, view="CC", laterality="L", anatomy=anatomy
    )
    diff = with_lesion - without
    assert diff.min() >= 0
    rows, cols = np.indices(diff.shape)
    near = np.hypot(rows - row, cols - col) <= 0.04 * 128 * 1.5
    far = np.hypot(rows - row, cols - col) > 0.04 * 128 * 5
    assert diff[near].sum() > 100
    assert not diff[far].any()


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_lesion_position_is_inside_breast_on_mlo(laterality: str) -> None:
    lesion = Lesion("round", depth=0.9, offset=-0.9, size=0.05, contrast=60.0)
    without, with_lesion, anatomy = _pair(2, lesion, view="MLO", laterality=laterality)
    row, col = synth.lesion_center(
        lesion, height=128, width=104, view="MLO", laterality=laterality, anatomy=anatomy
    )
    assert 0 <= row < 128 and 0 <= col < 104
    assert without[int(row), int(col)] > 30  # tissue, not background
    assert (with_lesion - without).sum() > 0


def test_lower_subtlety_gives_higher_contrast() -> None:
    lesions = [
        synth.sample_breast_lesion(np.random.default_rng(7), s) for s in np.linspace(0, 1, 6)
    ]
    contrasts = [pair["CC"].contrast for pair in lesions]
    assert all(a > b for a, b in zip(contrasts, contrasts[1:]))
    # Only the contrast depends on subtlety.
    assert len({(p["CC"].kind, p["CC"].depth, p["CC"].size, p["MLO"].offset) for p in lesions}) == 1


@pytest.mark.parametrize("seed", [1, 3, 5])  # round, spiculated, calcifications
def test_lower_subtlety_gives_stronger_rendered_lesion(seed: int) -> None:
    sums = []
    for subtlety in (0.0, 1.0):
        lesion = synth.sample_breast_lesion(np.random.default_rng(seed), subtlety)["CC"]
        without, with_lesion, _ = _pair(seed, lesion)
        sums.append((with_lesion - without).sum())
    # visibility(1) is 15 % (masses) or 25 % (calcifications) of visibility(0), before clipping.
    assert sums[0] > 1.5 * sums[1] > 0


def test_sampled_views_share_kind_depth_size_and_project_offsets() -> None:
    kinds, offset_gaps = set(), []
    for seed in range(60):
        pair = synth.sample_breast_lesion(np.random.default_rng(seed), 0.6)
        cc, mlo = pair["CC"], pair["MLO"]
        assert set(pair) == {"CC", "MLO"}
        assert (cc.kind, cc.depth, cc.size, cc.contrast) == (
            mlo.kind,
            mlo.depth,
            mlo.size,
            mlo.contrast,
        )
        assert -1 <= cc.offset <= 1 and -1 <= mlo.offset <= 1
        assert 0 <= cc.depth <= 1 and 0.02 <= cc.size <= 0.05
        kinds.add(cc.kind)
        offset_gaps.append(abs(cc.offset - mlo.offset))
    assert kinds == set(LESION_KINDS)
    assert max(offset_gaps) > 0.2


def test_calcifications_produce_near_saturated_pixels() -> None:
    lesion = synth.sample_breast_lesion(np.random.default_rng(0), 0.0)["CC"]
    lesion = Lesion("calcifications", lesion.depth, lesion.offset, 0.03, 185.0)
    without, with_lesion, _ = _pair(4, lesion)
    assert without.max() < 240  # tissue alone stays below calcification levels
    assert (with_lesion >= 240).sum() >= 3


def test_same_anatomy_gives_same_outline_across_calls() -> None:
    anatomy = synth.breast_params(np.random.default_rng(0))
    masks = [
        synth.render_mammogram(
            np.random.default_rng(seed),
            height=H,
            width=W,
            view="CC",
            laterality="L",
            anatomy=anatomy,
        )
        > 20
        for seed in (1, 2)
    ]
    assert (masks[0] == masks[1]).mean() > 0.97


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"view": "ML"}, "view must be one of"),
        ({"laterality": "B"}, "laterality must be one of"),
        ({"height": 31}, "height must be at least 32"),
        ({"width": 16}, "width must be at least 32"),
        ({"height": 64.0}, "height must be an integer"),
        ({"density": 1.5}, "density must be between 0 and 1"),
        ({"anatomy": {"density": 0.5}}, "anatomy is missing keys"),
    ],
)
def test_render_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _render(0, **kwargs)


@pytest.mark.parametrize("subtlety", [-0.1, 1.01, math.nan])
def test_sample_rejects_bad_subtlety(subtlety: float) -> None:
    with pytest.raises(ValueError, match=r"subtlety must be between 0 and 1, got"):
        synth.sample_breast_lesion(np.random.default_rng(0), subtlety)


def test_lesion_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="Lesion kind must be one of"):
        Lesion("blob", depth=0.5, offset=0.0, size=0.03, contrast=40.0)
