"""Where clients reach an endpoint (no Ray): at the root of its own origin,
``http://<label>.<domain>:<port>`` (as on Modal: root-relative links, forms and redirects
work), or under its path prefix on the gateway's address, ``http://<host>:<port>/<label>``.

Which form ``get_web_url()``, ``ServeHandle.urls`` and the URL tables give is
``RAYWEB_URL_FORM``: ``auto`` (the default) gives the origin form where this machine resolves
it, else the path form; ``origin`` or ``path`` choose. A domain the user named
(``--domain``/``RAYWEB_DOMAIN``) is trusted to resolve (wildcard DNS). ``*.localhost`` is
resolved by browsers and curl on any system (RFC 6761), but by the system resolver only where
it knows the rule (systemd-resolved or nss-myhostname do; glibc's plain ``files dns`` does
not), and Python clients use that resolver: it is asked once per process.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import threading
from dataclasses import dataclass

from .common import url_host

DOMAIN_ENV = "RAYWEB_DOMAIN"  # the gateway's: read where it starts (driver/cluster.py)
URL_FORM_ENV = "RAYWEB_URL_FORM"
URL_FORMS = ("auto", "origin", "path")


@dataclass(frozen=True)
class Reach:
    """The gateway's address and the domain of the endpoints' own origins (None: the path
    form only: ``RAYWEB_DOMAIN=""``, or no gateway)."""

    host: str
    port: int
    domain: str | None = None

    @property
    def base(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def path_url(self, label: str) -> str:
        return f"{self.base}/{label}"

    def origin_url(self, label: str) -> str | None:
        if not self.domain:
            return None
        port = "" if self.port == 80 else f":{self.port}"
        return f"http://{label.lower()}.{self.domain}{port}"

    @property
    def origin_form(self) -> bool:
        """Whether URLs are given in the origin form here (the module docstring)."""
        return self.domain is not None and origin_form(self.domain)

    def url(self, label: str) -> str:
        """The URL ``get_web_url()`` gives for the endpoint served as ``label``."""
        origin = self.origin_url(label)
        return origin if origin is not None and self.origin_form else self.path_url(label)

    def note(self) -> str | None:
        """What a URL table says when it shows the path form beside origins it cannot use."""
        if not self.domain or self.origin_form:
            return None
        if url_form() == "path":
            return f"{URL_FORM_ENV}=path: the path form is used; each own origin answers too."
        return (
            f"Own origins (*.{self.domain}) open in browsers and curl; this machine's resolver "
            "does not resolve them, so get_web_url() and Python clients use the path form. "
            f"{URL_FORM_ENV}=origin chooses them."
        )


_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_domain(value: str, flag: str = "--domain") -> str | None:
    """A domain for the endpoints' own origins, normalized (``""``: None, the path form
    only); anything but a DNS name is refused with the fix."""
    from .exception import InvalidError

    domain = value.strip().strip(".").lower()
    if not domain:
        return None
    if len(domain) > 200 or not all(_DNS_LABEL.match(part) for part in domain.split(".")):
        sep = "" if flag.endswith("=") else " "
        raise InvalidError(
            f"{flag}{sep}{value!r} is not a DNS name. Suggestion: {flag}{sep}apps.example.com "
            "(with a wildcard DNS record *.apps.example.com for the gateway's address), or the "
            "default localhost."
        )
    return domain


def url_form() -> str:
    from .exception import InvalidError

    value = os.environ.get(URL_FORM_ENV, "auto").strip().lower() or "auto"
    if value not in URL_FORMS:
        raise InvalidError(
            f"{URL_FORM_ENV}={value!r} is not a URL form. Suggestion: {URL_FORM_ENV}=auto "
            f"(the default), {URL_FORM_ENV}=origin or {URL_FORM_ENV}=path."
        )
    return value


def origin_form(domain: str) -> bool:
    form = url_form()
    if form != "auto":
        return form == "origin"
    if domain != "localhost" and not domain.endswith(".localhost"):
        return True  # named by the user: their wildcard DNS
    return resolves_to_loopback(domain)


@functools.lru_cache(maxsize=8)
def resolves_to_loopback(domain: str, timeout_s: float = 1.0) -> bool:
    """Whether a name under ``domain`` resolves to loopback here (asked on a thread, so a
    resolver that goes to the network cannot hold the caller past ``timeout_s``)."""
    found: list[bool] = []

    def ask() -> None:
        try:
            infos = socket.getaddrinfo(f"rayweb-probe.{domain}", None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        found.append(
            bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
        )

    thread = threading.Thread(target=ask, daemon=True, name="rayweb-resolve")
    thread.start()
    thread.join(timeout_s)
    return bool(found and found[0])
