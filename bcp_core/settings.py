"""Server settings read from the environment: the one place that reads a ``BCP_*`` variable.

Only the entry points call this module: the CLI (:mod:`bcp_core.cli`) and the dashboard
(``streamlit_app.py``, ``serve.py``, ``pages/``, ``dashboard/``). Below them no module reads the
environment (``tests/test_architecture.py`` checks that none imports this one): each receives
the values it needs, as arguments or as a small frozen object built here
(:func:`training_limits`), so a setting that only one use needs can never stop another (an
unusable ``BCP_MAX_UPLOAD_PIXELS`` stops uploads, not the CLI decoding a training image). The
names of the settings that refusals cite, and the defaults of those limits, live beside the
checks that use them (:mod:`bcp_core.model.resources`, :mod:`bcp_core.imaging.limits`,
:mod:`bcp_core.data.roots`) and are imported here.

Each function reads its variable when called (so a test or a restarted server sees a change)
and falls back to a safe default. A value that cannot be used ends in one sentence naming the
variable (:class:`~bcp_core.errors.UserError`).

* ``BCP_DATA_ROOT``: the dashboard's first data root (default: the demo dataset ``demo_data/``);
* ``BCP_BUNDLES_DIR``: where the dashboard writes and lists bundles (default: ``bundles/``);
* ``BCP_ALLOWED_ROOTS``: the folders the dashboard may read data roots from, separated by
  ``os.pathsep`` (default: the data root above and nothing else);
* ``BCP_WEIGHTS_DIR``: the backbone weight files the training page offers (default:
  ``weights/``);
* ``BCP_IMAGE_CACHE``, ``BCP_IMAGE_CACHE_GB``: where training keeps prepared images between
  epochs and runs (default: ``image_cache/``; ``off`` turns it off) and the most GB it may take
  (10);
* ``BCP_TRAIN_MEMORY_GB``: the most memory a training run may need by its estimate (default:
  60% of the machine's memory);
* ``BCP_MAX_BUNDLES``, ``BCP_MAX_BUNDLES_GB``: the most bundles a bundles folder may hold
  (default: 50) and the most GB (20);
* ``BCP_MODE``: ``demo`` for the locked clinician demo (everyone a viewer, no sign-in); unset,
  the dashboard asks for sign-in when ``.streamlit/secrets.toml`` has an ``[auth]`` section
  and is single-user and local otherwise (SECURITY.md);
* ``BCP_ROLES_FILE``: the TOML file that gives signed-in users their roles (default:
  ``roles.toml``);
* ``BCP_AUDIT_LOG``: the append-only JSON-lines audit log (default: ``audit/audit.jsonl``);
* ``BCP_VIEWER_BUNDLE``: the bundle viewers use, by name in the bundles folder (default:
  ``demo``);
* ``BCP_MAX_UPLOAD_PIXELS``, ``BCP_MAX_UPLOAD_FILES``, ``BCP_PREDICTION_CACHE_MB``: the most
  pixels an uploaded image may declare (default: 40 million), files in one prediction batch
  (32) and memory the prediction page's cache may hold (256 MB);
* ``BCP_SERVED_HOSTS``, ``BCP_METRICS``, ``BCP_MAX_UPLOAD_MB``, ``BCP_MAX_SESSION_UPLOAD_MB``,
  ``BCP_MAX_UPLOADS_GB``: what the web server answers (``dashboard/server.py``): host names
  besides the loopback ones, the metrics endpoint, the largest upload request (50 MB), the
  uploads one session may hold (640 MB) and all sessions together (4 GB);
* ``BCP_RAY_ADDRESS``, ``BCP_RAY_WORKERS``: a Ray cluster (``auto`` or ``HOST:PORT``) the
  training page may train on with ``multiworker`` (unset: the choice is not offered) and its
  number of workers (default 2).

Folders are relative to the repository. The CLI, run by the person who owns the files, reads
only the training limits (``BCP_TRAIN_MEMORY_GB``, ``BCP_MAX_BUNDLES``, ``BCP_MAX_BUNDLES_GB``),
``BCP_WEIGHTS_DIR`` (where converted pretrained weights are cached) and the image cache
(``BCP_IMAGE_CACHE``, ``BCP_IMAGE_CACHE_GB``), and only to train.
"""

from __future__ import annotations

import os
from pathlib import Path

from bcp_core.data.roots import ENV_ALLOWED_ROOTS
from bcp_core.errors import UserError
from bcp_core.imaging.cache import (
    DEFAULT_MAX_GB,
    ENV_IMAGE_CACHE,
    ENV_IMAGE_CACHE_GB,
    CacheSettings,
)
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS, ENV_MAX_UPLOAD_PIXELS
from bcp_core.model.resources import (
    DEFAULT_MAX_BUNDLES,
    DEFAULT_MAX_BUNDLES_GB,
    ENV_MAX_BUNDLES,
    ENV_MAX_BUNDLES_GB,
    ENV_TRAIN_MEMORY_GB,
    ENV_WEIGHTS_DIR,
    GB,
    TrainingLimits,
    default_memory_budget,
)

ENV_DATA_ROOT = "BCP_DATA_ROOT"
ENV_BUNDLES_DIR = "BCP_BUNDLES_DIR"
ENV_MODE = "BCP_MODE"
ENV_ROLES_FILE = "BCP_ROLES_FILE"
ENV_AUDIT_LOG = "BCP_AUDIT_LOG"
ENV_VIEWER_BUNDLE = "BCP_VIEWER_BUNDLE"
#: The values BCP_MODE takes ("" and "auto": sign-in when configured, else local).
MODES = ("", "auto", "demo")

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DEMO_DIR = REPO_DIR / "demo_data"
#: Where the dashboard writes and lists model bundles.
DEFAULT_BUNDLES_DIR = REPO_DIR / "bundles"
#: Where the training page looks for backbone weight files (git-ignored).
DEFAULT_WEIGHTS_DIR = REPO_DIR / "weights"
#: Where training keeps prepared images between epochs and runs (git-ignored).
DEFAULT_IMAGE_CACHE_DIR = REPO_DIR / "image_cache"
#: The values of BCP_IMAGE_CACHE that turn the cache off.
CACHE_OFF = ("off", "none", "no", "0", "false")
DEFAULT_ROLES_FILE = REPO_DIR / "roles.toml"
#: The audit log (git-ignored).
DEFAULT_AUDIT_LOG = REPO_DIR / "audit" / "audit.jsonl"
DEFAULT_VIEWER_BUNDLE = "demo"


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def data_root() -> Path:
    """The data root the dashboard starts with: $BCP_DATA_ROOT, else the demo dataset."""
    return Path(_env(ENV_DATA_ROOT) or DEFAULT_DEMO_DIR).expanduser()


def bundles_dir() -> Path:
    """Folder where the dashboard writes bundles and where its pages look for them."""
    return Path(_env(ENV_BUNDLES_DIR) or DEFAULT_BUNDLES_DIR).expanduser()


def weights_dir() -> Path:
    """Folder whose weight files the training page offers as backbone weights."""
    return Path(_env(ENV_WEIGHTS_DIR) or DEFAULT_WEIGHTS_DIR).expanduser()


def allowed_roots() -> list[Path]:
    """Folders under which the dashboard may read data roots, as configured (not resolved).

    $BCP_ALLOWED_ROOTS holds them separated by ``os.pathsep``; unset, only :func:`data_root` is
    allowed (with the folders inside it).
    """
    parts = [p.strip() for p in _env(ENV_ALLOWED_ROOTS).split(os.pathsep) if p.strip()]
    return [Path(p).expanduser() for p in parts] or [data_root()]


def train_memory_budget_bytes() -> int:
    """Most memory a training run may need: $BCP_TRAIN_MEMORY_GB, else 60% of the machine's."""
    text = _env(ENV_TRAIN_MEMORY_GB)
    if not text:
        return default_memory_budget()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UserError(f"{ENV_TRAIN_MEMORY_GB} must be a positive number of GB, got {text!r}.")
    return int(value * GB)


def _whole_number(name: str, default: int) -> int:
    """$name as a whole number of at least 1, else ``default`` when unset."""
    text = _env(name)
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{name} must be a whole number of at least 1, got {text!r}.")
    return int(text)


def max_bundles_bytes() -> int:
    """Most bytes the bundles folder may hold: $BCP_MAX_BUNDLES_GB (GB), else 20 GB."""
    return _whole_number(ENV_MAX_BUNDLES_GB, DEFAULT_MAX_BUNDLES_GB) * GB


def max_bundles() -> int:
    """Most bundles a bundles folder may hold: $BCP_MAX_BUNDLES, else 50."""
    return _whole_number(ENV_MAX_BUNDLES, DEFAULT_MAX_BUNDLES)


def training_limits() -> TrainingLimits:
    """What one training run may take: $BCP_TRAIN_MEMORY_GB, $BCP_MAX_BUNDLES and
    $BCP_MAX_BUNDLES_GB, read once (for :class:`bcp_core.runs.TrainRequest`)."""
    return TrainingLimits(train_memory_budget_bytes(), max_bundles(), max_bundles_bytes())


def image_cache() -> CacheSettings | None:
    """Where training keeps prepared images: $BCP_IMAGE_CACHE (a folder; "off" for none), else
    ``image_cache/``, holding at most $BCP_IMAGE_CACHE_GB (GB), else 10 GB."""
    text = _env(ENV_IMAGE_CACHE)
    if text.lower() in CACHE_OFF:
        return None
    folder = Path(text or DEFAULT_IMAGE_CACHE_DIR).expanduser()
    return CacheSettings(folder, _whole_number(ENV_IMAGE_CACHE_GB, DEFAULT_MAX_GB) * GB)


def mode() -> str:
    """$BCP_MODE in lower case: "demo", or "" (sign-in when configured, else local)."""
    value = _env(ENV_MODE).lower()
    if value not in MODES:
        raise UserError(f"{ENV_MODE} must be demo or unset, got {value!r}.")
    return "" if value == "auto" else value


def roles_file() -> Path:
    """The TOML file mapping signed-in users (e-mail or group) to roles ($BCP_ROLES_FILE)."""
    return Path(_env(ENV_ROLES_FILE) or DEFAULT_ROLES_FILE).expanduser()


def audit_log() -> Path:
    """The append-only audit log ($BCP_AUDIT_LOG, else audit/audit.jsonl)."""
    return Path(_env(ENV_AUDIT_LOG) or DEFAULT_AUDIT_LOG).expanduser()


def viewer_bundle() -> str:
    """Name of the bundle (in the bundles folder) that viewers use ($BCP_VIEWER_BUNDLE)."""
    return _env(ENV_VIEWER_BUNDLE) or DEFAULT_VIEWER_BUNDLE


# --- Prediction inputs (uploads) ---------------------------------------------------------------

ENV_MAX_UPLOAD_FILES = "BCP_MAX_UPLOAD_FILES"
ENV_PREDICTION_CACHE_MB = "BCP_PREDICTION_CACHE_MB"
#: Most files the prediction page takes in one batch.
DEFAULT_MAX_UPLOAD_FILES = 32
#: Most memory (MB, 10^6 bytes) the prediction page's cache of shown results may hold.
DEFAULT_PREDICTION_CACHE_MB = 256


def max_upload_pixels() -> int:
    """Most pixels an uploaded image may declare in its header: $BCP_MAX_UPLOAD_PIXELS, else
    40 million (uploads above are refused before decoding)."""
    return _whole_number(ENV_MAX_UPLOAD_PIXELS, DEFAULT_MAX_UPLOAD_PIXELS)


def max_upload_files() -> int:
    """Most files predicted in one batch on the prediction page: $BCP_MAX_UPLOAD_FILES, else 32."""
    return _whole_number(ENV_MAX_UPLOAD_FILES, DEFAULT_MAX_UPLOAD_FILES)


def prediction_cache_bytes() -> int:
    """Most bytes the prediction page keeps of shown results: $BCP_PREDICTION_CACHE_MB (MB),
    else 256 MB."""
    return _whole_number(ENV_PREDICTION_CACHE_MB, DEFAULT_PREDICTION_CACHE_MB) * 10**6


# --- What the web server answers ----------------------------------------------------------------

ENV_SERVED_HOSTS = "BCP_SERVED_HOSTS"
ENV_METRICS = "BCP_METRICS"
ENV_MAX_UPLOAD_MB = "BCP_MAX_UPLOAD_MB"
#: A 4096 x 3328 16-bit DICOM is 27 MB; a JPEG of it a few MB.
DEFAULT_MAX_UPLOAD_MB = 50
ENV_MAX_SESSION_UPLOAD_MB = "BCP_MAX_SESSION_UPLOAD_MB"
DEFAULT_MAX_SESSION_UPLOAD_MB = 640
ENV_MAX_UPLOADS_GB = "BCP_MAX_UPLOADS_GB"
DEFAULT_MAX_UPLOADS_GB = 4


def served_hosts() -> tuple[str, ...]:
    """Host names the server answers besides the loopback ones: $BCP_SERVED_HOSTS, separated by
    commas (e.g. ``mammo.hospital.org``); none by default."""
    return tuple(h.strip() for h in _env(ENV_SERVED_HOSTS).split(",") if h.strip())


def metrics_enabled() -> bool:
    """Whether Streamlit's ``/_stcore/metrics`` answers: only with $BCP_METRICS=on."""
    return _env(ENV_METRICS).lower() in ("on", "1", "true", "yes")


def max_upload_bytes() -> int:
    """Most bytes one upload request may carry: $BCP_MAX_UPLOAD_MB (MB), else 50 MB."""
    return _whole_number(ENV_MAX_UPLOAD_MB, DEFAULT_MAX_UPLOAD_MB) * 10**6


def max_session_upload_bytes() -> int:
    """Most bytes of uploads one session may hold at once: $BCP_MAX_SESSION_UPLOAD_MB (MB),
    else 640 MB (a batch of 32 files of 20 MB)."""
    return _whole_number(ENV_MAX_SESSION_UPLOAD_MB, DEFAULT_MAX_SESSION_UPLOAD_MB) * 10**6


def max_uploads_bytes() -> int:
    """Most bytes of uploads all sessions together may hold: $BCP_MAX_UPLOADS_GB (GB), else
    4 GB."""
    return _whole_number(ENV_MAX_UPLOADS_GB, DEFAULT_MAX_UPLOADS_GB) * GB


# --- Training on a cluster ---------------------------------------------------------------------

ENV_RAY_ADDRESS = "BCP_RAY_ADDRESS"
ENV_RAY_WORKERS = "BCP_RAY_WORKERS"
DEFAULT_RAY_WORKERS = 2


def ray_address() -> str:
    """The Ray cluster the training page may use ($BCP_RAY_ADDRESS); "" when unset."""
    return _env(ENV_RAY_ADDRESS)


def ray_workers() -> int:
    """Workers of a training run on the cluster: $BCP_RAY_WORKERS, else 2."""
    return _whole_number(ENV_RAY_WORKERS, DEFAULT_RAY_WORKERS)
