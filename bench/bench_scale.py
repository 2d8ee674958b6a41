"""Benchmark: training and batch prediction throughput, local against Ray with 1 and 2 workers.

The same files go through three flows in one process, one after another, each timed end to end
as a user meets it:

* **local**: ``load_bundle`` then ``predict_files`` (what ``predict --engine local`` does).
* **ray 1 worker** / **ray 2 workers**: ``predict_distributed`` on a one-node Ray cluster started
  once before the timings (``ray.init(num_cpus=N)``); the time includes starting the actor pool
  and loading the model in each actor, and writing the Parquet shards to a fresh folder.

Target: ray with 1 worker <= 1.2x the local time (the overhead of the engine on one machine).
Results are also checked to agree with local prediction to 1e-6.

``--training`` also times training (``--train-epochs``, default 3, of the default CNN at
256 x 208 on the same data root): in this process (``train_model``), and through Ray Train with
1 and 2 workers (``train_on_ray``, MultiWorkerMirroredStrategy, the same global batch). The
figure is the steady training rate: training images per second from the end of epoch 1 to the
end of the last epoch (so start-up, tracing and the first epoch's warm-up are left out; the
validation scoring each epoch does is in), and, apart, the seconds to the end of epoch 1.

Run: ``.venv/bin/python bench/bench_scale.py [--bundle DIR --data-root DIR] [--images N]``
(needs ``pip install -r requirements-scale.txt``). Without ``--bundle`` it writes the small demo
dataset and trains a small bundle under ``bench/results/cache/scale`` (once, a few minutes).
Results: stdout and ``bench/results/bench_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "cache" / "scale"


def prepare(bundle: Path | None, data_root: Path | None) -> tuple[Path, Path]:
    """The bundle and data root to use; the cached demo ones are made when none are given."""
    if bundle is not None and data_root is not None:
        return bundle, data_root
    from bcp_core.config import DemoConfig, TrainConfig
    from bcp_core.data.datasource import read_data_root
    from bcp_core.model.training import train_model
    from bcp_demo.writer import write_demo_dataset

    root, out = CACHE / "demo", CACHE / "bundle"
    if not (root / "demo_ground_truth.json").exists():
        write_demo_dataset(root, DemoConfig(scale="small", seed=11, image_height=512))
    if not (out / "bundle.json").exists():
        cfg = TrainConfig(model="seed_cnn", image_size=(256, 208), epochs=1, seed=5)
        train_model(read_data_root(root).manifest, cfg, out)
    return out, root


def run(bundle_dir: Path, data_root: Path, n_images: int, cpus: int) -> dict:
    import ray

    from bcp_core.inference.inputs import expand_inputs
    from bcp_core.inference.predict import predict_files
    from bcp_core.inference.ray_predict import predict_distributed, read_results
    from bcp_core.model.bundle import load_bundle

    files = [str(p) for p in expand_inputs([data_root])][:n_images]
    timings: dict[str, float] = {}
    startup: dict[str, float] = {}  # until the first results arrive (pool start, model loads)
    steady: dict[str, float] = {}  # images/s from the first results to the last

    start = time.perf_counter()
    local = predict_files(load_bundle(bundle_dir), files)
    timings["local"] = time.perf_counter() - start
    expected = {r.file: r.probability for r in local}

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    worst = 0.0
    try:
        for workers in (1, 2):
            out = Path(tempfile.mkdtemp(prefix="bench_scale_"))
            try:
                arrivals: list[tuple[float, int]] = []
                start = time.perf_counter()
                predict_distributed(
                    bundle_dir,
                    files,
                    out=out / "r",
                    workers=workers,
                    on_progress=lambda done, _, seen=arrivals: seen.append(
                        (time.perf_counter(), done)
                    ),
                )
                name = f"ray {workers} worker{'s' if workers > 1 else ''}"
                timings[name] = time.perf_counter() - start
                first_t, first_n = arrivals[0]
                last_t, last_n = arrivals[-1]
                startup[name] = first_t - start
                steady[name] = (last_n - first_n) / (last_t - first_t) if last_t > first_t else 0.0
                for row in read_results(out / "r").itertuples():
                    if expected[row.file] is not None:
                        worst = max(worst, abs(float(row.probability) - expected[row.file]))
            finally:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        ray.shutdown()
    base = timings["local"]
    flows = {
        name: {
            "seconds": round(t, 2),
            "images_per_s": round(len(files) / t, 1),
            "x_local": round(t / base, 2),
        }
        for name, t in timings.items()
    }
    for name in startup:
        flows[name]["seconds_to_first_results"] = round(startup[name], 2)
        flows[name]["steady_images_per_s"] = round(steady[name], 1)
        flows[name]["steady_x_local_rate"] = round(flows["local"]["images_per_s"] / steady[name], 2)
    return {
        "bundle": str(bundle_dir),
        "images": len(files),
        "cpus": cpus,
        "machine": platform.machine(),
        "os_cpus": os.cpu_count(),
        "flows": flows,
        "max_abs_probability_difference": worst,
        "target_ray_1_worker_x_local": 1.2,
        "target_met": flows["ray 1 worker"]["x_local"] <= 1.2,
    }


def time_training(data_root: Path, epochs: int, cpus: int) -> dict:
    """Steady training rate in this process and on Ray with 1 and 2 workers."""
    import ray

    from bcp_core.config import TrainConfig
    from bcp_core.data.datasource import read_data_root
    from bcp_core.model.events import EpochEnded, Started
    from bcp_core.model.ray_train import train_on_ray
    from bcp_core.model.training import train_model

    manifest = read_data_root(data_root).manifest
    cfg = TrainConfig(image_size=(256, 208), epochs=epochs, patience=epochs, seed=5)
    flows: dict[str, dict] = {}

    def timed_run(name: str, train) -> None:
        marks: list[float] = []
        info: dict = {}

        def on_event(event) -> None:
            if isinstance(event, Started):
                info["images"] = event.steps * cfg.batch_size  # images per epoch
            elif isinstance(event, EpochEnded):
                marks.append(time.perf_counter())

        out = Path(tempfile.mkdtemp(prefix="bench_scale_train_"))
        try:
            start = time.perf_counter()
            train(on_event, out / "b")
        finally:
            shutil.rmtree(out, ignore_errors=True)
        steady = (len(marks) - 1) * info["images"] / (marks[-1] - marks[0])
        flows[name] = {
            "seconds_to_epoch_1": round(marks[0] - start, 2),
            "steady_images_per_s": round(steady, 1),
            "epochs": len(marks),
        }
        print(f"  {name}: {flows[name]}", flush=True)

    timed_run("local", lambda on, out: train_model(manifest, cfg, out, on_event=on))
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        for workers in (1, 2):
            name = f"ray {workers} worker{'s' if workers > 1 else ''}"
            timed_run(
                name,
                lambda on, out, w=workers: train_on_ray(manifest, cfg, out, workers=w, on_event=on),
            )
    finally:
        ray.shutdown()
    base = flows["local"]["steady_images_per_s"]
    for flow in flows.values():
        flow["x_local_rate"] = round(flow["steady_images_per_s"] / base, 2)
    two, one = flows["ray 2 workers"], flows["ray 1 worker"]
    return {
        "model": cfg.model,
        "image_size": list(cfg.image_size),
        "global_batch": cfg.batch_size,
        "flows": flows,
        "two_workers_x_one": round(two["steady_images_per_s"] / one["steady_images_per_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--training", action="store_true", help="also time training")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--skip-prediction", action="store_true")
    args = parser.parse_args()
    bundle, root = prepare(args.bundle, args.data_root)
    result: dict = {}
    if args.training:
        print("Training (steady images/s after epoch 1):", flush=True)
        result["training"] = time_training(root, args.train_epochs, args.cpus)
        t = result["training"]
        print(f"2 workers / 1 worker: {t['two_workers_x_one']:.2f}x")
    if args.skip_prediction:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_scale.json").write_text(json.dumps(result, indent=2))
        return
    result |= run(bundle, root, args.images, args.cpus)
    print(f"{'flow':<16}{'seconds':>9}{'images/s':>10}{'x local':>9}{'first s':>9}{'steady/s':>10}")
    for name, f in result["flows"].items():
        line = f"{name:<16}{f['seconds']:>9.2f}{f['images_per_s']:>10.1f}{f['x_local']:>8.2f}x"
        if "steady_images_per_s" in f:
            line += f"{f['seconds_to_first_results']:>9.2f}{f['steady_images_per_s']:>10.1f}"
        print(line)
    print(
        f"{result['images']} images, {result['cpus']} CPUs for Ray; largest difference from local "
        f"{result['max_abs_probability_difference']:.1e}; target ray 1 worker <= 1.2x local: "
        f"{'met' if result['target_met'] else 'NOT met'}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_scale.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
