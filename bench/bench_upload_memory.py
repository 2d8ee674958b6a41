"""Peak memory of predicting one huge upload on the prediction page, before and after the fix.

Threat row 6: a 146 KB PNG that decodes to 75 M pixels cost ~20 s of CPU and GBs of memory per
upload, and the page's cache kept the full-resolution images. This script writes such a PNG
(10,000 x 7,500, a breast-like shape on black) and one just under the upload cap (7,200 x
5,400, 38.9 M pixels), trains a tiny bundle at a 320 x 256 input, then runs what the
page does for one upload (``predict_one`` with Grad-CAM, the cached object, the overlay) in a
fresh child process per case, on two copies of the code in the same run:

* **before**: the library at ``--before`` (default e42363a, the commit before the fix), taken
  with ``git archive``;
* **after**: the working tree.

Each child reports the peak resident memory (``ru_maxrss``) before and after predicting, the
seconds taken, and the bytes the page's cache would hold for the file; the ratio is of the two
processes' peaks (each includes ~1.4 GB of TensorFlow and the model).

Run: ``.venv/bin/python bench/bench_upload_memory.py [--before REV]`` (about a minute on 2
cores; needs ~4 GB free for the "before" cases). Results: stdout and
``bench/results/bench_upload_memory.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
CASES = {"75M": (10_000, 7_500), "38.9M": (7_200, 5_400)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def breast_png(width: int, height: int) -> bytes:
    """A smooth half disc on black, made small and enlarged (so the PNG compresses well)."""
    import numpy as np
    from PIL import Image

    h, w = 750, 1000
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2) < 1
    small = Image.fromarray((disc * (90 + 60 * (yy % 200 < 100))).astype(np.uint8))
    buf = io.BytesIO()
    small.resize((width, height), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def setup(folder: Path) -> None:
    """The two PNGs and a tiny seed_cnn bundle at 320 x 256 (one epoch on 16 blobs)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from bcp_core.config import TrainConfig
    from bcp_core.model.training import train_model

    for label, (w, h) in CASES.items():
        (folder / f"upload_{label}.png").write_bytes(breast_png(w, h))
    rows = []
    for i in range(16):
        path = folder / f"P{i:02d}_CC.png"
        img = np.asarray(Image.open(io.BytesIO(breast_png(400, 320)))).copy()
        img[100 + 10 * i : 120 + 10 * i, 50:70] = 250 * (i % 2)
        Image.fromarray(img).save(path)
        rows.append({"path": str(path), "relpath": path.name, "label": i % 2,
                     "patient_id": f"P{i:02d}", "view": "CC", "laterality": "L",
                     "key": path.stem, "sheet": "bench", "row": i + 2})  # fmt: skip
    cfg = TrainConfig(model="seed_cnn", epochs=1, image_size=(320, 256), batch_size=8, seed=1)
    train_model(pd.DataFrame(rows), cfg, folder / "bundle")


def child(code: Path, bundle_dir: Path, png: Path) -> dict:
    """What the page does for one upload, with the library in ``code``; memory and time."""
    sys.path.insert(0, str(code))
    from bcp_core.errors import UserError
    from bcp_core.inference import predict
    from bcp_core.inference.explain import overlay_heatmap
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    data = png.read_bytes()
    base = peak_rss_mb()
    start = time.perf_counter()
    out: dict = {"file_kb": round(len(data) / 1024)}
    try:
        result = predict.predict_one(bundle, data, png.name)
        try:
            from bcp_core.inference.shown import ShownPrediction as shown_cls
        except ImportError:  # older code: in predict, or (earlier still) not at all
            shown_cls = getattr(predict, "ShownPrediction", None)
        if shown_cls is None:  # before: the page cached the ExplainedPrediction itself
            held = sum(a.nbytes for a in (result.gray, result.net_input, result.heatmap,
                                          result.input_heatmap))  # fmt: skip
            overlay_heatmap(result.gray, result.heatmap, alpha=0.45)
        else:
            shown = shown_cls.of(result)
            held = shown.nbytes
            overlay_heatmap(shown.image / 255.0, shown.heatmap / 255.0, alpha=0.45)
        out.update(outcome=f"p = {result.prediction.probability:.3f}",
                   decoded=list(result.gray.shape), cached_mb=round(held / 1e6, 2))  # fmt: skip
    except UserError as exc:
        out.update(outcome=f"refused: {exc}", decoded=None, cached_mb=0.0)
    out.update(seconds=round(time.perf_counter() - start, 2), base_peak_mb=round(base),
               peak_mb=round(peak_rss_mb()), added_mb=round(peak_rss_mb() - base))  # fmt: skip
    return out


def run_child(code: Path, folder: Path, png: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(code), str(folder / "bundle"), str(png)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def export(rev: str, into: Path) -> Path:
    """The library at ``rev`` (bcp_core only), unpacked into ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "bcp_core"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="e42363a", help="git revision before the fix")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup(Path(args.setup))
        return
    if args.child:
        code, bundle_dir, png = (Path(p) for p in args.child)
        print(json.dumps(child(code, bundle_dir, png)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, __file__, "--setup", tmp], check=True, env=ENV)
        before = export(args.before, folder / "before")
        results: dict = {"before_rev": args.before, "cases": {}}
        for label in CASES:
            png = folder / f"upload_{label}.png"
            case = {"before": run_child(before, folder, png), "after": run_child(ROOT, folder, png)}
            case["peak_ratio"] = round(case["before"]["peak_mb"] / case["after"]["peak_mb"], 2)
            results["cases"][label] = case
            for k in ("before", "after"):
                print(f"{label} {k:6s} {json.dumps(case[k])}")
            print(f"{label} peak memory, before / after: {case['peak_ratio']}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_upload_memory.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
