"""State and cached loaders shared by every page.

The sidebar's widgets live in ``streamlit_app.py``; pages read their values through the
functions here, which fall back to the defaults when a page runs on its own (tests).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import streamlit as st

from bcp_core import config
from bcp_core.datasource import data_root_signature, read_data_root
from bcp_core.errors import UserError
from bcp_core.matching import MatchResult
from bcp_core.privacy import mask_df

KEY_DATA_ROOT = "data_root"
KEY_MASK_IDS = "mask_ids"
#: Environment variables that set the data root and the bundles folder.
ENV_DATA_ROOT = "BCP_DATA_ROOT"
ENV_BUNDLES = "BCP_BUNDLES_DIR"


def bundles_dir() -> Path:
    """Folder where training writes bundles and where pages look for them."""
    return Path(os.environ.get(ENV_BUNDLES) or config.DEFAULT_BUNDLES_DIR)


def session_token() -> str:
    """A random id of this browser session (to tell one user's training run from another's)."""
    return st.session_state.setdefault("session_token", uuid.uuid4().hex)


def default_data_root() -> str:
    """The data root the sidebar starts with: $BCP_DATA_ROOT, else the built-in demo dataset."""
    return os.environ.get(ENV_DATA_ROOT) or str(config.DEFAULT_DEMO_DIR)


def data_root() -> str:
    """The data root chosen in the sidebar."""
    return st.session_state.get(KEY_DATA_ROOT) or default_data_root()


def masking() -> bool:
    """Whether patient IDs are masked (on unless the user turned it off)."""
    return bool(st.session_state.get(KEY_MASK_IDS, True))


def shown(df):
    """``df`` as it may be shown or downloaded: patient IDs masked unless turned off."""
    return mask_df(df) if masking() else df


@st.cache_data(show_spinner="Matching the workbooks to the image folders...", max_entries=4)
def _cached_match(root: str, signature: tuple) -> MatchResult:
    # ``signature`` is part of the cache key only: it changes when the user edits the files.
    return read_data_root(root)


def load_match() -> MatchResult:
    """The match result for the chosen data root; on a user error, show it and stop the page."""
    root = data_root()
    try:
        return _cached_match(root, data_root_signature(root))
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
        raise  # st.stop() raises; this keeps type checkers informed


def sidebar() -> None:
    """The shared sidebar: data root and privacy settings.

    Defaults go into session state before the widgets are made (rather than as ``value=``), so a
    test or another page can set them through ``st.session_state`` without a conflict.
    """
    st.session_state.setdefault(KEY_DATA_ROOT, default_data_root())
    st.session_state.setdefault(KEY_MASK_IDS, True)
    with st.sidebar:
        st.text_input(
            "Data root",
            key=KEY_DATA_ROOT,
            help="Folder with datacombined.xlsx, data_validation_x.xlsx and the Cancer / "
            "Non-Cancer image folders. The default is the built-in synthetic demo dataset.",
        )
        st.toggle(
            "Mask patient IDs",
            key=KEY_MASK_IDS,
            help="Patient IDs are masked on every page and in downloads while this is on.",
        )
        if st.button(
            "Reload data", key="reload_data", help="Read the workbooks and folders again."
        ):
            _cached_match.clear()
        st.caption("Research tool, not a medical device.")
