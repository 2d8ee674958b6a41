"""Faults: a killed training process, interrupted bundle writes, concurrent predictions."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from bcp_core.inference.predict import predict_files
from bcp_core.model.bundle import load_bundle, read_bundle_meta, save_bundle
from bcp_core.model.files import META_FILE
from tests.conftest import REPO, cli_command, tiny_train_argv


@pytest.mark.slow
def test_killing_training_mid_epoch_leaves_the_last_good_bundle_loadable(small_demo, tmp_path):
    root, _ = small_demo
    out = tmp_path / "killed"
    argv = tiny_train_argv(
        root, out, "--epochs", "200", "--batch-size", "4", "--patience", "200", "--json"
    )
    proc = subprocess.Popen(
        cli_command(*argv),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / META_FILE).exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "training ended before writing a bundle"
            time.sleep(0.2)
        assert (out / META_FILE).exists(), "no bundle after the first epoch"
        time.sleep(1.5)  # well inside a later epoch
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    bundle = load_bundle(out)
    assert bundle.meta.status == "running"  # written during the run, never finalised
    assert len(bundle.val_predictions) > 0
    x = np.zeros((1, 64, 48, 1), np.float32)
    assert np.isfinite(np.asarray(bundle.model(x))).all()


def test_a_replacement_interrupted_between_renames_is_recovered(demo_bundle, tmp_path):
    import shutil

    target = tmp_path / "b"
    shutil.copytree(demo_bundle, target)
    os.replace(target, tmp_path / ".b.old-deadbeef")  # the moment between the two renames
    assert read_bundle_meta(target).model_name == "seed_cnn"
    assert not list(tmp_path.glob(".b.old-*"))


def test_stale_temporary_folders_are_cleaned_by_the_next_save(demo_bundle, tmp_path):
    import shutil

    target = tmp_path / "b"
    shutil.copytree(demo_bundle, target)
    stale = tmp_path / ".b.tmp-killed"
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half")
    bundle = load_bundle(target)
    save_bundle(target, bundle.model, bundle.meta, bundle.history, bundle.val_predictions)
    assert not stale.exists()
    assert load_bundle(target).meta.model_name == "seed_cnn"


def test_concurrent_predictions_on_different_bundles_give_each_their_own_results(
    demo_bundle, tiny_manifest, tmp_path
):
    from bcp_core.config import TrainConfig
    from bcp_core.model.training import train_model

    other = tmp_path / "other"
    train_model(
        tiny_manifest,
        TrainConfig(model="seed_cnn", image_size=(80, 64), epochs=1, batch_size=8, seed=9),
        other,
    )
    bundles = [load_bundle(demo_bundle), load_bundle(other)]
    files = tiny_manifest["path"].tolist()[:12]
    expected = [[r.probability for r in predict_files(b, files)] for b in bundles]
    got: dict[int, list] = {}

    def work(i: int) -> None:
        for _ in range(3):
            got.setdefault(i, []).append([r.probability for r in predict_files(bundles[i], files)])

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in (0, 1):
        for run in got[i]:
            np.testing.assert_allclose(run, expected[i], atol=1e-6)
    assert not np.allclose(expected[0], expected[1])


def test_readers_never_undo_a_replacement_in_progress(demo_bundle, tmp_path):
    """A page listing bundles while training replaces one: no reader error, no failed write.

    A reader that found the folder missing between the writer's two renames used to "recover"
    the old folder into place, so the writer's second rename failed and the reader could crash;
    one that did not recover saw the bundle missing for a moment.
    """
    import shutil

    from bcp_core.fileio import staged_dir

    target = tmp_path / "b"
    shutil.copytree(demo_bundle, target)
    files = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write() -> None:
        try:
            for _ in range(150):
                with staged_dir(target) as tmp:
                    for name, data in files.items():
                        (tmp / name).write_bytes(data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            writing.clear()

    def read() -> None:
        while writing.is_set():
            try:
                assert read_bundle_meta(target).model_name == "seed_cnn"
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert read_bundle_meta(target).model_name == "seed_cnn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
