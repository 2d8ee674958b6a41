"""Streaming pipelines, patient split, class weights and cross-split duplicates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bcp_core.config import PreprocessSpec
from bcp_core.data.split import patient_overlap, split_patients
from bcp_core.errors import UserError
from bcp_core.model.dataset import (
    ReadFailures,
    balanced_dataset,
    class_weights,
    cross_split_duplicates_df,
    image_dataset,
)
from tests.conftest import write_jpeg


def write_png(path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


SPEC = PreprocessSpec(height=48, width=40)


@pytest.fixture
def tiny_images(tmp_path):
    paths = [write_jpeg(tmp_path / f"img{i}.jpg", (90, 70), value=100 + 10 * i) for i in range(6)]
    return [str(p) for p in paths], [1, 0, 0, 1, 0, 0]


def test_batches_have_the_right_shape_dtype_and_range(tiny_images):
    paths, labels = tiny_images
    batches = list(image_dataset(paths, labels, SPEC, batch_size=4))
    x, y = batches[0]
    assert x.shape == (4, 48, 40, 1) and x.dtype.name == "float32"
    assert y.numpy().tolist() == [1, 0, 0, 1]
    assert float(np.min(x)) >= 0.0 and float(np.max(x)) <= 1.0
    assert sum(len(b[1]) for b in batches) == 6


def test_evaluation_order_is_kept_and_matches_single_image_preprocessing(tiny_images):
    from bcp_core.imaging.preparation import preprocess_image

    paths, _ = tiny_images
    batch = next(iter(image_dataset(paths, None, SPEC, batch_size=6)))
    for i, path in enumerate(paths):
        np.testing.assert_allclose(batch[i].numpy(), preprocess_image(path, SPEC), atol=1e-6)


def test_augmentation_only_when_training(tiny_images):
    paths, labels = tiny_images
    plain = [b[0].numpy() for b in image_dataset(paths, labels, SPEC, batch_size=6)]
    again = [b[0].numpy() for b in image_dataset(paths, labels, SPEC, batch_size=6)]
    np.testing.assert_array_equal(plain[0], again[0])
    aug = next(iter(image_dataset(paths, labels, SPEC, batch_size=6, training=True)))[0].numpy()
    assert aug.shape == plain[0].shape
    assert float(aug.min()) >= 0.0 and float(aug.max()) <= 1.0


def test_a_seed_gives_the_same_augmented_batches_every_time(tmp_path):
    """Augmentation draws from the layers' random state batch after batch, so batches must be
    augmented in order: augmented in parallel, the draws went to whichever batch came first
    and two builds with one seed differed in about a quarter of 48 batches."""
    import keras

    rng = np.random.default_rng(0)
    paths = []
    for i in range(64):
        path = tmp_path / f"noise{i}.png"
        write_png(path, (rng.random((64, 56)) * 255).astype(np.uint8))
        paths.append(str(path))
    labels = [i % 2 for i in range(64)]

    def batches(seed: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(seed)
        ds = image_dataset(paths, labels, SPEC, batch_size=4, training=True, seed=seed)
        return [x.numpy() for x, _ in ds.repeat(3).take(48)]

    first, second = batches(5), batches(5)
    same = [np.array_equal(a, b) for a, b in zip(first, second)]
    assert all(same), f"{same.count(False)} of {len(same)} batches differed for one seed"
    assert not all(np.array_equal(a, b) for a, b in zip(first, batches(6)))


def test_unreadable_files_are_skipped_and_reported(tiny_images, tmp_path):
    paths, labels = tiny_images
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    failures = ReadFailures()
    ds = image_dataset([*paths, str(bad)], [*labels, 1], SPEC, batch_size=4, failures=failures)
    assert sum(len(b[1]) for b in ds) == 6
    assert list(failures.messages) == [str(bad)]
    assert "Cannot read broken.jpg as an image" in failures.messages[str(bad)]


def test_oversampling_gives_about_the_asked_share(tiny_images):
    paths, labels = tiny_images
    ds, steps = balanced_dataset(
        paths, labels, SPEC, positive_share=0.5, batch_size=8, augment=False
    )
    assert steps == 1
    ys = np.concatenate([y.numpy() for _, y in ds.take(25)])
    assert 0.4 < ys.mean() < 0.6  # 2 of 6 images are positive, yet half the samples are


def test_class_weights_balance_the_classes():
    weights = class_weights([1, 0, 0, 0])
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)
    with pytest.raises(UserError, match="both classes"):
        class_weights([0, 0, 0])


def manifest(n_pos_patients=10, n_neg_patients=30):
    rows = []
    for i in range(n_pos_patients + n_neg_patients):
        for view in range(4):
            label = int(i < n_pos_patients and view < 2)
            rows.append({"patient_id": f"P{i}", "label": label, "path": f"p{i}_{view}"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_has_no_patient_overlap_and_both_classes_in_validation(seed):
    m = manifest()
    split = split_patients(m, 0.2, seed=seed)
    assert patient_overlap(m, split) == 0
    val = m[split == "val"]
    assert set(val["label"]) == {0, 1}
    assert val["patient_id"].nunique() == 8  # 20% of 10 + 20% of 30


def test_split_is_deterministic_for_a_seed():
    m = manifest()
    assert split_patients(m, seed=5).equals(split_patients(m, seed=5))
    assert not split_patients(m, seed=5).equals(split_patients(m, seed=6))


def test_split_with_a_test_part_and_bad_fractions():
    m = manifest()
    split = split_patients(m, 0.2, 0.2, seed=1)
    assert set(split) == {"train", "val", "test"}
    with pytest.raises(UserError, match="leave no training data"):
        split_patients(m, 0.6, 0.4)
    with pytest.raises(UserError, match="Validation fraction must be at least 0 and below 1"):
        split_patients(m, 1.5)


def test_identical_images_in_two_splits_are_reported(tmp_path):
    a = write_jpeg(tmp_path / "a.jpg")
    b = tmp_path / "b.jpg"
    b.write_bytes(a.read_bytes())
    c = write_jpeg(tmp_path / "c.jpg", value=200)
    m = pd.DataFrame({"path": [str(a), str(b), str(c)], "relpath": ["a.jpg", "b.jpg", "c.jpg"]})
    dups = cross_split_duplicates_df(m, pd.Series(["train", "val", "val"]))
    assert dups["relpath"].tolist() == ["a.jpg", "b.jpg"]
    none = cross_split_duplicates_df(m, pd.Series(["train", "train", "val"]))
    assert none.empty
