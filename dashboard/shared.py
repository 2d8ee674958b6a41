"""State and cached loaders shared by every page.

The sidebar is drawn by :func:`sidebar` (``streamlit_app.py`` calls it on every page); pages read
its values through the functions here, which fall back to the defaults when a page runs on its
own (tests).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from bcp_core import config, settings
from bcp_core.access import Action
from bcp_core.config import method_label
from bcp_core.data import roots as data_roots
from bcp_core.data.attributes import workbook_columns
from bcp_core.data.datasource import data_root_signature, read_data_root
from bcp_core.data.matching import MatchResult
from bcp_core.data.privacy import mask_df
from bcp_core.data.roots import AllowedRoot, display_path, hide_root, resolve_data_root
from bcp_core.errors import UserError
from bcp_core.evaluation.intervals import better_than_chance
from bcp_core.inference.assessment import evaluate_level
from bcp_core.model.bundle import Bundle, list_bundles_df, load_bundle, read_bundle_meta
from bcp_core.output_safety import plain_markdown
from dashboard.auth import account_box, allowed, audit, denied, identity

KEY_DATA_ROOT = "data_root"
KEY_MASK_IDS = "mask_ids"
KEY_BUNDLE = "bundle"
#: A bundle to make the sidebar's choice on the next whole-page run (:func:`use_bundle`).
KEY_USE_BUNDLE = "_use_bundle"
#: Session-state key of the :class:`ChosenThreshold` (threshold page -> prediction page).
KEY_THRESHOLD = "shared_threshold"


def bundles_dir() -> Path:
    """Folder where training writes bundles and where pages look for them ($BCP_BUNDLES_DIR)."""
    return settings.bundles_dir()


def session_token() -> str:
    """A random id of this browser session (to tell one user's training run from another's)."""
    return st.session_state.setdefault("session_token", uuid.uuid4().hex)


def allowed_roots() -> list[AllowedRoot]:
    """The folders this server lets the dashboard read data roots from ($BCP_ALLOWED_ROOTS, else
    the folder of $BCP_DATA_ROOT), with their labels and real paths."""
    return data_roots.allowed_roots(settings.allowed_roots())


def default_data_root() -> str:
    """The data root the sidebar starts with ($BCP_DATA_ROOT, else the built-in demo dataset),
    as the dashboard shows it: by its allowed folder's name, not the server's path."""
    return display_path(settings.data_root().resolve(), allowed_roots())


def data_root() -> str:
    """The data root chosen in the sidebar, as typed; the server's for those who may not choose."""
    if not allowed(Action.CHOOSE_DATA_ROOT):
        return default_data_root()
    return st.session_state.get(KEY_DATA_ROOT) or default_data_root()


def _refused_once(action: Action, key: str) -> None:
    """Audit a forged widget value once per value (the page reruns often)."""
    seen = st.session_state.setdefault("_denied_seen", set())
    mark = (str(action), repr(st.session_state.get(key)))
    if mark not in seen:
        seen.add(mark)
        denied(action)


def data_root_label() -> str:
    """The chosen data root as the dashboard shows it (``demo_data/sub``), never a server path."""
    roots = allowed_roots()
    return display_path(resolve_data_root(data_root(), roots), roots)


def show_error(error: Exception | str) -> None:
    """Show an error message (a :class:`UserError`'s sentence) on the page, as literal text.

    User errors name the user's files, and a file name can look like markdown:
    ``![x](http://host/x.png)`` would make the browser fetch the URL.
    """
    st.error(plain_markdown(error), icon=":material/error:")


def upload_pixel_limit() -> int:
    """The most pixels an uploaded image may declare ($BCP_MAX_UPLOAD_PIXELS); an unusable value
    is shown as its sentence and stops the page."""
    try:
        return settings.max_upload_pixels()
    except UserError as exc:
        show_error(exc)
        st.stop()
        raise  # st.stop() raises; this keeps type checkers informed


def masking() -> bool:
    """Whether patient IDs are masked (on unless an analyst turned it off)."""
    return bool(st.session_state.get(KEY_MASK_IDS, True)) or not allowed(Action.UNMASK)


def shown(df):
    """``df`` as it may be shown or downloaded: patient IDs masked unless turned off, and a
    ``path`` column relative to its allowed data-root folder (never the server's paths)."""
    if "path" in df.columns:
        roots = allowed_roots()
        df = df.assign(path=[display_path(p, roots) for p in df["path"]])
    return mask_df(df) if masking() else df


@st.cache_data(show_spinner="Matching the workbooks to the image folders...", max_entries=4)
def _cached_match(root: str, signature: tuple) -> MatchResult:
    # ``signature`` is part of the cache key only: it changes when the user edits the files.
    return read_data_root(root)


def load_match() -> MatchResult:
    """The match result for the chosen data root; on a user error, show it and stop the page.

    Only folders inside the allowed ones are read (:mod:`bcp_core.data.roots`); messages show
    the data root by its allowed folder's name.
    """
    roots = allowed_roots()
    root = None
    try:
        root = resolve_data_root(data_root(), roots)
        return _cached_match(str(root), data_root_signature(root))
    except UserError as exc:
        show_error(str(exc) if root is None else hide_root(str(exc), root, roots))
        st.stop()
        raise  # st.stop() raises; this keeps type checkers informed


def chosen_root() -> Path:
    """The sidebar's data root, resolved inside the allowed folders (``UserError`` outside)."""
    return resolve_data_root(data_root(), allowed_roots())


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_columns(root: str, signature: tuple, source: str) -> list[str]:
    # ``signature`` is part of the cache key only: it changes when the user edits the files.
    return workbook_columns(root, source)


def workbook_column_names() -> list[str]:
    """The columns of the chosen data root's workbooks, as the threshold page's subgroups and
    the training page's model inputs offer them (``UserError`` when a workbook is unreadable)."""
    match, root = load_match(), chosen_root()
    return _cached_columns(str(root), data_root_signature(root), match.source)


def use_bundle(path: str) -> None:
    """Make ``path`` this session's bundle and rerun the whole page (the sidebar's selectbox
    cannot be changed from a fragment, so it takes the choice before it is drawn)."""
    st.session_state[KEY_USE_BUNDLE] = path
    st.rerun()


def bundle_paths() -> list[str]:
    """Bundles in the bundles folder, the demo bundle first, then newest first."""
    df = list_bundles_df(bundles_dir())
    paths = df["path"].tolist()
    demo = str(bundles_dir() / config.DEMO_BUNDLE_NAME)
    return sorted(paths, key=lambda p: p != demo)


def fixed_bundle_path() -> str | None:
    """The bundle of those who may not choose ($BCP_VIEWER_BUNDLE), None when it is missing."""
    fixed = str(bundles_dir() / settings.viewer_bundle())
    return fixed if fixed in bundle_paths() else None


def selected_bundle_path() -> str | None:
    """The bundle chosen in the sidebar (None when there is none)."""
    if not allowed(Action.CHOOSE_BUNDLE):
        return fixed_bundle_path()
    chosen = st.session_state.get(KEY_BUNDLE)
    if chosen:
        return chosen
    paths = bundle_paths()
    return paths[0] if paths else None


def bundle_version(path: str) -> float:
    """When the bundle at ``path`` last changed (a cache key; 0 when it cannot be read)."""
    return _mtime(path)


def comparable_bundle_paths() -> list[str]:
    """Bundles this session may compare: every bundle for those who may choose one, else only
    the server's bundle (viewers' bundle is fixed, here as in the sidebar)."""
    if not allowed(Action.CHOOSE_BUNDLE):
        fixed = fixed_bundle_path()
        return [fixed] if fixed else []
    return bundle_paths()


def bundle_writable(path: str | Path) -> bool:
    """Whether the dashboard may change this bundle: never the demo bundle."""
    return Path(path).resolve() != (bundles_dir() / config.DEMO_BUNDLE_NAME).resolve()


def _mtime(path: str) -> float:
    try:
        return max(p.stat().st_mtime for p in Path(path).iterdir())
    except (OSError, ValueError):
        return 0.0


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _cached_bundle(path: str, mtime: float) -> Bundle:
    # Shared by every session: callers must never modify the model or the tables.
    return load_bundle(path)


@st.cache_data(max_entries=32, show_spinner="Checking the model against chance...")
def validation_check(path: str, version: float) -> tuple[tuple[float, float], str]:
    """The bundle's validation ROC-AUC 95% interval (patient bootstrap, image level) and its
    caution when few patients with cancer validate it ("" when none), cached per ``version`` of
    its files (:func:`bundle_version`)."""
    bundle = load_bundle(path, with_model=False)
    result = evaluate_level(bundle.val_predictions, "image")[0]
    return result.roc_auc_ci, result.few_cancers_caution()


def viewer_refusal(path: str) -> str:
    """Why viewers may not use the bundle at ``path``: its validation ROC-AUC interval includes
    0.5 and no analyst has approved it for them (:func:`bcp_core.model.bundle.
    approve_for_viewers`); "" when they may."""
    try:
        meta = read_bundle_meta(path)
        if meta.viewer_approval:
            return ""
        # Kept in bundle.json since training keeps it; computed for an older bundle.
        low, high = meta.metrics.roc_auc_ci or validation_check(path, bundle_version(path))[0]
    except UserError:
        return ""  # an unreadable bundle: loading it says why
    if better_than_chance((low, high)):
        return ""
    return (
        f"The model set for viewers ({Path(path).name}) is no better than chance on its "
        f"validation patients (ROC-AUC 95% interval {low:.3f}-{high:.3f}): it is shown only "
        "once an analyst approves it on the Training page."
    )


def current_bundle() -> Bundle | None:
    """The chosen bundle with its model, loaded once per version; errors shown on the page.
    Those who may not choose get no bundle that is no better than chance unless an analyst
    approved it (the page stops with the reason)."""
    path = selected_bundle_path()
    if path is None:
        return None
    if not allowed(Action.CHOOSE_BUNDLE) and (refusal := viewer_refusal(path)):
        st.warning(plain_markdown(refusal), icon=":material/block:")
        st.stop()
    try:
        return _cached_bundle(path, _mtime(path))
    except UserError as exc:
        show_error(exc)
        st.stop()
        raise


@dataclass(frozen=True)
class ChosenThreshold:
    """The threshold chosen on the threshold page, for the prediction page (session state)."""

    bundle: str
    value: float
    method: str


def shared_threshold(bundle: Bundle) -> tuple[float, str]:
    """The threshold the user chose on the threshold page for this bundle, else the saved one.

    Returns:
        ``(value, where)`` where ``where`` says which it is, for display.
    """
    chosen = st.session_state.get(KEY_THRESHOLD)
    if isinstance(chosen, ChosenThreshold) and chosen.bundle == str(bundle.path):
        return chosen.value, f"chosen on the threshold page ({method_label(chosen.method)})"
    return bundle.threshold, f"saved with the bundle ({method_label(bundle.meta.threshold.method)})"


def _audit_changes() -> None:
    """Record a changed data root and turning masking off or on (whatever changed them)."""
    now = {"data_root": _data_root_for_audit(), "mask": masking()}
    seen = st.session_state.setdefault("_audit_seen", {"data_root": _default_label(), "mask": True})
    if now["data_root"] != seen["data_root"]:
        audit("data_root", data_root=now["data_root"])
    if now["mask"] != seen["mask"]:
        audit("mask" if now["mask"] else "unmask")
    st.session_state["_audit_seen"] = now


def _default_label() -> str:
    try:
        return default_data_root()
    except UserError:
        return ""


def _data_root_for_audit() -> str:
    """The data root by its allowed folder's name (the typed text of a refused one is not kept:
    it could name anything on the server)."""
    try:
        return data_root_label()
    except UserError:
        return "(a folder the server does not allow)"


def sidebar() -> None:
    """The shared sidebar: data root, model bundle and privacy settings.

    Defaults go into session state before the widgets are made (rather than as ``value=``), so a
    test or another page can set them through ``st.session_state`` without a conflict. Who may
    not choose sees the server's choice in disabled widgets.
    """
    me = identity()
    st.session_state.setdefault(KEY_DATA_ROOT, default_data_root())
    st.session_state.setdefault(KEY_MASK_IDS, True)
    if not allowed(Action.CHOOSE_DATA_ROOT):
        if st.session_state[KEY_DATA_ROOT] != default_data_root():
            _refused_once(Action.CHOOSE_DATA_ROOT, KEY_DATA_ROOT)  # the widget is disabled
        st.session_state[KEY_DATA_ROOT] = default_data_root()
    if not allowed(Action.UNMASK):
        if st.session_state[KEY_MASK_IDS] is not True:
            _refused_once(Action.UNMASK, KEY_MASK_IDS)
        st.session_state[KEY_MASK_IDS] = True
    _audit_changes()  # before the widgets: their values as the browser sent them
    with st.sidebar:
        account_box(me)
        st.text_input(
            "Data root",
            key=KEY_DATA_ROOT,
            disabled=not allowed(Action.CHOOSE_DATA_ROOT),
            help="Folder with datacombined.xlsx, data_validation_x.xlsx and the Cancer / "
            "Non-Cancer image folders: the name of a folder the server allows (the box starts "
            "with one), or a folder inside it (name/sub). Other folders cannot be read.",
        )
        paths = bundle_paths()
        if not allowed(Action.CHOOSE_BUNDLE):
            fixed = fixed_bundle_path()
            paths = [fixed] if fixed else []
        wanted = st.session_state.pop(KEY_USE_BUNDLE, None)
        if wanted in paths and allowed(Action.CHOOSE_BUNDLE):
            st.session_state[KEY_BUNDLE] = wanted
        if st.session_state.get(KEY_BUNDLE) not in paths:
            if st.session_state.get(KEY_BUNDLE) and not allowed(Action.CHOOSE_BUNDLE):
                _refused_once(Action.CHOOSE_BUNDLE, KEY_BUNDLE)
            st.session_state[KEY_BUNDLE] = paths[0] if paths else None
        st.selectbox(
            "Model bundle",
            paths,
            key=KEY_BUNDLE,
            format_func=lambda p: Path(p).name,
            placeholder="no bundle yet: train one",
            disabled=not allowed(Action.CHOOSE_BUNDLE),
            help="Bundles found in the server's bundles folder.",
        )
        st.toggle(
            "Mask patient IDs",
            key=KEY_MASK_IDS,
            disabled=not allowed(Action.UNMASK),
            help="Patient IDs are masked on every page and in downloads while this is on.",
        )
        if st.button(
            "Reload data", key="reload_data", help="Read the workbooks and folders again."
        ):
            _cached_match.clear()
        st.caption("Research tool, not a medical device.")
