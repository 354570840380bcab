"""The direct hop's HAProxy rules (``haproxy_config.py``'s module docstring says when a
route has one): what the replica's chain does on the other path, done in HAProxy; and the
rules of sticky sessions (``@rayweb.sessioned()``, ``sessions.py``) and of each endpoint's own
origin (``<label>.<domain>``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..common import ADMITTED_HEADER, CLIENT_HEADER, KEY_HEADER, ORIGIN_HEADER


@dataclass(frozen=True)
class Direct:
    """What HAProxy does in the replica's place on a route served at the user's own server
    ports (registered by its replicas, from their payload)."""

    auth_headers: tuple[str, str] | None = None  # (key, secret) headers if proxy auth is on
    rate_limit: float | None = None
    rate_limit_burst_s: float = 5.0
    request_timeout: float | None = None
    full: bool = False  # max_concurrency: 429 when every server has maxconn in flight


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _reply(status: int, detail: str, headers: str = "") -> str:
    """An ``http-request return`` with a JSON body, as the replica's chain answers."""
    return (
        f"    http-request return status {status} content-type application/json "
        f'string \'{{"detail": "{detail}"}}\'{headers}'
    )


def direct_rules(
    index: int, prefix: str, direct: Direct, cap: int, tokens_map: str | None
) -> list[str]:
    """The rules of backend ``b<index>``, a route served at the user's own server ports, in
    the chain's order: the rate limit, proxy auth, max_concurrency (``cap``: each server's
    maxconn); then the request as the replica's reverse proxy would send it
    (``replica/proxy.py``)."""
    lines = _rate(index, direct)
    if direct.auth_headers is not None:
        assert tokens_map is not None  # ``served`` keeps such routes off the direct hop
        lines += _auth(direct.auth_headers, tokens_map)
    if direct.full:
        # Each server's maxconn is max_concurrency; be_conn counts this request too.
        detail = "Too many concurrent requests: every container is at max_concurrency."
        lines += [
            f"    http-request set-var(txn.rw_cap) nbsrv,mul({cap})",
            _reply(429, detail, " hdr retry-after 1") + " if { be_conn,sub(txn.rw_cap) gt 0 }",
        ]
    return lines + _forward(prefix, direct)


def _rate(index: int, direct: Direct) -> list[str]:
    if direct.rate_limit is None:
        return []
    # A sliding window of burst_s holding rate * burst_s admitted requests: the token
    # bucket's long-run rate and burst. Refused requests are not counted.
    allowed = max(1, math.ceil(direct.rate_limit * direct.rate_limit_burst_s))
    retry = max(1, math.ceil(1 / direct.rate_limit))
    detail = "Too many requests from this client. Retry later."
    return [
        f"    http-request track-sc0 req.hdr({CLIENT_HEADER}) table rl{index}",
        _reply(429, detail, f" hdr retry-after {retry}")
        + f" if {{ sc_gpc0_rate(0) ge {allowed} }}",
        "    http-request sc-inc-gpc0(0)",
    ]


def _auth(headers: tuple[str, str], tokens_map: str) -> list[str]:
    key, secret = headers
    known = f"var(txn.rw_cred),sha2(256),hex,lower,map({tokens_map})"
    lines = [
        f"    http-request set-var(txn.rw_secret) req.hdr({secret})",
        f"    http-request set-var(txn.rw_cred) req.hdr({key}),concat(.,txn.rw_secret) "
        f"if {{ req.hdr({key}) -m found }} {{ req.hdr({secret}) -m found }}",
        # `Authorization: Bearer wk-....ws-...` (generic clients, OpenAI SDKs)
        '    http-request set-var(txn.rw_cred) req.hdr(authorization),regsub("^[Bb]earer +",)'
        ' if !{ var(txn.rw_cred) -m found } { req.hdr(authorization) -m reg -i "^bearer +" }',
    ]
    challenge = " hdr www-authenticate 'Bearer realm=\"rayweb\"'"
    for problem, test in (
        ("missing", "var(txn.rw_cred) -m found"),
        ("invalid", f"{known} -m found"),
    ):
        detail = f"rayweb: {problem} credentials for proxy authorization"
        lines.append(_reply(401, detail, challenge) + f" unless {{ {test} }}")
    return lines


def _forward(prefix: str, direct: Direct | None) -> list[str]:
    """The request as the replica's reverse proxy would send it to the user's server."""
    lines = []
    if direct is not None and direct.request_timeout is not None:
        lines.append(f"    timeout server {ms(direct.request_timeout)}ms")
    lines += [
        f"    http-request del-header {KEY_HEADER}",
        f"    http-request del-header {CLIENT_HEADER}",
        f"    http-request del-header {ADMITTED_HEADER}",
        f"    http-request del-header {ORIGIN_HEADER}",
        "    option forwardfor",
        "    http-request set-header X-Forwarded-Proto http",
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)]"
        " if { req.hdr(host) -m found }",
    ]
    if prefix != "/":
        prefix = prefix.rstrip("/")
        # At its own origin (`origin_rules`) the prefix is the gateway's alone: no header.
        lines += [
            f"    http-request set-header X-Forwarded-Prefix {prefix} {AT_PATH}",
            f"    http-request replace-path ^{re.escape(prefix)}/?(.*) /\\1",
        ]
    return lines


# A request to the route's path form, not to its own origin (``origin_rules``).
AT_PATH = "unless { var(txn.rw_origin) -m found }"


def within_prefix(prefix: str) -> list[str]:
    """Every backend of a route under a path prefix keeps its answers within the prefix: a
    redirect to a root-relative ``/x`` (what an app at its own origin sends) goes to
    ``/<label>/x``, and a cookie for ``Path=/x`` is set for ``/<label>/x`` (``Path=/``: the
    prefix). At the route's own origin both stay as the app sent them. (Single-quoted: HAProxy
    keeps the backslashes.)"""
    if prefix == "/":
        return []
    prefix = prefix.rstrip("/")
    quoted, label = re.escape(prefix), re.escape(prefix.lstrip("/"))
    path_attr = "(?i)^(.*;[ \\t]*path=)"
    return [
        f"    http-response replace-header Location '^(?!{quoted}(/|$))(/([^/].*)?)$' "
        f"'{prefix}\\2' {AT_PATH}",
        f"    http-response replace-header Set-Cookie '{path_attr}/([ \\t]*(;.*)?)$' "
        f"'\\1{prefix}\\2' {AT_PATH}",
        f"    http-response replace-header Set-Cookie "
        f"'{path_attr}(/(?!{label}(/|;|[ \\t]|$))[^;]*)(.*)$' '\\1{prefix}\\2\\4' {AT_PATH}",
    ]


# -- sticky sessions (``@rayweb.sessioned()``: ``sessions.py``) ------------------------------
SESSION_COOKIE = "modal_session"
SESSION_PARAM = "modal_session_token"
SESSION_ID_HEADER = "x-modal-server-session-id"


def session_front(index: int, sessions_map: str) -> list[str]:
    """Frontend rules of a sessioned route ``r<index>``: its session token (from
    ``Modal-Authorization: Bearer``, the ``modal_session_token`` query parameter or the
    session cookie), looked up by digest in the sessions map; none: 401."""
    when = f"if r{index}"
    found = "{ var(txn.rw_stok) -m found }"
    detail = (
        "rayweb: this Server takes requests in a sticky session only (its session may have "
        "ended). Suggestion: `session = Server.sessions.start()` and send the header "
        "`Modal-Authorization: Bearer <session.token>`."
    )
    return [
        "    http-request set-var(txn.rw_stok) req.hdr(modal-authorization),"
        f'regsub("^[Bb]earer +",) {when}',
        f"    http-request set-var(txn.rw_stok) url_param({SESSION_PARAM}) {when} !{found}",
        f"    http-request set-var(txn.rw_stok) req.cook({SESSION_COOKIE}) {when} !{found}",
        "    http-request set-var(txn.rw_sdig) var(txn.rw_stok),sha2(256),hex,lower "
        f"{when} {found}",
        f"    http-request set-var(txn.rw_sto) var(txn.rw_sdig),map({sessions_map}) {when}"
        " { var(txn.rw_sdig) -m found }",
        _reply(401, detail) + f" {when} !{{ var(txn.rw_sto) -m found }}",
    ]


def session_rules(index: int, prefix: str, direct: Direct | None) -> list[str]:
    """Backend ``s<index>``: each request to the container its session lives in (the map's
    value is ``host|port|session id``); a browser that came with ``?modal_session_token=``
    is sent back to the same URL without it, holding the token in a cookie (for the route's
    prefix, or at its own origin for ``/`` and the URL without the prefix ``origin_rules``
    put in front)."""
    path = prefix.rstrip("/") or "/"
    lines = [
        # The rest of the query: HAProxy's second level of quotes keeps the parentheses of
        # these regexes inside their converters.
        f"    http-request set-var(txn.rw_rest) \"query,regsub('(^|&){SESSION_PARAM}=[^&]*',"
        "'',g),regsub('^&','',),regsub('^(.)','?\\\\1',)\"",
    ]
    at_origin = "{ var(txn.rw_origin) -m found }"
    redirects = [(path, "%[path]", "")]
    if path != "/":
        redirects = [
            (path, "%[path]", f" !{at_origin}"),
            # at its own origin: without the prefix `origin_rules` put in front (a label is
            # [a-z0-9-]: nothing to escape)
            ("/", f"%[path,regsub(^{path},)]", f" {at_origin}"),
        ]
    for cookie_path, location, condition in redirects:
        cookie = f"{SESSION_COOKIE}=%[var(txn.rw_stok)]; Path={cookie_path}; HttpOnly; SameSite=Lax"
        lines.append(
            f'    http-request return status 303 hdr location "{location}%[var(txn.rw_rest)]" '
            f'hdr set-cookie "{cookie}" if {{ url_param({SESSION_PARAM}) -m found }}{condition}'
        )
    lines.append(f"    http-request track-sc1 var(txn.rw_sdig) table ss{index}")
    if direct is not None:
        lines += _rate(index, direct)
    lines += [
        "    http-request del-header modal-authorization",
        "    http-request set-dst var(txn.rw_sto),field(1,|)",
        "    http-request set-dst-port var(txn.rw_sto),field(2,|)",
        f"    http-request set-header {SESSION_ID_HEADER} %[var(txn.rw_sto),field(3,|)]",
    ]
    if direct is not None:
        lines += _forward(prefix, direct)
    else:  # the replica's own port: the session was the credential (auth, rate limit done)
        lines.append(f"    http-request set-header {ADMITTED_HEADER} 1")
    return lines + ["    server session 0.0.0.0:0"]


def session_table(index: int, name: str) -> list[str]:
    """What the gateway reads to end idle sessions: requests in flight and made, per session."""
    return [
        f"backend ss{index}  # {name}'s sessions",
        "    stick-table type string len 64 size 100k expire 24h store conn_cur,http_req_cnt",
    ]


def rate_table(index: int, name: str, direct: Direct) -> list[str]:
    """The stick table that counts each client's admitted requests on a direct route."""
    if direct.rate_limit is None:
        return []
    burst = direct.rate_limit_burst_s
    return [
        f"backend rl{index}  # {name}'s rate limit, per client",
        f"    stick-table type string len 64 size 100k expire {ms(2 * burst)}ms "
        f"store gpc0_rate({ms(burst)}ms)",
    ]


def origin_rules(domain: str) -> list[str]:
    """Each endpoint at the root of its own origin, ``http://<label>.<domain>:<port>/...``:
    the host's first name is the label, so the path gets ``/<label>`` in front here (one
    match per request, however many routes: every rule below then routes it as usual) and
    ``x-rayweb-origin``, which tells the replica (or the direct hop's rules) to serve it at
    ``/`` again: its links, forms and redirects stay root-relative, as on Modal. The label
    is kept in ``txn.rw_origin`` (``AT_PATH``: the request came in the path form)."""
    host = "req.hdr(host),field(1,:),lower"
    return [
        f"    acl rw_at_origin {host} -m end .{domain}",
        f"    http-request set-var(txn.rw_origin) {host},field(1,.) if rw_at_origin",
        "    http-request set-path /%[var(txn.rw_origin)]%[path] if rw_at_origin",
        f"    http-request set-header {ORIGIN_HEADER} 1 if rw_at_origin",
    ]


def unknown_origin(labels: list[str]) -> list[str]:
    """The backend of a host under the domain whose label no route has: a 404 naming the
    endpoints (up to 20)."""
    named = ", ".join(sorted(labels)[:20])
    detail = f"No endpoint is served at this host. Endpoints here: {named or 'none'}."
    return [
        "backend unknown_origin",
        "    http-request return status 404 content-type application/json string "
        f'\'{{"detail": "{detail}"}}\'',
    ]
