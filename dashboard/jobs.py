"""Training in a background thread, one run per server, followed by polling pages.

Streamlit's documented pattern for long work: the thread never calls ``st.*``; it appends
progress events to a job object that a page reads from a fragment that reruns every second.
A widget click reruns the page but leaves the thread alone, and Stop sets an event that the
training loop checks after every batch.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.events import (
    BatchEnded,
    EpochEnded,
    Finished,
    MemberStarted,
    Phase,
    Started,
    TrainingEvent,
)
from bcp_core.model.meta import NO_LABEL, RunLabel, SplitInfo
from bcp_core.runs import TrainRequest

if TYPE_CHECKING:  # the runner imports TensorFlow: loaded when a run starts, not with the page
    from bcp_core.model.training import TrainResult


@dataclass
class TrainingJob:
    """One training run and everything the page shows about it."""

    cfg: TrainConfig
    out_dir: Path
    owner: str  # the browser session that started it
    user: str = ""  # who started it ("local" or an e-mail): they, or an admin, may stop it
    started: float = field(default_factory=time.time)
    status: str = "starting"  # starting, running, completed, early_stopped, stopped, failed
    message: str = ""
    epochs: list[dict] = field(default_factory=list)
    last_batch: BatchEnded | None = None
    phase: Phase | None = Phase("preparing")  # None while training steps run
    split: SplitInfo | None = None
    result: TrainResult | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    distribute: str = "none"  # config.DISTRIBUTE_MODES; multiworker: settings.ray_address()
    metadata: pd.DataFrame | None = None  # workbook values of cfg.metadata_columns, per image
    data_root: Path = Path(".")  # the resolved data root the run reads
    label: RunLabel = NO_LABEL  # the run's name and note, written with its bundle
    member: int = 1  # a run averaging several (cfg.members): the one training now
    member_seeds: dict[int, int] = field(default_factory=dict)  # member -> its seed
    kept: dict[int, int] = field(default_factory=dict)  # finished member -> its kept epoch

    @property
    def request(self) -> TrainRequest:
        """The run as the application layer takes it (the server's settings read here)."""
        from bcp_core import settings

        multi = self.distribute == "multiworker"
        return TrainRequest(
            cfg=self.cfg, data_root=self.data_root, out_dir=self.out_dir,
            distribute=self.distribute, workers=settings.ray_workers() if multi else None,
            ray_address=settings.ray_address() if multi else None,
            weights_cache=settings.weights_dir(), image_cache=settings.image_cache(),
            limits=settings.training_limits(),
            label=self.label,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running")

    def on_event(self, event: TrainingEvent) -> None:
        """Receives the runner's progress events (called from the training thread)."""
        if isinstance(event, MemberStarted):
            self.member, self.last_batch, self.phase = event.member, None, Phase("preparing")
            self.member_seeds[event.member] = event.seed
        elif isinstance(event, Finished):
            self.kept[self.member] = event.best_epoch
        elif isinstance(event, Started):
            self.status, self.split, self.phase = "running", event.split, None
        elif isinstance(event, Phase):
            self.phase = event
        elif isinstance(event, BatchEnded):
            self.last_batch, self.phase = event, None
        elif isinstance(event, EpochEnded):
            self.epochs.append({
                "member": self.member, "epoch": event.epoch, **event.metrics,
                "eta_s": event.eta_s,
            })  # fmt: skip

    @property
    def members(self) -> int:
        """How many runs this run averages (1: a single run)."""
        return int(self.cfg.members)

    @property
    def total_epochs(self) -> int:
        """The most epochs the whole run takes (every member's)."""
        return int(self.cfg.epochs) * self.members

    def epochs_done(self) -> float:
        """Epochs finished so far, over every member, with the running one's share."""
        b = self.last_batch
        running = (b.batch / max(b.steps, 1)) if b is not None and self.running else 0.0
        own = sum(1 for row in self.epochs if row["member"] == self.member)
        return (self.member - 1) * int(self.cfg.epochs) + own + running

    def progress_text(self) -> str:
        """One line that says what the run is doing now, never a silent bar."""
        if not self.running:
            return self.status.replace("_", " ")
        if self.members == 1:
            return self._member_text()
        seed = self.member_seeds.get(self.member)
        seed_text = f" (seed {seed})" if seed is not None else ""
        return f"run {self.member} of {self.members}{seed_text}: {self._member_text()}"

    def _member_text(self) -> str:
        b = self.last_batch
        epoch = b.epoch if b else 0
        if self.phase is not None and self.phase.name == "preparing":
            return "preparing the data and the model"
        if self.phase is not None and self.phase.name == "scoring":
            done, total = self.phase.done, self.phase.total
            return f"epoch {self.phase.epoch}: scoring the validation images ({done}/{total})"
        if self.phase is not None and self.phase.name == "writing":
            if not self.phase.epoch:  # the mean of an averaging run's members
                return "writing the averaged model"
            return f"writing the bundle (best epoch so far: {self.phase.epoch})"
        if b is None:
            return "starting the first epoch"
        eta = _duration(b.eta_s) + (" in this run" if self.members > 1 else "")
        return f"epoch {epoch}/{self.cfg.epochs}: training, batch {b.batch}/{b.steps} · {eta}"

    def history_df(self, member: int | None = None) -> pd.DataFrame:
        """Per-epoch metrics so far (columns ``member``, ``epoch``, ``loss``, ``val_pr_auc``,
        ...); ``member``: that run's alone."""
        rows = self.epochs if member is None else [r for r in self.epochs if r["member"] == member]
        return pd.DataFrame(rows)

    def run(self, manifest: pd.DataFrame) -> None:
        """The thread's body: train, and record how it ended."""
        try:
            result = self._train(manifest)
            self.result = result
            self.status = result.status
        except UserError as exc:
            self.status, self.message = "failed", str(exc)
        except Exception as exc:  # the page must learn of any failure; the log keeps the trace
            traceback.print_exc()
            self.status, self.message = "failed", f"Training failed: {exc}"

    def _train(self, manifest: pd.DataFrame) -> TrainResult:
        from bcp_core.runs import run_training

        return run_training(
            self.request, manifest, self.metadata, on_event=self.on_event,
            stop_event=self.stop_event,
        )  # fmt: skip


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "time left: estimating"
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return "less than a minute left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min left" if hours else f"about {minutes} min left"


class JobRegistry:
    """The server's one training slot, shared by every session.

    A plain object of this module, not a Streamlit cache: a client can ask Streamlit to clear
    every cache, and the running job, its Stop and the one-run-at-a-time rule must survive that.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: TrainingJob | None = None

    def start(self, job: TrainingJob, manifest: pd.DataFrame) -> TrainingJob:
        """Start ``job`` unless another run is going on.

        Raises:
            UserError: when the slot is taken, with the other run's progress.
        """
        with self.lock:
            other = self.current
            if other is not None and other.running:
                done = int(other.epochs_done())
                raise UserError(
                    f"Another training run is in progress (epoch {done + 1} of "
                    f"{other.total_epochs}, model {other.cfg.model}); only one run at a time fits "
                    "this server. Try again when it has finished."
                )
            job.thread = threading.Thread(
                target=job.run, args=(manifest,), daemon=True, name="bcp-training"
            )
            self.current = job
            job.thread.start()
            return job


_REGISTRY = JobRegistry()


def registry() -> JobRegistry:
    """The registry of this server process (one for all sessions)."""
    return _REGISTRY
