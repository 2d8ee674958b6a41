"""Calibration of the training-memory estimate (``bcp_core.model.resources``).

The estimate is ``base + batch x height x width x bytes_per_pixel[model]``. This script measures
the peak resident memory (``ru_maxrss``) of a short real run of ``train_model`` (3 training
steps, then the epoch end: validation scoring and the bundle write) for one model at two image
sizes, each in a fresh child process, and fits the line through the two points: its slope per
image pixel is the model's ``bytes_per_pixel``, its value at zero pixels the ``base``.

    .venv/bin/python bench/bench_memory.py                        # default_cnn, 256^2 and 768^2
    .venv/bin/python bench/bench_memory.py --model resnet50 --sizes 224 448

``--activations`` prints, for every model, the number of values its layers output per input
pixel (summed over the layers of a model built at 256 x 256, nested backbones included): the
ratio to default_cnn's count scales the measured slope to the models not measured. Results go
to stdout and ``bench/results/bench_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(model: str, side: int, batch: int, fine_tune: bool = False) -> dict:
    """One short training run at ``side`` x ``side``; returns its peak memory."""
    import keras
    import numpy as np
    import pandas as pd
    from PIL import Image

    from bcp_core.config import TrainConfig
    from bcp_core.model.training import train_model

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= 3:
                self.model.stop_training = True

    folder = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    rng = np.random.default_rng(0)
    rows = []
    for p in range(16):
        for view in ("CC", "MLO"):
            path = folder / f"P{p:02d}_{view}.jpg"
            pixels = rng.integers(0, 255, (side, side), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
            rows.append({
                "path": str(path), "relpath": path.name, "label": int(p < 6),
                "patient_id": f"P{p:02d}", "view": view, "laterality": "L", "key": path.stem,
                "sheet": "bench", "row": len(rows) + 2,
            })  # fmt: skip
    cfg = TrainConfig(
        model=model, image_size=(side, side), epochs=1, batch_size=batch, fine_tune=fine_tune
    )
    before = peak_rss_bytes()
    train_model(pd.DataFrame(rows), cfg, folder / "bundle", extra_callbacks=[StopAfter()])
    return {"model": model, "side": side, "batch": batch, "fine_tune": fine_tune,
            "after_imports": before, "peak": peak_rss_bytes()}  # fmt: skip


def activations_per_pixel() -> dict[str, float]:
    """Values output by all layers (nested models included) per input pixel, at 256 x 256."""
    import keras

    from bcp_core.config import MODEL_NAMES
    from bcp_core.model.architectures import build_model

    def count(layer) -> int:
        if isinstance(layer, keras.Model):
            return sum(count(sub) for sub in layer.layers)
        total = 0
        for out in keras.tree.flatten(layer.output):
            size = 1
            for dim in out.shape[1:]:
                size *= int(dim or 1)
            total += size
        return total

    return {m: count(build_model(m, (256, 256))) / (256 * 256) for m in MODEL_NAMES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default_cnn")
    parser.add_argument("--sizes", type=int, nargs=2, default=[256, 768])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--activations", action="store_true")
    parser.add_argument("--fine-tune", action="store_true", help="train a backbone's weights too")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "SIDE", "BATCH"))
    args = parser.parse_args()
    if args.child:
        model, side, batch = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(child(model, side, batch, args.fine_tune)))
        return
    if args.activations:
        print(json.dumps(activations_per_pixel(), indent=2))
        return
    points = []
    for side in args.sizes:
        cmd = [sys.executable, __file__, "--child", args.model, str(side), str(args.batch)]
        cmd += ["--fine-tune"] if args.fine_tune else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        points.append(json.loads(out.strip().splitlines()[-1]))
        print(points[-1], flush=True)
    (a, b) = points
    pixels = [args.batch * p["side"] ** 2 for p in points]
    slope = (b["peak"] - a["peak"]) / (pixels[1] - pixels[0])
    result = {"points": points, "bytes_per_pixel": slope, "base": a["peak"] - slope * pixels[0]}
    print(json.dumps(result, indent=2))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_memory.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
