"""Constants and configuration dataclasses: the one home for names and defaults.

Every sheet name, column name, folder spelling and default that more than one module
needs lives here, so the hospital layout is described in exactly one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bcp_core.errors import UserError
from bcp_core.values import is_number, is_whole_number

# --- Workbooks -------------------------------------------------------------------------

#: File names of the hospital's workbooks (matched case-insensitively in the data root).
COMBINED_WORKBOOK = "datacombined.xlsx"
VALIDATION_WORKBOOK = "data_validation_x.xlsx"
#: The user's intermediate exports, accepted instead of the workbooks (CSV or Excel inside).
CANCER_EXPORT = "CANCER.csv"
NON_CANCER_EXPORT = "NON CANCER.csv"

SHEET_CANCER = "Cancer"
SHEET_NON_CANCER = "Non-Cancer"
#: Name used for the validation workbook's rows in reports (it has a single sheet).
SHEET_VALIDATION = "validation"

COL_FILE = "InputFileName"
COL_DATE = "StudyDate"
COL_TIME = "StudyTime"
COL_PATIENT = "PatientID.x"
#: Column names accepted for the patient ID part of the key, in order of preference.
PATIENT_COLUMNS = ("PatientID.x", "PatientID", "PatientID.y")
KEY_COLUMNS = (COL_FILE, COL_DATE, COL_TIME, COL_PATIENT)
COL_ABSPATH = "AbsolutePath"
COL_UNIQUE_KEY = "UniqueKey"
COL_VIEW = "ViewPosition"
COL_LATERALITY = "ImageLaterality"
KEY_SEPARATOR = "-"
#: Every column the join and the manifest read; the other ~550 columns are not loaded.
MATCH_COLUMNS = (
    *KEY_COLUMNS,
    *PATIENT_COLUMNS,
    COL_ABSPATH,
    COL_UNIQUE_KEY,
    COL_VIEW,
    COL_LATERALITY,
)

# --- Image folders ----------------------------------------------------------------------

#: Folder spellings seen for each class, compared after casefolding and dropping
#: everything but letters and digits ("Non-Cancer", "non cancer", "NON_CANCER" -> "noncancer").
CANCER_FOLDER_NAMES = ("cancer", "kanser", "malignant")
NON_CANCER_FOLDER_NAMES = (
    "noncancer",
    "nocancer",
    "normal",
    "benign",
    "kanserdegil",
    "kanserdeğil",  # Turkish "Kanser Değil" keeps its ğ after casefolding
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".dcm", ".tif", ".tiff")
#: Largest image (in pixels) that is decoded: a guard against decompression bombs. Real
#: mammograms are at most about 4096 x 3328 = 13.6 Mpx.
MAX_PIXELS = 100_000_000
#: What a workbook may declare before it is parsed (a few MB of zip can hold gigabytes of XML).
#: The hospital's datacombined.xlsx: 5,103 rows x 561 columns (2.9 million cells, ~100 MB of
#: XML); these leave a wide margin and refuse what would exhaust the server's memory.
MAX_WORKBOOK_XML_BYTES = 500 * 10**6
MAX_WORKBOOK_CELLS = 30_000_000
MAX_WORKBOOK_ROWS = 1_048_576  # Excel's own limit
#: Uncompressed / compressed size of one part above which it is taken for a zip bomb (real
#: sheets compress 5-30 times); only parts larger than MIN_BOMB_PART_BYTES are judged.
MAX_WORKBOOK_RATIO = 200
MIN_BOMB_PART_BYTES = 10 * 10**6
#: Test-time passes of prediction when none are asked for (bcp_core.imaging.tta; README,
#: "Uncertainty"): chosen by bench/bench_tta.py.
DEFAULT_TTA_PASSES = 1
#: The most test-time passes there are variants for (bcp_core.imaging.tta.VARIANTS).
MAX_TTA_PASSES = 8
#: The most runs one model may average (``train --members``, ``ensemble``).
MAX_MEMBERS = 5
#: How training is spread (bcp_core.model.strategy): one process, one machine's GPUs, or the
#: workers of a Ray cluster.
DISTRIBUTE_MODES = ("none", "mirrored", "multiworker")

# --- Manifest ---------------------------------------------------------------------------

LABEL_CANCER = 1
LABEL_NON_CANCER = 0
CLASS_NAMES = ("non-cancer", "cancer")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
#: Columns of the manifest DataFrame, the one table every later stage reads.
MANIFEST_COLUMNS = (
    "path",  # absolute path of the image file
    "relpath",  # path relative to the data root, with forward slashes
    "label",  # 1 cancer, 0 non-cancer
    "patient_id",
    "view",  # CC / MLO / "" when unknown
    "laterality",  # L / R / "" when unknown
    "key",  # normalised UniqueKey (cancer) or normalised InputFileName (non-cancer)
    "sheet",  # sheet the row came from
    "row",  # Excel row number in that sheet (header is row 1)
)
UNMATCHED_COLUMNS = ("sheet", "row", "key", "reason")

# --- Unmatched-row reasons (stable wording: tests and the CLI rely on the prefixes) --------

REASON_NO_VALIDATION = "no validation row has this key"
REASON_NO_CANCER_ROW = "no Cancer row has this key"
REASON_EMPTY_PART = "empty key part"
REASON_DUPLICATE = "duplicate key"
REASON_NOT_ON_DISK = "image not found under the data root"
REASON_AMBIGUOUS = "ambiguous image"
REASON_NO_PATH = "no AbsolutePath"

# --- Demo dataset -----------------------------------------------------------------------

DEMO_SCALES = ("small", "hospital")
DEMO_TRUTH_FILE = "demo_ground_truth.json"
#: The demo bundle's name in the bundles folder (the folders themselves: bcp_core.settings).
DEMO_BUNDLE_NAME = "demo"
DEFAULT_SEED = 42


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the synthetic dataset (validated by :func:`bcp_demo.writer.write_demo_dataset`).

    Attributes:
        scale: "small" (a few hundred images) or "hospital" (the real row counts).
        seed: Random seed; the same seed writes the same files.
        image_height: Height of every image in pixels (width is about 0.8 of it).
        subtlety: 0 makes lesions obvious, 1 makes them barely visible.
    """

    scale: str = "small"
    seed: int = DEFAULT_SEED
    image_height: int = 1024
    subtlety: float = 0.45


# --- Models and training ------------------------------------------------------------------

#: Values of ``weights`` besides a file path.
WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_DEFAULT = "default"
#: How a fine-tuned pretrained backbone's batch norm behaves (``TrainConfig.batch_norm``).
BATCH_NORM_MODES = ("frozen", "train")
#: How the learning rate moves while the network is fine-tuned: "constant", or "cosine" (from
#: the recipe's rate down to zero along half a cosine, by step, over the epochs after the
#: head's warm-up).
SCHEDULES = ("constant", "cosine")
#: A moving average of the weights: the momentum per step, when one is kept (at 0.5 it
#: averages about 2 steps, at 0.9999 about 10,000).
WEIGHT_EMA_RANGE = (0.5, 0.9999)
#: Layer-wise rate decay (``train --rate-decay``): at 0.1 the stem learns at 1e-9 of the rate.
RATE_DECAY_RANGE = (0.1, 1.0)
#: How the last feature map becomes one vector before the output unit (``Recipe.head``):
#: "pool", its global maximum beside its global average; "attention", its global maximum beside
#: an attention-weighted average of its cells (the weights are learnt, and start equal, so the
#: head starts as "pool" does).
HEADS = ("pool", "attention")
#: The last step of the preparation (``PreprocessSpec.contrast``): "none", or "clahe",
#: contrast-limited adaptive histogram equalisation of the prepared breast.
CONTRASTS = ("none", "clahe")
#: The "clahe" step's tiles along each side of the resized breast, and its clip limit: a grey
#: level's count in a tile's histogram is clipped at this multiple of the tile's mean count
#: (the settings most CLAHE implementations default to).
CLAHE_TILES, CLAHE_CLIP = 8, 2.0


#: Default network input (height, width): portrait, like a mammogram. Chosen on real screening
#: films of held-out women (README "Real screening films"): 160 x 128, 320 x 256 and 512 x 416
#: scored alike at 15 epochs, while training four times longer lifted held-out ROC-AUC; the
#: smallest input is what makes that affordable on a CPU. `make run` trains the synthetic
#: demo's model with a quick preset of its own (320 x 256, 15 epochs, patience 6).
DEFAULT_IMAGE_SIZE = (160, 128)


@dataclass(frozen=True)
class Recipe:
    """How a model trains unless told otherwise: ``train``'s defaults and page 3's starting
    values for that model. Each figure was chosen on real screening films of held-out women
    (docs/benchmarks.md); a setting the user gives always wins.

    Attributes:
        image_size: network input (height, width).
        epochs: the most epochs a run takes.
        patience: epochs without a better validation score that end a run.
        learning_rate: Adam's rate.
        fine_tune: train a pretrained backbone too (not only the new head).
        frozen_stages: EfficientNet-Lite fine-tuned: the stem and the first N of its 7 stages
            keep their ImageNet weights (no gradients there, so epochs are cheaper).
        batch_norm: a fine-tuned pretrained backbone's batch norm: "frozen" keeps the ImageNet
            statistics (the Keras transfer-learning guide), "train" lets them learn from the
            batches, as a PyTorch fine-tune does.
        tta_passes: test-time passes (:mod:`bcp_core.imaging.tta`) the finished model's
            validation images are scored with, so the threshold is chosen on the scores
            prediction gives; prediction then takes as many unless told otherwise.
        head_epochs: a pretrained backbone fine-tuned: the first N epochs train the new head
            alone (the backbone frozen, its batch norm on the ImageNet statistics), so that
            the backbone's first gradients come through a head that already points somewhere.
            Counted in ``epochs``; a run of fewer epochs keeps at least one for the whole
            network. Ignored for backbones that are not fine-tuned or start from random weights.
        schedule: one of :data:`SCHEDULES`.
        keep_from_epoch: the first epoch the run may keep. Earlier epochs are kept only until
            it ends (so a run stopped before it still leaves a bundle); from it on, the best
            epoch is chosen among it and later ones, and early stopping's patience counts from
            it. 1: every epoch may be kept.
        weight_ema: the momentum (per training step) of a moving average of the weights
            that is validated and kept instead of the weights as trained
            (:mod:`bcp_core.model.weight_average`); 0: the weights as trained.
        rate_decay: layer-wise rates for a fine-tuned EfficientNet-Lite backbone: the new head
            learns at the full rate, the backbone's head convolution at ``rate_decay`` times
            it, each stage below at ``rate_decay`` times the one above (the stem at
            ``rate_decay ** 9``; :func:`bcp_core.model.pretrained.rate_factors`). 1: one rate.
        head: one of :data:`HEADS`: how the last feature map is pooled before the output unit
            (the default CNN and the pretrained backbones).
        members: runs of this recipe trained one after another with seeds ``seed``,
            ``seed + 1``, ... on one patient split, whose mean probability is the model
            (:func:`bcp_core.runs.run_training`; :mod:`bcp_core.model.ensemble`). 1: one run.
    """

    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    epochs: int = 60
    patience: int = 20
    learning_rate: float = 1e-3
    fine_tune: bool = False
    frozen_stages: int = 0
    batch_norm: str = "frozen"
    tta_passes: int = 1
    head_epochs: int = 0
    schedule: str = "constant"
    keep_from_epoch: int = 1
    weight_ema: float = 0.0
    rate_decay: float = 1.0
    head: str = "pool"
    members: int = 1

    def describe(self) -> str:
        """One line for ``--help`` and page 3."""
        h, w = self.image_size
        text = (
            f"{h} x {w}, up to {self.epochs} epochs (patience {self.patience}), "
            f"rate {self.learning_rate:g}"
        )
        if self.fine_tune:
            text += ", fine-tuned"
            if self.frozen_stages:
                text += f" with the stem and stages 1-{self.frozen_stages} frozen"
            text += f", batch norm {'learning' if self.batch_norm == 'train' else 'frozen'}"
            if self.head_epochs:
                text += f", after {self.head_epochs} epoch(s) of the head alone"
            if self.rate_decay != 1:
                text += f", layer-wise rates (x{self.rate_decay:g} a stage down)"
        if self.head != "pool":
            text += f", {self.head} head"
        if self.schedule != "constant":
            text += f", {self.schedule}-decayed rate"
        if self.keep_from_epoch > 1:
            text += f", the best epoch from epoch {self.keep_from_epoch} on"
        if self.weight_ema:
            text += f", weights averaged (momentum {self.weight_ema:g})"
        if self.tta_passes > 1:
            text += f"; scored with {self.tta_passes} test-time passes"
        if self.members > 1:
            text += f"; the mean of {self.members} runs of other seeds"
        return text


#: The names of the settings a recipe gives.
RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
#: Models trained from random weights: on real films the default CNN still underfit after 15
#: epochs, so runs are long and end after 20 epochs without a better validation score; the
#: smallest input scored like larger ones and makes that affordable on a CPU.
SCRATCH_RECIPE = Recipe()
#: EfficientNet-Lite from its ImageNet weights: the whole network but the stem and stages 1-4
#: fine-tuned at 3e-4 with its batch norm learning (frozen batch norm scored below chance on
#: held-out women), 320 x 256, the best of 10 epochs. Measured for Lite0; Lite2 takes the same
#: (on fold 0 it scored below Lite0, 0.610 against 0.657, as did Lite0 with nothing frozen, 0.602,
#: and Lite0 at 384 x 320, 0.582, and at 256 x 208, 0.613).
#: Stages 1-4 frozen: a training step 0.70x as long as with stages 1-2 frozen (the recipe before;
#: bench/bench_freeze.py), and level with it on five folds of held-out women (-0.003 ROC-AUC
#: [-0.028, 0.021] paired).
#: Scored with 4 test-time passes: +0.011 ROC-AUC [0.004, 0.018] over one on held-out women.
#: Keeps an epoch from the third on: its batch norm learns, and after one epoch (about 140
#: steps of 16 films) its moving statistics still hold about a quarter of ImageNet's, after two
#: about 6% (momentum 0.99); a run that kept its first epoch scored 0.446 on held-out women
#: (docs/benchmarks.md), while the nine others measured kept epochs 5-10.
LITE_RECIPE = Recipe(
    image_size=(320, 256), epochs=10, patience=4, learning_rate=3e-4, fine_tune=True,
    frozen_stages=4, batch_norm="train", tta_passes=4, keep_from_epoch=3,
)  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: everything the rest of the product derives from its name.

    Adding a model is one entry in :data:`MODEL_SPECS` plus its builder, registered in
    :mod:`bcp_core.model.architectures` under the same name (a test holds the two together).

    Attributes:
        name: the name in ``bundle.json``, ``train --model`` and page 3.
        family: ``"scratch"`` (trained from random weights), ``"keras"`` (a
            ``keras.applications`` backbone: ImageNet weights download online or come from a
            local file) or ``"packaged"`` (ImageNet weights inside a pinned pip package,
            offline; the default weights are those).
        label: what page 3 shows.
        bytes_per_pixel: training memory per input pixel of each image in a batch
            (:mod:`bcp_core.model.resources` explains how each was measured or scaled).
        fixed_bytes_per_pixel: training memory per input pixel that does not grow with the
            batch (likewise).
        min_side: the smallest height and width the network accepts.
        licence: the licence of the pretrained weights ("" when there are none).
        weights_m: millions of weights, counted on the built model (``seed_cnn`` grows with
            the image besides: :mod:`bcp_core.model.resources`); sizes a bundle before a run.
        recipe: how it trains unless told otherwise.
    """

    name: str
    family: str
    label: str
    bytes_per_pixel: int
    fixed_bytes_per_pixel: int = 0
    min_side: int = 32
    licence: str = ""
    weights_m: float = 1.0
    recipe: Recipe = SCRATCH_RECIPE

    @property
    def transfer(self) -> bool:
        """A pretrained backbone behind the shared input and head."""
        return self.family != "scratch"

    @property
    def default_weights(self) -> str:
        """``"imagenet"`` where the weights install with the package, else ``"none"``."""
        return WEIGHTS_IMAGENET if self.family == "packaged" else WEIGHTS_NONE


#: Every architecture, in the order page 3 and ``--help`` offer them: pretrained weights that
#: install offline first.
MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "efficientnet_lite0", "packaged",
            "EfficientNet-Lite0, ImageNet weights (Apache-2.0)", 386, 6026, licence="Apache-2.0",
            weights_m=3.42, recipe=LITE_RECIPE,
        ),
        ModelSpec(
            "efficientnet_lite2", "packaged",
            "EfficientNet-Lite2, ImageNet weights (Apache-2.0)", 508, 7930, licence="Apache-2.0",
            weights_m=4.87, recipe=LITE_RECIPE,
        ),
        ModelSpec(
            "seed_cnn", "scratch", "The notebook's 3-layer CNN (baseline)", 423, 12519,
            weights_m=0.1,
        ),
        ModelSpec(
            "default_cnn", "scratch", "Compact batch-norm CNN, from scratch", 168, 166,
            weights_m=0.85,
        ),
        ModelSpec(
            "mil_cnn", "scratch", "Multiple-instance CNN, from scratch", 162, 160, weights_m=0.44
        ),
        ModelSpec(
            "resnet50", "keras", "ResNet50 (weights: online or a local file)", 658, 10275,
            weights_m=23.6,
        ),
        ModelSpec(
            "vgg19", "keras", "VGG19 (weights: online or a local file)", 298, 4646,
            weights_m=20.0,
        ),
        ModelSpec(
            "inceptionv3", "keras", "InceptionV3 (weights: online or a local file)", 307, 4798,
            min_side=75, weights_m=21.8,
        ),
        ModelSpec(
            "efficientnetb0", "keras", "EfficientNetB0 (weights: online or a local file)", 445,
            6946, weights_m=4.05,
        ),
    )
}  # fmt: skip
MODEL_NAMES = tuple(MODEL_SPECS)
TRANSFER_MODELS = tuple(name for name, spec in MODEL_SPECS.items() if spec.transfer)
#: The models whose head ``Recipe.head`` chooses (the seed CNN keeps its flatten-dense head,
#: the multiple-instance CNN its own attention over patches).
SHARED_HEAD_MODELS = ("default_cnn", *TRANSFER_MODELS)
#: The model a run trains unless told otherwise: on real films of held-out women (5 folds, 963
#: women) the pretrained Lite0 by its recipe ranked better than the compact CNN by its own on 4
#: folds of 5, +0.046 ROC-AUC [0.015, 0.079] paired (docs/benchmarks.md, "Pretrained backbones").
DEFAULT_MODEL = "efficientnet_lite0"


def model_spec(name: str) -> ModelSpec:
    """The spec of ``name``.

    Raises:
        UserError: an unknown name, with the known ones.
    """
    try:
        return MODEL_SPECS[name]
    except (KeyError, TypeError):
        raise UserError(
            f"Unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}."
        ) from None


def recipe_of(name: object) -> Recipe:
    """How ``name`` trains unless told otherwise: its spec's recipe, or the from-scratch one
    for a name not in :data:`MODEL_SPECS` (``validate`` reports that name, not this)."""
    spec = MODEL_SPECS.get(name) if isinstance(name, str) else None
    return spec.recipe if spec else SCRATCH_RECIPE


#: Label smoothing above this pulls every target to about 0.5 and nothing is learnt.
MAX_LABEL_SMOOTHING = 0.49
#: Oversampling is the default: at the hospital's 1:57 imbalance, class weights (a cancer image
#: weighing ~28 times more) gave noisy updates and a validation ROC-AUC near 0.5 after 11 epochs
#: on the hospital-scale demo, while one cancer image in four per batch reached 0.77 after one
#: epoch (bench/bench_train.py, README "Performance").
IMBALANCE_METHODS = ("oversample", "class_weight", "focal", "none")
#: Rules that choose a decision threshold on validation predictions
#: (:mod:`bcp_core.evaluation.thresholds`).
THRESHOLD_METHODS = (
    "youden",
    "max_f1",
    "max_fbeta",
    "sensitivity_target",
    "specificity_target",
    "min_cost",
    "top_percent",
    "fixed_0.5",
)
#: What people read for each rule (the names above stay in bundle.json and the CLI).
THRESHOLD_METHOD_LABELS = {
    "youden": "Youden (sensitivity + specificity highest)",
    "max_f1": "Best F1",
    "max_fbeta": "Best F-beta",
    "sensitivity_target": "Sensitivity target",
    "specificity_target": "Specificity target",
    "min_cost": "Lowest cost",
    "top_percent": "Flag the top N%",
    "fixed_0.5": "Fixed at 0.5",
    "manual": "Set by hand",
    "saved": "Saved",
}


def method_label(method: str) -> str:
    """A threshold rule's name as people read it (unknown names as they are)."""
    return THRESHOLD_METHOD_LABELS.get(str(method), str(method))


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become network inputs; stored in every bundle.

    Attributes:
        height: network input height in pixels.
        width: network input width in pixels.
        crop: crop to the breast (largest bright region) before resizing.
        orient: flip images so that the chest wall is on the left.
        decode_margin: images are decoded at no less than this multiple of the input size.
            JPEG's DCT scaling halves the size per step, so 1.25 lets a 1024 px film decode at
            512 px for a 320 px input (4x fewer pixels) while the crop to the breast still keeps
            more pixels than the network needs. Stored so prediction decodes exactly as
            training did.
        invert: undo an inverted grey scale: a film whose border is mostly bright (air shown
            white, as when a MONOCHROME1 image is exported without its inversion) is inverted
            before anything else, so cropping and orienting see the breast as bright on dark.
            Bundles written before this setting existed lack it and read as False.
        contrast: ``"none"``, or ``"clahe"`` to equalise the prepared breast's contrast locally
            (contrast-limited adaptive histogram equalisation over a grid of tiles) as the
            last step. Bundles written before this setting existed lack it and read as
            ``"none"``.
    """

    height: int = DEFAULT_IMAGE_SIZE[0]
    width: int = DEFAULT_IMAGE_SIZE[1]
    crop: bool = True
    orient: bool = True
    decode_margin: float = 1.25
    invert: bool = True
    contrast: str = "none"

    def validate(self) -> PreprocessSpec:
        """Return self, or raise UserError for a size no network can use."""
        for name, value in (("height", self.height), ("width", self.width)):
            if not is_whole_number(value) or not 32 <= value <= 4096:
                raise UserError(
                    f"Image {name} must be a whole number from 32 to 4096, got {value!r}."
                )
        if not is_number(self.decode_margin) or not 1.0 <= self.decode_margin <= 8.0:
            raise UserError(f"Decode margin must be from 1 to 8, got {self.decode_margin!r}.")
        for name, flag in (("crop", self.crop), ("orient", self.orient), ("invert", self.invert)):
            if not isinstance(flag, bool):
                raise UserError(f"The preprocessing setting {name} must be true or false.")
        if self.contrast not in CONTRASTS:
            raise UserError(
                f"The contrast step must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}."
            )
        return self

    def to_dict(self) -> dict:
        """The ``preprocessing`` object of ``bundle.json``.

        ``invert`` is written only when on, and ``contrast`` only when not ``"none"``, so a
        bundle written before either setting existed writes back exactly as it was read.
        """
        out = asdict(self)
        if not self.invert:
            del out["invert"]
        if self.contrast == "none":
            del out["contrast"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        fields = ("height", "width", "crop", "orient", "decode_margin", "invert", "contrast")
        known = {k: data[k] for k in fields if k in data}
        known.setdefault("invert", False)  # bundles from before the setting never inverted
        return cls(**known).validate()


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not is_whole_number(value) or not low <= value <= high:
        raise UserError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")


def _check_range(name: str, value: object, low: float, high: float, what: str) -> None:
    if not is_number(value) or not low <= float(value) <= high:
        raise UserError(f"{name} must be {what}, got {value!r}.")


class _FromRecipe:
    """The value of a setting left to the model's recipe (``repr`` for error messages)."""

    def __repr__(self) -> str:
        return "<the model's recipe>"


#: A :class:`TrainConfig` setting not given: the model's :class:`Recipe` fills it in.
FROM_RECIPE: Any = _FromRecipe()


@dataclass
class TrainConfig:
    """Settings of one training run (checked by :meth:`validate`, not by the constructor).

    The settings of :class:`Recipe` that are not given come from the model's recipe, so
    ``TrainConfig(model="efficientnet_lite0")`` trains as measured for that model and
    ``TrainConfig(model="default_cnn", epochs=5)`` as measured for the CNN, for five epochs.
    """

    model: str = DEFAULT_MODEL
    image_size: tuple[int, int] = FROM_RECIPE
    epochs: int = FROM_RECIPE
    batch_size: int = 16
    learning_rate: float = FROM_RECIPE
    imbalance: str = "oversample"
    label_smoothing: float = 0.0
    val_fraction: float = 0.2
    #: Seeds the weights' start, the shuffling and the augmentation, and (unless
    #: ``split_seed`` is given) which patients go to validation.
    seed: int = DEFAULT_SEED
    #: Seeds the patient split alone; None: ``seed``. Runs that differ in ``seed`` but share
    #: ``split_seed`` (and the validation share) are validated on the same patients.
    split_seed: int | None = None
    #: "none", "imagenet" or a weights file; "default" (or empty) takes the model's own
    #: default (:attr:`ModelSpec.default_weights`): ImageNet for the packaged backbones.
    weights: str = WEIGHTS_DEFAULT
    fine_tune: bool = FROM_RECIPE
    frozen_stages: int = FROM_RECIPE
    batch_norm: str = FROM_RECIPE
    patience: int = FROM_RECIPE
    tta_passes: int = FROM_RECIPE
    head_epochs: int = FROM_RECIPE
    schedule: str = FROM_RECIPE
    keep_from_epoch: int = FROM_RECIPE
    weight_ema: float = FROM_RECIPE
    rate_decay: float = FROM_RECIPE
    head: str = FROM_RECIPE
    members: int = FROM_RECIPE
    augment: bool = True
    threshold_method: str = "youden"
    #: Workbook columns the model takes beside the image (bcp_core.model.columns); () for
    #: an image-only model.
    metadata_columns: tuple[str, ...] = ()
    #: A bundle folder whose model the run starts from, every weight of it, instead of
    #: ImageNet's or random weights (bcp_core.model.warm_start); "" for none. Its model, input
    #: size, head and contrast step must be this run's.
    start_from: str = ""
    #: The preparation's contrast step (:data:`CONTRASTS`); a run that starts from a bundle
    #: takes the bundle's.
    contrast: str = "none"

    def __post_init__(self) -> None:
        spec = MODEL_SPECS.get(self.model) if isinstance(self.model, str) else None
        recipe = recipe_of(self.model)
        members_given = self.members is not FROM_RECIPE
        for name in RECIPE_FIELDS:
            if getattr(self, name) is FROM_RECIPE:
                setattr(self, name, getattr(recipe, name))
        if not members_given and self.metadata_columns:
            self.members = 1  # a recipe averages image-only runs; one on workbook columns is one
        if str(self.weights).strip().lower() in (WEIGHTS_DEFAULT, ""):
            self.weights = spec.default_weights if spec else WEIGHTS_NONE

    def validate(self) -> TrainConfig:
        """Return self, or raise UserError naming the first bad setting."""
        spec = model_spec(self.model)
        if not isinstance(self.image_size, (tuple, list)) or len(self.image_size) != 2:
            raise UserError(
                f"Image size must be two numbers (height, width), got {self.image_size!r}."
            )
        PreprocessSpec(*self.image_size, contrast=self.contrast).validate()
        if min(self.image_size) < spec.min_side:
            height, width = self.image_size
            raise UserError(
                f"The {self.model} model needs images of at least {spec.min_side}x"
                f"{spec.min_side} pixels; got {height}x{width}. Choose a larger image size."
            )
        _check_int("Epochs", self.epochs, 1, 500)
        _check_int("Batch size", self.batch_size, 1, 512)
        _check_int("Patience", self.patience, 1, 500)
        _check_int("Seed", self.seed, 0, 2**31 - 1)
        if self.split_seed is not None:
            _check_int("Split seed", self.split_seed, 0, 2**31 - 1)
        _check_int("Frozen stages", self.frozen_stages, 0, 7)
        _check_int("Test-time passes", self.tta_passes, 1, MAX_TTA_PASSES)
        _check_int("Head epochs", self.head_epochs, 0, 500)
        _check_int("Keep-from epoch", self.keep_from_epoch, 1, 500)
        _check_int("Runs to average", self.members, 1, MAX_MEMBERS)
        if self.weight_ema:
            _check_range(
                "Weight-average momentum", self.weight_ema, *WEIGHT_EMA_RANGE,
                f"from {WEIGHT_EMA_RANGE[0]} to {WEIGHT_EMA_RANGE[1]}, or 0 for none",
            )  # fmt: skip
        if self.rate_decay != 1:
            _check_range(
                "Layer-wise rate decay", self.rate_decay, *RATE_DECAY_RANGE,
                f"from {RATE_DECAY_RANGE[0]} to {RATE_DECAY_RANGE[1]} (1: one rate for all)",
            )  # fmt: skip
            if spec.family != "packaged" or not self.fine_tune:
                raise UserError(
                    "Layer-wise rates apply to a fine-tuned EfficientNet-Lite backbone only: "
                    "choose efficientnet_lite0 or efficientnet_lite2 with fine-tuning, or a "
                    "rate decay of 1."
                )
        if self.head not in HEADS:
            raise UserError(f"The head must be one of {', '.join(HEADS)}, got {self.head!r}.")
        if self.head != "pool" and self.model not in SHARED_HEAD_MODELS:
            raise UserError(
                f"The {self.model} model has a head of its own; an {self.head} head applies to "
                "default_cnn and the pretrained backbones."
            )
        if self.members > 1:
            _check_int("Seed", self.seed, 0, 2**31 - self.members)
            if self.metadata_columns:
                raise UserError(
                    "Only image-only runs can be averaged: choose one run, or no workbook columns."
                )
        if self.schedule not in SCHEDULES:
            raise UserError(
                f"The learning-rate schedule must be one of {', '.join(SCHEDULES)}, "
                f"got {self.schedule!r}."
            )
        if self.batch_norm not in BATCH_NORM_MODES:
            raise UserError(
                f"Batch norm must be one of {', '.join(BATCH_NORM_MODES)}, got {self.batch_norm!r}."
            )
        if self.frozen_stages and spec.family != "packaged":
            raise UserError(
                f"Frozen stages apply to the EfficientNet-Lite backbones only, not {self.model!r}."
            )
        _check_range("Learning rate", self.learning_rate, 1e-7, 1.0, "from 1e-7 to 1")
        if self.imbalance not in IMBALANCE_METHODS:
            raise UserError(
                f"Unknown imbalance method {self.imbalance!r}; choose one of: "
                f"{', '.join(IMBALANCE_METHODS)}."
            )
        _check_range(
            "Label smoothing",
            self.label_smoothing,
            0.0,
            MAX_LABEL_SMOOTHING,
            f"from 0 to {MAX_LABEL_SMOOTHING}",
        )
        _check_range("Validation fraction", self.val_fraction, 0.05, 0.5, "from 0.05 to 0.5")
        if self.weights != "none" and not spec.transfer:
            raise UserError(
                f"Pretrained weights apply to {', '.join(TRANSFER_MODELS)} only, "
                f"not {self.model!r}."
            )
        if str(self.weights).strip().lower() not in ("none", "imagenet"):
            if not Path(self.weights).expanduser().is_file():
                raise UserError(
                    f"The weights file {str(self.weights)!r} does not exist; pass 'none', "
                    f"'imagenet' or the path of the {self.model} no-top weights file."
                )
        for name, flag in (("Fine-tune", self.fine_tune), ("Augment", self.augment)):
            if not isinstance(flag, bool):
                raise UserError(f"{name} must be true or false, got {flag!r}.")
        columns = self.metadata_columns
        if not isinstance(columns, (tuple, list)) or not all(
            isinstance(c, str) and c.strip() for c in columns
        ):
            raise UserError(f"Metadata columns must be column names, got {columns!r}.")
        if len({c.strip().casefold() for c in columns}) != len(columns) or len(columns) > 20:
            raise UserError("Choose at most 20 metadata columns, each once.")
        if not isinstance(self.start_from, str):
            raise UserError(f"Start from must be a bundle folder, got {self.start_from!r}.")
        if self.start_from and self.metadata_columns:
            raise UserError(
                "A run that starts from a trained model takes images alone: choose no workbook "
                "columns, or start from ImageNet's weights."
            )
        if self.threshold_method not in THRESHOLD_METHODS:
            raise UserError(
                f"Unknown threshold method {self.threshold_method!r}; choose one of: "
                f"{', '.join(THRESHOLD_METHODS)}."
            )
        return self

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(
            height=int(self.image_size[0]), width=int(self.image_size[1]), contrast=self.contrast
        )

    @property
    def patient_split_seed(self) -> int:
        """The seed of the patient split: ``split_seed``, or ``seed`` when not given."""
        return self.seed if self.split_seed is None else int(self.split_seed)

    def member_configs(self) -> list[TrainConfig]:
        """The runs this run is made of: itself, or for ``members`` > 1 one run per seed
        (``seed``, ``seed + 1``, ...), all on the split of :attr:`patient_split_seed`."""
        if self.members == 1:
            return [self]
        split = self.patient_split_seed
        return [
            replace(self, members=1, seed=self.seed + k, split_seed=split)
            for k in range(self.members)
        ]

    @property
    def first_kept_epoch(self) -> int:
        """The first epoch (1-based) this run may keep: :attr:`Recipe.keep_from_epoch`, or
        the last epoch when the run is shorter."""
        return max(1, min(int(self.keep_from_epoch), int(self.epochs)))

    @property
    def warm_up_epochs(self) -> int:
        """Epochs of the head alone this run takes first (:attr:`Recipe.head_epochs`, where
        it applies, leaving the whole network at least one epoch)."""
        spec = MODEL_SPECS.get(self.model)
        pretrained = str(self.weights).strip().lower() != WEIGHTS_NONE
        if spec is None or not spec.transfer or not self.fine_tune or not pretrained:
            return 0
        return max(0, min(int(self.head_epochs), int(self.epochs) - 1))

    def to_dict(self) -> dict:
        """The ``training`` object of ``bundle.json`` (settings added since the first bundles
        only when used, so other runs read as before)."""
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        if not self.frozen_stages:
            del out["frozen_stages"]
        if self.batch_norm == "frozen":
            del out["batch_norm"]
        if self.tta_passes == 1:
            del out["tta_passes"]
        if not self.head_epochs:
            del out["head_epochs"]
        if self.schedule == "constant":
            del out["schedule"]
        if self.split_seed is None:
            del out["split_seed"]
        if self.keep_from_epoch == 1:
            del out["keep_from_epoch"]
        if not self.weight_ema:
            del out["weight_ema"]
        if self.rate_decay == 1:
            del out["rate_decay"]
        if self.head == "pool":
            del out["head"]
        if self.members == 1:
            del out["members"]
        if self.metadata_columns:
            out["metadata_columns"] = list(self.metadata_columns)
        else:
            del out["metadata_columns"]
        if self.contrast == "none":
            del out["contrast"]
        if not self.start_from:
            del out["start_from"]
        else:  # the folder's name: where the server keeps its bundles is nobody's business
            out["start_from"] = Path(self.start_from).name
        return out
