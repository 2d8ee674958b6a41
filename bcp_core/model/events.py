"""What a training run tells its watchers: typed progress events.

The runner passes each event to the ``on_event`` callable it was given; the dashboard's job
object and the CLI's progress bar read their attributes. Events are frozen, so a watcher on
another thread can keep them without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module stays free of heavy imports for the CLI
    from bcp_core.model.meta import SplitInfo


@dataclass(frozen=True)
class Started:
    """Training is about to begin: the split and the settings it runs with."""

    epochs: int
    steps: int
    split: SplitInfo
    config: dict[str, Any]


@dataclass(frozen=True)
class BatchEnded:
    """A training step ended (sent at most twice a second, and at each epoch's last step)."""

    epoch: int
    epochs: int
    batch: int
    steps: int
    loss: float | None
    eta_s: float


@dataclass(frozen=True)
class EpochEnded:
    """An epoch ended and the validation split was scored.

    Attributes:
        metrics: the epoch's Keras logs: ``loss``, ``roc_auc``, ``pr_auc``, ``recall``,
            ``precision`` on training batches and ``val_loss``, ``val_roc_auc``, ``val_pr_auc``,
            ``val_recall``, ``val_precision`` on the validation patients (None where undefined).
    """

    epoch: int
    epochs: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    eta_s: float = float("nan")
    elapsed_s: float = 0.0

    def value(self, name: str) -> float | None:
        """One metric of the epoch, None when absent or undefined."""
        return self.metrics.get(name)


@dataclass(frozen=True)
class Phase:
    """What the run is doing between training steps, so a watcher never sees a silent bar.

    Attributes:
        name: ``"preparing"`` (reading and splitting the data, building the model),
            ``"scoring"`` (predicting the validation split after an epoch) or ``"writing"``
            (saving the bundle).
        done, total: progress within the phase (batches scored), 0 when not counted.
    """

    name: str
    epoch: int = 0
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class MemberStarted:
    """A run that averages several (``TrainConfig.members``) begins its ``member``-th of
    ``members`` runs, with its own ``seed``; the events up to the next one are that run's
    (its epochs count from 1 again, and a ``Finished`` ends it)."""

    member: int
    members: int
    seed: int


@dataclass(frozen=True)
class Finished:
    """The run ended: how, with which epoch's weights, and where the bundle is."""

    status: str
    epochs_run: int
    best_epoch: int
    bundle: str | None


TrainingEvent = Started | BatchEnded | EpochEnded | Phase | MemberStarted | Finished
