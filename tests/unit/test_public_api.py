"""The public surface is pinned, and importing rayweb stays free of Ray."""

from __future__ import annotations

import subprocess
import sys

import rayweb


def test_exported_members():
    assert rayweb.__all__ == sorted(rayweb.__all__)
    assert set(rayweb.__all__) == {
        "App", "Cls", "Dict", "Function", "FunctionCall", "Image", "Limits", "Queue", "Retries",
        "Secret", "Server", "Volume", "asgi_app", "batched", "concurrent",
        "enter", "exception", "exit", "fastapi_endpoint", "is_local", "method", "parameter",
        "serve", "sessioned", "web_endpoint", "web_server", "wsgi_app",
    }  # fmt: skip
    for name in rayweb.__all__:
        assert hasattr(rayweb, name)


def test_import_rayweb_does_not_import_ray():
    code = "import sys, rayweb; print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'fastapi')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_is_local(monkeypatch):
    assert rayweb.is_local()
    monkeypatch.setenv("RAYWEB_IS_REMOTE", "1")
    assert not rayweb.is_local()


def test_secret_repr_hides_values(tmp_path):
    secret = rayweb.Secret.from_dict({"K": "canary-value"})
    assert "canary-value" not in repr(secret)
    env = tmp_path / ".env"
    env.write_text("# c\nexport A=1\nB='two words'\nC=x # note\n")
    assert rayweb.Secret.from_dotenv(tmp_path).ref().values == {
        "A": "1",
        "B": "two words",
        "C": "x",
    }
