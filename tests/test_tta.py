"""Test-time augmentation: the variants, the mean and range they give, and where they show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.imaging import tta
from bcp_core.inference.predict import predict_files, predict_one
from bcp_core.inference.prepared import prepare_image
from bcp_core.inference.results import Prediction
from bcp_core.model.bundle import load_bundle
from bcp_core.model.training import train_model


@pytest.fixture(scope="module")
def bundle(tiny_manifest, tmp_path_factory):
    """The default CNN trained for one epoch on the 40 tiny JPEGs."""
    out = tmp_path_factory.mktemp("tta") / "tiny"
    cfg = TrainConfig(
        model="default_cnn", epochs=1, image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=3
    )
    train_model(tiny_manifest, cfg, out)
    return load_bundle(out)


def ramp(height: int = 50, width: int = 20) -> np.ndarray:
    """An input whose every row differs from every other (row r holds r / height)."""
    rows = np.arange(height, dtype=np.float32)[:, None, None] / height
    return np.broadcast_to(rows, (height, width, 1)).copy()


# --- The variants --------------------------------------------------------------------------


def test_variants_keep_shape_and_range_and_the_first_is_the_input():
    image = ramp()
    stacked = tta.variants(image, tta.MAX_PASSES)
    assert stacked.shape == (tta.MAX_PASSES, *image.shape) and stacked.dtype == np.float32
    assert np.array_equal(stacked[0], image)
    assert stacked.min() >= 0.0 and stacked.max() <= image.max() + 1e-6
    # every variant differs from every other: no pass is wasted on a repeat
    flat = stacked.reshape(tta.MAX_PASSES, -1)
    assert len({row.tobytes() for row in flat}) == tta.MAX_PASSES
    assert np.array_equal(tta.variants(image, 3), stacked[:3])  # N passes are the first N


def test_flip_and_shifts_move_rows_and_never_columns():
    image = ramp()
    flipped, down, up = (tta.variant(image, i) for i in (1, 2, 3))
    assert np.array_equal(flipped, image[::-1])
    rows = round(tta.SHIFT * image.shape[0])
    assert np.array_equal(down[rows:], image[:-rows]) and not down[:rows].any()
    assert np.array_equal(up[:-rows], image[rows:]) and not up[-rows:].any()
    # the chest wall stays on the left: no variant moves anything sideways
    for i in range(tta.MAX_PASSES):
        out = tta.variant(image, i)
        assert np.allclose(out[:, :1], out[:, -1:], atol=1e-5)


def test_zoom_enlarges_the_centre():
    image = ramp(100, 40)
    zoomed = tta.variant(image, tta.VARIANTS.index("zoomed in"))
    assert zoomed[0, 0, 0] > image[0, 0, 0] and zoomed[-1, 0, 0] < image[-1, 0, 0]
    middle = image.shape[0] // 2
    assert zoomed[middle, 0, 0] == pytest.approx(image[middle, 0, 0], abs=0.02)


@pytest.mark.parametrize("bad", [0, tta.MAX_PASSES + 1, 2.0, True, "4", None])
def test_a_bad_number_of_passes_is_one_sentence(bad):
    with pytest.raises(ValueError, match="Test-time passes must be"):
        tta.check_passes(bad)


# --- Prediction with passes -----------------------------------------------------------------


def test_one_pass_is_plain_prediction(bundle, tiny_manifest):
    paths = list(tiny_manifest["path"][:5])
    plain = predict_files(bundle, paths)
    for result in plain:
        assert result.passes == 1 and not result.uncertain
        assert result.probability_low == result.probability == result.probability_high
        assert set(result.to_json()) <= {"file", "probability", "label", "threshold", "view",
                                         "laterality", "seen_in"}  # fmt: skip


def test_passes_give_the_mean_and_range_of_the_model_on_the_variants(bundle, tiny_manifest):
    paths = list(tiny_manifest["path"][:5])
    results = predict_files(bundle, paths, passes=4, batch_size=2)
    for path, result in zip(paths, results, strict=True):
        net_input = prepare_image(path, bundle.spec).net_input
        each = np.asarray(bundle.model(tta.variants(net_input, 4), training=False)).reshape(-1)
        assert result.passes == 4
        assert result.probability == pytest.approx(float(each.mean()), abs=1e-5)
        assert result.probability_low == pytest.approx(float(each.min()), abs=1e-5)
        assert result.probability_high == pytest.approx(float(each.max()), abs=1e-5)
        assert result.label == int(result.probability >= bundle.threshold)
        first = predict_files(bundle, [path])[0].probability
        assert float(each[0]) == pytest.approx(first, abs=1e-5)  # pass 1 is the plain input


def test_uncertain_when_the_passes_straddle_the_threshold(bundle, tiny_manifest):
    path = tiny_manifest["path"][0]
    spread = predict_files(bundle, [path], passes=8)[0]
    assert spread.probability_low < spread.probability_high  # the variants do move the model
    middle = (spread.probability_low + spread.probability_high) / 2
    straddled = predict_files(bundle, [path], passes=8, threshold=middle)[0]
    assert straddled.uncertain and straddled.to_json()["uncertain"] is True
    clear = predict_files(bundle, [path], passes=8, threshold=spread.probability_low)[0]
    assert not clear.uncertain and clear.label == 1  # low >= threshold: all passes agree
    assert not Prediction("x.jpg", error="Cannot read x.jpg.", passes=8).uncertain


def test_predict_one_with_passes_keeps_the_heatmap_of_the_prepared_input(bundle, tiny_manifest):
    path = tiny_manifest["path"][1]
    single = predict_one(bundle, path)
    several = predict_one(bundle, path, passes=4)
    assert several.prediction.passes == 4
    assert np.array_equal(single.heatmap, several.heatmap)
    with pytest.raises(UserError, match="Test-time passes must be from 1 to 8"):
        predict_one(bundle, path, passes=9)


def test_cli_predict_tta_adds_the_range(bundle, tiny_manifest, capsys):
    path = str(tiny_manifest["path"][2])
    capsys.readouterr()
    assert main(["predict", "--bundle", str(bundle.path), path, "--tta", "4", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["passes"] == 4 and isinstance(row["uncertain"], bool)
    assert row["probability_low"] <= row["probability"] <= row["probability_high"]
    assert main(["predict", "--bundle", str(bundle.path), path, "--tta", "4"]) == 0
    text = capsys.readouterr().out
    assert "over 4 passes" in text and Path(path).name in text
    assert main(["predict", "--bundle", str(bundle.path), path, "--tta", "0"]) == 2
    assert "Test-time passes must be from 1 to 8" in capsys.readouterr().err


# --- A model whose threshold was chosen on test-time passes -----------------------------------


def test_a_run_with_passes_scores_validation_as_prediction_does_and_chooses_its_threshold_there(
    tiny_manifest, tmp_path
):
    from bcp_core.evaluation.thresholds import choose_threshold
    from bcp_core.model.card import CARD_FILE
    from bcp_core.model.files import META_FILE

    cfg = TrainConfig(
        model="default_cnn", epochs=1, image_size=(64, 48), batch_size=8, val_fraction=0.3,
        seed=3, tta_passes=4,
    )  # fmt: skip
    events: list = []
    train_model(tiny_manifest, cfg, tmp_path / "b", on_event=events.append)
    # the rescoring shows as a scoring phase after the last epoch, before the final write
    names = [type(e).__name__ + ":" + getattr(e, "name", "") for e in events]
    last_epoch = max(i for i, n in enumerate(names) if n.startswith("EpochEnded"))
    assert "Phase:scoring" in names[last_epoch:]
    bundle = load_bundle(tmp_path / "b")
    assert bundle.meta.passes == 4 and bundle.meta.training["tta_passes"] == 4
    assert json.loads((tmp_path / "b" / META_FILE).read_text())["passes"] == 4
    val = bundle.val_predictions
    # prediction, unless told otherwise, takes the bundle's passes and gives the same scores
    again = predict_files(bundle, val["file"].tolist())
    assert {r.passes for r in again} == {4}
    np.testing.assert_allclose([r.probability for r in again], val["probability"], atol=1e-5)
    one = predict_files(bundle, val["file"].tolist(), passes=1)
    assert not np.allclose([r.probability for r in one], val["probability"], atol=1e-5)
    y, p = val["label"].to_numpy(), val["probability"].to_numpy()
    assert bundle.threshold == pytest.approx(choose_threshold(y, p, "youden"))
    card = (tmp_path / "b" / CARD_FILE).read_text(encoding="utf-8")
    assert "- Probabilities are the mean of 4 test-time passes" in card
    # the model's own recipe gives the passes: 4 for EfficientNet-Lite, 1 for the CNN
    assert TrainConfig(model="efficientnet_lite0").tta_passes == 4
    assert TrainConfig(model="default_cnn").tta_passes == 1


def test_the_passes_a_bundle_records_are_read_back_and_a_bad_value_is_kept_as_it_was(bundle):
    from bcp_core.config import MAX_TTA_PASSES
    from bcp_core.model.meta import BundleMeta

    assert MAX_TTA_PASSES == tta.MAX_PASSES
    base = bundle.meta.to_json()
    assert BundleMeta.from_json(base).passes == 1  # bundles from before: one pass
    assert BundleMeta.from_json({**base, "passes": 4}).passes == 4
    assert BundleMeta.from_json({**base, "passes": 4}).to_json()["passes"] == 4
    assert "passes" not in BundleMeta.from_json(base).to_json()
    for bad in (0, 9, 2.5, "4"):
        meta = BundleMeta.from_json({**base, "passes": bad})
        assert meta.passes == 1 and meta.to_json()["passes"] == bad
