"""The daemon's zenoh API, one level up from the wire: a session, CBOR queries, subscriptions.

Keys and messages: `docs/zenoh-api.md` of the repository (schema family version 1).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Optional

import cbor2
import zenoh

#: The daemon's schema version (the `v` of every message).
SCHEMA_VERSION = 1


class ReachyError(RuntimeError):
    """A request the daemon did not carry out, or a robot that cannot be reached.

    `status` is the daemon's verdict (`rejected`, `unreachable`, `missed`, `cancelled`, …) or
    `unavailable` when no daemon answered; `reason` its explanation.
    """

    def __init__(self, status: str, reason: Optional[str]):
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}" if reason else status)


def open_session(endpoint: str) -> zenoh.Session:
    """A zenoh client session connected to `endpoint` (multicast scouting off, as the stack's)."""
    conf = zenoh.Config()
    conf.insert_json5("mode", '"client"')
    conf.insert_json5("connect/endpoints", json.dumps([endpoint]))
    conf.insert_json5("scouting/multicast/enabled", "false")
    try:
        return zenoh.open(conf)
    except Exception as e:  # zenoh raises its own ZError
        raise ReachyError(
            "unavailable",
            f"nothing answered at {endpoint}: start `reachy daemon --listen {endpoint}` "
            f"(or fix the endpoint) — {e}",
        ) from None


class Api:
    """Queries and subscriptions under `reachy/<robot>/` on one session."""

    def __init__(self, session: zenoh.Session, robot: str, timeout: float = 10.0):
        self.session = session
        self.robot = robot
        self.timeout = timeout

    def key(self, name: str) -> str:
        return f"reachy/{self.robot}/{name}"

    def ask(self, name: str, msg: Optional[dict] = None, timeout: Optional[float] = None) -> dict:
        """One query; the decoded reply. Raises ReachyError on an error reply or no reply."""
        payload = None if msg is None else cbor2.dumps({"v": SCHEMA_VERSION, **msg})
        t = self.timeout if timeout is None else timeout
        for reply in self.session.get(self.key(name), payload=payload, timeout=t):
            if reply.ok is not None:
                return cbor2.loads(reply.ok.payload.to_bytes())
            err = _decode_or_text(reply.err.payload.to_bytes())
            raise ReachyError("rejected", err.get("error", str(err)) if isinstance(err, dict) else err)
        raise ReachyError(
            "unavailable", f"no reply to `{name}` within {t} s: is the daemon for `{self.robot}` running?"
        )

    def put(self, name: str, msg: dict) -> None:
        self.session.put(self.key(name), cbor2.dumps({"v": SCHEMA_VERSION, **msg}))

    def subscribe(self, name: str, callback: Callable[[Any], None]) -> Any:
        """Subscribe to `name`; `callback` gets each decoded message (undecodable ones dropped)."""

        def on(sample: Any) -> None:
            try:
                msg = cbor2.loads(sample.payload.to_bytes())
            except Exception:
                return
            callback(msg)

        return self.session.declare_subscriber(self.key(name), on)


def _decode_or_text(b: bytes) -> Any:
    try:
        return cbor2.loads(b)
    except Exception:
        return b.decode("utf-8", "replace")


class Lease:
    """The daemon's lease, taken on first use and kept alive while held.

    The daemon gives the lease to one client at a time (priority teleop > policy > script) and
    takes it back after 2 s of silence: a thread renews it every 0.5 s while this holds it.
    """

    def __init__(self, api: Api, client: str, priority: str):
        self.api = api
        self.client = client
        self.priority = priority
        self._token: Optional[int] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def held(self) -> bool:
        return self._token is not None

    def token(self) -> int:
        """The token, taking the lease if it is not held. Raises ReachyError when refused."""
        with self._lock:
            if self._token is None:
                r = self.api.ask("lease", {"client": self.client, "priority": self.priority})
                if not r.get("granted"):
                    raise ReachyError("rejected", f"lease refused: {r.get('reason')}")
                self._token = int(r["token"])
                self._stop.clear()
                self._thread = threading.Thread(target=self._keep, name="reachy-lease", daemon=True)
                self._thread.start()
            return self._token

    def _keep(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                tok = self._token
                if tok is None:
                    return
                try:
                    r = self.api.ask(
                        "lease",
                        {"client": self.client, "priority": self.priority, "renew": tok},
                        timeout=2.0,
                    )
                except ReachyError:
                    continue
                if not r.get("granted"):
                    # pre-empted (a teleop operator took over) or expired: the next command asks again
                    self._token = None
                    return

    def release(self) -> None:
        with self._lock:
            tok, self._token = self._token, None
            self._stop.set()
        if tok is not None:
            try:
                self.api.ask(
                    "lease", {"client": self.client, "priority": self.priority, "release": tok}, timeout=2.0
                )
            except ReachyError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3.0)
