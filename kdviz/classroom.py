"""Classroom mode: one presenter acts, every other session explores and may follow them.

In a lecture the app runs on the lecturer's machine and the class opens its address on
their laptops. Any visitor could otherwise start a hundred jobs, cancel the demo or delete
the runs the lecture needs. So a session is either the **presenter** (it opened the app
with the presenter token, or from this machine) or a **viewer**; viewers read the one job
manager and run store through a ``Guarded`` view that refuses anything but reading.
``Stage`` holds what the presenter shows (their page and exploring choices) so that
viewers can follow them.

Settings (environment): ``KDVIZ_CLASSROOM=0`` turns the mode off (every session may act,
as a single-user app); ``KDVIZ_PRESENTER_TOKEN`` fixes the token (else a random one per
server process); ``KDVIZ_LOOPBACK_PRESENTER=0`` stops sessions from this machine being the
presenter without the token (e.g. behind a reverse proxy on the same machine, where every
visitor seems to come from loopback).
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import threading
from typing import Any, Callable
from urllib.parse import urlencode

from .jobs import JobManager
from .store import RunStore

ENV_CLASSROOM = "KDVIZ_CLASSROOM"
ENV_TOKEN = "KDVIZ_PRESENTER_TOKEN"
ENV_LOOPBACK = "KDVIZ_LOOPBACK_PRESENTER"
TOKEN_PARAM = "presenter"  # the query parameter: http://HOST:PORT/?presenter=TOKEN
PRESENTER, VIEWER = "presenter", "viewer"

# What a viewer may call on each shared object: reading, and keeping derived arrays (test
# logits) that are the same whoever computes them. Anything else, including a method
# added later, is an action and is refused.
READS: dict[type, frozenset[str]] = {
    RunStore: frozenset({"path", "checkpoint_version", "get", "list", "metrics", "load_model", "read_array",
                         "write_array", "images"}),
    JobManager: frozenset({"get", "list", "wait"}),
}
# The refusal's words per action ("Only the lecturer can ...").
ACTIONS = {"submit": "start jobs", "submit_task": "start jobs", "cancel": "cancel jobs",
           "delete": "delete runs", "max_concurrent": "change how many jobs run at once"}
OTHER_ACTION = "change jobs or runs"

_token_lock = threading.Lock()
_random_token: str | None = None


def enabled() -> bool:
    return os.environ.get(ENV_CLASSROOM, "1").strip() != "0"


def loopback_is_presenter() -> bool:
    return os.environ.get(ENV_LOOPBACK, "1").strip() != "0"


def token() -> str:
    """The presenter token: ``KDVIZ_PRESENTER_TOKEN``, else one random token per process."""
    global _random_token
    fixed = os.environ.get(ENV_TOKEN, "").strip()
    if fixed:
        return fixed
    with _token_lock:
        if _random_token is None:
            _random_token = secrets.token_urlsafe(16)
        return _random_token


def role(given_token: str | None, local: bool) -> str:
    """PRESENTER or VIEWER for a session that brought ``given_token`` (or None) and that
    comes from this machine (``local``) or not."""
    if not enabled():
        return PRESENTER
    if given_token and hmac.compare_digest(given_token.encode(), token().encode()):
        return PRESENTER
    return PRESENTER if local and loopback_is_presenter() else VIEWER


def is_loopback(ip: str | None) -> bool:
    """Whether a peer address is this machine (127.0.0.0/8, ::1, or IPv4 mapped in IPv6)."""
    try:
        address = ipaddress.ip_address((ip or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def only_the_lecturer(action: str) -> str:
    """Why a viewer's control is disabled, e.g. 'Only the lecturer can start jobs.'"""
    return f"Only the lecturer can {ACTIONS.get(action, OTHER_ACTION)}."


def refusal(action: str) -> str:
    return f"{only_the_lecturer(action)[:-1]}: this browser is a viewer."


class Guarded:
    """A viewer's view of a shared engine object (the job manager or the run store).

    Reading passes through; calling anything else (submit, cancel, delete, a method added
    later) or setting an attribute (``max_concurrent``) calls ``refuse(action)``, which must
    raise (the app's ``pages.common.permit`` says why and ends the run). The check is made when the call is made, so an action
    whose button was left enabled by mistake is still refused. Objects reached through it
    (``manager.store``) are guarded too."""

    __slots__ = ("_target", "_refuse")

    def __init__(self, target: Any, refuse: Callable[[str], None]):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_refuse", refuse)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name.startswith("_"):  # internals (a job's record, a lock) are not for pages
            self._refuse(name)
        value = getattr(self._target, name)
        if any(isinstance(value, kind) for kind in READS):
            return Guarded(value, self._refuse)
        if not callable(value) or any(name in reads for kind, reads in READS.items() if isinstance(self._target, kind)):
            return value

        def refused(*args, **kwargs):
            self._refuse(name)
        return refused

    def __setattr__(self, name: str, value) -> None:
        self._refuse(name)

    def __repr__(self) -> str:
        return f"Guarded({self._target!r})"


class Stage:
    """What the presenter shows: the page they are on and their exploring choices on it
    (widget key -> value), with a version that grows on every change. Process-wide and
    thread-safe: the presenter's session writes it, followers' sessions read it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.version, self.page, self.values, self.target = 0, None, {}, None

    def publish(self, page: str, values: dict, target: Any = None) -> bool:
        """Record the presenter's page (its url path; ``target``: what takes a follower there)
        and choices; True when something changed."""
        with self._lock:
            if page == self.page and values == self.values:
                return False
            self.page, self.values, self.target, self.version = page, dict(values), target, self.version + 1
            return True

    def snapshot(self) -> tuple[int, str | None, dict, Any]:
        """(version, page, values, target), read together."""
        with self._lock:
            return self.version, self.page, dict(self.values), self.target


def lan_address() -> str:
    """This machine's address on the local network, found without sending anything: a UDP
    socket "connected" to a private address gets the outgoing interface's address (no packet
    leaves, so it works offline as long as a route exists). Fallbacks: the address the host
    name resolves to, then 127.0.0.1 (reachable from this machine only)."""
    for probe in ("10.254.254.254", "192.168.254.254", "172.31.254.254"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((probe, 1))
                address = s.getsockname()[0]
            if not is_loopback(address) and address != "0.0.0.0":
                return address
        except OSError:
            continue
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not is_loopback(address):
            return address
    except OSError:
        pass
    return "127.0.0.1"


def share_host(bound: str | None, named: str | None) -> str:
    """The host the class should type: the address the server is bound to (Streamlit's
    ``server.address``) if it is one, else its ``browser.serverAddress`` if set to other than
    localhost, else this machine's LAN address."""
    if bound and bound not in ("0.0.0.0", "::"):
        return bound
    return named if named and named != "localhost" else lan_address()


def app_url(host: str, port: int, base_path: str = "", https: bool = False, presenter_token: str = "") -> str:
    """The app's address; with a token, the presenter's (keep that one private)."""
    host = f"[{host}]" if ":" in host else host
    base = "/" + base_path.strip("/") if base_path.strip("/") else ""
    query = "?" + urlencode({TOKEN_PARAM: presenter_token}) if presenter_token else ""
    return f"{'https' if https else 'http'}://{host}:{port}{base}/{query}"
