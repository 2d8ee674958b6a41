"""What a training run may take from the server: memory, bundle slots, backbone weight files.

Checked before a run starts (by :func:`bcp_core.model.training.train_model`, and by the
training page and the CLI before they read any data), so a run that cannot fit is refused with a
sentence instead of exhausting the machine. Nothing here imports TensorFlow.

**Memory estimate.** ``BASE_BYTES + batch x height x width x bytes_per_pixel`` (the model's
``ModelSpec``; plus, for ``seed_cnn`` alone, its Flatten-Dense weights, which grow with the
image). The default CNN's figures are measured: peak resident memory of a short real run
(``bench/bench_memory.py``: 3 steps, validation scoring and the bundle write, batch 8) was 1.10
GB at 256 x 256 and 1.89 GB at 768 x 768, a line of 188 bytes per input pixel over a base of 1.0
GB (TensorFlow, the pipeline, the model). The other models scale that slope by the values their
layers output per input pixel (``bench_memory.py --activations``) against the default CNN's
43.7, about 4.3 bytes per value; measured as a check, ResNet50 at batch 8 peaked at 3.2 GB at
224 x 224 and 6.2 GB at 448 x 448, estimated 2.3 and 6.2 GB. It counts every backbone as trained
(an upper bound for frozen ones) and stays rough: it is there to refuse settings that cannot fit
(4096 x 4096 at batch 512 needs about 1,600 GB), not to plan to the last GB. GB here are 10^9
bytes.
"""

from __future__ import annotations

from pathlib import Path

from bcp_core import settings
from bcp_core.config import (
    WEIGHTS_DEFAULT,
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    TrainConfig,
    model_spec,
)
from bcp_core.errors import UserError
from bcp_core.model.files import META_FILE

#: TensorFlow, the input pipeline and a small model: the measured line at zero pixels.
BASE_BYTES = 1.0e9
#: Training memory per input pixel of one image in a batch: ``ModelSpec.bytes_per_pixel``
#: (default_cnn measured, the others scaled by their activations per pixel: seed_cnn 69.9,
#: mil_cnn 42.1, resnet50 752, vgg19 340, inceptionv3 351, efficientnetb0 508 against
#: default_cnn's 43.7).
#: seed_cnn's Dense layer has 256 weights per input pixel (128 units on a Flatten of 128 maps
#: at 1/8 of each side), each held four times (weight, gradient, Adam's two moments) as float32.
SEED_CNN_WEIGHT_BYTES_PER_PIXEL = 256 * 4 * 4
#: Suffixes of the backbone weight files the training page offers.
WEIGHT_SUFFIXES = (".h5",)


def estimate_training_bytes(cfg: TrainConfig) -> float:
    """Rough peak memory of training ``cfg`` (see the module's docstring)."""
    height, width = (int(v) for v in cfg.image_size)
    pixels = height * width
    total = BASE_BYTES + int(cfg.batch_size) * pixels * model_spec(cfg.model).bytes_per_pixel
    if cfg.model == "seed_cnn":
        total += pixels * SEED_CNN_WEIGHT_BYTES_PER_PIXEL
    return float(total)


def _gb(value: float) -> str:
    gb = value / settings.GB
    return f"{gb:,.1f}" if gb < 100 else f"{gb:,.0f}"


def check_training_memory(cfg: TrainConfig, budget: float | None = None) -> float:
    """Return the estimate, or refuse ``cfg`` when it exceeds ``budget`` (default: the setting).

    Raises:
        UserError: with the estimate, the budget and what to change.
    """
    need = estimate_training_bytes(cfg)
    allowed = settings.train_memory_budget_bytes() if budget is None else budget
    if need > allowed:
        height, width = cfg.image_size
        raise UserError(
            f"Training {cfg.model} at {height} x {width} with batch size {cfg.batch_size} needs "
            f"about {_gb(need)} GB of memory, more than the {_gb(allowed)} GB this server allows "
            f"for training ({settings.ENV_TRAIN_MEMORY_GB}); choose a smaller batch size or "
            "image size."
        )
    return need


def count_bundles(folder: Path) -> int:
    """Bundles (sub-folders holding a ``bundle.json``) directly below ``folder``."""
    try:
        return sum(1 for p in folder.iterdir() if (p / META_FILE).is_file())
    except OSError:
        return 0


#: A saved model holds each weight three times (the weights and Adam's two moments), float32.
BUNDLE_BYTES_PER_WEIGHT = 3 * 4
#: seed_cnn's Flatten-Dense weights per input pixel (counted: 228 between 96 and 192 px).
SEED_CNN_WEIGHTS_PER_PIXEL = 256


def estimate_bundle_bytes(cfg: TrainConfig) -> float:
    """About how many bytes the bundle of a run of ``cfg`` takes (its model file dominates)."""
    weights = model_spec(cfg.model).weights_m * 1e6
    if cfg.model == "seed_cnn":
        weights += int(cfg.image_size[0]) * int(cfg.image_size[1]) * SEED_CNN_WEIGHTS_PER_PIXEL
    return weights * BUNDLE_BYTES_PER_WEIGHT


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
    limit: int | None = None,
    cfg: TrainConfig | None = None,
    limit_bytes: int | None = None,
) -> None:
    """Refuse a new bundle at ``out_dir`` when its folder already holds ``limit`` bundles, or
    when the bundle ``cfg`` would write does not fit in what the folder may hold in bytes.

    Replacing an existing bundle takes no new room and is allowed.

    Raises:
        UserError: saying how to free room.
    """
    out_dir = Path(out_dir)
    limit = settings.max_bundles() if limit is None else limit
    if (out_dir / META_FILE).is_file():
        return
    if cfg is not None:
        allowed = settings.max_bundles_bytes() if limit_bytes is None else limit_bytes
        need, held_bytes = estimate_bundle_bytes(cfg), folder_bytes(out_dir.parent)
        if held_bytes + need > allowed:
            raise UserError(
                f"This run's bundle would take about {_gb(need)} GB and the bundles folder "
                f"already holds {_gb(held_bytes)} GB of the {_gb(allowed)} GB this server keeps "
                f"({settings.ENV_MAX_BUNDLES_GB}); choose a smaller model or image size, or "
                "delete the bundles of runs you no longer need, then start again."
            )
    held = count_bundles(out_dir.parent)
    if held >= limit:
        raise UserError(
            f"The bundles folder already holds {held} bundles, the most this server keeps "
            f"({settings.ENV_MAX_BUNDLES} = {limit}); delete the bundles of runs you no longer "
            "need (each is one sub-folder of the bundles folder) or raise the limit, then start "
            "again."
        )


def check_training_resources(cfg: TrainConfig, out_dir: str | Path) -> None:
    """Both checks above, before a run reads any data.

    Raises:
        UserError: for a run that needs more memory than allowed, or a full bundles folder.
    """
    check_training_memory(cfg)
    check_bundle_quota(out_dir, cfg=cfg)


def weight_files(folder: Path | None = None) -> list[str]:
    """Names of the backbone weight files in ``folder`` (default: the weights setting)."""
    folder = settings.weights_dir() if folder is None else folder
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p.name
        for p in entries
        if p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith(".") and p.is_file()
    ]


def weights_setting(choice: str, model: str, folder: Path | None = None) -> str:
    """The ``TrainConfig.weights`` value of a choice among default (``model``'s own), none,
    imagenet and the weight files.

    Raises:
        UserError: for anything else (a path typed in, a file no longer there).
    """
    folder = settings.weights_dir() if folder is None else folder
    if choice == WEIGHTS_DEFAULT:
        return model_spec(model).default_weights
    if choice in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        return choice
    if choice not in weight_files(folder):
        raise UserError(
            f"{choice!r} is not a weights file of this server; choose none, imagenet or one of "
            f"the files in its weights folder ({settings.ENV_WEIGHTS_DIR})."
        )
    return str(folder / choice)


def local_gpu_count() -> int:
    """GPUs of this machine, counted without TensorFlow (NVIDIA device files on Linux).

    The training page offers ``mirrored`` training only where this is above 1; a machine whose
    GPUs this does not see can still use it through the CLI (``train --distribute mirrored``).
    """
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())
