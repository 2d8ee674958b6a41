"""Batch prediction on a Ray cluster, with the same preparation and model call as local prediction.

``predict --engine ray`` (README, "When one machine is not enough"). The driver lists the files
(folders walked by :func:`bcp_core.inference.inputs.expand_inputs`, or a file list read by
:func:`bcp_core.inference.inputs.read_file_list`), leaves out those an earlier run into the same
output folder already scored, and hands the rest to Ray Data as a dataset of paths: nothing but
the paths leaves the driver. A pool of actors, each loading the bundle once, reads and predicts
its batches with :func:`bcp_core.inference.predict.iter_predictions`, so a file gets exactly the
preparation, the model call and the error rows (unreadable, not a mammogram) that local
prediction gives it. Results come back to the driver as they are made and are written there as
Parquet (or CSV) shards, each renamed into place complete, then one ``summary.json``: a run that
stops part-way keeps its finished shards, and running it again scores only the files that have
no row yet.

Ray is an optional extra (``requirements-scale.txt``): this module imports it only inside its
functions, and nothing in the base install imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bcp_core.errors import UserError
from bcp_core.fileio import write_json_atomic
from bcp_core.inference.predict import (
    ProgressCallback,
    checked_passes,
    decision_threshold,
    iter_predictions,
)
from bcp_core.inference.results import Prediction, results_df
from bcp_core.model.bundle import load_bundle
from bcp_core.model.ray_cluster import SCALE_HINT, ray_connection
from bcp_core.output_safety import neutralised_df
from bcp_core.values import is_whole_number

SUMMARY_FILE = "summary.json"
#: What a results folder was made with; a later run into it must use the same.
RUN_FILE = "run.json"
SHARD_PREFIX = "part-"
FORMATS = ("parquet", "csv")
ENGINES = ("local", "ray")


def import_ray():
    """The ``ray`` module (with Ray Data), or a one-sentence :class:`UserError`."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra's Ray Data part)
    except ImportError as exc:
        raise UserError(f"The ray engine needs Ray, which is not installed: {SCALE_HINT}.") from exc
    return ray


@dataclass(frozen=True)
class RunSummary:
    """What one distributed run did (``summary.json`` and ``predict --json`` with ``--out``).

    Attributes:
        out: the results folder ("" when results were only returned).
        bundle: the bundle folder.
        threshold: the decision threshold used.
        workers: actors in the pool (no more than the run has batches).
        files: files asked for in this run (after walking folders).
        skipped: of those, files that already had a row in ``out`` (not predicted again).
        predicted: files predicted in this run (``ok`` + ``errors``).
        ok: files scored in this run.
        errors: files of this run that could not be read or were refused.
        rows_in_out: rows in all the shards of ``out`` after this run.
        shards: shards written by this run.
        seconds: wall-clock time of this run.
    """

    out: str
    bundle: str
    threshold: float
    workers: int
    files: int
    skipped: int
    predicted: int
    ok: int
    errors: int
    rows_in_out: int
    shards: int
    seconds: float

    def to_json(self) -> dict:
        """The summary as a JSON object (the attributes by name)."""
        return asdict(self)


@dataclass(frozen=True)
class DistributedRun:
    """A run's summary and, when no output folder was given, its results in input order."""

    summary: RunSummary
    results: list[Prediction] | None = None


class _Scorer:
    """A Ray Data actor: loads the bundle once, then predicts batches of paths."""

    def __init__(self, bundle_dir: str, threshold: float, batch_size: int, passes: int) -> None:
        self.bundle = load_bundle(bundle_dir)
        self.threshold, self.batch_size, self.passes = threshold, batch_size, passes

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        files = [str(f) for f in batch["file"]]
        found = iter_predictions(
            self.bundle,
            files,
            batch_size=self.batch_size,
            threshold=self.threshold,
            passes=self.passes,
        )
        return result_table(found)


def result_table(results: Iterable[Prediction]) -> pd.DataFrame:
    """:func:`results_df` with fixed column types, so that every shard has one schema."""
    df = results_df(results)
    for column in ("probability", "threshold", "probability_low", "probability_high"):
        df[column] = pd.to_numeric(df[column]).astype("float64")
    df["label"] = pd.to_numeric(df["label"]).astype("Int64")
    df["passes"] = pd.to_numeric(df["passes"]).astype("int64")
    return df.astype({c: str for c in ("file", "view", "laterality", "error", "seen_in")})


def predictions_of(table: pd.DataFrame) -> list[Prediction]:
    """The :class:`Prediction` objects of a :func:`result_table`."""
    out = []
    for row in table.itertuples(index=False):
        seen_in = str(getattr(row, "seen_in", "") or "")  # shards of older runs lack it
        if row.error:
            out.append(
                Prediction(row.file, view=row.view, laterality=row.laterality, error=row.error)
            )
        else:
            out.append(
                Prediction(
                    row.file,
                    float(row.probability),
                    int(row.label),
                    float(row.threshold),
                    row.view,
                    row.laterality,
                    probability_low=float(row.probability_low),
                    probability_high=float(row.probability_high),
                    passes=int(row.passes),
                    seen_in=seen_in,
                )
            )
    return out


def _shards(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{SHARD_PREFIX}*") if p.suffix[1:] in FORMATS)


def read_results(out: str | os.PathLike) -> pd.DataFrame:
    """Every row of a results folder's shards (empty with the result columns when none)."""
    tables = [_read_shard(p) for p in _shards(Path(out))]
    return pd.concat(tables, ignore_index=True) if tables else result_table([])


def _read_shard(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            text = {c: str for c in ("file", "view", "laterality", "error", "seen_in")}
            return pd.read_csv(path, dtype=text, keep_default_na=False)
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read the results shard {path}: {exc}.") from exc


def _check_run_file(out: Path, settings: dict) -> None:
    """Refuse a folder written with another bundle, threshold or format; record new ones."""
    path = out / RUN_FILE
    if path.exists():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier != settings:
            raise UserError(
                f"{out} holds results made with {earlier}, not {settings}: "
                "give a new --out folder to predict with other settings."
            )
        return
    write_json_atomic(path, settings)


class _ShardWriter:
    """Writes result tables as numbered shards, each under a temporary name then renamed."""

    def __init__(self, out: Path, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.written = 0

    def write(self, table: pd.DataFrame) -> None:
        name = f"{SHARD_PREFIX}{self.run_id}-{self.written:05d}.{self.fmt}"
        tmp = self.out / f".{name}.tmp"
        try:
            if self.fmt == "csv":
                neutralised_df(table).to_csv(tmp, index=False)
            else:
                table.to_parquet(tmp, index=False)
            os.replace(tmp, self.out / name)
        finally:
            tmp.unlink(missing_ok=True)
        self.written += 1


def predict_distributed(
    bundle_dir: str | os.PathLike,
    files: Iterable[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    workers: int = 2,
    address: str | None = None,
    batch_size: int = 16,
    threshold: float | None = None,
    fmt: str = "parquet",
    shard_rows: int = 1000,
    on_progress: ProgressCallback | None = None,
    passes: int | None = None,
) -> DistributedRun:
    """Predict ``files`` on a Ray cluster with an actor pool of ``workers``.

    Args:
        bundle_dir: the bundle folder; every worker must be able to read it at this path.
        files: image paths (e.g. from :func:`bcp_core.inference.inputs.expand_inputs`); every
            worker must be able to read them (a shared filesystem).
        out: results folder (created): shards, ``run.json``, ``summary.json``; files with a row
            there already are skipped. None: the results are returned in input order instead.
        workers: actors, each with one CPU and its own copy of the model.
        address: a running cluster (``auto`` or ``HOST:PORT``); None: the cluster this process
            is already connected to, else a new one on this machine for the run.
        batch_size: files prepared and predicted together by an actor.
        threshold: decision threshold; default the bundle's saved one.
        fmt: shard format, ``parquet`` or ``csv``.
        shard_rows: rows per shard (the work a crash can lose).
        on_progress: ``on_progress(done, total)`` as results arrive.
        passes: test-time variants per image, as in local prediction (None: the bundle's).

    Raises:
        UserError: Ray missing, a bad setting, an output folder made with other settings.
    """
    started = time.monotonic()
    for name, value in (("workers", workers), ("batch size", batch_size), ("rows", shard_rows)):
        if not is_whole_number(value) or value < 1:
            raise UserError(f"The number of {name} must be a whole number of at least 1.")
    if fmt not in FORMATS:
        raise UserError(f"The results format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    ray = import_ray()
    bundle_path = Path(bundle_dir).resolve()
    described = load_bundle(bundle_path, with_model=False)
    if described.meta.metadata:
        raise UserError(
            "This model also takes workbook values; the ray engine predicts image-only models "
            "so far: use --engine local with --metadata."
        )
    cut = decision_threshold(described, threshold)
    passes = checked_passes(passes, described)
    wanted = list(dict.fromkeys(str(f) for f in files))
    folder = Path(out) if out is not None else None
    done: set[str] = set()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"bundle": str(bundle_path), "threshold": cut, "format": fmt}
        if passes > 1:  # recorded only when used, so earlier single-pass folders still resume
            settings["passes"] = passes
        _check_run_file(folder, settings)
        done = set(read_results(folder)["file"])
    todo = [f for f in wanted if f not in done]

    tables: list[pd.DataFrame] = []
    writer = _ShardWriter(folder, fmt) if folder is not None else None
    if todo:
        with ray_connection(ray, address):
            tables = _run_pool(
                ray,
                todo,
                str(bundle_path),
                (cut, batch_size, passes),
                workers,
                shard_rows,
                writer,
                on_progress,
            )
    table = pd.concat(tables, ignore_index=True) if tables else result_table([])
    errors = int((table["error"] != "").sum())
    summary = RunSummary(
        out=str(folder) if folder is not None else "",
        bundle=str(bundle_path),
        threshold=cut,
        workers=min(workers, _batches(len(todo), batch_size)),
        files=len(wanted),
        skipped=len(wanted) - len(todo),
        predicted=len(table),
        ok=len(table) - errors,
        errors=errors,
        rows_in_out=len(done) + len(table) if folder is not None else 0,
        shards=writer.written if writer is not None else 0,
        seconds=round(time.monotonic() - started, 3),
    )
    if folder is not None:
        write_json_atomic(folder / SUMMARY_FILE, summary.to_json())
        return DistributedRun(summary)
    order = {f: i for i, f in enumerate(todo)}
    table = table.sort_values("file", key=lambda s: s.map(order), kind="stable")
    return DistributedRun(summary, predictions_of(table))


def _batches(files: int, batch_size: int) -> int:
    """Batches of ``batch_size`` in ``files`` files (at least 1)."""
    return max(1, -(-files // batch_size))


def _run_pool(
    ray,
    todo: list[str],
    bundle: str,
    scoring: tuple[float, int, int],
    workers: int,
    shard_rows: int,
    writer: _ShardWriter | None,
    on_progress: ProgressCallback | None,
) -> list[pd.DataFrame]:
    """Stream ``todo`` through the actor pool; shards written as rows arrive (or kept).

    ``scoring`` is (threshold, batch size, passes), as the actors take them.
    """
    batch_size = scoring[1]
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # the CLI prints its own progress
    blocks = _batches(len(todo), batch_size)
    ds = ray.data.from_items([{"file": f} for f in todo], override_num_blocks=blocks)
    ds = ds.map_batches(
        _Scorer,
        fn_constructor_args=(bundle, *scoring),
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
        num_cpus=1,
    )
    kept: list[pd.DataFrame] = []
    pending: list[pd.DataFrame] = []  # arrived, not yet in a shard
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):  # as they arrive
        table = result_table(predictions_of(batch))
        kept.append(table if writer is None else table[["error"]])
        pending.append(table)
        done += len(table)
        if writer is not None and (done == len(todo) or sum(map(len, pending)) >= shard_rows):
            writer.write(pd.concat(pending, ignore_index=True))
            pending.clear()
        if on_progress is not None:
            on_progress(done, len(todo))
    if writer is not None and pending:
        writer.write(pd.concat(pending, ignore_index=True))
    return kept
