"""Benchmark: warm single-image prediction latency of the product against the bare model.

Three flows on the same images, interleaved round-robin in one process after a warm-up, so that
machine load affects all three alike:

* **model.predict** (baseline): ``model.predict(x)`` on an already-prepared (1, H, W, 1) tensor,
  the call a notebook would make; no file is read.
* **product predict**: ``bcp_core.inference.predict.predict_one(bundle, path,
  with_heatmap=False)``: read the JPEG (reduced-scale decoding), orient, crop, resize, then the
  model; what the prediction page and the CLI do per image.
* **product + Grad-CAM**: the same with the heatmap mapped back onto the image.

Targets: product <= 1.5x and product + Grad-CAM <= 3x the baseline's median (p50). Also printed:
``model(x)`` called directly, which is what the product uses instead of ``predict`` (Keras'
``predict`` builds a dataset per call).

Run: ``.venv/bin/python bench/bench_predict.py [--bundle bundles/demo] [--images N] [--rounds N]``
(needs the demo bundle and dataset of ``make run``). Results: stdout and
``bench/results/bench_predict.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
RESULTS = REPO / "bench" / "results"


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    arr = np.asarray(samples) * 1000
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "n": len(samples),
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(bundle_dir: Path, data_root: Path, n_images: int, rounds: int) -> dict:
    """Time the flows on ``n_images`` validation images, ``rounds`` times each."""
    from bcp_core.imaging.preparation import preprocess_image
    from bcp_core.inference.predict import predict_one
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    files = [f for f in bundle.val_predictions["file"] if Path(f).is_file()][:n_images]
    if not files:
        raise SystemExit(f"No validation images of {bundle_dir} exist here; run make run first.")
    tensors = [preprocess_image(f, bundle.spec)[None] for f in files]
    model = bundle.model
    flows = {
        "model.predict": lambda i: model.predict(tensors[i], verbose=0),
        "model(x)": lambda i: model(tensors[i], training=False),
        "product predict": lambda i: predict_one(bundle, files[i], with_heatmap=False),
        "product + Grad-CAM": lambda i: predict_one(bundle, files[i], with_heatmap=True),
    }
    for fn in flows.values():  # warm-up: graph tracing, caches, first decode
        for i in range(min(3, len(files))):
            fn(i)
    samples: dict[str, list[float]] = {name: [] for name in flows}
    for _ in range(rounds):
        for i in range(len(files)):
            for name, fn in flows.items():
                samples[name].append(timed(lambda fn=fn, i=i: fn(i)))
    stats = {name: percentiles(s) for name, s in samples.items()}
    base = stats["model.predict"]["p50_ms"]
    for name in stats:
        stats[name]["ratio_p50"] = stats[name]["p50_ms"] / base
    return {
        "bundle": str(bundle_dir),
        "input": [bundle.spec.height, bundle.spec.width],
        "images": len(files),
        "rounds": rounds,
        "machine": platform.machine(),
        "flows": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "demo")
    parser.add_argument("--data-root", type=Path, default=REPO / "demo_data")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.bundle, args.data_root, args.images, args.rounds)
    print(f"{'flow':<22}{'p50 ms':>9}{'p95 ms':>9}{'x model.predict':>17}")
    for name, s in result["flows"].items():
        print(f"{name:<22}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['ratio_p50']:>16.2f}x")
    print(f"{result['images']} images x {result['rounds']} rounds, input {result['input']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_predict.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
