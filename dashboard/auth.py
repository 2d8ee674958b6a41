"""Sign-in, roles and the audit log in the dashboard (the rules are in :mod:`bcp_core.access`).

:func:`identity` says who the session is and what role it has, every time it is called, so a
page run on its own is guarded as strictly as one behind the sidebar; :func:`gate`
(``streamlit_app.py``) shows the sign-in button, or the sentence that refuses the session, and
stops the page; :func:`require` (the first line of every page) does the same and then checks the
page's role. A page can run on its own in the served app, not only in tests: until the app's
navigation has run once in the server process, Streamlit answers the address of a file in
``pages/`` by running that file alone, without ``streamlit_app.py`` and its gate.
:func:`audit` appends to the audit log (``BCP_AUDIT_LOG``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import streamlit as st

from bcp_core import access, settings
from bcp_core import audit as audit_log
from bcp_core.access import Action
from bcp_core.errors import UserError
from bcp_core.output_safety import plain_markdown

log = logging.getLogger(__name__)
#: Sign-outs of this server process (see :class:`bcp_core.access.SignOuts`).
SIGN_OUTS = access.SignOuts()
KEY_SIGNED_IN = "_audit_signed_in"


@dataclass(frozen=True)
class Identity:
    """Who the session is (``local``, ``demo visitor`` or an e-mail), its role, the mode, and
    the sentence that refuses it (empty when the session may go on)."""

    user: str
    role: str
    mode: str
    refusal: str = ""


def auth_configured() -> bool:
    """Whether ``.streamlit/secrets.toml`` configures an identity provider (``[auth]``)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: Streamlit raises rather than answer False
        return False


def identity() -> Identity:
    """The session's identity and role, from the mode, ``st.user`` and the roles file."""
    try:
        mode = access.resolve_mode(settings.mode(), auth_configured())
        if mode == access.MODE_DEMO:
            return Identity(access.DEMO_USER, "viewer", mode)
        if mode == access.MODE_LOCAL:
            access.check_local_address(str(st.get_option("server.address") or ""))
            return Identity(access.LOCAL_USER, "admin", mode)
        if not st.user.is_logged_in:
            return Identity("", "none", mode, "Sign in with your hospital account to continue.")
        ended = access.session_refusal(st.user, time.time(), SIGN_OUTS)
        if ended:  # a replayed cookie after sign-out, or an expired identity
            return Identity("", "none", mode, ended)
        roles = access.load_roles(settings.roles_file())
        verified = access.verified_email(st.user)  # an unverified e-mail names nobody
        email = verified or access.subject_name(st.user)
        role = roles.role_of(verified, access.claim_groups(st.user.get(roles.group_claim)))
    except UserError as exc:
        return Identity("", "none", "", str(exc))
    if role == "none":
        return Identity(
            email,
            role,
            mode,
            f"{email or 'This account'} has no access to this dashboard; "
            "ask its administrator for a role.",
        )
    return Identity(email, role, mode)


def allowed(action: Action) -> bool:
    """Whether this session may do ``action`` (its role, and what its mode allows)."""
    me = identity()
    return access.can_in_mode(me.mode, me.role, action)


def audit(action: str, **details: object) -> None:
    """Record ``action`` by this session in the audit log; a failure is shown, not hidden."""
    try:
        audit_log.append(settings.audit_log(), identity().user or "anonymous", action, **details)
    except UserError as exc:
        log.error("audit log: %s", exc)
        st.error(plain_markdown(exc), icon=":material/error:")


def denied(action: Action | str, **details: object) -> None:
    """Record a refused action: a page the role may not open, or a click or value the page
    never offered this role (a forged message)."""
    audit("denied", what=str(action), **details)


def _sign_out() -> None:
    audit("sign_out")
    subject = str(st.user.get("sub") or st.user.get("email") or "")
    if subject:  # ends this identity on the server, not only the cookie in this browser
        SIGN_OUTS.record(subject, time.time())
    st.session_state.pop(KEY_SIGNED_IN, None)
    st.logout()


def gate() -> Identity:
    """Let the session in, or show why not (with a sign-in button) and stop the page."""
    me = identity()
    if me.refusal:
        st.title("Breast Cancer Prediction")
        st.warning(plain_markdown(me.refusal), icon=":material/lock:")
        if me.mode == access.MODE_SIGNIN and not me.user:
            if st.button("Sign in", key="sign_in", type="primary"):
                st.login()  # the provider of [auth] in .streamlit/secrets.toml
        elif me.mode == access.MODE_SIGNIN:
            st.button("Sign out", key="sign_out", on_click=_sign_out)
        st.stop()
    if me.mode == access.MODE_SIGNIN and st.session_state.get(KEY_SIGNED_IN) != me.user:
        st.session_state[KEY_SIGNED_IN] = me.user
        audit("sign_in", role=me.role)
    return me


def require(action: Action, refusal: str) -> Identity:
    """The session, let in by :func:`gate` and allowed ``action``; otherwise the page stops with
    the sign-in prompt, or with ``refusal`` (the sentence naming the role the page needs)."""
    me = gate()
    if not access.can(me.role, action):
        denied(action, role=me.role)
        st.error(plain_markdown(refusal), icon=":material/error:")
        st.stop()
    return me


def account_box(me: Identity) -> None:
    """Who is signed in, with which role (sidebar), and the sign-out button."""
    if me.mode == access.MODE_SIGNIN:
        st.caption(f"Signed in as {plain_markdown(me.user)} ({me.role}).")
        st.button("Sign out", key="sign_out", on_click=_sign_out)
    elif me.mode == access.MODE_DEMO:
        st.caption("Demo: view and predict only; patient IDs stay masked.")
    else:
        st.caption("Local mode: one user on this machine, no sign-in.")
