"""Which URL an endpoint is given (``rayweb/urls.py``): its own origin where this machine
resolves it, else the path form, and the table that shows both."""

from __future__ import annotations

import socket

import pytest

from rayweb.driver.output import url_rows, url_table_html
from rayweb.exception import InvalidError
from rayweb.urls import Reach, resolves_to_loopback


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv("RAYWEB_URL_FORM", raising=False)
    resolves_to_loopback.cache_clear()
    yield
    resolves_to_loopback.cache_clear()


def _resolver(monkeypatch, answer):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host.endswith(".localhost"):
            if answer is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_origin_form_where_localhost_names_resolve_to_loopback(monkeypatch):
    _resolver(monkeypatch, "127.0.0.1")
    reach = Reach("0.0.0.0", 8000, "localhost")
    assert reach.url("hello-dev") == "http://hello-dev.localhost:8000"
    assert reach.path_url("hello-dev") == "http://127.0.0.1:8000/hello-dev"
    assert reach.note() is None
    columns, rows = url_rows({"hello": "hello-dev"}, reach)
    assert columns == ["endpoint", "URL", "path form"]
    assert rows == [["hello", "http://hello-dev.localhost:8000", "http://127.0.0.1:8000/hello-dev"]]


def test_the_path_form_where_they_do_not_and_the_table_says_why(monkeypatch):
    _resolver(monkeypatch, None)
    reach = Reach("127.0.0.1", 8000, "localhost")
    assert reach.url("Hello") == "http://127.0.0.1:8000/Hello"
    columns, rows = url_rows({"Model.web": "Hello"}, reach)
    assert columns[2] == "own origin (browsers, curl)"
    assert rows[0][1:] == ["http://127.0.0.1:8000/Hello", "http://hello.localhost:8000"]
    assert "does not resolve them" in reach.note()
    page = url_table_html({"Model.web": "Hello"}, reach)
    assert "<a href='http://hello.localhost:8000'>" in page and "<caption>" in page


def test_a_name_resolving_elsewhere_is_not_the_gateway(monkeypatch):
    _resolver(monkeypatch, "192.0.2.10")  # TEST-NET-1: a resolver that answers every name
    assert Reach("127.0.0.1", 8000, "localhost").url("a") == "http://127.0.0.1:8000/a"


def test_a_domain_the_user_named_is_trusted_and_port_80_is_left_out():
    reach = Reach("0.0.0.0", 80, "apps.example.com")
    assert reach.url("a") == "http://a.apps.example.com"
    assert reach.path_url("a") == "http://127.0.0.1:80/a"


def test_the_form_can_be_chosen_and_a_bad_choice_names_the_good_ones(monkeypatch):
    monkeypatch.setenv("RAYWEB_URL_FORM", "path")
    assert Reach("127.0.0.1", 8000, "apps.example.com").url("a") == "http://127.0.0.1:8000/a"
    assert "RAYWEB_URL_FORM=path" in Reach("127.0.0.1", 8000, "apps.example.com").note()
    monkeypatch.setenv("RAYWEB_URL_FORM", "origin")
    assert Reach("127.0.0.1", 8000, "localhost").url("a") == "http://a.localhost:8000"
    # no domain (RAYWEB_DOMAIN="", or no gateway): the path form only, one URL column
    assert url_rows({"a": "a"}, Reach("127.0.0.1", 8000))[0] == ["endpoint", "URL"]
    monkeypatch.setenv("RAYWEB_URL_FORM", "host")
    with pytest.raises(InvalidError, match="Suggestion: RAYWEB_URL_FORM=auto"):
        Reach("127.0.0.1", 8000, "localhost").url("a")


def test_a_domain_is_a_dns_name_or_a_clear_error():
    from rayweb.urls import check_domain

    assert check_domain(" Apps.Example.COM. ") == "apps.example.com"
    assert check_domain("") is None  # the path form only
    for bad in ("http://apps.example.com", "apps.example.com:8080", "a..b", "-a.test", "a b"):
        with pytest.raises(InvalidError, match="is not a DNS name. Suggestion: --domain apps"):
            check_domain(bad)
    with pytest.raises(InvalidError, match="RAYWEB_DOMAIN='x/y' is not a DNS name"):
        check_domain("x/y", "RAYWEB_DOMAIN=")


@pytest.mark.parametrize("command", ["serve", "deploy"])
def test_a_bad_domain_flag_stops_the_cli_before_anything_starts(command):
    import subprocess
    import sys

    from tests.conftest import EXAMPLES, ROOT

    result = subprocess.run(
        [sys.executable, "-m", "rayweb.cli", command, str(EXAMPLES / "fastapi_endpoint.py")]
        + ["--domain", "http://apps.test"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "'http://apps.test' is not a DNS name. Suggestion: --domain apps.example.com" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "Starting Ray" not in result.stderr
