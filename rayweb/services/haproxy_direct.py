"""The direct hop's HAProxy rules (``haproxy_config.py``'s module docstring says when a
route has one): what the replica's chain does on the other path, done in HAProxy."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..common import ADMITTED_HEADER, CLIENT_HEADER, KEY_HEADER


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
    lines = []
    if direct.rate_limit is not None:
        # A sliding window of burst_s holding rate * burst_s admitted requests: the token
        # bucket's long-run rate and burst. Refused requests are not counted.
        allowed = max(1, math.ceil(direct.rate_limit * direct.rate_limit_burst_s))
        retry = max(1, math.ceil(1 / direct.rate_limit))
        detail = "Too many requests from this client. Retry later."
        lines += [
            f"    http-request track-sc0 req.hdr({CLIENT_HEADER}) table rl{index}",
            _reply(429, detail, f" hdr retry-after {retry}")
            + f" if {{ sc_gpc0_rate(0) ge {allowed} }}",
            "    http-request sc-inc-gpc0(0)",
        ]
    if direct.auth_headers is not None:
        assert tokens_map is not None  # ``served`` keeps such routes off the direct hop
        key, secret = direct.auth_headers
        known = f"var(txn.rw_cred),sha2(256),hex,lower,map({tokens_map})"
        lines += [
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
    if direct.full:
        # Each server's maxconn is max_concurrency; be_conn counts this request too.
        detail = "Too many concurrent requests: every container is at max_concurrency."
        lines += [
            f"    http-request set-var(txn.rw_cap) nbsrv,mul({cap})",
            _reply(429, detail, " hdr retry-after 1") + " if { be_conn,sub(txn.rw_cap) gt 0 }",
        ]
    if direct.request_timeout is not None:
        lines.append(f"    timeout server {ms(direct.request_timeout)}ms")
    lines += [
        f"    http-request del-header {KEY_HEADER}",
        f"    http-request del-header {CLIENT_HEADER}",
        f"    http-request del-header {ADMITTED_HEADER}",
        "    option forwardfor",
        "    http-request set-header X-Forwarded-Proto http",
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)]"
        " if { req.hdr(host) -m found }",
    ]
    if prefix != "/":
        prefix = prefix.rstrip("/")
        quoted = re.escape(prefix)
        lines += [
            f"    http-request set-header X-Forwarded-Prefix {prefix}",
            f"    http-request replace-path ^{quoted}/?(.*) /\\1",
            # A redirect to the server's own `/path` means `/<label>/path` to the client.
            f"    http-response replace-header Location ^(?!{quoted}(/|$))(/([^/].*)?)$ "
            f"{prefix}\\2",
        ]
    return lines


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
