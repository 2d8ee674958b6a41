"""The disk cache of prepared images (bcp_core.imaging.cache), on real JPEGs and DICOMs made on
the fly, through the tf.data pipelines and a real training run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcp_core.config import PreprocessSpec, TrainConfig
from bcp_core.errors import UserError
from bcp_core.imaging import cache as cache_module
from bcp_core.imaging.cache import CacheSettings, PreparedCache, spec_folder_name
from bcp_core.imaging.preparation import preprocess_image
from bcp_core.model.dataset import ReadFailures, image_dataset
from tests.conftest import blob_image
from tests.dicom_files import make_dicom

SPEC = PreprocessSpec(height=64, width=48)


def films(folder: Path, n: int = 4, size=(200, 160)) -> list[Path]:
    """``n`` breast-like JPEGs (one in two with a bright spot), of ``size``."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"film{i}.jpg"
        Image.fromarray(blob_image(i % 2 == 1, rng, size)).save(path, quality=92)
        paths.append(path)
    return paths


def entries(cache: PreparedCache) -> list[Path]:
    return sorted(cache.folder.glob("*/*.npy"))


def forbid_preparing(monkeypatch) -> None:
    """Any decode-and-prepare from now on fails the test: reads must come from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded although the cache holds it")

    monkeypatch.setattr("bcp_core.imaging.preparation.preprocess_image", refuse)


def test_a_kept_input_equals_the_one_prepared_afresh_and_is_read_without_decoding(
    tmp_path, monkeypatch
):
    paths = films(tmp_path / "films")
    dicom = tmp_path / "films" / "film.dcm"
    arr = blob_image(True, np.random.default_rng(1), (120, 96)).astype(np.uint16) * 16
    dicom.write_bytes(make_dicom(arr, bits_stored=12))
    paths.append(dicom)
    fresh = [preprocess_image(p, SPEC) for p in paths]
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)
    first = [cache.load(p) for p in paths]
    assert (cache.hits, cache.misses, len(entries(cache))) == (0, len(paths), len(paths))
    forbid_preparing(monkeypatch)
    again = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)  # a later run
    second = [again.load(p) for p in paths]
    assert (again.hits, again.misses) == (len(paths), 0)
    for a, b, c in zip(fresh, first, second, strict=True):
        assert a.shape == b.shape == c.shape == (64, 48, 1) and c.dtype == np.float32
        np.testing.assert_array_equal(a, b)  # to the bit: as trained without the cache
        np.testing.assert_array_equal(a, c)


def test_a_cache_folder_that_cannot_be_made_is_named_in_one_sentence(tmp_path, tiny_manifest):
    from bcp_core.model.training import train_model

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = CacheSettings(blocker / "cache")
    with pytest.raises(
        UserError,
        match=r"image cache folder .*a-file/cache cannot be used.*"
        r"set BCP_IMAGE_CACHE to a folder this server may write, or to off\.",
    ):
        PreparedCache(settings, SPEC)
    cfg = TrainConfig(model="seed_cnn", epochs=1, image_size=(64, 48), batch_size=8)
    with pytest.raises(UserError, match="image cache folder"):
        train_model(tiny_manifest, cfg, tmp_path / "bundle", image_cache=settings)
    assert not (tmp_path / "bundle").exists()


def test_the_cache_is_readable_by_its_owner_only(tmp_path):
    path = films(tmp_path / "films", n=1)[0]
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)
    cache.load(path)
    entry = cache.entry(path)
    for folder in (tmp_path / "cache", cache.folder, entry.parent):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    assert entry.stat().st_mode & 0o777 == 0o600


def test_a_replaced_file_is_prepared_again(tmp_path):
    path = films(tmp_path / "films", n=1)[0]
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)
    before = cache.load(path)
    Image.fromarray(blob_image(True, np.random.default_rng(9), (200, 160))).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = cache.load(path)
    assert cache.misses == 2 and cache.hits == 0
    np.testing.assert_array_equal(after, preprocess_image(path, SPEC))
    assert np.abs(after - before).max() > 0.1


def test_each_spec_and_each_version_of_the_code_has_its_own_folder(tmp_path):
    path = films(tmp_path / "films", n=1)[0]
    settings = CacheSettings(tmp_path / "cache")
    small = PreparedCache(settings, SPEC)
    bigger = PreparedCache(settings, PreprocessSpec(height=96, width=80))
    uncropped = PreparedCache(settings, PreprocessSpec(height=64, width=48, crop=False))
    assert len({small.folder, bigger.folder, uncropped.folder}) == 3
    assert bigger.load(path).shape == (96, 80, 1)
    assert small.load(path).shape == (64, 48, 1)
    assert spec_folder_name(SPEC, "code-a") != spec_folder_name(SPEC, "code-b")


def test_the_code_fingerprint_follows_the_preparations_source(tmp_path, monkeypatch):
    before = cache_module.code_fingerprint()
    changed = tmp_path / "preparation.py"
    changed.write_text(Path(cache_module.__file__).read_text() + "\n# changed\n")
    module = type(os)("bcp_core.imaging.preparation")
    module.__file__ = str(changed)
    monkeypatch.setitem(__import__("sys").modules, "bcp_core.imaging.preparation", module)
    assert cache_module.code_fingerprint() != before


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:40]),  # cut short
        lambda p: p.write_bytes(b"not an array at all"),
        lambda p: np.save(p, np.zeros((10, 10, 1), np.float32)),  # another size
        lambda p: np.save(p, np.zeros((64, 48, 1), np.float64)),  # another type
        lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),  # a pickle
    ],
    ids=["truncated", "garbage", "wrong-size", "wrong-type", "pickle"],
)
def test_a_damaged_entry_is_prepared_again_and_replaced(tmp_path, damage):
    path = films(tmp_path / "films", n=1)[0]
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)
    good = cache.load(path)
    damage(cache.entry(path))
    again = cache.load(path)
    np.testing.assert_array_equal(again, good)
    assert cache.misses == 2
    assert np.load(cache.entry(path), allow_pickle=False).shape == (64, 48, 1)


def test_an_unreadable_file_fails_as_without_the_cache_and_is_not_kept(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)
    with pytest.raises(UserError) as without:
        preprocess_image(bad, SPEC)
    with pytest.raises(UserError) as through:
        cache.load(bad)
    assert str(through.value) == str(without.value)
    with pytest.raises(UserError, match="missing.jpg"):
        cache.load(tmp_path / "missing.jpg")
    assert entries(cache) == []


def test_a_full_cache_keeps_nothing_more_but_still_answers(tmp_path):
    paths = films(tmp_path / "films", n=4)
    cache = PreparedCache(CacheSettings(tmp_path / "cache", max_bytes=1), SPEC)
    for p in paths:
        np.testing.assert_array_equal(cache.load(p), preprocess_image(p, SPEC))
    assert cache.full and entries(cache) == []
    assert not [p for p in cache.folder.rglob("*") if p.name.startswith(".")]  # no half files


def test_opening_a_full_cache_evicts_the_least_recently_opened_spec_only(tmp_path):
    paths = films(tmp_path / "films", n=3)
    settings = CacheSettings(tmp_path / "cache")
    old = PreparedCache(settings, PreprocessSpec(height=96, width=80))
    recent = PreparedCache(settings, PreprocessSpec(height=80, width=64))
    for c in (old, recent):
        for p in paths:
            c.load(p)
    os.utime(old.folder / "spec.json", (1, 1))  # opened long ago
    keepsake = tmp_path / "cache" / "notes"  # not the cache's: never counted or deleted
    keepsake.mkdir()
    (keepsake / "big.bin").write_bytes(b"x" * 1_000_000)
    room = sum(p.stat().st_size for p in recent.folder.rglob("*") if p.is_file()) + 20_000
    PreparedCache(CacheSettings(settings.folder, max_bytes=room), SPEC)
    assert not old.folder.exists()
    assert recent.folder.exists() and len(entries(recent)) == 3
    assert (keepsake / "big.bin").exists()


def test_the_pipeline_reads_through_the_cache_and_reports_bad_files_the_same(tmp_path, monkeypatch):
    """The same inputs and the same failures as without the cache; later reads decode nothing."""
    paths = [str(p) for p in films(tmp_path / "films", n=5)]
    broken = tmp_path / "films" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nothing")
    listed = [*paths, str(broken)]
    plain_failures, cached_failures = ReadFailures(), ReadFailures()
    plain = np.concatenate(
        list(image_dataset(listed, None, SPEC, batch_size=2, failures=plain_failures))
    )
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)
    cached = np.concatenate(
        list(image_dataset(listed, None, SPEC, batch_size=2, failures=cached_failures, cache=cache))
    )
    assert plain.shape == cached.shape == (5, 64, 48, 1)
    np.testing.assert_array_equal(plain, cached)
    assert plain_failures.messages == cached_failures.messages
    assert list(cached_failures.messages) == [str(broken)]
    forbid_preparing(monkeypatch)
    later = PreparedCache(CacheSettings(tmp_path / "cache"), SPEC)  # the next epoch or run
    again = np.concatenate(list(image_dataset(paths, None, SPEC, batch_size=2, cache=later)))
    np.testing.assert_array_equal(again, cached)
    assert (later.hits, later.misses) == (5, 0)


def test_a_cache_of_another_spec_is_refused_by_the_pipeline(tmp_path):
    cache = PreparedCache(CacheSettings(tmp_path / "cache"), PreprocessSpec(height=96, width=80))
    with pytest.raises(ValueError, match="another preprocessing"):
        image_dataset(["a.jpg"], None, SPEC, cache=cache)


def test_a_training_run_fills_the_cache_once_and_trains_as_without_it(tiny_manifest, tmp_path):
    from bcp_core.model.training import plan_split, train_model

    cfg = TrainConfig(
        model="seed_cnn", epochs=2, image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=1
    )
    settings = CacheSettings(tmp_path / "cache")
    result = train_model(tiny_manifest, cfg, tmp_path / "bundle", image_cache=settings)
    assert result.bundle is not None and result.epochs_run == 2
    folder = PreparedCache(settings, cfg.spec).folder
    kept = sorted(folder.glob("*/*.npy"))
    split, _ = plan_split(tiny_manifest, cfg)
    used = tiny_manifest["path"][split.isin(["train", "val"])]
    assert len(kept) == used.nunique()  # each image once, whatever the epochs and scorings
    plain = train_model(tiny_manifest, cfg, tmp_path / "plain")
    assert plain.metrics is not None and result.metrics is not None
    assert plain.metrics.roc_auc == result.metrics.roc_auc  # the same inputs, the same run
