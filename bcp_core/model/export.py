"""Export a bundle's model to ONNX or LiteRT, with a JSON of the preparation it expects.

``python -m bcp_core export --bundle DIR --format onnx|litert --out DIR`` (and page 4). The
exported model takes what the Keras model takes: a batch of *prepared* images, float32
``(N, H, W, 1)`` in [0, 1] (the output of
:func:`bcp_core.imaging.preparation.preprocess_image` with the bundle's spec), and returns the
probability of cancer, ``(N, 1)``. Nothing of the preparation is inside the file, so
``preprocessing.json`` records it: the spec, the steps in words, the saved threshold and its
rule, and where the model came from (for a model that started from packaged pretrained
weights, also the bundle's ``pretrained`` record of them). Decisions must use that threshold
(probability >= threshold), as the product does. The export of a model that started from
packaged pretrained weights also carries their ``NOTICE``, as the bundle does.

The export is written to a temporary folder and renamed into place whole. When the runtime of
the format is installed (``onnxruntime``; TensorFlow's LiteRT interpreter), the exported file is
run on a probe batch and its largest difference from Keras is recorded as
``checked_max_abs_difference``; an export that differs by more than :data:`TOLERANCE` is
refused.

The converters are an optional extra (``requirements-export.txt``): ``tf2onnx`` and ``onnx``
for ONNX (``onnxruntime`` to check it); LiteRT uses TensorFlow's own converter.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bcp_core import __version__
from bcp_core.config import CLAHE_CLIP, CLAHE_TILES
from bcp_core.errors import UserError
from bcp_core.fileio import staged_dir, write_json_atomic
from bcp_core.model.bundle import load_bundle, notice_for
from bcp_core.model.files import NOTICE_FILE

FORMATS = {"onnx": "model.onnx", "litert": "model.tflite"}
PREPROCESSING_FILE = "preprocessing.json"
EXPORT_HINT = "install the export extra: pip install -r requirements-export.txt"
#: Largest difference from the Keras model an export may show on the probe batch.
TOLERANCE = 1e-4
PROBE_IMAGES = 4
PREPARATION_STEPS = (
    "decode the image (DICOM: modality rescale, VOI LUT or window, MONOCHROME1 inverted) to grey "
    "in [0, 1]",
    "undo an inverted grey scale (when spec.invert and the border is mostly bright)",
    "mirror a right breast so that the chest wall is on the left (when spec.orient): the "
    "brighter of the image's outer tenths, or of the breast's own when it meets neither side",
    "crop to the breast: the largest bright region (when spec.crop)",
    "resize keeping the aspect ratio (area resampling)",
    "when spec.contrast is clahe: contrast-limited adaptive histogram equalisation of the "
    f"resized breast ({CLAHE_TILES} x {CLAHE_TILES} tiles, 256 grey levels, each tile's counts "
    f"clipped at {CLAHE_CLIP:g} times their mean, bilinear between tile centres)",
    "pad to height x width with black",
    "float32 array of shape (height, width, 1) in [0, 1]; a batch stacks them as (N, H, W, 1)",
)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        out: the export folder.
        model_file: the model file in it.
        format: ``onnx`` or ``litert``.
        checked_max_abs_difference: largest difference from Keras on the probe batch, or None
            when the format's runtime is not installed.
    """

    out: str
    model_file: str
    format: str
    checked_max_abs_difference: float | None

    def to_json(self) -> dict:
        """The ``export --json`` object (the attributes by name)."""
        return asdict(self)


def _check_converter(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError as exc:
            raise UserError(f"Export to ONNX needs tf2onnx and onnx: {EXPORT_HINT}.") from exc


def export_bundle(bundle_dir: str | os.PathLike, fmt: str, out: str | os.PathLike) -> ExportResult:
    """Write the bundle's model as ``fmt`` and its ``preprocessing.json`` to the folder ``out``,
    with the ``NOTICE`` of the pretrained weights the model started from (when it did).

    Raises:
        UserError: an unknown format, a missing converter, a folder that is not a bundle, an
            ``out`` folder that exists, or an export that does not reproduce the model.
    """
    _check_converter(fmt)
    target = Path(out)
    if target.exists():
        raise UserError(f"{target} already exists; give a new folder for the export.")
    bundle = load_bundle(Path(bundle_dir))
    if bundle.meta.metadata:
        raise UserError(
            "This model also takes workbook values; export handles image-only models so far."
        )
    model: Any = bundle.model
    spec = bundle.spec
    probe = np.random.default_rng(0).random((PROBE_IMAGES, spec.height, spec.width, 1))
    probe = probe.astype(np.float32)
    expected = np.asarray(model(probe, training=False), dtype=np.float32)  # also builds it
    name = FORMATS[fmt]
    with staged_dir(target) as tmp:
        model.export(str(tmp / name), format=fmt, verbose=False)
        difference = _check(tmp / name, fmt, probe, expected)
        if difference is not None and difference > TOLERANCE:
            raise UserError(
                f"The {fmt} export differs from the model by {difference:.1e} (more than "
                f"{TOLERANCE:g}); it was not written."
            )
        write_json_atomic(tmp / PREPROCESSING_FILE, _description(bundle, fmt, name, difference))
        notice = notice_for(bundle.meta)
        if notice is not None:
            (tmp / NOTICE_FILE).write_text(notice, encoding="utf-8")
    return ExportResult(str(target), str(target / name), fmt, difference)


def _description(bundle, fmt: str, name: str, difference: float | None) -> dict:
    """The contents of ``preprocessing.json``."""
    import keras
    import tensorflow as tf

    meta, spec = bundle.meta, bundle.spec
    pretrained = {"pretrained": meta.pretrained.to_json()} if meta.pretrained else {}
    return {
        "model_file": name,
        "format": fmt,
        "input": {
            "shape": ["N", spec.height, spec.width, 1],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "what": "prepared mammograms (steps below), not raw image files",
        },
        "output": {"shape": ["N", 1], "what": "probability of cancer"},
        "decision": {
            "rule": "probability >= threshold means cancer suspected",
            "threshold": meta.threshold.value,
            "threshold_method": meta.threshold.method,
        },
        "preprocessing": {**spec.to_dict(), "invert": spec.invert, "contrast": spec.contrast},
        "preparation_steps": list(PREPARATION_STEPS),
        "source": {
            "bundle": Path(bundle.path).name,
            "model_name": meta.model_name,
            "data_fingerprint": meta.data_fingerprint,
            "saved": meta.saved,
        },
        **pretrained,
        "checked_max_abs_difference": difference,
        "versions": {
            "bcp_core": __version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
        "notice": "Research use only; not a medical device.",
    }


def _check(path: Path, fmt: str, probe: np.ndarray, expected: np.ndarray) -> float | None:
    """Largest difference from ``expected`` of the exported file on ``probe`` (None: no runtime)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: probe})[0]
    else:
        got = run_litert(path, probe)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float32) - expected)))


def run_litert(path: str | os.PathLike, batch: np.ndarray) -> np.ndarray:
    """Probabilities of a LiteRT file on ``batch`` (N, H, W, 1), one image at a time."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TensorFlow's interpreter names its successor package
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inputs["index"], [1, *batch.shape[1:]])
    interpreter.allocate_tensors()
    found = []
    for image in batch:
        interpreter.set_tensor(inputs["index"], image[None].astype(np.float32))
        interpreter.invoke()
        found.append(interpreter.get_tensor(outputs["index"]).reshape(-1))
    return np.concatenate(found)[:, None]
