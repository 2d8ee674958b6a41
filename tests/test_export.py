"""Export to ONNX and LiteRT: the files run outside Keras and give the model's probabilities.

The ONNX file is run with onnxruntime, the LiteRT file with TensorFlow's interpreter, on demo
mammograms prepared exactly as prediction prepares them; both agree with the Keras model to
1e-4. The converters are the export extra (requirements-export.txt, installed by make test).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.imaging.preparation import preprocess_image
from bcp_core.model.bundle import load_bundle
from bcp_core.model.export import PREPROCESSING_FILE, TOLERANCE, export_bundle, run_litert
from bcp_core.model.files import META_FILE, NOTICE_FILE
from bcp_core.model.training import train_model


@pytest.fixture(scope="module")
def bundle_dir(tiny_manifest, tmp_path_factory):
    """The default CNN (BatchNorm, dropout, the invert-aware preparation) after one epoch."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    cfg = TrainConfig(
        model="default_cnn", epochs=1, image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=6
    )
    train_model(tiny_manifest, cfg, out)
    return out


def prepared_batch(bundle, paths) -> np.ndarray:
    return np.stack([preprocess_image(p, bundle.spec) for p in paths]).astype(np.float32)


def test_onnx_export_runs_in_onnxruntime_as_the_model_does(bundle_dir, tiny_manifest, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    out = tmp_path / "onnx"
    result = export_bundle(bundle_dir, "onnx", out)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", PREPROCESSING_FILE]
    assert result.checked_max_abs_difference is not None
    assert result.checked_max_abs_difference <= TOLERANCE
    bundle = load_bundle(bundle_dir)
    batch = prepared_batch(bundle, tiny_manifest["path"][:7])  # a batch size not exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch})[0]
    expected = np.asarray(bundle.model(batch, training=False))
    assert got.shape == expected.shape == (7, 1)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    described = json.loads((out / PREPROCESSING_FILE).read_text(encoding="utf-8"))
    assert described["input"]["shape"] == ["N", 64, 48, 1]
    assert described["decision"]["threshold"] == bundle.threshold
    assert described["preprocessing"]["invert"] is bundle.spec.invert
    assert described["source"]["data_fingerprint"] == bundle.meta.data_fingerprint


def test_litert_export_runs_in_the_interpreter_as_the_model_does(
    bundle_dir, tiny_manifest, tmp_path
):
    out = tmp_path / "litert"
    result = export_bundle(bundle_dir, "litert", out)
    assert result.model_file == str(out / "model.tflite")
    bundle = load_bundle(bundle_dir)
    batch = prepared_batch(bundle, tiny_manifest["path"][:5])
    expected = np.asarray(bundle.model(batch, training=False))
    np.testing.assert_allclose(run_litert(out / "model.tflite", batch), expected, atol=1e-4)


def test_a_model_from_scratch_gets_no_notice_and_no_pretrained_record(bundle_dir, tmp_path):
    """Only a model that started from packaged pretrained weights carries their NOTICE."""
    assert not (bundle_dir / NOTICE_FILE).exists()
    assert "pretrained" not in json.loads((bundle_dir / META_FILE).read_text(encoding="utf-8"))
    assert load_bundle(bundle_dir, with_model=False).meta.pretrained is None
    out = tmp_path / "litert"
    export_bundle(bundle_dir, "litert", out)
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", PREPROCESSING_FILE]
    assert "pretrained" not in json.loads((out / PREPROCESSING_FILE).read_text(encoding="utf-8"))


def test_export_refuses_what_it_cannot_do_and_leaves_nothing(bundle_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(UserError, match="already exists"):
        export_bundle(bundle_dir, "litert", taken)
    with pytest.raises(UserError, match="Unknown export format"):
        export_bundle(bundle_dir, "pickle", tmp_path / "x")
    with pytest.raises(UserError):
        export_bundle(tmp_path / "no-bundle", "litert", tmp_path / "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging left behind


def test_cli_export(bundle_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    capsys.readouterr()
    argv = ["export", "--bundle", str(bundle_dir), "--format", "litert", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["format"] == "litert" and found["checked_max_abs_difference"] <= TOLERANCE
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_training_page_offers_the_export_as_a_zip(small_demo, bundles_dir):
    from tests.conftest import open_app

    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    at.selectbox(key="exp_pick").set_value("demo")
    at.radio(key="exp_format").set_value("litert")
    at.button(key="exp_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.get("download_button"), "the zip is offered"


def test_export_zip_holds_the_model_and_its_preprocessing(demo_bundle):
    import io
    import zipfile

    from dashboard.admin import export_zip

    with zipfile.ZipFile(io.BytesIO(export_zip(demo_bundle, "litert"))) as archive:
        assert sorted(archive.namelist()) == ["model.tflite", PREPROCESSING_FILE]
        described = json.loads(archive.read(PREPROCESSING_FILE))
    assert described["source"]["bundle"] == demo_bundle.name
