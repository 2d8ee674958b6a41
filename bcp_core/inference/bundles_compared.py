"""Compare bundles: read each bundle's metadata and validation predictions, then
:func:`bcp_core.evaluation.compare.compare_runs` (the ``compare`` command and the Compare page);
and their training histories, to overlay (:func:`training_curves`, the Compare page).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bcp_core.evaluation import intervals
from bcp_core.evaluation.compare import Comparison, RunCurves, RunInput, compare_runs
from bcp_core.model.bundle import Bundle, load_bundle
from bcp_core.model.meta import BundleMeta
from bcp_core.values import is_whole_number


def flat_settings(meta: BundleMeta) -> dict[str, Any]:
    """A bundle's settings as ``model_name``, ``training.<key>`` and ``preprocessing.<key>``."""
    out: dict[str, Any] = {"model_name": meta.model_name}
    out.update({f"training.{k}": _plain(v) for k, v in meta.training.items()})
    out.update({f"preprocessing.{k}": _plain(v) for k, v in meta.preprocessing.to_dict().items()})
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run_input(bundle: Bundle) -> RunInput:
    """What :func:`compare_runs` needs of one bundle (named by its folder)."""
    return RunInput(
        name=Path(bundle.path).name,
        predictions=bundle.val_predictions,
        threshold=bundle.threshold,
        settings=flat_settings(bundle.meta),
        data_fingerprint=bundle.meta.data_fingerprint,
    )


def compare_bundles(
    paths: list[str | Path], *, n_boot: int = intervals.DEFAULT_N_BOOT, seed: int = 0
) -> Comparison:
    """Compare the bundles at ``paths`` (metadata and validation predictions; no model loaded).

    Raises:
        UserError: a bundle that cannot be read, or runs that cannot be compared.
    """
    bundles = [load_bundle(p, with_model=False) for p in paths]
    return compare_runs([run_input(b) for b in bundles], n_boot=n_boot, seed=seed)


def run_titles(bundles: Sequence[Bundle]) -> list[str]:
    """How each run is shown beside the others: its name, else its bundle folder's name; a name
    that several of them share is followed by the folder's name in brackets."""
    names = [b.meta.label.name for b in bundles]
    shared = {name for name, count in Counter(names).items() if name and count > 1}
    return [
        f"{name} ({Path(b.path).name})" if name in shared else name or Path(b.path).name
        for name, b in zip(names, bundles)
    ]


def training_curves(paths: Sequence[str | Path]) -> list[RunCurves]:
    """The per-epoch history of the bundles at ``paths`` (``history.csv``; no model loaded),
    each named by :func:`run_titles` and with the epoch it keeps; a model averaging runs
    (:mod:`bcp_core.model.ensemble`) gives one history per run, titled with the run.

    Raises:
        UserError: a bundle that cannot be read.
    """
    bundles = [load_bundle(p, with_model=False) for p in paths]
    out: list[RunCurves] = []
    for title, b in zip(run_titles(bundles), bundles):
        if b.meta.members and "member" in b.history:
            # a model averaging runs: each run's own curves, and the epoch it contributes
            for k, member in enumerate(b.meta.members, start=1):
                own = b.history[b.history["member"] == k].drop(columns="member")
                out.append(RunCurves(f"{title}: {member.bundle}", own, member.best_epoch))
        else:
            out.append(RunCurves(title, b.history, _epoch(b.meta.metrics.best_epoch)))
    return out


def _epoch(value: object) -> int | None:
    """An epoch number as stored, or None for anything else."""
    return value if is_whole_number(value) else None
