"""Multi-worker training on a Ray cluster (``train --distribute multiworker``).

Ray Train's ``TensorflowTrainer`` starts N worker processes and gives each a ``TF_CONFIG``;
each worker builds ``MultiWorkerMirroredStrategy`` and runs
:func:`bcp_core.model.training.train_model`, the one trainer, with its
:class:`~bcp_core.model.strategy.Distribution` (custom step, sharded pipeline). The chief
(worker 0) writes the bundle, atomically as always, and sends its progress events and the final
result back to the caller through a Ray queue, so the CLI's progress bar and the training
page's live charts work as in one process.

Every worker reads the images and writes nothing: the data root and the bundle folder must be
at the same path on every node (a shared filesystem). A worker that dies ends the run with a
:class:`~bcp_core.errors.UserError`; the bundle folder then holds the best epoch written
before, complete, or nothing.

Ray is an optional extra (``requirements-scale.txt``): it is imported only inside functions.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.imaging.cache import CacheSettings
from bcp_core.model.files import META_FILE
from bcp_core.model.meta import NO_LABEL, RunLabel
from bcp_core.model.ray_cluster import SCALE_HINT, ray_connection
from bcp_core.model.resources import TrainingLimits, check_training_resources
from bcp_core.values import is_whole_number


def _import_ray_train():
    try:
        import ray
        import ray.train
        import ray.train.tensorflow
        from ray.util.queue import Queue
    except ImportError as exc:
        raise UserError(
            f"Multi-worker training needs Ray Train, which is not installed: {SCALE_HINT}."
        ) from exc
    return ray, Queue


def _worker_main(config: dict) -> None:
    """One worker of the run (runs in a Ray Train worker process)."""
    import ray.train

    from bcp_core.model.strategy import multiworker_distribution
    from bcp_core.model.training import train_model

    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    distribution = multiworker_distribution(rank, size)  # before any other TensorFlow op
    events, control = config["events"], config["control"]
    manifest = config["manifest"]
    cfg = TrainConfig(**config["cfg"])
    cfg.image_size = tuple(cfg.image_size)  # type: ignore[assignment]

    def emit(event) -> None:
        events.put(("event", event))

    stop = threading.Event()
    if distribution.is_chief:  # a stop asked for by the caller reaches the chief's loop
        threading.Thread(target=_wait_for_stop, args=(control, stop), daemon=True).start()
    try:
        result = train_model(
            manifest,
            cfg,
            Path(config["out"]),
            on_event=emit if distribution.is_chief else None,
            stop_event=stop,
            distribution=distribution,
            metadata=config["metadata"],
            label=config["label"],
            limits=config["limits"],
            image_cache=config["image_cache"],
        )
    finally:
        stop.set()  # ends the waiting thread
    if distribution.is_chief:
        events.put(("result", result))


def _wait_for_stop(control, stop: threading.Event) -> None:
    """Set ``stop`` when the caller puts "stop" on ``control``; return when the run ends."""
    from ray.exceptions import RayError
    from ray.util.queue import Empty

    while not stop.is_set():
        try:
            if control.get(timeout=0.5) == "stop":
                stop.set()
        except Empty:
            continue
        except RayError:  # the queue is gone: the caller has finished with the run
            return


def train_on_ray(
    manifest: pd.DataFrame,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    workers: int = 2,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: int = 1,
    on_event=None,
    stop_event: threading.Event | None = None,
    metadata: pd.DataFrame | None = None,
    label: RunLabel = NO_LABEL,
    limits: TrainingLimits | None = None,
    image_cache: CacheSettings | None = None,
):
    """Train on ``workers`` Ray workers; the chief writes the bundle to ``out_dir``.

    Args:
        manifest: the manifest; its paths must be readable at the same path on every worker.
        cfg: the run's settings (``batch_size`` is the global batch; see
            :mod:`bcp_core.model.strategy`).
        out_dir: the bundle folder (on storage the chief's node can write and you can read).
        workers: training processes, one CPU (and ``gpus_per_worker`` GPUs) each.
        address: a running cluster (``auto`` or ``HOST:PORT``); None: the cluster this
            process is connected to, else a new one on this machine for the run.
        gpus_per_worker: GPUs each worker asks Ray for (0: CPU only).
        cpus_per_worker: CPUs each worker asks Ray for: its image pipeline runs on them (a
            GPU worker needs many to be kept busy; README, "When one machine is not enough").
        on_event: receives the chief's :mod:`bcp_core.model.events`, in this process.
        stop_event: set it to stop the run after the current step (all workers stop there
            together); the bundle keeps the best epoch, as in one process.
        metadata: the workbook values of ``cfg.metadata_columns`` (see ``train_model``).
        label: the run's name and note, written with the bundle.
        limits: what the server lets the run take (see ``train_model``; None: the defaults),
            checked here and again by the chief with the same values.
        image_cache: where every worker keeps prepared images (see ``train_model``): a
            folder at the same path on each node (workers on one node share it).

    Returns:
        The chief's :class:`bcp_core.model.training.TrainResult`.

    Raises:
        UserError: Ray missing, a bad setting, or a worker that failed or died (the bundle
            folder keeps what was complete before).
    """
    from bcp_core.model.strategy import Distribution
    from bcp_core.model.training import check_writable

    if not is_whole_number(workers) or workers < 1:
        raise UserError(
            f"The number of workers must be a whole number of at least 1, got {workers!r}."
        )
    if not 0 <= float(gpus_per_worker) <= 64:
        raise UserError(f"GPUs per worker must be from 0 to 64, got {gpus_per_worker!r}.")
    if not is_whole_number(cpus_per_worker):
        raise UserError(f"CPUs per worker must be a whole number, got {cpus_per_worker!r}.")
    if not 1 <= cpus_per_worker <= 512:
        raise UserError(f"CPUs per worker must be from 1 to 512, got {cpus_per_worker}.")
    cfg.validate()
    Distribution("multiworker", None, 0, workers).worker_batch(cfg.batch_size)
    out = Path(out_dir).resolve()
    limits = limits or TrainingLimits()
    check_training_resources(cfg, out, limits)
    check_writable(out.parent)
    ray, Queue = _import_ray_train()
    hooks = (on_event, stop_event or threading.Event())
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if gpus_per_worker:
        resources["GPU"] = float(gpus_per_worker)
    with ray_connection(ray, address):
        data = (manifest, metadata, label, limits, image_cache)
        return _run(ray, Queue, data, cfg, out, workers, resources, hooks)


def _run(ray, Queue, data, cfg, out, workers, resources, hooks):
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.tensorflow import TensorflowTrainer

    on_event, stop_event = hooks
    events, control = Queue(), Queue()
    found: dict[str, Any] = {}
    stop = threading.Event()

    def relay() -> None:  # the chief's events, handed to on_event in this process
        asked = False
        while not stop.is_set() or not events.empty():
            if stop_event.is_set() and not asked:
                control.put("stop")
                asked = True
            try:
                kind, item = events.get(timeout=0.2)
            except (queue.Empty, ray.util.queue.Empty):
                continue
            if kind == "result":
                found["result"] = item
            elif on_event is not None:
                on_event(item)

    with tempfile.TemporaryDirectory(prefix="bcp-ray-train-") as storage:
        trainer = TensorflowTrainer(
            _worker_main,
            train_loop_config={
                "manifest": data[0],
                "metadata": data[1],
                "label": data[2],
                "limits": data[3],
                "image_cache": data[4],
                "cfg": asdict(cfg),  # every setting: a missing one would take the recipe's
                "out": str(out),
                "events": events,
                "control": control,
            },
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu="GPU" in resources,
                resources_per_worker=resources,
            ),
            run_config=RunConfig(
                name="bcp-train",
                storage_path=storage,
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        relayer = threading.Thread(target=relay, daemon=True)
        relayer.start()
        try:
            trainer.fit()
        except TrainingFailedError as exc:
            raise UserError(_failure_sentence(exc, out)) from None
        finally:
            stop.set()
            relayer.join(timeout=30)
            for channel in (events, control):
                ray.kill(channel.actor, no_restart=True)
    if "result" not in found:
        raise UserError("The training workers ended without a result; see the Ray logs.")
    return found["result"]


def _cause(error: BaseException) -> str:
    """A short reason for a worker's failure: "it died" for a lost process, else the error."""
    name = type(error).__name__
    if "Died" in name or "Unavailable" in name or "HealthCheck" in name:
        return "its process died"
    first = str(error).strip().splitlines()
    return f"{name}: {first[-1][:200]}" if first else name


def _failure_sentence(exc: BaseException, out: Path) -> str:
    """One sentence for a failed run: which worker, why, and what the bundle folder holds."""
    failures = getattr(exc, "worker_failures", None) or {}
    parts = []
    for rank, error in sorted(failures.items()):
        user = isinstance(error, UserError) and error.args
        reason = str(error.args[0]).rstrip(".") if user else _cause(error)
        parts.append(f"worker {rank}: {reason}")
    what = "; ".join(parts) if parts else str(exc).splitlines()[0]
    kept = (
        f"the bundle in {out} is the best epoch written before the failure"
        if (out / META_FILE).is_file()
        else "no bundle was written"
    )
    return (
        f"Multi-worker training failed ({what}), so the run was stopped; {kept}. "
        "Check that every worker can read the data root, then run it again."
    )
