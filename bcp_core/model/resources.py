"""What a training run may take from the server: memory, bundle slots, backbone weight files.

Checked before a run starts (by :func:`bcp_core.model.training.train_model`, and by the
training page and the CLI before they read any data), so a run that cannot fit is refused with a
sentence instead of exhausting the machine. Nothing here imports TensorFlow, and nothing here
reads a setting: the limits come as a :class:`TrainingLimits` and the weights folder as a path,
which the entry points build from the ``BCP_*`` environment (:mod:`bcp_core.settings`); the
refusals name the setting that changes each limit.

**Memory estimate.** ``BASE_BYTES + MARGIN x (pixels x (image_bytes x batch + fixed_bytes) +
weights x BYTES_PER_WEIGHT)``, with ``pixels`` = height x width and the two per-pixel figures
of the model's ``ModelSpec``. Peak resident memory of short real runs (``bench/bench_memory.py``:
3 steps, validation scoring and the bundle write; GB = 10^9 bytes) gave them:

=================  =====  =====  ======  ===========  ========
model              side   batch  peak    image_bytes  fixed
=================  =====  =====  ======  ===========  ========
default_cnn        256    16     1.21    168          166
default_cnn        512    16     1.77
default_cnn        256    8      1.10    (earlier run)
default_cnn        768    8      1.89    (earlier run)
seed_cnn           256    16     2.10    423          12,519
seed_cnn           512    16     5.89
seed_cnn           512    4      4.56
efficientnet_lite0 256    16     2.01    386          6,026
  (fine-tuned)     512    16     4.41
                   512    4      3.19
resnet50           224    8      3.15    (scaled)
resnet50           448    8      6.2     (earlier run)
=================  =====  =====  ======  ===========  ========

``image_bytes`` grows with the batch (activations and their gradients); ``fixed_bytes`` does not
(seed_cnn's Flatten-Dense weights, 256 per input pixel, with their gradients, Adam's moments
and the copies the bundle write makes; workspace that grows with the input). Models not measured
take the figures of the measured model of their kind scaled by their layers' outputs per input
pixel (``bench_memory.py --activations``): mil_cnn from default_cnn, the backbones from
efficientnet_lite0 fine-tuned (frozen backbones need less: the estimate is an upper bound for
them). ``BYTES_PER_WEIGHT`` (46) is seed_cnn's measured cost per weight. ``MARGIN`` (1.25) puts
every measured peak under its estimate (by 1.05 to 1.5 times): a run that fits the budget by
the estimate does not exceed it on the machines measured. It is there to refuse settings that
cannot fit (4096 x 4096 at batch 512 needs about 1,800 GB), not to plan to the last GB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bcp_core.config import (
    WEIGHTS_DEFAULT,
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    TrainConfig,
    model_spec,
)
from bcp_core.errors import UserError
from bcp_core.model.files import META_FILE

#: TensorFlow, the input pipeline and the model code: the measured lines at zero pixels (0.84
#: to 1.21 GB).
BASE_BYTES = 1.25e9
#: Training memory per weight (weights, gradients, Adam's moments, the bundle write's copies).
BYTES_PER_WEIGHT = 46
#: A moving average of the weights (``weight_ema``): the average (float32) and the copy of the
#: weights it reads after each step.
AVERAGE_BYTES_PER_WEIGHT = 8
#: Safety factor on everything above the base (see the module docstring).
MARGIN = 1.25
#: Suffixes of the backbone weight files the training page offers.
WEIGHT_SUFFIXES = (".h5",)

#: The settings that change the limits below, named in refusals (read by bcp_core.settings).
ENV_TRAIN_MEMORY_GB = "BCP_TRAIN_MEMORY_GB"
ENV_MAX_BUNDLES = "BCP_MAX_BUNDLES"
ENV_MAX_BUNDLES_GB = "BCP_MAX_BUNDLES_GB"
ENV_WEIGHTS_DIR = "BCP_WEIGHTS_DIR"
#: A gigabyte of the memory limits and messages (10^9 bytes).
GB = 10**9
#: Share of the machine's memory a training run may need unless the server says otherwise.
DEFAULT_MEMORY_SHARE = 0.6
#: Assumed machine memory where it cannot be read.
FALLBACK_MEMORY_BYTES = 8 * 10**9
DEFAULT_MAX_BUNDLES = 50
DEFAULT_MAX_BUNDLES_GB = 20


def machine_memory_bytes() -> int:
    """Memory of this machine, or of its container where a cgroup limit is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = FALLBACK_MEMORY_BYTES
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def default_memory_budget() -> int:
    """Most memory a training run may need by default: 60% of the machine's."""
    return int(DEFAULT_MEMORY_SHARE * machine_memory_bytes())


@dataclass(frozen=True)
class TrainingLimits:
    """What this server lets one training run take.

    The entry points build it from the settings (:func:`bcp_core.settings.training_limits`);
    made here without arguments it holds the defaults, as with no setting.

    Attributes:
        memory_bytes: the most memory a run may need by its estimate (``BCP_TRAIN_MEMORY_GB``;
            default: 60% of the machine's).
        max_bundles: the most bundles the bundles folder may hold (``BCP_MAX_BUNDLES``; 50).
        max_bundles_bytes: the most bytes the bundles folder may hold (``BCP_MAX_BUNDLES_GB``;
            20 GB).
    """

    memory_bytes: int = field(default_factory=default_memory_budget)
    max_bundles: int = DEFAULT_MAX_BUNDLES
    max_bundles_bytes: int = DEFAULT_MAX_BUNDLES_GB * GB


def estimate_training_bytes(cfg: TrainConfig) -> float:
    """Rough peak memory of training ``cfg`` (see the module's docstring)."""
    spec = model_spec(cfg.model)
    height, width = (int(v) for v in cfg.image_size)
    pixels = height * width
    per_pixel = spec.bytes_per_pixel * int(cfg.batch_size) + spec.fixed_bytes_per_pixel
    per_weight = BYTES_PER_WEIGHT + (AVERAGE_BYTES_PER_WEIGHT if cfg.weight_ema else 0)
    return float(BASE_BYTES + MARGIN * (pixels * per_pixel + spec.weights_m * 1e6 * per_weight))


def _gb(value: float) -> str:
    gb = value / GB
    return f"{gb:,.1f}" if gb < 100 else f"{gb:,.0f}"


def check_training_memory(cfg: TrainConfig, limits: TrainingLimits) -> float:
    """Return the estimate, or refuse ``cfg`` when it exceeds ``limits.memory_bytes``.

    Raises:
        UserError: with the estimate, the budget and what to change.
    """
    need = estimate_training_bytes(cfg)
    allowed = limits.memory_bytes
    if need > allowed:
        height, width = cfg.image_size
        raise UserError(
            f"Training {cfg.model} at {height} x {width} with batch size {cfg.batch_size} needs "
            f"about {_gb(need)} GB of memory, more than the {_gb(allowed)} GB this server allows "
            f"for training ({ENV_TRAIN_MEMORY_GB}); choose a smaller batch size or "
            "image size."
        )
    return need


def count_bundles(folder: Path) -> int:
    """Bundles (sub-folders holding a ``bundle.json``) directly below ``folder``; hidden
    folders (the runs of an averaging run while it trains) are not counted, nor listed."""
    try:
        return sum(
            1 for p in folder.iterdir() if not p.name.startswith(".") and (p / META_FILE).is_file()
        )
    except OSError:
        return 0


#: A saved model holds each weight three times (the weights and Adam's two moments), float32.
BUNDLE_BYTES_PER_WEIGHT = 3 * 4
#: seed_cnn's Flatten-Dense weights per input pixel (counted: 228 between 96 and 192 px).
SEED_CNN_WEIGHTS_PER_PIXEL = 256


def estimate_bundle_bytes(cfg: TrainConfig) -> float:
    """About how many bytes the bundle of a run of ``cfg`` takes (its model file dominates);
    for a run averaging ``cfg.members`` runs, the most it holds at once: each run's bundle and
    the averaged one, which nests them all."""
    weights = model_spec(cfg.model).weights_m * 1e6
    if cfg.model == "seed_cnn":
        weights += int(cfg.image_size[0]) * int(cfg.image_size[1]) * SEED_CNN_WEIGHTS_PER_PIXEL
    members = int(cfg.members)
    return weights * BUNDLE_BYTES_PER_WEIGHT * (1 if members == 1 else 2 * members)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files below ``folder`` (0 when it cannot be read)."""
    total = 0
    try:
        for path in folder.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
            except OSError:
                continue
    except OSError:
        return 0
    return total


def check_bundle_quota(
    out_dir: str | Path,
    limits: TrainingLimits,
    cfg: TrainConfig | None = None,
    *,
    need_bytes: float | None = None,
) -> None:
    """Refuse a new bundle at ``out_dir`` when its folder already holds ``limits.max_bundles``
    bundles, or when the bundle does not fit in the bytes the folder may hold
    (``limits.max_bundles_bytes``): ``need_bytes`` when given, else about what a run of ``cfg``
    writes (not checked without either).

    Replacing an existing bundle takes no new room and is allowed.

    Raises:
        UserError: saying how to free room.
    """
    out_dir = Path(out_dir)
    limit = limits.max_bundles
    if (out_dir / META_FILE).is_file():
        return
    if need_bytes is None and cfg is not None:
        need_bytes = estimate_bundle_bytes(cfg)
    if need_bytes is not None:
        allowed, need = limits.max_bundles_bytes, need_bytes
        held_bytes = folder_bytes(out_dir.parent)
        if held_bytes + need > allowed:
            raise UserError(
                f"This bundle would take about {_gb(need)} GB and the bundles folder "
                f"already holds {_gb(held_bytes)} GB of the {_gb(allowed)} GB this server keeps "
                f"({ENV_MAX_BUNDLES_GB}); choose a smaller model or image size, or "
                "delete the bundles of runs you no longer need, then start again."
            )
    held = count_bundles(out_dir.parent)
    if held >= limit:
        raise UserError(
            f"The bundles folder already holds {held} bundles, the most this server keeps "
            f"({ENV_MAX_BUNDLES} = {limit}); delete the bundles of runs you no longer "
            "need (each is one sub-folder of the bundles folder) or raise the limit, then start "
            "again."
        )


def check_training_resources(cfg: TrainConfig, out_dir: str | Path, limits: TrainingLimits) -> None:
    """Both checks above, before a run reads any data.

    Raises:
        UserError: for a run that needs more memory than allowed, or a full bundles folder.
    """
    check_training_memory(cfg, limits)
    check_bundle_quota(out_dir, limits, cfg)


def weight_files(folder: Path) -> list[str]:
    """Names of the backbone weight files in ``folder`` (the server's weights folder)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p.name
        for p in entries
        if p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith(".") and p.is_file()
    ]


def weights_setting(choice: str, model: str, folder: Path) -> str:
    """The ``TrainConfig.weights`` value of a choice among default (``model``'s own), none,
    imagenet and the weight files of ``folder`` (the server's weights folder).

    Raises:
        UserError: for anything else (a path typed in, a file no longer there).
    """
    if choice == WEIGHTS_DEFAULT:
        return model_spec(model).default_weights
    if choice in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        return choice
    if choice not in weight_files(folder):
        raise UserError(
            f"{choice!r} is not a weights file of this server; choose none, imagenet or one of "
            f"the files in its weights folder ({ENV_WEIGHTS_DIR})."
        )
    return str(folder / choice)


def local_gpu_count() -> int:
    """GPUs of this machine, counted without TensorFlow (NVIDIA device files on Linux).

    The training page offers ``mirrored`` training only where this is above 1; a machine whose
    GPUs this does not see can still use it through the CLI (``train --distribute mirrored``).
    """
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())
