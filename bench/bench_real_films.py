"""Benchmark on real screening mammograms: 5-fold cross-validation by woman, product vs recipe.

Data. A folder of real films (``--films DIR`` or the environment variable ``BCP_REAL_FILMS``)
with ``malignant/`` and ``benign/`` sub-folders of JPGs named ``<woman>_<image>_png.rf.<hash>.jpg``
(for example the ``data/`` folder of the public GitHub repository kodekloudhub/PyTorch, which
appears to derive from the RSNA screening mammography challenge, research use only: 1,158 +
2,225 images of 963 women, 640 x 640). Nothing is downloaded and no image is copied: every
file this script lays out is a hard link to the original. Things to keep in mind when reading
the numbers:

* "benign" means no cancer was found at screening, not a proven benign lesion;
* labels are per image; 19 women have images in both folders, and a woman counts as positive
  (for the folds) when any of her images is malignant;
* every film was stretched to a square and about 17 % are intensity-inverted; neither is undone
  here: the benchmark measures what the product does with the films as they are;
* 34 % of the images are positive, against 1 in 58 (1:57) in the hospital, so PPV and NPV are
  also reported reweighted to that prevalence.

Method.

1. Women are split into ``--n-folds`` (5) folds, stratified by woman label, with a fixed seed
   (``StratifiedKFold`` over women). ``--limit-women N`` keeps a random, class-balanced subset
   of N women for smoke runs. The assignment is saved in ``WORK/folds.json``; a rerun with
   other settings on the same work folder is refused. ``--train-share F [G]`` trains on a
   share F of each fold's positive training women and G (default F) of the others (nested: a
   smaller share's women are in every larger one) and scores the same held-out women: a
   learning curve, or the hospital's few cancers among many films (``0.1 1``).
2. For fold k, the other folds' women are laid out as a data root in the hospital's layout
   (README "The data it reads"): ``datacombined.xlsx`` (sheets ``Cancer`` and ``Non-Cancer``),
   ``data_validation_x.xlsx`` (key columns and a Windows ``AbsolutePath``),
   ``Cancer/Cancer_1|Cancer_2/`` and ``Non-Cancer/batch_N/``. StudyDate and StudyTime are not
   known for these films: every row carries the same made-up date and time (the time as an
   Excel number in one workbook and as text in the other, as the hospital's files have it), so
   the key is still unique through the file name. ``python -m bcp_core match --json`` must find
   every laid-out image, with no unmatched row; the counts are asserted.
3. Each model is trained on that data root in its own subprocess under ``nice -n 10``, one at a
   time, and scores fold k's women (held out from training, validation and threshold choice):

   * ``recipe``: the user's notebook recipe (``bench_train.recipe_*``: the seed CNN, 224 px RGB
     nearest-neighbour array of every image in RAM, random 80/20 split by image, 10 epochs,
     decision = argmax), trained on the data root's images;
   * ``default``: ``python -m bcp_core train --data-root ROOT --out BUNDLE --json`` with the
     product's defaults (the default model and its recipe: EfficientNet-Lite0 since it beat the
     compact CNN here; a cached ``default`` result from before that is the CNN's, so name
     models by their arguments, as ``cnn160`` and ``lite0_bn`` in the records), then
     ``python -m bcp_core predict --bundle BUNDLE FILES --json`` (probability and decision at
     the bundle's saved threshold, with the bundle's test-time passes);
   * candidates (``--candidate NAME=ARGS``): the same with extra ``train`` arguments, so a new
     product model is benchmarked without editing this script (``{bundles}`` in ARGS stands
     for the fold's bundles folder: ``--start-from {bundles}/lite0_fs4`` goes on from that
     model of the same fold). The product is driven through its CLI only (``--product-root``
     sets the subprocesses' cwd and PYTHONPATH);
   * rescored models (``--rescore NAME=BASE:ARGS``): BASE's bundles score the held-out films
     again with extra ``predict`` arguments (``--tta 4``: test-time augmentation), no training;
   * fixed models (``--fixed NAME=BUNDLE[:ARGS]``): a bundle trained elsewhere (on another
     collection, say) scores every fold's held-out films as it is, so the models trained on
     the folds can be paired against it on the same women;
   * combined models (``--combine NAME=A+B[:ARGS]``): ``python -m bcp_core ensemble`` averages
     the fold's bundles of A and B (runs of one split: ``train --split-seed``) into one bundle,
     which scores the held-out films as any model, with extra ``predict`` arguments: the
     product's own average, its threshold chosen on the runs' mean validation predictions;
     its training time is the runs' together.

4. Each (fold, model) result is cached as ``WORK/folds/fold_K/MODEL.json``: per held-out image
   its file, woman, label, probability and decision; threshold; wall times; the ``train --json``
   output. Reruns skip what exists (a cached result trained with other arguments is refused).
5. The summary (``--summary``, also printed after every run) pools what exists: per fold and
   over all folds, ROC-AUC and PR-AUC with patient-bootstrap 95 % intervals
   (``bootstrap_auc_intervals``), sensitivity and specificity at each model's own decision
   (validation-chosen threshold / argmax) with Wilson intervals (images as independent), PPV
   and NPV at prevalence 1/58 (``PPV = sens p / (sens p + (1 - spec)(1 - p))``; the range in
   brackets plugs in the Wilson limits, it is not a coverage interval), training wall time,
   and each model against ``recipe`` on the same women: a paired patient bootstrap of the
   ROC-AUC difference (both models scored on the same resamples of women). Pooled figures put
   the held-out predictions of the five fold models together. ``--ensemble NAME=A+B`` adds
   the mean probability of recorded models A and B (e.g. one recipe trained with two seeds)
   as one more model, on the folds both ran, decided at the mean of their thresholds.
   Per woman (the mean of her films) and, with ``--films`` given once, per breast: these films
   carry no laterality, so the side the product's preparation finds the chest wall on stands in
   for it (kept in ``WORK/sides.json``), and a breast scores the mean of its films; and per
   woman as the product scores her when laterality is known: her higher-scoring breast.
   Written to ``WORK/summary.json``.

Run (from the repository root):

    .venv/bin/python bench/bench_real_films.py --films /data/films --work /data/films-runs
    .venv/bin/python bench/bench_real_films.py --films DIR --folds 0 --models recipe default
    .venv/bin/python bench/bench_real_films.py --films DIR --candidate big="--image-size 512 416"
    .venv/bin/python bench/bench_real_films.py --work /data/films-runs --summary
    .venv/bin/python bench/bench_real_films.py --films DIR --work /data/films-runs \\
        --train-share 0.1 --candidate "lite0_w10=..." --folds 0 1   # a tenth of the women
    .venv/bin/python bench/bench_real_films.py --films DIR --work /data/films-runs \\
        --train-share 0.1 1 --candidate "lite0_p10=..." --folds 0   # a tenth of the cancers
    .venv/bin/python bench/bench_real_films.py --films DIR --work /tmp/smoke \\
        --limit-women 40 --epochs 2 --folds 0 1      # smoke run, a few minutes
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train (recipe)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bcp_core, run as a script

# --- the user's recipe, as benchmarked in bench_train.py ----------------------------------------
from bench_train import (
    RECIPE_BATCH,
    RECIPE_EPOCHS,
    epoch_logger,
    recipe_load_images,
    recipe_model,
    recipe_split,
)

from bcp_core.evaluation.intervals import (
    bootstrap_auc_intervals,
    group_codes,
    percentile_interval,
    resample_counts,
    weighted_aucs,
    wilson_interval,
)
from bcp_core.evaluation.metrics import ranking_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO / "bench" / "results" / "real_films"
FILMS_ENV = "BCP_REAL_FILMS"
CLASS_FOLDERS = (("malignant", 1), ("benign", 0))
BASELINE = "recipe"
BUILTIN_MODELS = (BASELINE, "default")
#: Hospital prevalence: 1 cancer image in 58 (1:57).
HOSPITAL_PREVALENCE = 1 / 58
#: Values every laid-out row carries (the films come without study dates and times).
STUDY_DATE = "20200101"
STUDY_TIME = 93000  # an Excel number; the validation workbook has the text "093000"
WINDOWS_ROOT = "C:\\Users\\radiology\\Desktop\\mammo\\Cancer"
BATCH_FILES = 500
CANCER_SUBFOLDERS = ("Cancer_1", "Cancer_2")
NICE = ("nice", "-n", "10")
RESERVED_TRAIN_ARGS = ("--data-root", "--out", "--json")
MIN_WOMEN = 20


# --- Small helpers ----------------------------------------------------------------------------


def log(message: str) -> None:
    """A time-stamped progress line on stderr."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=float), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def last_json(stdout: str) -> object:
    """The JSON value on the last JSON-looking line of a subprocess's stdout."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise RuntimeError(f"No JSON in the output: {stdout[-500:]!r}")


def product_env(product_root: Path) -> dict:
    """Environment of a subprocess that imports the product from ``product_root``."""
    path = os.pathsep.join(filter(None, [str(product_root), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2")


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder`` (None when it is not a git checkout)."""
    proc = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip() or None


# --- Films and folds ----------------------------------------------------------------------------


def films_dir(given: str | None) -> Path:
    """The films folder from ``--films`` or ``BCP_REAL_FILMS`` (or its ``data/`` sub-folder)."""
    text = given or os.environ.get(FILMS_ENV)
    if not text:
        raise SystemExit(f"Give the films folder with --films DIR or the variable {FILMS_ENV}.")
    folder = Path(text).expanduser().resolve()
    for candidate in (folder, folder / "data"):
        if all((candidate / name).is_dir() for name, _ in CLASS_FOLDERS):
            return candidate
    raise SystemExit(f"{folder} has no malignant/ and benign/ folders of films.")


def list_films(folder: Path) -> list[dict]:
    """One dict per film: ``name``, ``path``, ``patient`` (the name's first part), ``label``."""
    films = []
    for sub, label in CLASS_FOLDERS:
        for entry in sorted(os.scandir(folder / sub), key=lambda e: e.name):
            if entry.is_file() and entry.name.lower().endswith((".jpg", ".jpeg")):
                patient = entry.name.split("_", 1)[0]
                films.append({"name": entry.name, "path": entry.path, "patient": patient})
                films[-1]["label"] = label
    names = [f["name"] for f in films]
    if len(set(names)) != len(names):
        raise SystemExit("Two films share a file name; the layout needs unique names.")
    return films


def woman_labels(films: list[dict]) -> dict[str, int]:
    """1 for a woman with any malignant image, else 0."""
    labels: dict[str, int] = {}
    for film in films:
        labels[film["patient"]] = max(labels.get(film["patient"], 0), film["label"])
    return labels


def limit_women(films: list[dict], n: int | None, seed: int) -> list[dict]:
    """Keep a random subset of ``n`` women, half of them positive (all films when n is None)."""
    if not n:
        return films
    labels = woman_labels(films)
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for cls, count in ((1, n // 2), (0, n - n // 2)):
        women = sorted(w for w, lab in labels.items() if lab == cls)
        keep |= set(rng.choice(women, size=min(count, len(women)), replace=False).tolist())
    return [f for f in films if f["patient"] in keep]


def share_of_women(films: list[dict], share: tuple[float, float], seed: int) -> list[dict]:
    """The films of a share of the positive women and of the others: ``share`` is
    ``(positive, negative)``, each in (0, 1] (all films when both are 1).

    Each class's women are put in one seeded order and the first ``ceil(share * n)`` are kept,
    so a smaller share is a subset of a larger one (a learning curve adds women, it does not
    draw other ones).
    """
    if min(share) >= 1:
        return films
    labels = woman_labels(films)
    keep: set[str] = set()
    for cls, part in ((1, share[0]), (0, share[1])):
        women = sorted(w for w, lab in labels.items() if lab == cls)
        order = np.random.default_rng([seed, cls]).permutation(len(women))
        keep |= {women[i] for i in order[: math.ceil(part * len(women))]}
    return [f for f in films if f["patient"] in keep]


def assign_folds(films: list[dict], n_folds: int, seed: int) -> dict[str, int]:
    """Fold of each woman: StratifiedKFold over women by woman label, shuffled with ``seed``."""
    from sklearn.model_selection import StratifiedKFold

    labels = woman_labels(films)
    women = sorted(labels)
    y = np.array([labels[w] for w in women])
    if min(int(y.sum()), int((1 - y).sum())) < n_folds:
        raise SystemExit(f"Each class needs at least {n_folds} women for {n_folds} folds.")
    folds: dict[str, int] = {}
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(women)), y)):
        folds.update({women[i]: k for i in test})
    return folds


def load_or_make_folds(work: Path, films: list[dict], args: argparse.Namespace) -> dict:
    """Fold assignment of this work folder: written on first use, then checked on every run."""
    plan = {
        "films": str(args.films_dir),
        "n_folds": args.n_folds,
        "seed": args.seed,
        "limit_women": args.limit_women,
        "images": len(films),
        "women": assign_folds(films, args.n_folds, args.seed),
    }
    path = work / "folds.json"
    if path.is_file():
        saved = read_json(path)
        if {k: saved.get(k) for k in plan} != plan:
            raise SystemExit(
                f"{path} was written for other films or settings (films, --n-folds, --seed, "
                "--limit-women); use another --work folder."
            )
        return saved
    write_json(path, plan)
    return plan


def fold_films(films: list[dict], folds: dict[str, int], k: int) -> tuple[list, list]:
    """``(training films, held-out films)`` of fold ``k``."""
    train = [f for f in films if folds[f["patient"]] != k]
    test = [f for f in films if folds[f["patient"]] == k]
    return train, test


def counts(films: list[dict]) -> dict:
    """Images, positive images, women and positive women."""
    labels = woman_labels(films)
    return {
        "images": len(films),
        "positive_images": sum(f["label"] for f in films),
        "women": len(labels),
        "positive_women": sum(labels.values()),
    }


# --- The hospital layout ------------------------------------------------------------------------


def layout_relpaths(films: list[dict]) -> dict[str, str]:
    """Relative path in the data root of each film (by file name)."""
    rel: dict[str, str] = {}
    negatives = sorted(f["name"] for f in films if f["label"] == 0)
    for i, name in enumerate(negatives):
        rel[name] = f"Non-Cancer/batch_{i // BATCH_FILES + 1}/{name}"
    for film in films:
        if film["label"] == 1:
            sub = CANCER_SUBFOLDERS[zlib.crc32(film["patient"].encode()) % 2]
            rel[film["name"]] = f"Cancer/{sub}/{film['name']}"
    return rel


def workbook_rows(films: list[dict], rel: dict[str, str]) -> dict[str, list[list]]:
    """Rows (header first) of the sheets Cancer, Non-Cancer and the validation sheet."""
    header = ["InputFileName", "StudyDate", "StudyTime", "PatientID.x"]
    combined = [*header, "ViewPosition", "ImageLaterality"]
    sheets = {
        "Cancer": [combined],
        "Non-Cancer": [combined],
        "validation": [[*header, "AbsolutePath"]],
    }
    for film in sorted(films, key=lambda f: f["name"]):
        stem = film["name"].rsplit(".", 1)[0]
        row = [stem, STUDY_DATE, STUDY_TIME, film["patient"], None, None]
        sheets["Cancer" if film["label"] else "Non-Cancer"].append(row)
        if film["label"]:
            windows = WINDOWS_ROOT + "\\" + rel[film["name"]].split("/", 1)[1].replace("/", "\\")
            time_text = f"{STUDY_TIME:06d}"
            sheets["validation"].append(
                [film["name"], STUDY_DATE, time_text, film["patient"], windows]
            )
    return sheets


def write_workbook(path: Path, sheets: dict[str, list[list]]) -> None:
    """An .xlsx file with one sheet per entry (rows written as given, header first)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)


def write_data_root(root: Path, films: list[dict]) -> None:
    """Lay ``films`` out as a hospital data root (hard links), atomically; reuse if identical."""
    rel = layout_relpaths(films)
    plan = sorted(rel.values())
    marker = root / "layout.json"
    if marker.is_file() and read_json(marker).get("files") == plan:
        return
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for film in films:
        target = tmp / rel[film["name"]]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(film["path"], target)
    sheets = workbook_rows(films, rel)
    validation = {"Sheet1": sheets.pop("validation")}
    write_workbook(tmp / "datacombined.xlsx", sheets)
    write_workbook(tmp / "data_validation_x.xlsx", validation)
    write_json(tmp / "layout.json", {"files": plan})
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)


def check_match(root: Path, films: list[dict], product_root: Path) -> dict:
    """Run ``bcp_core match --json`` on ``root``; fail unless every laid-out image is matched."""
    proc = subprocess.run(
        [sys.executable, "-m", "bcp_core", "match", "--data-root", str(root), "--json"],
        cwd=product_root,
        env=product_env(product_root),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"match failed on {root}: {proc.stderr.strip()}")
    found = last_json(proc.stdout)
    c = counts(films)
    n_pos, n_neg = c["positive_images"], c["images"] - c["positive_images"]
    expected = {
        "cancer_rows": n_pos,
        "cancer_key_matched": n_pos,
        "cancer_images_found": n_pos,
        "validation_rows": n_pos,
        "non_cancer_rows": n_neg,
        "non_cancer_images_found": n_neg,
        "images_in_manifest": c["images"],
        "patients": c["women"],
        "unreferenced_image_files": 0,
    }
    wrong = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if wrong or found.get("unmatched"):
        unmatched = found.get("unmatched", [])[:5]
        raise RuntimeError(f"match on {root}: (got, expected) {wrong}; unmatched {unmatched}")
    return found


def ensure_fold_root(
    work: Path,
    k: int,
    films: list[dict],
    product_root: Path,
    share: tuple[float, float] = (1.0, 1.0),
) -> Path:
    """The checked training data root of fold ``k`` (laid out and matched once)."""
    suffix = "" if min(share) >= 1 else f"_share{share[0]:g}_{share[1]:g}"
    root = work / "roots" / f"fold_{k}_train{suffix}"
    write_data_root(root, films)
    checked = root / "match.json"
    if not checked.is_file():
        write_json(checked, check_match(root, films, product_root))
    found = read_json(checked)
    log(
        f"fold {k}: data root {root}: matched {found['cancer_images_found']} cancer + "
        f"{found['non_cancer_images_found']} non-cancer images of {found['patients']} women, "
        f"{len(found['unmatched'])} unmatched rows"
    )
    return root


# --- Models -----------------------------------------------------------------------------------


def parse_candidates(values: list[str]) -> dict[str, list[str]]:
    """``NAME=ARGS`` strings as {name: extra train arguments}."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in BUILTIN_MODELS:
            raise SystemExit(f"--candidate {value!r}: write NAME=ARGS, NAME not recipe/default.")
        extra = shlex.split(rest)
        if any(a.split("=")[0] in RESERVED_TRAIN_ARGS for a in extra):
            raise SystemExit(f"--candidate {value!r}: the script sets {RESERVED_TRAIN_ARGS}.")
        out[name] = extra
    return out


def parse_rescores(values: list[str], candidates: dict[str, list[str]]) -> dict[str, tuple]:
    """``NAME=BASE:ARGS`` strings as {name: (base model, extra predict arguments)}."""
    out: dict[str, tuple[str, list[str]]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        base, colon, extra = rest.partition(":")
        if not (sep and colon) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SystemExit(f"--rescore {value!r}: write NAME=BASE:PREDICT_ARGS.")
        if name in BUILTIN_MODELS or name in candidates or base == BASELINE:
            raise SystemExit(f"--rescore {value!r}: NAME must be new, BASE a product model.")
        out[name] = (base, shlex.split(extra))
    return out


def parse_combines(values: list[str], taken: list[str]) -> dict[str, tuple]:
    """``NAME=A+B[:ARGS]`` strings as {name: (member models, extra predict arguments)}."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        members_text, _, extra = rest.partition(":")
        members = [m for m in members_text.split("+") if m]
        if not sep or len(members) < 2 or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SystemExit(f"--combine {value!r}: write NAME=MODEL+MODEL[:PREDICT_ARGS].")
        if name in taken or BASELINE in members:
            raise SystemExit(f"--combine {value!r}: NAME must be new, the runs product models.")
        out[name] = (members, shlex.split(extra))
    return out


def parse_fixed(values: list[str], taken: list[str]) -> dict[str, tuple]:
    """``NAME=BUNDLE[:ARGS]`` strings as {name: (bundle folder, extra predict arguments)}."""
    out: dict[str, tuple[str, list[str]]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        bundle, _, extra = rest.partition(":")
        if not sep or not bundle or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SystemExit(f"--fixed {value!r}: write NAME=BUNDLE_DIR[:PREDICT_ARGS].")
        if name in taken:
            raise SystemExit(f"--fixed {value!r}: NAME must be new.")
        out[name] = (str(Path(bundle).expanduser().resolve()), shlex.split(extra))
    return out


def model_spec(model: str, args: argparse.Namespace) -> dict:
    """What defines a model's training: compared with a cached result before it is reused."""
    if model in args.fixed:
        bundle, extra = args.fixed[model]
        return {"kind": "fixed", "bundle": bundle, "predict": extra}
    if model in args.combines:
        members, extra = args.combines[model]
        bases = [model_spec(m, args) for m in members]
        return {"kind": "combine", "of": members, "bases": bases, "predict": extra}
    if model in args.rescores:
        base, extra = args.rescores[model]
        return {"kind": "rescore", "of": base, "base": model_spec(base, args), "predict": extra}
    share = {} if min(args.train_share) >= 1 else {"train_share": list(args.train_share)}
    if model == BASELINE:
        return {
            "kind": "recipe",
            "epochs": args.epochs or RECIPE_EPOCHS,
            "seed": args.seed,
            **share,
        }
    extra = [] if model == "default" else list(args.candidates[model])
    if args.epochs:
        extra += ["--epochs", str(args.epochs)]
    return {"kind": "product", "train_args": extra, **share}


def run_logged(cmd: list[str], cwd: Path, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` (stderr to our log, stdout captured); return it and its wall time."""
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode} after {wall:.0f} s: {cmd[:6]} ...")
    return proc, wall


class BundleWatcher:
    """Logs the epochs a training run has saved (``history.csv`` of its bundle) while it runs.

    ``train --json`` prints nothing until it ends; the bundle is rewritten at every epoch that
    improves validation PR-AUC, with the history of all epochs so far.
    """

    def __init__(self, bundle: Path, label: str, every_s: float = 20.0) -> None:
        self.history = bundle / "history.csv"
        self.label, self.every_s = label, every_s
        self.seen = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> BundleWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _watch(self) -> None:
        """Every ``every_s`` seconds, log the history rows not logged yet."""
        while not self.stop.wait(self.every_s):
            try:
                with self.history.open(newline="") as handle:
                    rows = list(csv.DictReader(handle))
            except OSError:
                continue
            for row in rows[self.seen :]:
                shown = ", ".join(
                    f"{k} {float(row[k]):.4f}"
                    for k in ("loss", "val_roc_auc", "val_pr_auc")
                    if row.get(k)
                )
                log(f"  {self.label} epoch {row.get('epoch')} (saved): {shown}")
            self.seen = max(self.seen, len(rows))


def train_product(root: Path, bundle: Path, extra: list[str], ctx: dict, label: str) -> tuple:
    """``bcp_core train --json`` under nice; returns (its JSON, wall seconds)."""
    shutil.rmtree(bundle, ignore_errors=True)  # a killed run's bundle: train again from scratch
    bundle.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*NICE, sys.executable, "-m", "bcp_core", "train", "--data-root", str(root)]
    cmd += ["--out", str(bundle), *extra, "--json"]
    with BundleWatcher(bundle, label):
        proc, wall = run_logged(cmd, ctx["product_root"], ctx["env"])
    return last_json(proc.stdout), wall


def fold_args(extra: list[str], bundles: Path) -> list[str]:
    """A candidate's train arguments for one fold: ``{bundles}`` stands for that fold's bundles
    folder, so that a candidate can go on from another model of the same fold (e.g.
    ``--start-from {bundles}/lite0_fs4``: trained on the same women, never on the held-out)."""
    return [arg.replace("{bundles}", str(bundles)) for arg in extra]


def run_product_model(k: int, model: str, spec: dict, root: Path, test: list, ctx: dict) -> dict:
    """Train one product model on fold ``k``'s data root and score its held-out films."""
    bundle = ctx["work"] / "folds" / f"fold_{k}" / "bundles" / model
    extra = fold_args(spec["train_args"], bundle.parent)
    train_json, train_s = train_product(root, bundle, extra, ctx, f"{model} f{k}")
    log(f"fold {k} {model}: trained in {train_s:.0f} s: {json.dumps(train_json)}")
    entries, predict_s = predict_held_out(bundle, test, ctx)
    return scored(entries, test, train_json, train_s, predict_s)


def rescore_product_model(k: int, model: str, spec: dict, test: list, ctx: dict) -> dict:
    """Score fold ``k``'s held-out films again with the bundle of ``spec["of"]`` and more
    predict arguments (test-time augmentation, say): no training; its training is the base's."""
    folder = ctx["work"] / "folds" / f"fold_{k}"
    base_path, bundle = folder / f"{spec['of']}.json", folder / "bundles" / spec["of"]
    if not base_path.is_file() or not bundle.is_dir():
        raise SystemExit(f"fold {k} {model}: run {spec['of']} on this fold first (no bundle).")
    base = read_json(base_path)
    if base.get("spec") != spec["base"]:
        raise SystemExit(f"{base_path} was trained as {base.get('spec')}, not {spec['base']}.")
    entries, predict_s = predict_held_out(bundle, test, ctx, spec["predict"])
    result = scored(entries, test, base["train_json"], base["train_wall_s"], predict_s)
    result["decision"] += f" ({' '.join(spec['predict'])}, the bundle of {spec['of']})"
    return result


def combine_product_model(k: int, model: str, spec: dict, test: list, ctx: dict) -> dict:
    """Average fold ``k``'s bundles of ``spec["of"]`` with the product's ``ensemble`` and score
    the held-out films with the new bundle (and ``spec["predict"]``)."""
    folder = ctx["work"] / "folds" / f"fold_{k}"
    runs = []
    for member, base_spec in zip(spec["of"], spec["bases"]):
        record, bundle = folder / f"{member}.json", folder / "bundles" / member
        if not record.is_file() or not bundle.is_dir():
            raise SystemExit(f"fold {k} {model}: run {member} on this fold first (no bundle).")
        if read_json(record).get("spec") != base_spec:
            raise SystemExit(f"{record} was trained as another {member}; name the runs anew.")
        runs.append((read_json(record), bundle))
    bundle = folder / "bundles" / model
    shutil.rmtree(bundle, ignore_errors=True)
    cmd = [*NICE, sys.executable, "-m", "bcp_core", "ensemble", *(str(b) for _, b in runs)]
    proc, combine_s = run_logged(
        [*cmd, "--out", str(bundle), "--json"], ctx["product_root"], ctx["env"]
    )
    combine_json = last_json(proc.stdout)
    log(f"fold {k} {model}: averaged in {combine_s:.0f} s: {json.dumps(combine_json)}")
    entries, predict_s = predict_held_out(bundle, test, ctx, spec["predict"])
    train_s = sum(record["train_wall_s"] for record, _ in runs) + combine_s
    result = scored(entries, test, combine_json, train_s, predict_s)
    result["decision"] += f" ({' '.join(spec['predict'])}, the product's average of {spec['of']})"
    return result


def scored(entries: list[dict], test: list, train_json: dict, train_s: float, predict_s: float):
    """A result file's content from ``predict --json`` entries of the held-out films."""
    by_file = {e["file"]: e for e in entries}
    images, refused = [], []
    for film in test:
        entry = by_file.get(film["path"], {"error": "missing from the predict output"})
        if "error" in entry:
            refused.append({"file": film["name"], "error": entry["error"]})
            continue
        images.append(image_row(film, entry["probability"], entry["label"]))
    # a refused film's entry carries its error, not the bundle's threshold
    thresholds = sorted({e["threshold"] for e in entries if "threshold" in e})
    return {
        "decision": "probability >= the bundle's saved threshold",
        "threshold": thresholds[0] if len(thresholds) == 1 else thresholds,
        "train_wall_s": train_s,
        "predict_wall_s": predict_s,
        "train_json": train_json,
        "refused": refused,
        "images": images,
    }


def predict_held_out(
    bundle: Path, test: list[dict], ctx: dict, extra: list[str] = ()
) -> tuple[list[dict], float]:
    """Per-film entries of ``predict --json`` (``file`` is the path as given; ``extra``: more
    predict arguments) and wall time."""
    cmd = [*NICE, sys.executable, "-m", "bcp_core", "predict", "--bundle", str(bundle), "--json"]
    cmd += list(extra)
    log(f"$ {' '.join(cmd)} <{len(test)} held-out films>")
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, *(f["path"] for f in test)],
        cwd=ctx["product_root"],
        env=ctx["env"],
        stdout=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed with exit status {proc.returncode}")
    return last_json(proc.stdout), wall


def image_row(film: dict, probability: float, decision: int) -> dict:
    """One held-out image of a result file."""
    return {
        "file": film["name"],
        "patient": film["patient"],
        "label": int(film["label"]),
        "probability": float(probability),
        "decision": int(decision),
    }


def run_recipe(k: int, spec: dict, root: Path, train: list, test: list, ctx: dict) -> dict:
    """The user's recipe on fold ``k``'s data root images, in a child process under nice."""
    folder = ctx["work"] / "folds" / f"fold_{k}" / "recipe_child"
    rel = layout_relpaths(train)
    job = {
        "train": [[str(root / rel[f["name"]]), f["label"]] for f in train],
        "test": [f["path"] for f in test],
        "epochs": spec["epochs"],
        "seed": spec["seed"],
        "out": str(folder / "recipe.child.json"),
    }
    write_json(folder / "recipe.job.json", job)
    cmd = [*NICE, sys.executable, str(Path(__file__).resolve()), "--child-recipe"]
    _, wall = run_logged([*cmd, str(folder / "recipe.job.json")], ctx["work"], ctx["env"])
    child = read_json(Path(job["out"]))
    images = [image_row(f, p, d) for f, p, d in zip(test, child["probability"], child["decision"])]
    child_info = {k: v for k, v in child.items() if k not in ("probability", "decision")}
    return {
        "decision": "argmax of the softmax (probability of cancer >= about 0.5)",
        "threshold": None,
        "train_wall_s": wall,
        "predict_wall_s": None,
        "train_json": child_info,
        "refused": [],
        "images": images,
    }


def recipe_child(job_path: Path) -> int:
    """Child process: train the recipe on the job's images and predict its held-out films."""
    import keras

    job = read_json(job_path)
    start = time.perf_counter()
    x = recipe_load_images([p for p, _ in job["train"]])
    y = np.array([lab for _, lab in job["train"]], dtype=int)
    load_s = time.perf_counter() - start
    x_train, x_val, y_train, y_val = recipe_split(x, y, job["seed"])
    del x
    keras.utils.set_random_seed(job["seed"])
    model = recipe_model()
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=job["epochs"],
        batch_size=RECIPE_BATCH,
        validation_data=(x_val, y_val),
        callbacks=[epoch_logger("recipe")],
        verbose=0,
    )
    fit_s = time.perf_counter() - start
    del x_train, x_val
    prob = model.predict(recipe_load_images(job["test"]), batch_size=RECIPE_BATCH, verbose=0)
    write_json(
        Path(job["out"]),
        {
            "train_images": len(y_train),
            "val_images": len(y_val),
            "epochs": job["epochs"],
            "load_s": load_s,
            "fit_s": fit_s,
            "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "probability": prob[:, 1].astype(float).tolist(),
            "decision": np.argmax(prob, axis=1).astype(int).tolist(),
        },
    )
    return 0


def run_piece(k: int, model: str, args: argparse.Namespace, ctx: dict) -> None:
    """Train and score one (fold, model) unless its result is cached."""
    path = ctx["work"] / "folds" / f"fold_{k}" / f"{model}.json"
    spec = model_spec(model, args)
    if path.is_file():
        cached = read_json(path).get("spec")
        if cached != spec:
            raise SystemExit(
                f"{path} was trained as {cached}, not {spec}; delete it or name the model anew."
            )
        log(f"fold {k} {model}: cached, skipped")
        return
    train, test = fold_films(ctx["films"], ctx["folds"], k)
    share = tuple(spec.get("train_share", (1.0, 1.0)))
    train = share_of_women(train, share, args.seed + k)
    if spec["kind"] == "fixed":
        log(f"fold {k} {model}: the bundle {spec['bundle']} as it is, on {counts(test)}")
        entries, predict_s = predict_held_out(Path(spec["bundle"]), test, ctx, spec["predict"])
        result = scored(entries, test, {}, 0.0, predict_s)
        result["decision"] += " (a bundle trained elsewhere, not on this fold)"
    elif spec["kind"] == "rescore":
        log(f"fold {k} {model}: {spec['of']}'s bundle, predict {spec['predict']} on {counts(test)}")
        result = rescore_product_model(k, model, spec, test, ctx)
    elif spec["kind"] == "combine":
        log(f"fold {k} {model}: the average of {spec['of']}, predict on {counts(test)}")
        result = combine_product_model(k, model, spec, test, ctx)
    else:
        root = ensure_fold_root(ctx["work"], k, train, ctx["product_root"], share)
        log(f"fold {k} {model}: training on {counts(train)}, held out {counts(test)}")
        if model == BASELINE:
            result = run_recipe(k, spec, root, train, test, ctx)
        else:
            result = run_product_model(k, model, spec, root, test, ctx)
    result.update(
        fold=k,
        model=model,
        spec=spec,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        product_root=str(ctx["product_root"]),
        product_commit=git_commit(ctx["product_root"]),
        train_counts=counts(train),
        test_counts=counts(test),
        load_average_at_end=list(os.getloadavg()),
    )
    write_json(path, result)
    log(f"fold {k} {model}: done, wrote {path}")


# --- Metrics ------------------------------------------------------------------------------------


def reweighted(sens: float, spec: float, p: float = HOSPITAL_PREVALENCE) -> tuple[float, float]:
    """(PPV, NPV) at prevalence ``p`` from sensitivity and specificity."""
    ppv_den = sens * p + (1 - spec) * (1 - p)
    npv_den = spec * (1 - p) + (1 - sens) * p
    ppv = sens * p / ppv_den if ppv_den > 0 else math.nan
    npv = spec * (1 - p) / npv_den if npv_den > 0 else math.nan
    return ppv, npv


def arrays(images: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities, decisions and women of result images."""
    y = np.array([i["label"] for i in images], dtype=float)
    p = np.array([i["probability"] for i in images], dtype=float)
    d = np.array([i["decision"] for i in images], dtype=int)
    w = np.array([i["patient"] for i in images], dtype=object)
    return y, p, d, w


def score(images: list[dict], n_boot: int, seed: int) -> dict:
    """AUCs with patient-bootstrap intervals; sens / spec at the decision with Wilson intervals."""
    y, p, d, w = arrays(images)
    pos, neg = y == 1, y == 0
    tp, tn = int((d[pos] == 1).sum()), int((d[neg] == 0).sum())
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    sens = tp / n_pos if n_pos else math.nan
    spec = tn / n_neg if n_neg else math.nan
    sens_ci, spec_ci = wilson_interval(tp, n_pos), wilson_interval(tn, n_neg)
    boot = bootstrap_auc_intervals(y, p, w, n_boot=n_boot, seed=seed)
    ppv, npv = reweighted(sens, spec)
    low, high = reweighted(sens_ci[0], spec_ci[0]), reweighted(sens_ci[1], spec_ci[1])
    return {
        "images": len(y),
        "positive_images": n_pos,
        "women": len(set(w)),
        **ranking_metrics(y, p),
        "roc_auc_ci": boot["roc_auc"],
        "pr_auc_ci": boot["pr_auc"],
        "n_boot_used": boot["n_used"],
        "tp": tp,
        "fn": n_pos - tp,
        "tn": tn,
        "fp": n_neg - tn,
        "sensitivity": sens,
        "sensitivity_wilson": sens_ci,
        "specificity": spec,
        "specificity_wilson": spec_ci,
        "ppv_1_57": ppv,
        "npv_1_57": npv,
        "ppv_1_57_range": (low[0], high[0]),
        "npv_1_57_range": (low[1], high[1]),
    }


def paired_auc_delta(model: list[dict], base: list[dict], n_boot: int, seed: int) -> dict:
    """ROC-AUC of ``model`` minus ``base`` on the images both scored, paired patient bootstrap."""
    base_by_file = {i["file"]: i for i in base}
    both = [i for i in model if i["file"] in base_by_file]
    if not both:
        return {"images": 0}
    y, p_model, _, w = arrays(both)
    p_base = np.array([base_by_file[i["file"]]["probability"] for i in both], dtype=float)
    codes = group_codes(w, len(y))
    deltas = [np.empty(0)]
    for draws in resample_counts(int(codes.max()) + 1, n_boot, seed):
        weights = draws[:, codes]
        deltas.append(weighted_aucs(y, p_model, weights)[0] - weighted_aucs(y, p_base, weights)[0])
    delta = np.concatenate(deltas)
    finite = delta[np.isfinite(delta)]
    observed = ranking_metrics(y, p_model)["roc_auc"] - ranking_metrics(y, p_base)["roc_auc"]
    return {
        "images": len(y),
        "women": len(set(w)),
        "roc_auc_delta": observed,
        "boot_mean": float(finite.mean()) if finite.size else math.nan,
        "ci": percentile_interval(delta, 0.95),
        "share_le_0": float((finite <= 0).mean()) if finite.size else math.nan,
        "n_boot_used": int(finite.size),
    }


def scored_groups(images: list[dict], level: str, sides: dict[str, str] | None = None) -> list:
    """One score per breast or per woman (``level``: ``breast`` or ``patient``), by the
    product's rule (:func:`bcp_core.evaluation.aggregation.aggregate_predictions_df`: a breast
    scores the mean of its films, a woman the maximum over her breasts). These films carry no
    laterality: ``sides`` (:func:`film_sides`) stands in for it, and without it a woman is one
    breast, the mean of her films. A group's label: any malignant film. Shaped as result images
    (``file`` the group, ``patient`` the woman; no decision: 0)."""
    import pandas as pd

    from bcp_core.evaluation.aggregation import aggregate_predictions_df

    frame = pd.DataFrame({
        "patient_id": [i["patient"] for i in images],
        "laterality": [sides[i["file"]] if sides else "" for i in images],
        "label": [i["label"] for i in images],
        "probability": [i["probability"] for i in images],
    })  # fmt: skip
    groups = aggregate_predictions_df(frame, level=level)
    side = groups["laterality"] if level == "breast" else [""] * len(groups)
    rows = zip(groups["patient_id"], side, groups["label"], groups["probability"])
    return [
        {
            "file": f"{w} {s}".strip(),
            "patient": w,
            "label": int(y),
            "probability": float(p),
            "decision": 0,
        }
        for w, s, y, p in rows
    ]


def per_woman(images: list[dict], sides: dict[str, str] | None = None) -> list[dict]:
    """One score per woman (:func:`scored_groups`): the mean of her films without ``sides``."""
    return scored_groups(images, "patient", sides)


def film_sides(work: Path, films_folder: Path | None) -> dict[str, str]:
    """Each film's breast side as the product's preparation finds it (``R`` when
    :func:`bcp_core.imaging.preparation.chest_wall_on_right`, else ``L``): these films carry
    no laterality, and the chest wall's side stands in for it. Found once, kept in
    ``WORK/sides.json``; {} when neither that file nor the films are at hand."""
    path = work / "sides.json"
    if path.is_file():
        return read_json(path)
    if films_folder is None:
        return {}
    from PIL import Image

    from bcp_core.imaging.preparation import chest_wall_on_right

    sides = {}
    for film in list_films(films_folder):
        with Image.open(film["path"]) as img:
            gray = np.asarray(img.convert("L"))
        sides[film["name"]] = "R" if chest_wall_on_right(gray) else "L"
    write_json(path, sides)
    return sides


def per_breast(images: list[dict], sides: dict[str, str]) -> list[dict]:
    """One score per breast, a woman and a chest-wall side (:func:`scored_groups`)."""
    return scored_groups(images, "breast", sides)


def group_scores(
    images: list[dict], grouped, pair: tuple[list, list] | None, args, unit: str
) -> dict:
    """ROC-AUC and PR-AUC of ``grouped(images)`` (one score per woman or per breast) with
    bootstrap intervals over women, and with ``pair`` (this model's and another's images on the
    same women) the paired ROC-AUC difference at that level (``vs_against``)."""
    groups = grouped(images)
    y, p, _, w = arrays(groups)
    boot = bootstrap_auc_intervals(y, p, w, n_boot=args.n_boot, seed=args.seed)
    out = {
        unit: len(groups),
        f"positive_{unit}": int(y.sum()),
        **ranking_metrics(y, p),
        "roc_auc_ci": boot["roc_auc"],
        "pr_auc_ci": boot["pr_auc"],
    }
    if pair is not None:
        mine, theirs = pair
        out["vs_against"] = paired_auc_delta(grouped(mine), grouped(theirs), args.n_boot, args.seed)
    return out


# --- Summary ------------------------------------------------------------------------------------


def load_results(work: Path) -> dict[str, dict[int, dict]]:
    """Every cached result: {model: {fold: result}}."""
    results: dict[str, dict[int, dict]] = {}
    for path in sorted((work / "folds").glob("fold_*/*.json")):
        result = read_json(path)
        if not isinstance(result, dict) or "images" not in result:
            continue
        results.setdefault(result["model"], {})[int(result["fold"])] = result
    return results


def model_summary(
    per_fold: dict[int, dict], base: dict[int, dict], args, against: dict[int, dict] | None = None
) -> dict:
    """Per-fold and pooled scores of one model, with its paired comparison to the baseline
    (``vs_recipe``) and, with ``against``, to that model too (``vs_against``)."""
    out: dict = {"folds": {}, "pooled": {}}
    pooled: list[dict] = []
    pooled_refs: dict[str, tuple[list, list]] = {"vs_recipe": ([], []), "vs_against": ([], [])}
    refs = {"vs_recipe": base, "vs_against": against or {}}
    for k, result in sorted(per_fold.items()):
        entry = score(result["images"], args.n_boot, args.seed)
        entry["train_wall_s"] = result["train_wall_s"]
        entry["refused"] = len(result.get("refused", []))
        for key, ref in refs.items():
            if k in ref and ref is not per_fold:
                entry[key] = paired_auc_delta(
                    result["images"], ref[k]["images"], args.n_boot, args.seed
                )
                pooled_refs[key][0].extend(result["images"])
                pooled_refs[key][1].extend(ref[k]["images"])
        out["folds"][k] = entry
        pooled += result["images"]
    out["pooled"] = score(pooled, args.n_boot, args.seed)
    times = [r["train_wall_s"] for r in per_fold.values()]
    out["pooled"].update(train_wall_s=sum(times), train_wall_s_mean=float(np.mean(times)))
    out["pooled"]["folds"] = sorted(per_fold)
    out["pooled"]["mean_fold_roc_auc"] = float(
        np.mean([e["roc_auc"] for e in out["folds"].values()])
    )
    for key, (mine, theirs) in pooled_refs.items():
        if theirs:
            out["pooled"][key] = paired_auc_delta(mine, theirs, args.n_boot, args.seed)
    pair = pooled_refs["vs_against"]
    paired = pair if pair[1] else None
    out["pooled"]["per_woman"] = group_scores(pooled, per_woman, paired, args, "women")
    sides = getattr(args, "sides", None)
    if sides and all(i["file"] in sides for i in pooled):
        breasts = functools.partial(per_breast, sides=sides)
        out["pooled"]["per_breast"] = group_scores(pooled, breasts, paired, args, "breasts")
        women = functools.partial(per_woman, sides=sides)
        out["pooled"]["per_woman_by_breast"] = group_scores(pooled, women, paired, args, "women")
        labels: dict[tuple[str, str], set[int]] = {}
        for i in pooled:
            labels.setdefault((i["patient"], sides[i["file"]]), set()).add(i["label"])
        # a check on the side as laterality: a breast's films should share its label
        out["pooled"]["per_breast"]["mixed_label_breasts"] = sum(
            len(v) > 1 for v in labels.values()
        )
    return out


def parse_ensembles(values: list[str]) -> dict[str, list[str]]:
    """``NAME=A+B[+C...]`` strings as {name: [member models]}."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        members = [m for m in rest.split("+") if m]
        if not sep or len(members) < 2 or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SystemExit(f"--ensemble {value!r}: write NAME=MODEL+MODEL[+MODEL...].")
        out[name] = members
    return out


def mean_record(records: list[dict]) -> dict:
    """The records' mean probability per film (films every record scored), decided at the mean
    of their saved thresholds: ``images`` and ``threshold``."""
    by_file = [{i["file"]: i for i in r["images"]} for r in records]
    threshold = float(np.mean([r["threshold"] for r in records]))
    images = []
    for first in records[0]["images"]:
        scores = [b[first["file"]]["probability"] for b in by_file if first["file"] in b]
        if len(scores) == len(records):
            probability = float(np.mean(scores))
            images.append({**first, "probability": probability,
                           "decision": int(probability >= threshold)})  # fmt: skip
    return {"images": images, "threshold": threshold}


def ensemble_results(results: dict[str, dict[int, dict]], members: list[str]) -> dict[int, dict]:
    """The members' mean probability per film (:func:`mean_record`), on the folds every member
    scored; training time the sum of theirs."""
    out: dict[int, dict] = {}
    folds = set.intersection(*(set(results.get(m, {})) for m in members))
    for k in sorted(folds):
        records = [results[m][k] for m in members]
        out[k] = {
            **mean_record(records),
            "train_wall_s": sum(r["train_wall_s"] for r in records),
            "refused": [],
        }
    return out


def summarise(args: argparse.Namespace) -> dict:
    """Score every cached result (and the asked-for ensembles of them); write
    ``WORK/summary.json``."""
    results = load_results(args.work)
    args.sides = film_sides(args.work, films_dir(args.films) if args.films else None)
    for name, members in args.ensembles.items():
        results[name] = ensemble_results(results, members)
    base = results.get(BASELINE, {})
    against = results.get(args.against, {}) if args.against else {}
    order = [m for m in BUILTIN_MODELS if m in results] + sorted(set(results) - set(BUILTIN_MODELS))
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "work": str(args.work),
        "hospital_prevalence": HOSPITAL_PREVALENCE,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "against": args.against,
        "models": {m: model_summary(results[m], base, args, against) for m in order},
    }
    write_json(args.work / "summary.json", summary)
    return summary


def fmt(value: float | None, ci=None, digits: int = 3) -> str:
    """``0.812 [0.77, 0.85]``, or ``-`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if ci is not None and not any(c is None or math.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits - 1}f}, {ci[1]:.{digits - 1}f}]"
    return text


def table_row(model: str, fold: str, s: dict, against: bool = False) -> str:
    """One line of the summary table."""
    delta = s.get("vs_recipe", {})
    other = s.get("vs_against", {})
    extra = f" {fmt(other.get('roc_auc_delta'), other.get('ci')):>23}" if against else ""
    return (
        f"{model:<12} {fold:>4} {s['women']:>5} {s['images']:>5} {s['positive_images']:>4} "
        f"{fmt(s['roc_auc'], s['roc_auc_ci']):>20} {fmt(s['pr_auc'], s['pr_auc_ci']):>20} "
        f"{fmt(s['sensitivity'], s['sensitivity_wilson']):>20} "
        f"{fmt(s['specificity'], s['specificity_wilson']):>20} "
        f"{fmt(s['ppv_1_57'], s['ppv_1_57_range']):>20} {fmt(s['npv_1_57'], digits=4):>7} "
        f"{s['train_wall_s']:>7.0f} {fmt(delta.get('roc_auc_delta'), delta.get('ci')):>23}"
        f"{extra}"
    )


def format_table(summary: dict) -> str:
    """The summary as a text table: per model, one line per fold and one pooled line."""
    head = (
        f"{'model':<12} {'fold':>4} {'women':>5} {'imgs':>5} {'pos':>4} "
        f"{'ROC-AUC [95% CI]':>20} {'PR-AUC [95% CI]':>20} {'sens [Wilson]':>20} "
        f"{'spec [Wilson]':>20} {'PPV@1:57 [range]':>20} {'NPV':>7} {'train s':>7} "
        f"{'dROC vs recipe [CI]':>23}"
    )
    against = summary.get("against")
    if against:
        head += f" {'dROC vs ' + against + ' [CI]':>23}"
    lines = [head, "-" * len(head)]
    for model, m in summary["models"].items():
        for k, s in m["folds"].items():
            lines.append(table_row(model, str(k), s, bool(against)))
        lines.append(table_row(model, "all", m["pooled"], bool(against)))
    lines += ["", f"{'per woman (mean of her films)':<32} {'women':>5} {'ROC-AUC [95% CI]':>20}"
              + (f" {'dROC vs ' + against + ' [CI]':>23}" if against else "")]  # fmt: skip
    levels = (("per_woman", "women"), ("per_breast", "breasts"), ("per_woman_by_breast", "women"))
    for level, unit in levels:
        if level == "per_breast" and any(level in m["pooled"] for m in summary["models"].values()):
            mixed = max(m["pooled"].get(level, {}).get("mixed_label_breasts", 0)
                        for m in summary["models"].values())  # fmt: skip
            lines += [
                "",
                f"{'per breast (chest-wall side)':<32} {'breasts':>5}"
                f"   ({mixed} breasts hold films of both labels)",
            ]
        if level == "per_woman_by_breast" and any(
            level in m["pooled"] for m in summary["models"].values()
        ):
            lines += ["", f"{'per woman (her higher breast)':<32} {'women':>5}"]
        for model, m in summary["models"].items():
            s = m["pooled"].get(level)
            if s:
                other = s.get("vs_against", {})
                lines.append(
                    f"{model:<32} {s[unit]:>5} {fmt(s['roc_auc'], s['roc_auc_ci']):>20}"
                    + (
                        f" {fmt(other.get('roc_auc_delta'), other.get('ci')):>23}"
                        if against
                        else ""
                    )
                )
    lines += [
        "",
        "AUC intervals: patient bootstrap; sens/spec at each model's own decision (bundle "
        "threshold / argmax), Wilson intervals over images;",
        "PPV/NPV reweighted to 1 cancer in 58 images, range from the Wilson limits; dROC: paired "
        "patient bootstrap on the same women; 'all' pools the folds;",
        "train s: wall time of the training subprocess (pooled: sum over folds).",
    ]
    return "\n".join(lines)


# --- Orchestration ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--films", help=f"folder with malignant/ and benign/ (or ${FILMS_ENV})")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="cache and results folder")
    p.add_argument("--folds", type=int, nargs="+", help="folds to run (default: all)")
    p.add_argument("--models", nargs="+", help="recipe, default and candidate names (default all)")
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=ARGS")
    p.add_argument(
        "--rescore",
        action="append",
        default=[],
        metavar="NAME=BASE:ARGS",
        help="score BASE's bundles again with more predict arguments, no training (e.g. "
        "lite0_tta4=lite0:--tta 4); run after BASE",
    )
    p.add_argument(
        "--combine",
        action="append",
        default=[],
        metavar="NAME=A+B[:ARGS]",
        help="average the fold bundles of A and B with the product's ensemble command and "
        "score the held-out films with it (e.g. mean2=lite0_bn+lite0_s43_split42:--tta 4); "
        "run after A and B",
    )
    p.add_argument(
        "--ensemble",
        action="append",
        default=[],
        metavar="NAME=A+B",
        help="in the summary, also score the mean probability of these recorded models, on "
        "the folds all of them ran (e.g. two seeds of a recipe)",
    )
    p.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="NAME=BUNDLE[:ARGS]",
        help="score every fold's held-out films with this bundle as it is (trained elsewhere, "
        "e.g. on another collection: no training, its saved threshold), for pairing",
    )
    p.add_argument("--product-root", type=Path, default=REPO, help="repository the CLI runs from")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42, help="folds, recipe, bootstrap")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--limit-women", type=int, help="smoke runs: keep N women, half positive")
    p.add_argument("--epochs", type=int, help="smoke runs: epochs of every model")
    p.add_argument(
        "--train-share",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="F",
        help="train on this share (0-1] of each fold's positive training women and a second "
        "share (default: the same) of the others, the same held-out women (a learning curve; "
        "0.1 1: few cancers among many films); name the models by their share",
    )
    p.add_argument("--summary", action="store_true", help="only pool and print what exists")
    p.add_argument(
        "--against",
        metavar="MODEL",
        help="also compare every model with this one on the same women (paired), e.g. the "
        "current default's cached name",
    )
    p.add_argument(
        "--layout-only", action="store_true", help="lay out and match the folds' roots, no training"
    )
    p.add_argument("--child-recipe", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.work = args.work.expanduser().resolve()
    args.product_root = args.product_root.expanduser().resolve()
    args.candidates = parse_candidates(args.candidate)
    args.rescores = parse_rescores(args.rescore, args.candidates)
    args.ensembles = parse_ensembles(args.ensemble)
    args.combines = parse_combines(
        args.combine, [*BUILTIN_MODELS, *args.candidates, *args.rescores]
    )
    args.fixed = parse_fixed(
        args.fixed, [*BUILTIN_MODELS, *args.candidates, *args.rescores, *args.combines]
    )
    known = [*BUILTIN_MODELS, *args.candidates, *args.rescores, *args.combines, *args.fixed]
    args.models = args.models or known
    unknown = [m for m in args.models if m not in known]
    if unknown and not args.summary:
        p.error(f"unknown models {unknown}; define candidates with --candidate NAME=ARGS")
    if len(args.train_share) > 2 or not all(0 < f <= 1 for f in args.train_share):
        p.error("--train-share takes one or two shares in (0, 1]")
    args.train_share = (args.train_share[0], args.train_share[-1])
    if args.limit_women is not None and args.limit_women < MIN_WOMEN:
        p.error(f"--limit-women must be at least {MIN_WOMEN}")
    return args


def run_all(args: argparse.Namespace) -> None:
    """Run every asked-for (fold, model) piece, one at a time."""
    args.films_dir = films_dir(args.films)
    films = limit_women(list_films(args.films_dir), args.limit_women, args.seed)
    plan = load_or_make_folds(args.work, films, args)
    ctx = {
        "work": args.work,
        "films": films,
        "folds": plan["women"],
        "product_root": args.product_root,
        "env": product_env(args.product_root),
    }
    folds = args.folds if args.folds is not None else list(range(args.n_folds))
    if any(not 0 <= k < args.n_folds for k in folds):
        raise SystemExit(f"--folds must lie in 0..{args.n_folds - 1}")
    log(f"{counts(films)} from {args.films_dir}; folds {folds}; models {args.models}")
    for k in folds:
        if args.layout_only:
            ensure_fold_root(
                args.work, k, fold_films(films, ctx["folds"], k)[0], ctx["product_root"]
            )
            continue
        for model in args.models:
            run_piece(k, model, args, ctx)


def main(argv: list[str] | None = None) -> int:
    """Run the asked-for pieces (unless --summary), then print and write the summary."""
    args = parse_args(argv)
    if args.child_recipe:
        return recipe_child(args.child_recipe)
    if not args.summary:
        run_all(args)
    summary = summarise(args)
    if not summary["models"]:
        print(f"No results in {args.work} yet.")
        return 0
    print(format_table(summary))
    print(f"\nWrote {args.work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
