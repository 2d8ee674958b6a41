"""Who may do what in the dashboard: modes, roles, permissions (pure rules, no Streamlit).

Three modes (SECURITY.md):

* ``signin``: an identity provider is configured (``[auth]`` in ``.streamlit/secrets.toml``);
  every user signs in and gets a role from the roles file, by e-mail or by group claim; a
  signed-in user the file does not name gets its ``default`` role, ``none`` (no access) unless
  the file says ``viewer``;
* ``local``: no identity provider; one person on this machine may do everything, and only while
  the server listens on a loopback address (:func:`check_local_address`);
* ``demo``: ``BCP_MODE=demo``; no sign-in, everyone is a viewer (the locked clinician demo).

Roles grow: a ``viewer`` sees pages 1, 2, 4 and 6 read-only and predicts, with patient IDs always
masked and the data root and bundle fixed by the server, and marks predictions agree or
disagree (page 5); an ``analyst`` may do everything else but stop other people's runs and delete
bundles, which only an ``admin`` may.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bcp_core.errors import UserError

MODE_SIGNIN, MODE_LOCAL, MODE_DEMO = "signin", "local", "demo"
#: The roles, weakest first; ``none`` is a signed-in user without access.
ROLES = ("none", "viewer", "analyst", "admin")
#: Who the audit log names in local and demo mode.
LOCAL_USER, DEMO_USER = "local", "demo visitor"


class Action(StrEnum):
    """Everything the dashboard guards."""

    VIEW = "view"  # pages 1, 2, 4 and 6 (read-only), prediction, masked CSV downloads
    FEEDBACK = "feedback"  # mark a prediction agree / disagree (clinicians reading)
    UNMASK = "unmask"  # show patient IDs
    CHOOSE_DATA_ROOT = "choose_data_root"  # among the allowed folders
    CHOOSE_BUNDLE = "choose_bundle"
    TRAIN = "train"  # the training page, starting a run
    SAVE_THRESHOLD = "save_threshold"  # save or restore a threshold
    STOP_ANY_RUN = "stop_any_run"  # stop a run someone else started
    DELETE_BUNDLE = "delete_bundle"
    READ_AUDIT = "read_audit"


#: The least role each action needs.
NEEDS = {
    Action.VIEW: "viewer",
    Action.FEEDBACK: "viewer",
    Action.UNMASK: "analyst",
    Action.CHOOSE_DATA_ROOT: "analyst",
    Action.CHOOSE_BUNDLE: "analyst",
    Action.TRAIN: "analyst",
    Action.SAVE_THRESHOLD: "analyst",
    Action.STOP_ANY_RUN: "admin",
    Action.DELETE_BUNDLE: "admin",
    Action.READ_AUDIT: "admin",
}


def can(role: str, action: Action) -> bool:
    """Whether ``role`` may do ``action`` (an unknown role may do nothing)."""
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(NEEDS[action])


#: What a mode refuses whatever the role: in demo mode nobody is identified, so a reader's mark
#: could be forged in bulk by any visitor.
REFUSED_IN_MODE = {MODE_DEMO: frozenset({Action.FEEDBACK})}
#: Readers' marks: at most this many per person in this many seconds.
MARKS_PER_WINDOW, MARK_WINDOW_S = 30, 600


def can_in_mode(mode: str, role: str, action: Action) -> bool:
    """:func:`can`, and not an action the mode refuses (:data:`REFUSED_IN_MODE`)."""
    return action not in REFUSED_IN_MODE.get(mode, frozenset()) and can(role, action)


class RateLimit:
    """At most ``limit`` events per ``window_s`` seconds per key (thread-safe, in memory)."""

    def __init__(self, limit: int, window_s: float) -> None:
        import threading
        from collections import defaultdict, deque

        self.limit, self.window_s = limit, window_s
        self._events: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Count one event of ``key`` unless it is over the limit; returns whether it was."""
        import time

        now = time.monotonic() if now is None else now
        with self._lock:
            events = self._events[key]
            while events and now - events[0] >= self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True


def can_stop(role: str, user: str, run_owner: str) -> bool:
    """Whether ``user`` may stop a training run ``run_owner`` started: the owner or an admin."""
    if can(role, Action.STOP_ANY_RUN):
        return True
    return can(role, Action.TRAIN) and bool(user) and user == run_owner


def resolve_mode(setting: str, auth_configured: bool) -> str:
    """The mode from $BCP_MODE (``settings.mode()``) and whether sign-in is configured."""
    if setting == MODE_DEMO:
        return MODE_DEMO
    return MODE_SIGNIN if auth_configured else MODE_LOCAL


def is_loopback(address: str) -> bool:
    """Whether a server address answers this machine only ("" listens on every card)."""
    host = address.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Host names every deployment answers: this machine's loopback names.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(host_header: str) -> str:
    """The host name of a ``Host`` header (no port, no brackets, lower case, no trailing dot);
    "" for a header that is not a plain host (user info, path, bad port)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(f"//{host_header.strip()}")
        _ = parts.port  # validates the port
    except ValueError:
        return ""
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return ""
    return (parts.hostname or "").lower().rstrip(".")


def host_allowed(host_header: str | None, served: tuple[str, ...] = ()) -> bool:
    """Whether a request naming ``host_header`` is one this deployment answers.

    A web page on another name that resolves to this machine (DNS rebinding) sends its own
    name: answered only when it is a loopback name or one of ``served`` (the deployment's
    names, ``BCP_SERVED_HOSTS``; ``*.example.org`` allows the sub-domains).
    """
    name = host_name(host_header or "")
    if not name:
        return False
    for pattern in (*LOOPBACK_HOSTS, *(p.strip().lower().rstrip(".") for p in served)):
        if name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def check_local_address(address: str) -> None:
    """Local mode has no sign-in: refuse it on a server that other machines can reach.

    Raises:
        UserError: when ``address`` is not a loopback address.
    """
    if not is_loopback(address):
        shown = address or "every network address"
        raise UserError(
            f"This dashboard listens on {shown} without sign-in, so anyone on the network could "
            "use it: configure sign-in ([auth] in .streamlit/secrets.toml), use BCP_MODE=demo, "
            "or serve on 127.0.0.1 (see SECURITY.md)."
        )


@dataclass(frozen=True)
class RoleMap:
    """The roles file: roles by e-mail and by group, and the role of everyone else."""

    users: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    default: str = "none"
    group_claim: str = "groups"

    def role_of(self, email: str, groups: list[str] | tuple[str, ...] = ()) -> str:
        """The strongest role the file gives this e-mail (case-insensitive) or its groups."""
        found = [self.default]
        if email and email.strip().lower() in self.users:
            found.append(self.users[email.strip().lower()])
        found += [self.groups[g] for g in groups if g in self.groups]
        return max(found, key=ROLES.index)


class SignOuts:
    """Who signed out when (the provider's subject), so a saved cookie replayed after "Sign out"
    does not sign the same person in again: an identity issued at or before its subject's last
    sign-out is refused. Thread-safe; a plain object of the server process."""

    def __init__(self) -> None:
        import threading

        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, subject: str, when: float) -> None:
        with self._lock:
            self._at[subject] = max(when, self._at.get(subject, 0.0))

    def ended(self, subject: str, issued_at: float) -> bool:
        with self._lock:
            return issued_at <= self._at.get(subject, float("-inf"))


def session_refusal(claims, now: float, sign_outs: SignOuts) -> str:
    """Why a signed-in identity may not go on ("" when it may): its ID token has expired, or
    it was issued before its owner signed out."""
    subject = str(claims.get("sub") or claims.get("email") or "")
    try:
        expires = float(claims.get("exp"))
    except (TypeError, ValueError):
        expires = float("inf")  # a provider that gives no expiry: the cookie's own lifetime
    try:
        issued: float | None = float(claims.get("iat"))
    except (TypeError, ValueError):
        issued = None  # OpenID Connect requires it; without it a sign-out cannot be told apart
    if now >= expires:
        return "Your sign-in has expired; sign in again to continue."
    if subject and issued is not None and sign_outs.ended(subject, issued):
        return "You signed out; sign in again to continue."
    return ""


def verified_email(claims) -> str:
    """The e-mail of an identity provider's claims, only when the provider verified it.

    Anyone can type any address into an account at many providers; an unverified
    ``email`` claim must never name someone (``email_verified`` must be true, as a boolean or
    the text "true"). Roles then come from group claims and the file's default only.
    """
    email = str(claims.get("email") or "").strip()
    verified = claims.get("email_verified")
    if verified is True or str(verified).strip().lower() == "true":
        return email
    return ""


def subject_name(claims) -> str:
    """Who the audit log names when no verified e-mail is there: the provider's subject."""
    return f"subject {str(claims.get('sub') or '?').strip()} (e-mail not verified)"


def _role(value: object, where: str) -> str:
    if value not in ROLES:
        raise UserError(f"{where} must be one of {', '.join(ROLES)}, got {value!r}.")
    return str(value)


def parse_roles(data: dict, where: str = "The roles file") -> RoleMap:
    """Check a parsed roles file (see ``roles.example.toml``).

    Raises:
        UserError: one sentence naming the bad entry.
    """
    users, groups = data.get("users", {}), data.get("groups", {})
    if not isinstance(users, dict) or not isinstance(groups, dict):
        raise UserError(f"{where}: [users] and [groups] must be tables of name = role.")
    claim = data.get("group_claim", "groups")
    if not isinstance(claim, str) or not claim:
        raise UserError(f"{where}: group_claim must be the name of a claim, got {claim!r}.")
    return RoleMap(
        users={str(k).strip().lower(): _role(v, f"{where}: users.{k}") for k, v in users.items()},
        groups={str(k): _role(v, f"{where}: groups.{k}") for k, v in groups.items()},
        default=_role(data.get("default", "none"), f"{where}: default"),
        group_claim=claim,
    )


def load_roles(path: str | Path) -> RoleMap:
    """The roles file at ``path``; a missing file gives nobody access.

    Raises:
        UserError: for a file that is not valid TOML or names an unknown role.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RoleMap()
    except OSError as exc:
        raise UserError(f"The roles file {file.name} cannot be read ({exc.strerror}).") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"The roles file {file.name} is not valid TOML: {exc}.") from exc
    return parse_roles(data, f"The roles file {file.name}")


def claim_groups(value: object) -> list[str]:
    """A group claim as a list of names (a list, or one name)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []
