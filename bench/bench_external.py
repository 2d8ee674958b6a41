"""External check: bundles trained on one source of films score films from another source.

The five-fold benchmark (``bench_real_films.py``) holds out women of the same collection the
models learned from: same scanners, same export, same quirks. A model can score well there by
learning the collection rather than cancer. This script takes bundles as they are and scores
films of another origin, with nothing retrained or re-thresholded, so the figures say how far
the product's decision carries to films it was never tuned on.

Data. ``--films DIR`` and ``--labels FILE`` in one of two layouts:

* ``--labels-format csv``: a CSV with columns ``file`` (relative to ``--films``), ``label``
  (1 cancer, 0 not) and optionally ``patient`` (films of one woman share it; each film is
  its own woman without it);
* ``--labels-format mias``: the MIAS MiniMammographic Database (Suckling et al. 1994, research
  use only; 322 digitised screen films of 161 women, 1024 x 1024, medio-lateral oblique views,
  ``mdbNNN.pgm``) with its information file (``Info.txt``: one line per abnormality,
  severity ``M`` for malignant). A film is positive when any abnormality on it is malignant;
  benign findings and normal films are negative (52 of 322 positive). Films come in pairs of
  one woman (left and right: ``mdb001`` and ``mdb002`` are one woman).

Images the product does not read (PGM) are written once as lossless 8-bit PNG under
``WORK/images`` (atomically); others are scored where they lie.

Method. Each bundle (``--bundle NAME=PATH[,PATH...]``: several paths are runs of one recipe,
such as the five fold bundles of the benchmark) scores every film through the product's CLI
(``python -m bcp_core predict --bundle B --json``, its saved threshold and test-time passes).
Per run, and for the mean probability of a name's runs (decided at the mean of their saved
thresholds): ROC-AUC and PR-AUC with patient-bootstrap 95 % intervals, sensitivity and
specificity at the saved threshold with Wilson intervals, per woman (the mean of her films)
and, with ``--against NAME``, the paired ROC-AUC difference on the same women. Predictions are
cached per run in ``WORK/NAME/run_I.json``; the summary is written to ``WORK/summary.json``.

Run (from the repository root; the MIAS files from any copy of the database):

    .venv/bin/python bench/bench_external.py --films /data/mias --labels /data/mias/Info.txt \\
        --labels-format mias --work /data/mias-runs \\
        --bundle lite0=/runs/folds/fold_0/bundles/lite0,/runs/folds/fold_1/bundles/lite0
    .venv/bin/python bench/bench_external.py --work /data/mias-runs --summary

``--as-folders OUT`` instead writes the films as ``bench_real_films.py`` reads them
(``OUT/malignant``, ``OUT/benign``, ``<woman>_<film>.jpg``), so that the same recipe, or a
model of the first collection gone on from (``train --start-from``), can be trained and scored
on this source's own women by cross-validation.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_real_films
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bcp_core, run as a script

from bench_real_films import (
    fmt,
    group_scores,
    log,
    mean_record,
    paired_auc_delta,
    per_woman,
    predict_held_out,
    product_env,
    read_json,
    score,
    scored,
    write_json,
)

from bcp_core.config import IMAGE_EXTENSIONS

REPO = Path(__file__).resolve().parents[1]
MIAS_LINE = re.compile(r"^(mdb(\d{3}))\s+([FGD])\s+([A-Z]+)(?:\s+([BM]))?")


# --- Films --------------------------------------------------------------------------------------


def mias_films(folder: Path, info: Path) -> list[dict]:
    """MIAS films from its information file: positive when any abnormality is malignant; the
    woman is the film pair (mdb001 and mdb002 are one woman)."""
    labels: dict[str, int] = {}
    for line in info.read_text(encoding="latin-1").splitlines():
        m = MIAS_LINE.match(line.strip())
        if m:
            ref = m.group(1)
            labels[ref] = max(labels.get(ref, 0), int(m.group(5) == "M"))
    if not labels:
        raise SystemExit(f"{info} has no MIAS lines ('mdbNNN <tissue> <class> [B|M] ...').")
    films = []
    for ref, label in sorted(labels.items()):
        path = folder / f"{ref}.pgm"
        if not path.is_file():
            raise SystemExit(f"{info} names {ref}, but {path} is not there.")
        woman = f"mias{(int(ref[3:]) + 1) // 2:03d}"
        films.append({"name": path.name, "path": str(path), "patient": woman, "label": label})
    return films


def csv_films(folder: Path, table: Path) -> list[dict]:
    """Films of a CSV with columns file, label and optionally patient."""
    with table.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise SystemExit(f"{table} needs the columns file and label (and may have patient).")
    films = []
    for row in rows:
        path = folder / row["file"]
        if not path.is_file():
            raise SystemExit(f"{table} names {row['file']}, but {path} is not there.")
        if row["label"].strip() not in ("0", "1"):
            raise SystemExit(f"{table}: label of {row['file']} is {row['label']!r}, not 0 or 1.")
        patient = (row.get("patient") or "").strip() or row["file"]
        label = int(row["label"])
        films.append({"name": row["file"], "path": str(path), "patient": patient, "label": label})
    if len({f["name"] for f in films}) != len(films):
        raise SystemExit(f"{table} names a file twice; give each film one row.")
    return films


def readable(films: list[dict], work: Path) -> list[dict]:
    """The films with ``path`` pointing at a file the product reads: other formats (PGM)
    written once as lossless PNG under ``WORK/images``, at the film's name (its path under
    ``--films``), so that two folders' files of one stem stay apart."""
    from PIL import Image

    out = []
    for film in films:
        path = Path(film["path"])
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            target = (work / "images" / film["name"]).with_suffix(".png")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
                with Image.open(path) as image:
                    image.convert("L").save(tmp, format="PNG")
                os.replace(tmp, target)
            path = target
        out.append({**film, "path": str(path)})
    return out


# --- Scoring ------------------------------------------------------------------------------------


def parse_bundles(values: list[str]) -> dict[str, list[Path]]:
    """``NAME=PATH[,PATH...]`` strings as {name: [bundle folders]}."""
    out: dict[str, list[Path]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        paths = [Path(p).expanduser().resolve() for p in rest.split(",") if p]
        if not sep or not paths or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SystemExit(f"--bundle {value!r}: write NAME=BUNDLE[,BUNDLE...].")
        missing = [p for p in paths if not (p / "bundle.json").is_file()]
        if missing:
            raise SystemExit(f"--bundle {name}: {missing[0]} is not a bundle (no bundle.json).")
        out[name] = paths
    return out


def run_bundle(bundle: Path, films: list[dict], cache: Path, ctx: dict) -> dict:
    """Every film scored by one bundle (cached; a cache of another bundle or films is refused)."""
    names = sorted(f["name"] for f in films)
    if cache.exists():
        result = read_json(cache)
        cached = sorted(i["file"] for i in result["images"] + result["refused"])
        if result["bundle"] != str(bundle) or cached != names:
            raise SystemExit(f"{cache} holds another bundle's or other films' scores; remove it.")
        return result
    entries, wall = predict_held_out(bundle, films, ctx)
    scores = scored(entries, films, {}, 0.0, wall)
    result = {
        "bundle": str(bundle),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: scores[k] for k in ("threshold", "predict_wall_s", "refused", "images")},
    }
    write_json(cache, result)
    log(f"{bundle}: {len(result['images'])} scored, {len(result['refused'])} refused, {wall:.0f} s")
    return result


def run_summary(run: dict, args: argparse.Namespace) -> dict:
    """One run's bundle, threshold, refused films and scores."""
    scores = score(run["images"], args.n_boot, args.seed)
    return {
        "bundle": run["bundle"],
        "threshold": run["threshold"],
        "refused": run["refused"],
    } | scores


def summarise(args: argparse.Namespace) -> dict:
    """Score every cached run and each name's mean; write ``WORK/summary.json``."""
    names = sorted(p.name for p in args.work.iterdir() if p.is_dir() and p.name != "images")
    results = {n: [read_json(p) for p in sorted((args.work / n).glob("run_*.json"))] for n in names}
    results = {n: runs for n, runs in results.items() if runs}
    means = {n: mean_record(runs) for n, runs in results.items()}
    summary: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "models": {}}
    summary.update(n_boot=args.n_boot, seed=args.seed, against=args.against)
    for name, runs in results.items():
        entry = {
            "runs": [run_summary(r, args) for r in runs],
            "mean": score(means[name]["images"], args.n_boot, args.seed),
        }
        pair = None
        if args.against in means and args.against != name:
            theirs = means[args.against]["images"]
            entry["mean"]["vs_against"] = paired_auc_delta(
                means[name]["images"], theirs, args.n_boot, args.seed
            )
            pair = (means[name]["images"], theirs)
        entry["mean"]["per_woman"] = group_scores(
            means[name]["images"], per_woman, pair, args, "women"
        )
        summary["models"][name] = entry
    write_json(args.work / "summary.json", summary)
    return summary


def format_table(summary: dict) -> str:
    """Per model one line per run and one for the mean of its runs."""
    head = (
        f"{'model':<14} {'run':>4} {'films':>5} {'pos':>4} {'ROC-AUC [95% CI]':>20} "
        f"{'PR-AUC [95% CI]':>20} {'sens [Wilson]':>20} {'spec [Wilson]':>20} "
        f"{'per woman ROC-AUC':>20}"
    )
    lines = [head, "-" * len(head)]
    for name, m in summary["models"].items():
        rows = [(str(i), s) for i, s in enumerate(m["runs"])] + [("mean", m["mean"])]
        for run, s in rows:
            woman = s.get("per_woman")
            lines.append(
                f"{name:<14} {run:>4} {s['images']:>5} {s['positive_images']:>4} "
                f"{fmt(s['roc_auc'], s['roc_auc_ci']):>20} {fmt(s['pr_auc'], s['pr_auc_ci']):>20} "
                f"{fmt(s['sensitivity'], s['sensitivity_wilson']):>20} "
                f"{fmt(s['specificity'], s['specificity_wilson']):>20} "
                f"{fmt(woman['roc_auc'], woman['roc_auc_ci']) if woman else '':>20}"
            )
        other = m["mean"].get("vs_against")
        if other:
            lines.append(
                f"{'':<14} mean minus {summary['against']}: "
                f"{fmt(other['roc_auc_delta'], other['ci'])} per film, "
                f"{fmt(m['mean']['per_woman']['vs_against']['roc_auc_delta'])} per woman"
            )
    lines += [
        "",
        "No run was retrained or re-thresholded on these films. AUC intervals: patient "
        "bootstrap; sens/spec at each bundle's saved threshold (mean: the mean threshold).",
    ]
    return "\n".join(lines)


def write_folders(films: list[dict], out: Path) -> int:
    """Write ``films`` in the layout ``bench_real_films.py`` reads (``OUT/malignant`` and
    ``OUT/benign``, JPEG at quality 95, named ``<woman>_<film>.jpg``) so that a model can be
    trained and scored on this source's own women by cross-validation; returns the films
    written (those already there are kept)."""
    from PIL import Image

    bad = sorted({f["patient"] for f in films if "_" in f["patient"] or "/" in f["patient"]})
    if bad:
        raise SystemExit(f"Woman IDs name the files and may not hold '_' or '/': {bad[:3]}.")
    written = 0
    for film in films:
        sub = "malignant" if film["label"] else "benign"
        stem = Path(film["name"]).with_suffix("").as_posix().replace("/", "-").replace("_", "-")
        target = out / sub / f"{film['patient']}_{stem}.jpg"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with Image.open(film["path"]) as image:
            image.convert("L").save(tmp, format="JPEG", quality=95)
        os.replace(tmp, target)
        written += 1
    return written


# --- Orchestration ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--films", type=Path, help="folder of the external films")
    p.add_argument("--labels", type=Path, help="labels: a CSV or the MIAS information file")
    p.add_argument("--labels-format", choices=("csv", "mias"), default="csv")
    p.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH[,PATH...]")
    p.add_argument("--work", type=Path, required=True, help="cache and results folder")
    p.add_argument("--product-root", type=Path, default=REPO, help="repository the CLI runs from")
    p.add_argument("--against", metavar="NAME", help="paired difference against this name")
    p.add_argument("--limit", type=int, help="smoke runs: the first N films only")
    p.add_argument("--seed", type=int, default=42, help="bootstrap")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--summary", action="store_true", help="only pool and print what exists")
    p.add_argument(
        "--as-folders", type=Path, metavar="OUT",
        help="write the films as bench_real_films.py's --films layout in OUT (JPEG) and stop: "
        "to train and score on this source's own women",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.work = args.work.expanduser().resolve()
    args.bundles = parse_bundles(args.bundle)
    needed = args.bundles or args.as_folders
    if not args.summary and not (args.films and args.labels and needed):
        p.error("give --films, --labels and at least one --bundle or --as-folders (or --summary)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Score the films with every bundle (unless --summary), then print the summary."""
    args = parse_args(argv)
    if not args.summary:
        reader = mias_films if args.labels_format == "mias" else csv_films
        films = reader(args.films.expanduser().resolve(), args.labels.expanduser().resolve())
        films = readable(films[: args.limit] if args.limit else films, args.work)
        if args.as_folders:
            out = args.as_folders.expanduser().resolve()
            log(f"wrote {write_folders(films, out)} of {len(films)} films under {out}")
            return 0
        positives = sum(f["label"] for f in films)
        log(f"{len(films)} films ({positives} positive) of {len({f['patient'] for f in films})} "
            f"women from {args.films}")  # fmt: skip
        ctx = {"product_root": args.product_root, "env": product_env(args.product_root)}
        start = time.perf_counter()
        for name, paths in args.bundles.items():
            for i, bundle in enumerate(paths):
                run_bundle(bundle, films, args.work / name / f"run_{i}.json", ctx)
        log(f"scored in {time.perf_counter() - start:.0f} s")
    if not args.work.is_dir():
        print(f"No results in {args.work} yet.")
        return 0
    summary = summarise(args)
    print(format_table(summary))
    print(f"\nWrote {args.work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
