"""Sticky sessions of ``@rayweb.sessioned()`` Servers, as the gateway keeps them (no Ray).

Modal's protocol: ``Server.sessions.start(idle_timeout=600)`` returns a session id and a
token; every request to a sessioned Server must carry a live session's token
(``Modal-Authorization: Bearer <token>``, or ``?modal_session_token=<token>`` once, which
HAProxy turns into a cookie) and goes to the container the session was started on, with the
header ``x-modal-server-session-id``. A session ends when it is terminated, after
``idle_timeout`` seconds without a request in flight, or when its container goes; new
sessions go to the container holding the fewest.

HAProxy reads ``sessions.map`` in the gateway's folder: the SHA-256 of each live token ->
``host|port|session id`` (the container's server port on the direct hop, else its replica's
own port); the gateway changes the running worker through the runtime API (no reload) and
reads each session's requests from the stick table ``ss<i>`` (``show table``).
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .maps import write_map

if TYPE_CHECKING:
    from .haproxy_config import Route

MAP_FILE = "sessions.map"
_ENTRY = re.compile(r"key=(\S+) .*?conn_cur=(\d+) http_req_cnt=(\d+)")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    route: str
    replica: str
    session_id: str
    idle_timeout: float
    last_active: float
    requests: dict[str, int] = field(default_factory=dict)  # each gateway's count, last look


class SessionTable:
    """Live sessions by token digest, and what the running HAProxy holds of them."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / MAP_FILE
        self.sessions: dict[str, Session] = {}
        self.live: dict[str, str] = {}  # digest -> map value, as HAProxy's worker has it
        self.write({})

    def start(
        self, route: str, replicas: list[str], idle_timeout: float, now: float
    ) -> tuple[str, str]:
        """A new session on the one of ``replicas`` holding the fewest: (id, token)."""
        held = Counter(s.replica for s in self.sessions.values() if s.route == route)
        fewest = min(held[r] for r in replicas)
        replica = random.choice([r for r in replicas if held[r] == fewest])
        token = "st-" + secrets.token_urlsafe(32)
        session_id = "ss-" + secrets.token_hex(10)
        self.sessions[digest(token)] = Session(route, replica, session_id, idle_timeout, now)
        return session_id, token

    def terminate(self, route: str, token: str) -> bool:
        """End the session of ``token`` (False: there was none on ``route``)."""
        key = digest(token)
        session = self.sessions.get(key)
        if session is None or session.route != route:
            return False
        del self.sessions[key]
        return True

    def observe(self, table: str, now: float, source: str = "head") -> None:
        """``show table ss<i>`` of one gateway (``source``: the head's, or a node's): a
        session with a request in flight there, or with requests since the last look, was
        active now."""
        for key, in_flight, count in _ENTRY.findall(table):
            session = self.sessions.get(key)
            if session is None:
                continue
            if int(in_flight) > 0 or int(count) != session.requests.get(source):
                session.last_active = now
            session.requests[source] = int(count)

    def expire(self, now: float, replicas: dict[str, set[str]]) -> list[str]:
        """End the sessions idle longer than their ``idle_timeout`` and those whose container
        is gone (``replicas``: each route's registered replicas); their ids."""
        ended = [
            key
            for key, s in self.sessions.items()
            if now - s.last_active > s.idle_timeout or s.replica not in replicas.get(s.route, ())
        ]
        return [self.sessions.pop(key).session_id for key in ended]

    def wanted(self, served: dict[str, Route]) -> dict[str, str]:
        """The map HAProxy should hold for the table it serves (``haproxy_config.served``)."""
        out = {}
        for key, s in self.sessions.items():
            route = served.get(s.route)
            server = route.servers.get(s.replica) if route is not None else None
            if server is not None:
                out[key] = f"{server.host}|{server.port}|{s.session_id}"
        return out

    def commands(self, wanted: dict[str, str]) -> list[str]:
        """Runtime API commands that bring the worker from ``live`` to ``wanted``."""
        path = self.path
        out = [f"del map {path} {key}" for key in sorted(self.live.keys() - wanted.keys())]
        for key, value in sorted(wanted.items()):
            if key not in self.live:
                out.append(f"add map {path} {key} {value}")
            elif self.live[key] != value:
                out.append(f"set map {path} {key} {value}")
        return out

    def write(self, wanted: dict[str, str]) -> None:
        """The map file (what a reloaded or restarted HAProxy reads)."""
        write_map(self.path, wanted)

    def to_json(self) -> dict[str, list[Any]]:
        """The live sessions for the gateway's ``state.json`` (digests only, no token)."""
        return {
            key: [s.route, s.replica, s.session_id, s.idle_timeout]
            for key, s in self.sessions.items()
        }

    def restore(self, data: dict[str, list[Any]], now: float, served: dict[str, Route]) -> None:
        """A restarted gateway's sessions (idle from ``now`` on), in the map file before its
        HAProxy reloads."""
        for key, (route, replica, session_id, idle_timeout) in data.items():
            self.sessions[key] = Session(route, replica, session_id, float(idle_timeout), now)
        self.live = self.wanted(served)
        self.write(self.live)

    def pinned(self) -> dict[str, int]:
        """Per route, how many of its containers hold a session (not to be scaled away)."""
        held = {(s.route, s.replica) for s in self.sessions.values()}
        return dict(Counter(route for route, _ in held))
