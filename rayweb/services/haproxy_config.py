"""The gateway's HAProxy configuration: a pure function of the route table (tested without Ray).

One frontend on the user's ``host:port`` that strips any client-sent gateway key, sets
``x-rayweb-client`` (the peer, or the last ``X-Forwarded-For`` hop when the peer is a trusted
proxy) and the cluster's key; one backend per endpoint (matched on the percent-decoded path;
a declared ``Content-Length`` over the endpoint's body limit gets 413 here; leastconn over its
registered replicas, ``maxconn`` per server as the compiler says, health checks, and the
gateway's holder (``holder.py``) as backup, the only server while the endpoint has no
replica: it wakes the endpoint and relays to its replica without buffering); Serve's proxy
as the default backend (and the backup where no holder is given).

Sticky sessions: requests with the same ``Modal-Routing-Affinity-Key`` (or, without it,
``Modal-Session-Id``) header go to the replica that answered the first of them while it is
registered (a stick table per backend, keyed by the header); the first request of a session,
and requests without the header, go to the least busy replica. The tables live in HAProxy's
worker, so replicas come and go through the runtime API (``add server``/``del server``), not
reloads; each replica's server name is a hash of its actor name, the same in the file.

Every route's answers stay under its prefix (``within_prefix``): a root-relative redirect and
a cookie's ``Path`` are put under ``/<label>``, except at the route's own origin.

The direct hop (``@app.server``): a route whose replicas registered their server's own port,
which the gateway reaches, is served at those ports, with no Python between HAProxy and the
user's server. HAProxy then does what the replica's chain does on the other path (``Direct``):
proxy auth against a map of SHA-256 digests of the cluster's tokens (``tokenmap.py``), the
rate limit per client in a stick table, ``max_concurrency`` as a 429 when every server has its
connections in flight, the request timeout as the server timeout (an idle timeout: streams
that keep sending live on), the prefix stripped and ``X-Forwarded-*`` set, and the gateway's
own headers removed. While no server is
up the route's requests go to a second backend whose only server is the holder, which wakes
the endpoint and relays to a replica's own port, where the chain runs.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from ..common import ADMITTED_HEADER, CLIENT_HEADER, KEY_HEADER, ORIGIN_HEADER
from .haproxy_direct import (
    Direct,
    direct_rules,
    ms,
    origin_rules,
    rate_table,
    session_front,
    session_rules,
    session_table,
    unknown_origin,
    within_prefix,
)
from .requestlog import LOG_FORMAT, ROUTE_VAR


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    maxconn: int
    # An @app.server's own port as (host, port, maxconn), when the gateway reaches it.
    upstream: tuple[str, int, int] | None = None


@dataclass(frozen=True)
class Admission:
    """What the gateway's holder checks before it wakes an endpoint (``holder.py``)."""

    auth_headers: tuple[str, str] | None = None  # (key, secret) headers if proxy auth is on
    rate_limit: float | None = None  # the endpoint's Limits.rate_limit
    rate_limit_burst_s: float = 5.0


@dataclass
class Route:
    prefix: str
    servers: dict[str, Server] = field(default_factory=dict)  # replica actor name -> server
    max_body: int | None = None  # the endpoint's Limits.max_request_body
    body_timeout: float | None = None  # the endpoint's Limits.body_timeout
    admission: Admission | None = None  # declared at deploy; None: the replica checks
    serve_app: str | None = None  # the Serve application to wake, when not the route's own
    direct: Direct | None = None  # registered by @app.server replicas (the direct hop)
    sessioned: bool = False  # @rayweb.sessioned(): every request in a sticky session


def parse_trusted(spec: str) -> list[str]:
    """``RAYWEB_TRUSTED_PROXIES`` ("198.51.100.1, 203.0.113.0/24") as HAProxy source patterns."""
    nets = []
    for part in spec.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part == "*":
            nets += ["0.0.0.0/0", "::/0"]
            continue
        try:
            nets.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(
                f"RAYWEB_TRUSTED_PROXIES: {part!r} is not an IP address or network. "
                "Suggestion: RAYWEB_TRUSTED_PROXIES=198.51.100.5,203.0.113.0/24"
            ) from None
    return nets


AFFINITY_HEADERS = ("Modal-Routing-Affinity-Key", "Modal-Session-Id")  # first found wins
STICKY_EXPIRE = "30m"  # a session idle this long may move to another replica


def server_name(replica: str) -> str:
    """A replica's server name in HAProxy: the same for the same replica in every config (the
    stick tables remember servers by name)."""
    return "r" + hashlib.sha256(replica.encode()).hexdigest()[:16]


def server_args(server: Server) -> str:
    """A replica's server line after its name (also what the runtime API's ``add server``
    takes, so a server added without a reload is the one the config file lists)."""
    return f"{_addr(server.host, server.port)} maxconn {server.maxconn} check inter 2s"


def servers_by_backend(routes: dict[str, Route]) -> dict[str, dict[str, Server]]:
    """Each backend's replica servers, by server name (what a reload would list)."""
    return {
        backend: {server_name(r): s for r, s in routes[name].servers.items()}
        for backend, name in backend_names(routes).items()
    }


def skeleton(routes: dict[str, Route]) -> dict[str, Route]:
    """The routes without their replicas: two tables with the same skeleton differ only in
    servers, which the gateway changes through HAProxy's runtime API, without a reload
    (so the stick tables, which live in the worker, keep every session)."""
    return {name: replace(r, servers={}) for name, r in routes.items()}


def served(routes: dict[str, Route], tokens_ready: bool) -> dict[str, Route]:
    """The table as HAProxy serves it: a route keeps its direct hop only while every one of
    its servers has a port the gateway reaches (and, with proxy auth, while every token has
    a digest in the map: ``tokenmap.py``); then its servers are those ports. Other routes
    are served at their replicas' own ports."""
    out = {}
    for name, route in routes.items():
        direct = route.direct
        if direct is not None and (
            any(s.upstream is None for s in route.servers.values())
            or (direct.auth_headers is not None and not tokens_ready)
        ):
            direct = None
        servers = {
            replica: Server(*s.upstream) if direct and s.upstream else replace(s, upstream=None)
            for replica, s in route.servers.items()
        }
        out[name] = replace(route, servers=servers, direct=direct)
    return out


def _sticky() -> list[str]:
    """A backend's sticky-session rules (see the module docstring)."""
    first, second = AFFINITY_HEADERS
    table = f"    stick-table type string len 128 size 100k expire {STICKY_EXPIRE}"
    return [
        table,
        f"    http-request set-var(txn.affinity) req.hdr({first})",
        f"    http-request set-var(txn.affinity) req.hdr({second})"
        " if !{ var(txn.affinity) -m found }",
        "    stick match var(txn.affinity) if { var(txn.affinity) -m found }",
        # Only a replica's answer makes a session stick (not the holder's, which relays).
        "    stick store-response var(txn.affinity) if { var(txn.affinity) -m found } "
        "!{ srv_name hold }",
    ]


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ordered(routes: dict[str, Route]) -> list[tuple[str, Route]]:
    """Longest prefix first, as Serve matches; backend ``b<i>`` is the i-th of these."""
    return sorted(routes.items(), key=lambda item: -len(item[1].prefix))


def backend_names(routes: dict[str, Route]) -> dict[str, str]:
    """HAProxy's name of each route's backend -> the route's name (for HAProxy's stats)."""
    return {f"b{index}": name for index, (name, _route) in enumerate(_ordered(routes))}


def _stat_rows(stats_csv: str) -> list[dict[str, str]]:
    """``show stat``'s CSV as one dict per proxy and server."""
    lines = stats_csv.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    columns = lines[0][2:].split(",")
    return [dict(zip(columns, line.split(","), strict=False)) for line in lines[1:] if line]


def _number(row: dict[str, str], column: str) -> int:
    try:
        return int(row.get(column) or 0)
    except ValueError:
        return 0


def queued_per_backend(stats_csv: str) -> dict[str, int]:
    """Requests waiting in HAProxy's queues (the backend's and its servers'), per backend,
    from ``show stat``'s CSV."""
    queued: dict[str, int] = {}
    for row in _stat_rows(stats_csv):
        if row.get("svname") not in (None, "FRONTEND") and "pxname" in row:
            queued[row["pxname"]] = queued.get(row["pxname"], 0) + _number(row, "qcur")
    return queued


def in_flight_per_backend(stats_csv: str) -> dict[str, float]:
    """Requests at each backend's servers: the connections open now, or, when requests are
    shorter than the one-second look, rate x mean time (Little's law), whichever is larger."""
    now: dict[str, float] = {}
    mean: dict[str, float] = {}
    for row in _stat_rows(stats_csv):
        name, server = row.get("pxname"), row.get("svname")
        if name is None or server in (None, "FRONTEND"):
            continue
        if server == "BACKEND":
            mean[name] = _number(row, "rate") * _number(row, "ttime") / 1000.0
        else:
            now[name] = now.get(name, 0.0) + _number(row, "scur")
    return {name: max(now.get(name, 0.0), mean.get(name, 0.0)) for name in now.keys() | mean}


def render_config(
    *,
    bind: tuple[str, int],
    serve: tuple[str, int],
    key: str,
    routes: dict[str, Route],
    trusted: list[str] | None = None,
    threads: int = 1,
    maxconn: int = 4096,
    holder: tuple[str, int] | None = None,
    request_log: str | None = None,
    tokens_map: str | None = None,
    sessions_map: str | None = None,
    domain: str | None = None,
) -> str:
    """The HAProxy configuration for this cluster's routes (pure; tested without Ray).
    ``request_log``: the loopback UDP address (host:port) HAProxy sends a line per request
    to (``requestlog.py``); ``tokens_map``: the token digests' map file (``tokenmap.py``),
    which direct routes with proxy auth check credentials against; ``sessions_map``: the
    live sticky sessions' map file (``sessions.py``), for sessioned routes; ``domain``: each
    route also answers at the root of its own origin, ``<label>.<domain>``."""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        f"    nbthread {max(1, threads)}",
    ]
    lines += [
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        # Slow peers: a body may pause for a while between chunks without failing.
        "    timeout client 10m",
        "    timeout server 10m",
        "    timeout tunnel 1h",
        # Headers must arrive within 10 s (slowloris gets 408); bodies: wait-for-body below.
        "    timeout http-request 10s",
        "    timeout http-keep-alive 75s",
        # Requests wait here while every replica has max_ongoing_requests in flight.
        "    timeout queue 150s",
        "    retries 3",
        "    option redispatch 1",
        # Send each response chunk (an SSE event, a token) as it comes, not in bursts.
        "    option http-no-delay",
        "frontend rayweb",
        f"    bind {_addr(*bind)}",
        f"    http-request del-header {KEY_HEADER}",
        f"    http-request del-header {ADMITTED_HEADER}",
        f"    http-request set-header {CLIENT_HEADER} %[src]",
    ]
    if trusted:
        lines.append(f"    acl rayweb_trusted src {' '.join(trusted)}")
        lines.append(
            f"    http-request set-header {CLIENT_HEADER} %[req.hdr_ip(x-forwarded-for,-1)]"
            " if rayweb_trusted { req.hdr_ip(x-forwarded-for,-1) -m found }"
        )
    lines.append(f"    http-request set-header {KEY_HEADER} {key}")
    lines.append(f"    http-request del-header {ORIGIN_HEADER}")
    # Serve's health path, answered by the data path itself: KubeRay's check puts a node in
    # the serve Service when it answers. (Serve's proxy would say 503 "Route table is not
    # populated yet" for an app whose every URL is a class pool's: those have no Serve route.)
    lines.append(
        "    http-request return status 200 content-type text/plain string success"
        " if { path /-/healthz }"
    )
    if request_log is not None:
        lines += [
            "    option dontlognull",
            f"    log {request_log} len 1024 format raw local0 info",
            f'    log-format "{LOG_FORMAT}"',
        ]
    live = _ordered(routes)
    for index, (_name, route) in enumerate(live):
        if route.prefix == "/":
            lines.append(f"    acl r{index} always_true")
        else:
            # On the percent-decoded path, as Serve's proxy matches: `/%61pp` is `/app`.
            lines.append(f"    acl r{index} path,url_dec -m str {route.prefix}")
            lines.append(f"    acl r{index} path,url_dec -m beg {route.prefix}/")
    if domain:
        lines += origin_rules(domain)
    for index, (_name, route) in enumerate(live):
        if route.sessioned:
            assert sessions_map is not None
            lines += session_front(index, sessions_map)
    for index, (_name, route) in enumerate(live):
        if route.sessioned:  # every request has a live session here (session_front)
            lines.append(f"    use_backend s{index} if r{index}")
        elif route.direct is not None:  # the user's servers while one is up, else the holder
            lines.append(f"    use_backend b{index} if r{index} {{ nbsrv(b{index}) gt 0 }}")
            lines.append(f"    use_backend h{index} if r{index}")
        else:
            lines.append(f"    use_backend b{index} if r{index}")
    if domain:  # a host under the domain that names no route
        lines.append("    use_backend unknown_origin if { var(txn.rw_origin) -m found }")
    lines.append("    default_backend serve")
    # No idle connection to the holder: it relays a connection's rest to one replica after
    # admitting its first request, so a reused one would skip admission and the wake-up.
    hold = f"server hold {_addr(*holder)} pool-max-conn 0" if holder else ""
    backup = hold or f"server serve {_addr(*serve)}"
    for index, (name, route) in enumerate(live):
        log = request_log is not None
        lines += [f"backend b{index}  # {name}", "    balance leastconn"]
        lines += _admission(name, route, log)
        if route.direct is not None:
            cap = max((s.maxconn for s in route.servers.values()), default=1)
            lines += direct_rules(index, route.prefix, route.direct, cap, tokens_map)
        lines += _sticky()
        if route.direct is None:
            # A client's first request may reuse an idle connection to a replica (no accept
            # in Python): replicas keep them 120 s, a deregistered one gets no new request.
            # A user's own server (direct routes) may close them any time: the default.
            lines.append("    http-reuse always")
        for replica, server in sorted(route.servers.items()):
            lines.append(f"    server {server_name(replica)} {server_args(server)}")
        if route.direct is None:
            lines.append(f"    {backup} backup")
        else:
            lines += [f"backend h{index}  # {name}, while no server is up"]
            lines += _admission(name, route, log)
            lines.append(f"    {backup}")
            lines += rate_table(index, name, route.direct)
        if route.sessioned:
            lines += [f"backend s{index}  # {name}, in sticky sessions"]
            lines += _admission(name, route, log)
            lines += session_rules(index, route.prefix, route.direct)
            lines += session_table(index, name)
    if domain:
        lines += unknown_origin(
            [route.prefix.strip("/") for _name, route in live if route.prefix != "/"]
        )
    lines += ["backend serve", f"    server serve {_addr(*serve)}", ""]
    return "\n".join(lines)


def _admission(name: str, route: Route, log: bool) -> list[str]:
    """A route's first rules in each of its backends: its name for the request log, the
    body limit and the wait for slow bodies; its answers kept within its prefix."""
    lines = within_prefix(route.prefix)
    if log:  # the request log's name for the route, first
        lines.append(f"    http-request set-var({ROUTE_VAR}) str({name})")
    if route.max_body is not None:
        # Refused here, before a byte of the body is read or a replica is woken.
        detail = f"Request body is larger than the limit of {route.max_body} bytes."
        lines.append(
            "    http-request deny deny_status 413 content-type application/json "
            f'string \'{{"detail": "{detail}"}}\' '
            # `-m int` on the string is 64-bit; `req.hdr_val` wraps at 2^32 (5 GB -> 705 MB).
            f"if {{ req.hdr(content-length) -m int gt {route.max_body} }}"
        )
    if route.body_timeout is not None:
        # A slow client waits here, not in a replica's slot: the request goes on once its
        # body is complete or 16 KiB of it arrived, else 408.
        wait = ms(route.body_timeout)
        lines.append(f"    http-request wait-for-body time {wait}ms at-least 16k")
    return lines


def routes_to_json(routes: dict[str, Route]) -> dict[str, Any]:
    """The route table as the gateway keeps it in ``state.json`` (for a restarted actor)."""
    return {
        name: {
            "prefix": route.prefix,
            "servers": {
                r: [s.host, s.port, s.maxconn, s.upstream] for r, s in route.servers.items()
            },
            "max_body": route.max_body,
            "body_timeout": route.body_timeout,
            "admission": vars(route.admission) if route.admission else None,
            "serve_app": route.serve_app,
            "direct": vars(route.direct) if route.direct else None,
            "sessioned": route.sessioned,
        }
        for name, route in routes.items()
    }


def routes_from_json(data: dict[str, Any]) -> dict[str, Route]:
    """``routes_to_json``'s table back."""
    return {
        name: Route(
            route["prefix"],
            {r: _server(*srv) for r, srv in route["servers"].items()},
            route.get("max_body"),
            route.get("body_timeout"),
            admission_from(route["admission"]) if route.get("admission") else None,
            route.get("serve_app"),
            direct_from(route["direct"]) if route.get("direct") else None,
            bool(route.get("sessioned", False)),
        )
        for name, route in data.items()
    }


def _server(host: str, port: int, maxconn: int, upstream: Any = None) -> Server:
    return Server(host, port, maxconn, tuple(upstream) if upstream else None)


def direct_from(fields: dict[str, Any]) -> Direct:
    """A ``Direct`` from its fields as JSON or a replica's registration sends them."""
    auth = fields.get("auth_headers")
    timeout = fields.get("request_timeout")
    rate = fields.get("rate_limit")
    return Direct(
        auth_headers=(str(auth[0]), str(auth[1])) if auth else None,
        rate_limit=float(rate) if rate is not None else None,
        rate_limit_burst_s=float(fields.get("rate_limit_burst_s", 5.0)),
        request_timeout=float(timeout) if timeout is not None else None,
        full=bool(fields.get("full", False)),
    )


def admission_from(fields: dict[str, Any]) -> Admission:
    auth = fields.get("auth_headers")
    return Admission(
        auth_headers=(str(auth[0]), str(auth[1])) if auth else None,
        rate_limit=fields.get("rate_limit"),
        rate_limit_burst_s=float(fields.get("rate_limit_burst_s", 5.0)),
    )
