"""Benchmark: the product's match-and-locate against the user's notebook, at 1x and 4x the images.

What is compared (both on the same data root, in the same run):

* **product**: ``bcp_core.data.datasource.read_data_root(root)``. It reads both workbooks with
  python-calamine (keeping only the ~10 columns the join needs), walks each image tree once into
  an index, joins on the normalised UniqueKey and resolves every row with a dictionary lookup.
* **baseline** (the user's notebook, written compactly in :func:`baseline_read_workbooks`,
  :func:`baseline_merge` and :func:`baseline_search`): ``pd.read_excel(..., engine="openpyxl")``
  for sheets Cancer and Non-Cancer of datacombined.xlsx and for data_validation_x.xlsx;
  ``UniqueKey = InputFileName-StudyDate-StudyTime-PatientID.x`` built with ``astype(str)`` on
  both sides and ``merge`` on it; then, for every merged cancer row (file name taken from
  ``AbsolutePath``) and every Non-Cancer ``InputFileName`` (+ ".jpg"), a fresh ``os.walk`` of the
  class folder until a folder's file list contains that name. Because that is one walk per name,
  its cost grows with names x files. It finds fewer images than the product: ``astype(str)``
  keeps Excel's number forms (``92603`` vs ``092603``, ``152727.0``), ``.jpg`` appears on one side
  only, and ``.JPG`` files are missed; both found counts are printed.

Data. The hospital-scale demo (``python -m bcp_core demo-data --scale hospital --image-height
256``: 105 Cancer rows, 4998 Non-Cancer rows, 322 validation rows, 5094 JPGs) is written once to
``bench/results/cache/hospital`` (git-ignored); the pixels do not matter here. **Scale k** (e.g.
4x) is a second data root ``hospital_x<k>`` built from it: the validation workbook is copied
unchanged; every image of both class folders is hard-linked into place, plus k-1 more hard links
per image with new names (``FILE0001_c1.jpg`` ...) in new folders (``copy1_batch_1`` ...), so
each image tree holds exactly k times the files; sheet Cancer is copied unchanged and sheet
Non-Cancer gets k-1 copies of each of its rows, renamed like the files (same 561 columns,
written with openpyxl write_only). So at 4x: 4x the image files, 4x the Non-Cancer rows (the
105 Cancer and 322 validation rows stay, about 3.94x the sheet rows overall).

Timing. Each timed flow runs in its own fresh child process (``--child``), after the parent has
warmed the OS file cache by walking the data root and reading its workbooks once (untimed);
imports are not timed. The product is run ``--repeat`` times (one process each) and its median
reported. The baseline runs once per scale; its workbook reading and merge are always timed in
full. Its per-name search is first timed on a fixed random sample (``--sample`` names per class,
``--seed``) and extrapolated linearly to all names (per class: mean seconds per name x names).
If that estimate is under ``--full-limit`` seconds (default 300, so that on a 2-CPU machine both
1x and 4x are timed in full, about 2.5 minutes at 4x), the full search is timed too and used
(the estimate is kept in the JSON, as a check of the extrapolation); otherwise the
reported baseline time is the extrapolation, marked ``*`` in the table and ``"search_mode":
"sampled"`` in the JSON. When sampled, the baseline's found counts are exact all the same: they
apply the notebook's own rule (the name is in some folder's file list) to a set of every file
name in the tree, built by one untimed walk.

Memory. Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of each child process (the
largest resident set of that process, so it includes the interpreter and pandas; the resident
set right after the imports is reported as well). For the product it is the largest over its
repeats.

Run: ``.venv/bin/python bench/bench_ingest.py`` (the full run, several minutes) or with
``--quick`` (the small demo, for a smoke run). Results: a table on stdout and
``bench/results/bench_ingest.json`` (``bench_ingest_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import ntpath
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_CACHE = RESULTS_DIR / "cache"

# The user's notebook hard-codes these names; so does the baseline (and the scaled-root builder).
COMBINED = "datacombined.xlsx"
VALIDATION = "data_validation_x.xlsx"
SHEET_CANCER = "Cancer"
SHEET_NON_CANCER = "Non-Cancer"
CANCER_DIR = "Cancer"
NON_CANCER_DIR = "Non-Cancer"
KEY_COLUMNS = ("InputFileName", "StudyDate", "StudyTime", "PatientID.x")
COPY_TAG = "_c"  # FILE0001.jpg -> FILE0001_c1.jpg, FILE0001_c2.jpg, ...


# --- Data roots -----------------------------------------------------------------------------


def ensure_demo_root(cache: Path, scale: str, image_height: int, rebuild: bool) -> Path:
    """Write the demo dataset for ``scale`` into ``cache/<scale>`` unless it is there already.

    Args:
        cache: folder holding the benchmark's data roots.
        scale: demo scale ("hospital" or "small").
        image_height: image height in pixels (the pixels do not matter to this benchmark).
        rebuild: write it again even if present.

    Returns:
        The data root.
    """
    root = cache / scale
    if root.is_dir() and (root / COMBINED).is_file() and not rebuild:
        return root
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "bcp_core",
        "demo-data",
        "--out",
        str(root),
        "--scale",
        scale,
        "--image-height",
        str(image_height),
        "--overwrite",
        "--json",
    ]
    print(f"Writing the {scale} demo dataset to {root} ...", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def ensure_scaled_root(base: Path, factor: int, rebuild: bool) -> Path:
    """Return a data root with ``factor`` times the image files of ``base`` (built once).

    Built in a temporary folder and renamed into place, so an interrupted build is never reused.
    """
    if factor == 1:
        return base
    root = base.parent / f"{base.name}_x{factor}"
    if root.is_dir() and not rebuild:
        return root
    tmp = base.parent / f".{root.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"Building the {factor}x data root {root} ...", flush=True)
    start = time.perf_counter()
    tmp.mkdir(parents=True)
    for class_dir in (CANCER_DIR, NON_CANCER_DIR):
        link_class_tree(base / class_dir, tmp / class_dir, factor)
    write_scaled_combined(base / COMBINED, tmp / COMBINED, factor)
    shutil.copy2(base / VALIDATION, tmp / VALIDATION)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def copy_name(name: str, k: int) -> str:
    """The k-th copy's name of a file or InputFileName (``FILE0001.jpg`` -> ``FILE0001_c1.jpg``)."""
    stem, ext = os.path.splitext(name)
    if ext.lower() not in (".jpg", ".jpeg", ".png"):
        stem, ext = name, ""
    return f"{stem}{COPY_TAG}{k}{ext}"


def link_class_tree(src: Path, dst: Path, factor: int) -> None:
    """Hard-link every file below ``src`` to the same place below ``dst``, plus renamed copies.

    Copy k (1 .. factor-1) of ``<sub>/<name>`` goes to ``copy<k>_<sub>/<copy_name(name, k)>``.
    """
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        flat = "_".join(rel.parts) or "root"
        for k in range(factor):
            folder = dst / rel if k == 0 else dst / f"copy{k}_{flat}"
            folder.mkdir(parents=True, exist_ok=True)
            for name in files:
                target = folder / (name if k == 0 else copy_name(name, k))
                os.link(Path(dirpath) / name, target)


def write_scaled_combined(src: Path, dst: Path, factor: int) -> None:
    """Write datacombined.xlsx with sheet Cancer unchanged and ``factor`` x the Non-Cancer rows.

    The added Non-Cancer rows repeat the original rows with InputFileName renamed like the
    hard-linked copies; values keep the types Excel stored (numbers stay numbers).

    Raises:
        ValueError: if a sheet's header changed (the 561 columns must stay).
    """
    from openpyxl import Workbook, load_workbook

    source = load_workbook(src, read_only=True)
    out = Workbook(write_only=True)
    for title in (SHEET_CANCER, SHEET_NON_CANCER):
        rows = list(source[title].iter_rows(values_only=True))
        header, body = rows[0], rows[1:]
        ws = out.create_sheet(title)
        ws.append(header)
        copies = factor if title == SHEET_NON_CANCER else 1
        file_col = header.index(KEY_COLUMNS[0])
        for k in range(copies):
            for row in body:
                ws.append(row if k == 0 else _renamed_row(row, file_col, k))
    source.close()
    out.save(dst)
    _check_header(src, dst)


def _renamed_row(row: tuple, file_col: int, k: int) -> list:
    values = list(row)
    if file_col < len(values) and values[file_col] is not None:
        values[file_col] = copy_name(str(values[file_col]), k)
    return values


def _check_header(src: Path, dst: Path) -> None:
    from openpyxl import load_workbook

    a, b = load_workbook(src, read_only=True), load_workbook(dst, read_only=True)
    try:
        for title in (SHEET_CANCER, SHEET_NON_CANCER):
            head_a = next(a[title].iter_rows(values_only=True))
            head_b = next(b[title].iter_rows(values_only=True))
            if head_a != head_b:
                raise ValueError(f"Sheet {title!r} of {dst} lost its header ({len(head_b)} cols).")
    finally:
        a.close()
        b.close()


def warm_cache(root: Path) -> int:
    """Walk ``root`` and read its workbooks once, so timed runs see a warm OS file cache.

    Returns:
        The number of image files below the class folders.
    """
    n_images = 0
    for _dirpath, _dirs, files in os.walk(root):
        n_images += sum(1 for f in files if f.lower().endswith((".jpg", ".jpeg", ".png")))
    for name in (COMBINED, VALIDATION):
        (root / name).read_bytes()
    return n_images


# --- The two flows (run inside child processes) -------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_product(root: Path) -> dict:
    """Time ``read_data_root(root)`` once; return seconds, counts and peak memory."""
    from bcp_core.data.datasource import read_data_root

    import_mb = peak_rss_mb()
    start = time.perf_counter()
    result = read_data_root(root)
    seconds = time.perf_counter() - start
    s = result.stats
    return {
        "seconds": seconds,
        "cancer_found": s.cancer_images_found,
        "non_cancer_found": s.non_cancer_images_found,
        "cancer_rows": s.cancer_rows,
        "non_cancer_rows": s.non_cancer_rows,
        "validation_rows": s.validation_rows,
        "image_files_on_disk": s.image_files_on_disk,
        "import_rss_mb": import_mb,
        "peak_rss_mb": peak_rss_mb(),
    }


def baseline_read_workbooks(root: Path) -> tuple:
    """The notebook's reads: two sheets of datacombined.xlsx and the validation workbook."""
    import pandas as pd

    cancer = pd.read_excel(root / COMBINED, sheet_name=SHEET_CANCER, engine="openpyxl")
    non_cancer = pd.read_excel(root / COMBINED, sheet_name=SHEET_NON_CANCER, engine="openpyxl")
    validation = pd.read_excel(root / VALIDATION, engine="openpyxl")
    return cancer, non_cancer, validation


def baseline_merge(cancer, validation):
    """The notebook's join: ``UniqueKey`` from ``astype(str)`` parts, then ``merge`` on it."""
    for df in (cancer, validation):
        parts = [df[c].astype(str) for c in KEY_COLUMNS]
        df["UniqueKey"] = parts[0] + "-" + parts[1] + "-" + parts[2] + "-" + parts[3]
    return cancer.merge(validation, on="UniqueKey")


def baseline_names(merged, non_cancer) -> dict[str, list[str]]:
    """File names the notebook searches: per class, as it wrote them."""
    return {
        "cancer": [ntpath.basename(str(p)) for p in merged["AbsolutePath"]],
        "non_cancer": [name + ".jpg" for name in non_cancer["InputFileName"].astype(str)],
    }


def baseline_search(tree: Path, names: list[str]) -> int:
    """The notebook's search: a fresh ``os.walk`` of the tree for every name (its mistake)."""
    found = 0
    for name in names:
        for _dirpath, _dirs, files in os.walk(tree):
            if name in files:
                found += 1
                break
    return found


def found_by_rule(tree: Path, names: list[str]) -> int:
    """How many names the notebook's search would find, from one walk (untimed, exact)."""
    on_disk = {f for _dirpath, _dirs, files in os.walk(tree) for f in files}
    return sum(1 for name in names if name in on_disk)


def _timed_search(tree: Path, names: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    found = baseline_search(tree, names)
    return time.perf_counter() - start, found


def run_baseline(root: Path, sample: int, seed: int, full_limit: float) -> dict:
    """Time the notebook flow; the per-name search on a sample first, in full if cheap enough."""
    import_mb = peak_rss_mb()
    start = time.perf_counter()
    cancer, non_cancer, validation = baseline_read_workbooks(root)
    excel_s = time.perf_counter() - start
    start = time.perf_counter()
    merged = baseline_merge(cancer, validation)
    names = baseline_names(merged, non_cancer)
    merge_s = time.perf_counter() - start
    trees = {"cancer": root / CANCER_DIR, "non_cancer": root / NON_CANCER_DIR}

    rng = random.Random(seed)
    estimate, sampled = 0.0, {}
    for cls, all_names in names.items():
        picked = rng.sample(all_names, min(sample, len(all_names)))
        seconds, found = _timed_search(trees[cls], picked)
        estimate += seconds / len(picked) * len(all_names) if picked else 0.0
        sampled[cls] = {"names": len(picked), "seconds": seconds, "found": found}
    out = {
        "excel_s": excel_s,
        "merge_s": merge_s,
        "merged_rows": len(merged),
        "names": {cls: len(v) for cls, v in names.items()},
        "sample": sampled,
        "search_s_estimate": estimate,
        "search_s_full": None,
        "search_mode": "sampled",
    }
    if estimate <= full_limit:
        full_s, found = 0.0, {}
        for cls, all_names in names.items():
            seconds, found[cls] = _timed_search(trees[cls], all_names)
            full_s += seconds
        out.update(search_s_full=full_s, search_mode="full")
    else:
        found = {cls: found_by_rule(trees[cls], v) for cls, v in names.items()}
    search_s = out["search_s_full"] if out["search_mode"] == "full" else estimate
    out.update(
        seconds=excel_s + merge_s + search_s,
        search_s=search_s,
        cancer_found=found["cancer"],
        non_cancer_found=found["non_cancer"],
        import_rss_mb=import_mb,
        peak_rss_mb=peak_rss_mb(),
    )
    return out


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a child process: run one flow, print its result as one JSON line."""
    import warnings

    import pandas  # noqa: F401  (imported before timing, like the notebook's first cell)

    warnings.simplefilter("ignore")  # the notebook's frame-fragmentation warnings
    root = Path(args.root)
    if args.child == "product":
        result = run_product(root)
    else:
        result = run_baseline(root, args.sample, args.seed, args.full_limit)
    print(json.dumps(result))
    return 0


# --- Orchestration ---------------------------------------------------------------------------


def run_child(flow: str, root: Path, args: argparse.Namespace) -> dict:
    """Run one flow in a fresh Python process and return its JSON result.

    Raises:
        RuntimeError: with the child's stderr if it failed.
    """
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        flow,
        "--root",
        str(root),
        "--sample",
        str(args.sample),
        "--seed",
        str(args.seed),
        "--full-limit",
        str(args.full_limit),
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"The {flow} child failed on {root}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_scale(root: Path, factor: int, args: argparse.Namespace) -> dict:
    """Benchmark both flows on one data root; return one result row."""
    n_images = warm_cache(root)
    print(f"[{factor}x] {root}: {n_images} image files; product x{args.repeat} ...", flush=True)
    runs = [run_child("product", root, args) for _ in range(args.repeat)]
    product = dict(runs[-1])
    product["seconds"] = statistics.median(r["seconds"] for r in runs)
    product["seconds_all"] = [r["seconds"] for r in runs]
    product["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    print(f"[{factor}x] product {product['seconds']:.2f} s; baseline ...", flush=True)
    baseline = run_child("baseline", root, args)
    print(
        f"[{factor}x] baseline {baseline['seconds']:.1f} s ({baseline['search_mode']})", flush=True
    )
    return {
        "scale": factor,
        "data_root": str(root),
        "images": n_images,
        "rows": product["cancer_rows"] + product["non_cancer_rows"],
        "validation_rows": product["validation_rows"],
        "product": product,
        "baseline": baseline,
        "ratio": baseline["seconds"] / product["seconds"],
    }


def growth(rows: list[dict]) -> dict:
    """Time and size growth of each scale relative to the smallest one."""
    base = rows[0]
    return {
        f"{r['scale']}x_vs_{base['scale']}x": {
            "images": r["images"] / base["images"],
            "rows": r["rows"] / base["rows"],
            "product_time": r["product"]["seconds"] / base["product"]["seconds"],
            "baseline_time": r["baseline"]["seconds"] / base["baseline"]["seconds"],
            "baseline_search_time": r["baseline"]["search_s"] / base["baseline"]["search_s"],
        }
        for r in rows[1:]
    }


def format_table(rows: list[dict]) -> str:
    """The results as a fixed-width text table."""
    head = (
        f"{'scale':>5} {'images':>7} {'rows':>6} {'product s':>10} {'baseline s':>11} "
        f"{'ratio':>7} {'prod MB':>8} {'base MB':>8}  {'found product':>14}  "
        f"{'found baseline':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        p, b = r["product"], r["baseline"]
        mark = "*" if b["search_mode"] == "sampled" else " "
        lines.append(
            f"{r['scale']:>4}x {r['images']:>7} {r['rows']:>6} {p['seconds']:>10.2f} "
            f"{b['seconds']:>10.1f}{mark} {r['ratio']:>6.1f}x {p['peak_rss_mb']:>8.0f} "
            f"{b['peak_rss_mb']:>8.0f}  {p['cancer_found']:>5} + {p['non_cancer_found']:>6}  "
            f"{b['cancer_found']:>5} + {b['non_cancer_found']:>6}"
        )
    return "\n".join(lines)


def format_details(rows: list[dict], grow: dict) -> str:
    """Baseline breakdown, memory notes and growth, as text under the table."""
    lines = [
        "",
        "found = cancer + non-cancer images located; rows = Cancer + Non-Cancer rows.",
    ]
    if any(r["baseline"]["search_mode"] == "sampled" for r in rows):
        lines.append("* baseline search extrapolated linearly from a timed sample (see below).")
    lines.append("")
    for r in rows:
        b = r["baseline"]
        smp = ", ".join(
            f"{c} {v['names']} names {v['seconds']:.2f} s" for c, v in b["sample"].items()
        )
        full = "-" if b["search_s_full"] is None else f"{b['search_s_full']:.1f} s"
        lines.append(
            f"{r['scale']}x baseline: read_excel {b['excel_s']:.1f} s, merge {b['merge_s']:.2f} s "
            f"({b['merged_rows']} merged cancer rows), search {b['search_mode']} {full}, "
            f"sample-extrapolated {b['search_s_estimate']:.1f} s [{smp}]"
        )
        lines.append(
            f"{r['scale']}x memory after imports: product {r['product']['import_rss_mb']:.0f} MB, "
            f"baseline {b['import_rss_mb']:.0f} MB; product runs "
            + ", ".join(f"{s:.2f}" for s in r["product"]["seconds_all"])
            + " s"
        )
    for name, g in grow.items():
        lines.append(
            f"growth {name}: images x{g['images']:.2f}, rows x{g['rows']:.2f}; product time "
            f"x{g['product_time']:.2f}, baseline time x{g['baseline_time']:.2f} "
            f"(its search x{g['baseline_search_time']:.2f})"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--child`` and ``--root`` are internal)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scales",
        type=int,
        nargs="+",
        default=[1, 4],
        help="image-count multiples to benchmark (default: 1 4)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=200,
        help="names per class whose baseline search is timed and extrapolated",
    )
    p.add_argument(
        "--full-limit",
        type=float,
        default=300.0,
        help="time the full baseline search when the estimate is under this (s)",
    )
    p.add_argument("--repeat", type=int, default=3, help="product runs per scale (median)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the data roots")
    p.add_argument("--image-height", type=int, default=256, help="demo image height (px)")
    p.add_argument("--rebuild", action="store_true", help="write the data roots again")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: small demo, sample 20, one product run"
    )
    p.add_argument("--child", choices=["product", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.scales) < 1 or args.sample < 1 or args.repeat < 1:
        p.error("--scales, --sample and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the data roots, benchmark every scale, print the table and write the JSON."""
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    start = time.perf_counter()
    scale_name = "small" if args.quick else "hospital"
    if args.quick:
        args.sample, args.repeat, args.image_height = min(args.sample, 20), 1, 64
    base = ensure_demo_root(args.cache, scale_name, args.image_height, args.rebuild)
    factors = sorted(set(args.scales))
    roots = {k: ensure_scaled_root(base, k, args.rebuild) for k in factors}
    rows = [bench_scale(roots[k], k, args) for k in factors]
    grow = growth(rows)
    total = time.perf_counter() - start
    print()
    print(format_table(rows))
    print(format_details(rows, grow))
    print(f"\nTotal run time {total:.0f} s (data roots reused from {args.cache}).")
    out = RESULTS_DIR / ("bench_ingest_quick.json" if args.quick else "bench_ingest.json")
    report = {
        "benchmark": "bench_ingest",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("child", "root")
        },
        "dataset": scale_name,
        "results": rows,
        "growth": grow,
        "total_s": total,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"Wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
