"""Benchmark: the cache of prepared images (``bcp_core.imaging.cache``): an epoch with and
without it.

What is compared, on the same files in the same run: the training pipeline
(``bcp_core.model.dataset.image_dataset``, shuffled and augmented as training reads it) with no
cache (**baseline**: every image decoded and prepared, as before the cache), with a fresh cache
(**first epoch**: each image prepared once and kept) and with the cache full (**later epochs**:
nothing decoded). Then the same epochs with the training step of the default model (the Lite
recipe: EfficientNet-Lite0 from its packaged ImageNet weights, stem and stages 1-2 frozen,
batch norm learning, 320 x 256, batch 16), without the cache and with it full, which is what a
run's epoch costs. Ratios are taken within one run; the conditions alternate (``--repeats``
rounds) and each figure is the median of its rounds, so machine load falls on all alike.

Files (``--images`` of each kind):

* ``films``: the public real films (``--films DIR``: 640 x 640 JPEGs, the first N by name of
  its ``malignant`` and ``benign`` folders; skipped without it);
* ``hospital JPEG``: synthetic films (``bcp_demo.synth.render_mammogram``) at the size of a
  full-field detector's image (``--hospital-size``, default 3328 x 2560), JPEG quality 95:
  the hospital's exports are of this kind, and JPEG decoding already works at a reduced scale
  (1/8 here), so the cache saves less than the size suggests;
* ``hospital DICOM``: the same pixels at 12 bits in uncompressed DICOM (MONOCHROME2), which
  is decoded at full size (no reduced-scale decoding exists for it).

The synthetic files are written once to ``bench/results/cache/image_cache_files`` (git-ignored);
each condition's cache is a fresh temporary folder. The cache's size on disk per image is
reported too.

Run: ``.venv/bin/python bench/bench_image_cache.py --films /path/to/films`` (about 10 minutes on
2 cores), or ``--quick`` for a smoke run. Results: a table on stdout and
``bench/results/bench_image_cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
RESULTS = REPO / "bench" / "results"
FILES = RESULTS / "cache" / "image_cache_files"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def real_films(folder: Path, n: int) -> list[tuple[str, int]]:
    """The first ``n`` films by name, half from each class folder (as many as there are)."""
    found = []
    for cls, label in (("malignant", 1), ("benign", 0)):
        names = sorted((folder / cls).glob("*.jpg"))[: (n + 1 - label) // 2]
        found += [(str(p), label) for p in names]
    if not found:
        raise SystemExit(f"No films in {folder}/malignant or {folder}/benign.")
    return found


def hospital_files(n: int, size: tuple[int, int]) -> dict[str, list[tuple[str, int]]]:
    """``n`` synthetic films at ``size`` as JPEG and as 12-bit DICOM (written once)."""
    from PIL import Image

    from bcp_demo.synth import render_mammogram

    folder = FILES / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    jpegs, dicoms = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % 2
        jpeg, dicom = folder / f"film{i:04d}.jpg", folder / f"film{i:04d}.dcm"
        if not (jpeg.exists() and dicom.exists()):
            view = ("CC", "MLO")[i % 2]
            side = ("L", "R")[(i // 2) % 2]
            pixels = render_mammogram(rng, height=size[0], width=size[1], view=view,
                                      laterality=side)  # fmt: skip
            Image.fromarray(pixels).save(jpeg, quality=95)
            dicom.write_bytes(dicom_bytes(pixels.astype(np.uint16) * 16))
        jpegs.append((str(jpeg), label))
        dicoms.append((str(dicom), label))
    return {"hospital JPEG": jpegs, "hospital DICOM": dicoms}


def dicom_bytes(pixels: np.ndarray) -> bytes:
    """An uncompressed 12-bit MONOCHROME2 mammogram (MG) holding ``pixels`` (the tests' writer)."""
    from tests.dicom_files import make_dicom

    return make_dicom(pixels, bits_stored=12)


def pipeline(files, spec, batch: int, cache):
    from bcp_core.model.dataset import image_dataset

    paths, labels = zip(*files, strict=True)
    return image_dataset(paths, labels, spec, batch_size=batch, training=True, cache=cache)


def timed_epoch(ds, step=None) -> tuple[float, int]:
    """Seconds for one pass over ``ds`` (with ``step(x, y)`` on each batch), and images."""
    began, images = time.perf_counter(), 0
    for x, y in ds:
        if step is not None:
            step(x, y)
        images += int(y.shape[0])
    return time.perf_counter() - began, images


def bench_kind(name: str, files, cfg, model, args) -> dict:
    from bcp_core.imaging.cache import CacheSettings, PreparedCache

    spec = cfg.spec
    log(f"{name}: {len(files)} images at {spec.height} x {spec.width}")

    def step(x, y) -> None:
        model.train_on_batch(x, y)

    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bcp-cache-bench-") as tmp:
        full = PreparedCache(CacheSettings(Path(tmp) / "warm"), spec)
        seconds, n = timed_epoch(pipeline(files, spec, cfg.batch_size, full))
        rates.setdefault("pipeline, first epoch (prepare and keep)", []).append(n / seconds)
        kept = sorted(full.folder.glob("*/*.npy"))
        bytes_per_image = sum(p.stat().st_size for p in kept) / max(1, len(kept))
        for r in range(args.repeats):
            for label, cache in (("pipeline, no cache", None), ("pipeline, later epochs", full)):
                seconds, n = timed_epoch(pipeline(files, spec, cfg.batch_size, cache))
                rates.setdefault(label, []).append(n / seconds)
            if r:  # one more first epoch, into a fresh folder (the first round's is above)
                fresh = PreparedCache(CacheSettings(Path(tmp) / f"fresh{r}"), spec)
                seconds, n = timed_epoch(pipeline(files, spec, cfg.batch_size, fresh))
                rates["pipeline, first epoch (prepare and keep)"].append(n / seconds)
        if model is not None:
            timed_epoch(pipeline(files[: 2 * cfg.batch_size], spec, cfg.batch_size, full), step)
            trained = (("training, no cache", None), ("training, later epochs", full))
            for _ in range(args.repeats):
                for label, cache in trained:
                    seconds, n = timed_epoch(pipeline(files, spec, cfg.batch_size, cache), step)
                    rates.setdefault(label, []).append(n / seconds)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in medians.items():
        log(f"  {k}: {v:.1f} images/s")
    result = {
        "images": len(files),
        "images_per_s": medians,
        "rounds": rates,
        "cache_bytes_per_image": bytes_per_image,
        "pipeline_speedup": medians["pipeline, later epochs"] / medians["pipeline, no cache"],
        "first_epoch_ratio": medians["pipeline, first epoch (prepare and keep)"]
        / medians["pipeline, no cache"],
    }
    if model is not None:
        result["training_speedup"] = (
            medians["training, later epochs"] / medians["training, no cache"]
        )
    return result


def format_report(results: dict) -> str:
    lines = [
        "| files | images | no cache | first epoch | later epochs | speed-up | training, no cache "
        "| training, later epochs | speed-up | cache per image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["kinds"].items():
        m = r["images_per_s"]
        training = (
            f"{m['training, no cache']:.1f} | {m['training, later epochs']:.1f} | "
            f"{r['training_speedup']:.2f}x"
            if "training_speedup" in r
            else "- | - | -"
        )
        lines.append(
            f"| {name} | {r['images']} | {m['pipeline, no cache']:.1f} | "
            f"{m['pipeline, first epoch (prepare and keep)']:.1f} | "
            f"{m['pipeline, later epochs']:.1f} | {r['pipeline_speedup']:.1f}x | {training} | "
            f"{r['cache_bytes_per_image'] / 1000:.0f} kB |"
        )
    lines.append("")
    lines.append(
        "images/s, median of the rounds; pipeline = the training pipeline alone (decode, "
        "prepare, shuffle, augment); training = the same with the default model's training step."
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--films", type=Path, help="the public real films (malignant/, benign/)")
    p.add_argument("--images", type=int, default=160, help="images of each kind (160)")
    p.add_argument("--hospital-size", type=int, nargs=2, default=[3328, 2560])
    p.add_argument("--repeats", type=int, default=2, help="rounds of each condition (2)")
    p.add_argument("--no-training", action="store_true", help="the pipeline alone")
    p.add_argument("--quick", action="store_true", help="a smoke run: 32 small images, CNN")
    args = p.parse_args()
    if args.quick:
        args.images, args.hospital_size, args.repeats = 32, [832, 640], 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bcp_core.config import TrainConfig
    from bcp_core.model import pretrained
    from bcp_core.model.training import compile_model

    cfg = TrainConfig(model="default_cnn" if args.quick else "efficientnet_lite0")
    pretrained.set_cache_dir(REPO / "weights")
    model = None if args.no_training else compile_model(cfg, 0.5)
    kinds = {}
    if args.films:
        kinds["films (640 px JPEG)"] = real_films(args.films, args.images)
    size = tuple(args.hospital_size)
    kinds.update(hospital_files(args.images, size))  # type: ignore[arg-type]
    began = time.perf_counter()
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": cfg.model,
        "spec": cfg.spec.to_dict(),
        "batch_size": cfg.batch_size,
        "hospital_size": list(size),
        "repeats": args.repeats,
        "kinds": {name: bench_kind(name, files, cfg, model, args) for name, files in kinds.items()},
    }
    results["seconds"] = time.perf_counter() - began
    report = format_report(results)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("bench_image_cache_quick.json" if args.quick else "bench_image_cache.json")
    out.write_text(json.dumps(results, indent=2))
    log(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
