"""Benchmark: test-time augmentation (TTA): what N passes buy in ROC-AUC, and what they cost.

For each number of passes N (default 1, 2, 4, 8), every image is predicted with
``bcp_core.inference.predict.predict_files(..., passes=N)`` (the variants of
``bcp_core.imaging.tta``, the path the CLI's ``--tta`` and page 5 take) and scored against its
label:

* ROC-AUC and PR-AUC with patient-bootstrap 95 % intervals;
* the ROC-AUC difference to N = 1 on the same images, paired patient bootstrap (same resamples);
* sensitivity and specificity at the bundle's saved threshold (chosen on single-pass validation
  predictions: does the threshold still hold for the mean of N passes?);
* wall time per image, as a ratio to N = 1 measured in the same run, with the target
  ratio <= N x 1.1 (TTA may cost its passes, not more). The N values run interleaved, batch by
  batch, so machine load falls on all of them alike.

Two sources of images, either or both:

* ``--bundle DIR``: the bundle's validation images (``val_predictions.csv``: held out from its
  training, seen only by threshold choice), e.g. the demo bundle ``make run`` trains;
* ``--real-films WORK --films DIR``: each fold of ``bench/bench_real_films.py`` with a cached
  bundle of ``--model`` (default ``default``) and its held-out women; pooled over the folds
  found. Nothing is trained here.

Run: ``.venv/bin/python bench/bench_tta.py --bundle bundles/demo`` and/or
``--real-films /path/to/work --films /path/to/films``. Results: stdout and
``bench/results/bench_tta.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
RESULTS = REPO / "bench" / "results"
N_BOOT = 2000


def demo_images(bundle_dir: Path) -> list[dict]:
    """The bundle's validation images that exist here: path, label, patient."""
    import pandas as pd

    val = pd.read_csv(bundle_dir / "val_predictions.csv", dtype={"patient_id": str})
    rows = [
        {"path": str(r.file), "label": int(r.label), "patient": str(r.patient_id)}
        for r in val.itertuples()
        if Path(r.file).is_file()
    ]
    if not rows:
        raise SystemExit(f"None of the validation images of {bundle_dir} exist here.")
    return rows


def film_folds(work: Path, films: Path, model: str) -> list[tuple[Path, list[dict]]]:
    """(bundle, held-out images) of every fold of a bench_real_films work folder."""
    by_name = {p.name: p for sub in ("malignant", "benign") for p in (films / sub).glob("*.jpg")}
    folds = []
    for result in sorted((work / "folds").glob(f"fold_*/{model}.json")):
        bundle = result.parent / "bundles" / model
        if not (bundle / "bundle.json").is_file():
            continue
        images = json.loads(result.read_text(encoding="utf-8"))["images"]
        rows = [
            {"path": str(by_name[i["file"]]), "label": int(i["label"]), "patient": i["patient"]}
            for i in images
        ]
        folds.append((bundle, rows))
    if not folds:
        raise SystemExit(f"No fold of {work} has a cached {model!r} bundle.")
    return folds


def predict_interleaved(bundle_dir: Path, images: list[dict], passes: list[int], batch: int):
    """Probabilities per N, and the seconds each N took, N values interleaved per batch."""
    from bcp_core.inference.predict import predict_files
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    paths = [i["path"] for i in images]
    for n in passes:  # warm-up: tracing for each batch shape
        predict_files(bundle, paths[:batch], batch_size=batch, passes=n)
    probs: dict[int, list[float]] = {n: [] for n in passes}
    seconds = dict.fromkeys(passes, 0.0)
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        for n in passes:
            began = time.perf_counter()
            results = predict_files(bundle, chunk, batch_size=batch, passes=n)
            seconds[n] += time.perf_counter() - began
            probs[n].extend(r.probability if r.ok else math.nan for r in results)
    return {n: np.asarray(p, dtype=float) for n, p in probs.items()}, seconds, bundle.threshold


def score(images: list[dict], probs: dict, thresholds: np.ndarray, seconds: dict) -> dict:
    """Per N: AUCs with intervals, the paired difference to N = 1, sens/spec, time ratio."""
    from bcp_core.evaluation.compare import paired_auc_difference
    from bcp_core.evaluation.intervals import bootstrap_auc_intervals
    from bcp_core.evaluation.metrics import ranking_metrics

    y = np.array([i["label"] for i in images], dtype=float)
    groups = np.array([i["patient"] for i in images], dtype=object)
    base_n = min(probs)
    out = {}
    for n, p in probs.items():
        boot = bootstrap_auc_intervals(y, p, groups, n_boot=N_BOOT, seed=0)
        paired = paired_auc_difference(
            y, p, probs[base_n], groups, n_boot=N_BOOT, seed=0, confidence=0.95
        )
        flagged = p >= thresholds
        ranks = ranking_metrics(y, p)
        out[n] = {
            "roc_auc": ranks["roc_auc"],
            "roc_auc_ci": boot["roc_auc"],
            "pr_auc": ranks["pr_auc"],
            "pr_auc_ci": boot["pr_auc"],
            "roc_auc_vs_1": ranks["roc_auc"] - ranking_metrics(y, probs[base_n])["roc_auc"],
            "roc_auc_vs_1_ci": paired["roc_auc_diff_ci"],
            "sensitivity": float(flagged[y == 1].mean()),
            "specificity": float((~flagged[y == 0]).mean()),
            "ms_per_image": 1000 * seconds[n] / len(y),
            "time_ratio": seconds[n] / seconds[base_n],
            "time_target": n * 1.1,
        }
    return {"images": len(y), "positives": int(y.sum()), "women": len(set(groups)), "by_n": out}


def run_source(parts: list[tuple[Path, list[dict]]], passes: list[int], batch: int) -> dict:
    """Predict every part with its bundle, pool the images, score them."""
    images: list[dict] = []
    probs: dict[int, list[np.ndarray]] = {n: [] for n in passes}
    thresholds: list[np.ndarray] = []
    seconds = dict.fromkeys(passes, 0.0)
    for bundle, rows in parts:
        print(f"  {bundle}: {len(rows)} images", flush=True)
        p, s, cut = predict_interleaved(bundle, rows, passes, batch)
        images += rows
        thresholds.append(np.full(len(rows), cut))
        for n in passes:
            probs[n].append(p[n])
            seconds[n] += s[n]
    pooled = {n: np.concatenate(v) for n, v in probs.items()}
    read = np.all([np.isfinite(p) for p in pooled.values()], axis=0)  # images refused are left out
    kept = [image for image, ok in zip(images, read, strict=True) if ok]
    pooled = {n: p[read] for n, p in pooled.items()}
    result = score(kept, pooled, np.concatenate(thresholds)[read], seconds)
    return {"bundles": [str(b) for b, _ in parts], "unreadable": int((~read).sum())} | result


def fmt_ci(value: float, ci) -> str:
    low, high = ci
    if math.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def print_table(name: str, result: dict) -> None:
    print(
        f"\n{name}: {result['images']} images ({result['positives']} cancer) of "
        f"{result['women']} patients ({result['unreadable']} refused as unreadable, left out)"
    )
    head = ("N", "ROC-AUC [95% CI]", "vs N=1, paired [95% CI]", "sens", "spec", "ms/img", "x N=1")
    print(
        f"{head[0]:>3} {head[1]:<24}{head[2]:<27}{head[3]:>6}{head[4]:>6}{head[5]:>8}{head[6]:>7}"
    )
    for n, s in result["by_n"].items():
        delta = fmt_ci(s["roc_auc_vs_1"], s["roc_auc_vs_1_ci"]) if n > 1 else "-"
        print(
            f"{n:>3} {fmt_ci(s['roc_auc'], s['roc_auc_ci']):<24}{delta:<27}"
            f"{s['sensitivity']:>6.2f}{s['specificity']:>6.2f}{s['ms_per_image']:>8.1f}"
            f"{s['time_ratio']:>6.2f}x (target <= {s['time_target']:.1f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="score this bundle's validation images")
    parser.add_argument("--real-films", type=Path, help="a bench_real_films.py work folder")
    parser.add_argument("--films", type=Path, help="the films folder (malignant/, benign/)")
    parser.add_argument("--model", default="default", help="real films: the cached model name")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if not args.bundle and not args.real_films:
        parser.error("give --bundle and/or --real-films (with --films)")
    passes = sorted(set(args.passes) | {1})
    results: dict = {"machine": platform.machine(), "passes": passes}
    if args.bundle:
        print(f"Demo bundle {args.bundle}", flush=True)
        parts = [(args.bundle, demo_images(args.bundle))]
        results["bundle"] = run_source(parts, passes, args.batch_size)
        print_table("Validation images of the bundle", results["bundle"])
    if args.real_films:
        if not args.films:
            parser.error("--real-films needs --films")
        films = args.films / "data" if (args.films / "data").is_dir() else args.films
        print(f"Real films, model {args.model!r}", flush=True)
        parts = film_folds(args.real_films, films, args.model)
        results["real_films"] = run_source(parts, passes, args.batch_size)
        print_table(f"Real films, held-out women of {len(parts)} folds", results["real_films"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_tta.json"
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"\nWrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
