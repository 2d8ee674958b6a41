"""Training runs as the CLI and the dashboard start them: one application layer for both.

``python -m bcp_core train`` and the training page are two thin adapters over this module: each
turns its inputs into a :class:`TrainRequest` and calls :func:`run_training`, so the choice of
engine (this process, the GPUs of this machine, a Ray cluster), the workbook values a model
takes, the leakage check, the converted-weights and prepared-image caches and the bundle's name
are decided in one place, and the run's name and note reach its bundle. The dashboard passes
the data it has already read (its cached match); the CLI lets :func:`read_training_data` read
it.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bcp_core.config import DISTRIBUTE_MODES, TrainConfig
from bcp_core.errors import UserError
from bcp_core.imaging.cache import CacheSettings
from bcp_core.model.events import MemberStarted, Phase, TrainingEvent
from bcp_core.model.meta import NO_LABEL, RunLabel
from bcp_core.model.resources import TrainingLimits, check_training_resources
from bcp_core.model.warm_start import check_start

if TYPE_CHECKING:  # the runner imports TensorFlow: loaded when a run starts
    from bcp_core.data.matching import MatchResult
    from bcp_core.model.training import TrainResult

#: Ray options a multi-worker run takes, with their defaults.
DEFAULT_WORKERS, DEFAULT_CPUS_PER_WORKER = 2, 1


@dataclass(frozen=True)
class TrainRequest:
    """One training run: the settings, where the data is, where the bundle goes, and how the
    run is spread.

    Attributes:
        cfg: the model and training settings (checked by :meth:`check`).
        data_root: the data root the run reads (already resolved by the caller).
        out_dir: the bundle folder to write.
        distribute: one of ``config.DISTRIBUTE_MODES``.
        workers, ray_address, gpus_per_worker, cpus_per_worker: ``multiworker`` only.
        weights_cache: where converted pretrained weights are cached (None: not cached).
        image_cache: where prepared images are kept between epochs and runs
            (:mod:`bcp_core.imaging.cache`; None: every read decodes the file).
        limits: what the server lets the run take (the entry points pass
            :func:`bcp_core.settings.training_limits`; default: the defaults).
        label: the run's name and note, written with its bundle from the first epoch kept
            (checked when made: :class:`~bcp_core.model.meta.RunLabel`).
    """

    cfg: TrainConfig
    data_root: Path
    out_dir: Path
    distribute: str = "none"
    workers: int | None = None
    ray_address: str | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: int | None = None
    weights_cache: Path | None = None
    image_cache: CacheSettings | None = None
    limits: TrainingLimits = field(default_factory=TrainingLimits)
    label: RunLabel = NO_LABEL

    def check(self) -> TrainRequest:
        """Return self, or refuse settings that cannot run, before any data is read.

        Raises:
            UserError: a bad setting, Ray options without a multi-worker run, a trained model
                to start from that does not fit the run (:mod:`bcp_core.model.warm_start`), or
                a run that needs more memory or bundle room than the server allows.
        """
        self.cfg.validate()
        if self.distribute not in DISTRIBUTE_MODES:
            raise UserError(
                f"Unknown way to spread training {self.distribute!r}; choose one of: "
                f"{', '.join(DISTRIBUTE_MODES)}."
            )
        if self.distribute == "multiworker" and self.cfg.members > 1:
            raise UserError(
                "An averaging run (more than one run) cannot train on the Ray cluster yet; "
                "choose one run, or train the runs here and average them."
            )
        if self.distribute != "multiworker":
            for option in ("workers", "ray_address", "gpus_per_worker", "cpus_per_worker"):
                if getattr(self, option) is not None:
                    name = "--" + option.replace("_", "-")
                    raise UserError(f"{name} works with --distribute multiworker only.")
        check_start(self.cfg)  # the model it starts from, if any, fits it
        check_training_resources(self.cfg, self.out_dir, self.limits)
        return self


def bundle_name(cfg: TrainConfig, when: datetime | None = None) -> str:
    """The folder name of a run's bundle: its start time and model (``20261202-071128-...``)."""
    return f"{(when or datetime.now()):%Y%m%d-%H%M%S}-{cfg.model}"


def read_training_data(
    request: TrainRequest, match: MatchResult | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The manifest to train on and, for ``cfg.metadata_columns``, their values per image.

    The workbook values are checked for leaks of the label on the run's own training split
    before anything trains (the runner checks again).

    Raises:
        UserError: an unreadable data root, missing columns, or a column that leaks the label.
    """
    from bcp_core.data.datasource import read_data_root

    match = read_data_root(request.data_root) if match is None else match
    cfg = request.cfg
    if not cfg.metadata_columns:
        return match.manifest, None
    from bcp_core.data.attributes import metadata_frame
    from bcp_core.model.columns import check_leakage
    from bcp_core.model.training import plan_split

    files = match.manifest["path"].astype(str).tolist()
    values = metadata_frame(request.data_root, match, files, cfg.metadata_columns)
    split, _ = plan_split(match.manifest, cfg)
    in_train = (split == "train").to_numpy()
    check_leakage(values[in_train], match.manifest["label"][in_train].astype(int).tolist())
    return match.manifest, values


def run_training(
    request: TrainRequest,
    manifest: pd.DataFrame,
    metadata: pd.DataFrame | None = None,
    *,
    on_event=None,
    stop_event: threading.Event | None = None,
) -> TrainResult:
    """Train as ``request`` says, on ``manifest`` (and ``metadata``), and write the bundle.

    Args:
        request: the run (checked here again).
        manifest, metadata: from :func:`read_training_data`.
        on_event: receives the run's :mod:`bcp_core.model.events`.
        stop_event: set it to end the run at the next batch.
    """
    from bcp_core.model import pretrained

    request.check()
    pretrained.set_cache_dir(request.weights_cache)
    sink = on_event or _ignore
    if request.cfg.members > 1:
        return _train_members(request, manifest, sink, stop_event)
    return _train_one(request, manifest, metadata, sink, stop_event)


def _train_one(
    request: TrainRequest,
    manifest: pd.DataFrame,
    metadata: pd.DataFrame | None,
    sink,
    stop_event: threading.Event | None,
) -> TrainResult:
    """One run, in this process or on the Ray cluster."""
    if request.distribute == "multiworker":
        from bcp_core.model.ray_train import train_on_ray

        return train_on_ray(
            manifest,
            request.cfg,
            request.out_dir,
            workers=DEFAULT_WORKERS if request.workers is None else request.workers,
            address=request.ray_address,
            gpus_per_worker=request.gpus_per_worker or 0.0,
            cpus_per_worker=request.cpus_per_worker or DEFAULT_CPUS_PER_WORKER,
            on_event=sink,
            stop_event=stop_event,
            metadata=metadata,
            label=request.label,
            limits=request.limits,
            image_cache=request.image_cache,
        )
    from bcp_core.model.strategy import local_distribution
    from bcp_core.model.training import train_model

    return train_model(
        manifest,
        request.cfg,
        request.out_dir,
        on_event=sink,
        stop_event=stop_event,
        distribution=local_distribution(request.distribute),
        metadata=metadata,
        label=request.label,
        limits=request.limits,
        image_cache=request.image_cache,
    )


def _ignore(event: TrainingEvent) -> None:
    return None


def member_dir(out_dir: Path, member: int) -> Path:
    """Where the ``member``-th run of an averaging run writes its bundle: the run's own
    folder for the first (so a stopped or failed run still leaves one model there), a hidden
    folder beside it for the others (not listed as bundles; removed when the run ends)."""
    return out_dir if member == 1 else out_dir.with_name(f".{out_dir.name}.member-{member}")


def _remove_members(out_dir: Path, members: int) -> None:
    for member in range(2, members + 1):
        shutil.rmtree(member_dir(out_dir, member), ignore_errors=True)


def _train_members(
    request: TrainRequest,
    manifest: pd.DataFrame,
    sink,
    stop_event: threading.Event | None,
) -> TrainResult:
    """An averaging run (``cfg.members`` > 1): the runs of :meth:`TrainConfig.member_configs`
    one after another, then their mean written over the first one's bundle.

    Stopped during a later run, the runs finished before it are averaged (two or more) or the
    first is kept alone; a failure leaves the first run's bundle, if it was written. The hidden
    folders of the other runs are removed either way.
    """
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.ensemble import check_members, write_average
    from bcp_core.model.training import TrainResult

    cfg, out = request.cfg, request.out_dir
    configs = cfg.member_configs()
    _remove_members(out, len(configs))  # left by a killed process
    results: list[TrainResult] = []
    try:
        for k, member_cfg in enumerate(configs, start=1):
            sink(MemberStarted(k, len(configs), member_cfg.seed))
            one = replace(request, cfg=member_cfg, out_dir=member_dir(out, k))
            result = _train_one(one, manifest, None, sink, stop_event)
            if result.status == "stopped" or result.bundle is None:
                if k == 1:
                    return result
                break
            results.append(result)
        stopped = len(results) < len(configs)
        if len(results) == 1:
            return replace(results[0], status="stopped")
        paths = [member_dir(out, k) for k in range(1, len(results) + 1)]
        bundles = [load_bundle(path, with_model=False) for path in paths]
        check_members(bundles)
        label = request.label if request.label != NO_LABEL else None
        names = [f"run {k} of {len(configs)}" for k in range(1, len(results) + 1)]
        # the run's own settings (its seed, its split seed if given), with what the runner
        # added to the first run's (how it was spread)
        settings = set(TrainConfig.__dataclass_fields__)
        added = {k: v for k, v in (bundles[0].meta.training or {}).items() if k not in settings}
        training = {**cfg.to_dict(), **added, "members": len(results)}
        status = "stopped" if stopped else "completed"
        sink(Phase("writing"))
        # over run 1's bundle, atomically: its files are read before the mean is written
        combined = write_average(
            bundles, out, label=label, names=names, training=training, status=status
        )
    finally:
        _remove_members(out, len(configs))
    return TrainResult(
        bundle=out,
        epochs_run=sum(r.epochs_run for r in results),
        best_epoch=0,
        status=status,
        metrics=combined.metrics,
        threshold=combined.threshold,
        split=results[0].split,
        read_failures={k: v for r in results for k, v in r.read_failures.items()},
        members=combined.members,
        started_from=results[0].started_from,
    )
