"""Volumes and ``Image.add_local_*`` on the real cluster: what one replica writes under its
mount, a function and a class replica read; image files appear at their remote paths; a
missing volume fails before deploying; a mount path that cannot be linked fails the deploy
with the path and the fix. Mounts are under tmp, never at real system paths."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import rayweb
from rayweb.exception import DeploymentError, NotFoundError
from tests.conftest import ROOT
from tests.integration.conftest import example_app

pytestmark = pytest.mark.cluster


def test_a_volume_is_shared_by_endpoints_functions_and_classes(served, tmp_path: Path):
    vol = rayweb.Volume.from_name("itest-shared", create_if_missing=True)
    mount = f"{tmp_path}/data"
    (tmp_path / "cfg.txt").write_text("from the image")
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "keep.txt").write_text("kept")
    (assets / "skip.log").write_text("left out")
    image = (
        rayweb.Image.debian_slim()
        .add_local_file(tmp_path / "cfg.txt", f"{tmp_path}/img/cfg.txt")
        .add_local_dir(assets, f"{tmp_path}/img-assets", ignore=["*.log"])
    )
    app = rayweb.App("vol-it", volumes={mount: vol})

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint(method="POST")
    def write(text: str) -> dict:
        Path(mount, "note.txt").write_text(text)
        vol.commit()
        return {"pid": os.getpid(), "link": os.readlink(mount)}

    @app.function(serialized=True, image=image)
    def read() -> dict:
        return {
            "pid": os.getpid(),
            "note": Path(mount, "note.txt").read_text(),
            "listed": [e.path for e in vol.listdir("/")],
            "cfg": Path(f"{tmp_path}/img/cfg.txt").read_text(),
            "assets": sorted(os.listdir(f"{tmp_path}/img-assets")),
        }

    @app.cls(serialized=True)
    class Reader:
        @rayweb.method()
        def note(self) -> str:
            return Path(mount, "note.txt").read_text()

    handle = served(app)
    wrote = httpx.post(handle.urls["write"], params={"text": "hello"}, timeout=60)
    assert wrote.status_code == 200, wrote.text
    assert wrote.json()["link"] == str(vol.path())
    got = read.remote()
    assert got["pid"] != wrote.json()["pid"]  # another replica, the same files
    assert got["note"] == "hello" and got["listed"] == ["note.txt"]
    assert got["cfg"] == "from the image" and got["assets"] == ["keep.txt"]
    assert Reader().note.remote() == "hello"
    assert b"".join(vol.read_file("note.txt")) == b"hello"  # and the driver sees it


def test_a_missing_volume_fails_before_deploying(served, tmp_path: Path):
    app = rayweb.App("vol-missing")
    absent = rayweb.Volume.from_name("itest-absent")

    @app.function(serialized=True, volumes={f"{tmp_path}/m": absent})
    @rayweb.fastapi_endpoint()
    def f() -> str:
        return "x"

    with pytest.raises(NotFoundError, match="rayweb volume create itest-absent"):
        served(app)


def test_a_mount_path_that_cannot_be_linked_fails_the_deploy(served, tmp_path: Path):
    taken = tmp_path / "taken"
    taken.write_text("a file the mount would hide")
    app = rayweb.App("vol-taken")
    vol = rayweb.Volume.from_name("itest-taken", create_if_missing=True)

    @app.function(serialized=True, volumes={str(taken): vol})
    @rayweb.fastapi_endpoint()
    def f() -> str:
        return "x"

    with pytest.raises(DeploymentError) as info:
        served(app, deploy_timeout=60)
    assert f"{taken} exists already and is a file" in str(info.value)
    assert "Suggestion" in str(info.value)
    assert taken.read_text() == "a file the mount would hide"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rayweb.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_uploads_land_in_a_volume_and_results_in_a_dict(served, tmp_path: Path):
    """examples/uploads.py: the endpoint streams uploads into the volume, a backend function
    in its own replica reads them and puts a summary in a Dict; the CLI sees both."""
    handle = served(example_app("uploads.py"))
    base = handle.urls["api"]
    big = os.urandom(20 * 2**20)
    files = {"small.txt": b"one\ntwo\nthree\n", "big.bin": big}
    with httpx.Client(timeout=120) as client:
        uploaded = {
            name: client.post(f"{base}/upload/{name}", content=data).json()
            for name, data in files.items()
        }
        assert uploaded["big.bin"]["bytes"] == len(big)
        assert client.post(f"{base}/upload/..%2Fescape", content=b"x").status_code in (400, 404)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = {name: client.get(f"{base}/result/{name}") for name in files}
            if all(r.status_code == 200 for r in got.values()):
                break
            time.sleep(0.3)
        for name, data in files.items():
            summary = got[name].json()
            assert summary["sha256"] == hashlib.sha256(data).hexdigest(), name
            assert summary["pid"] != uploaded[name]["pid"]  # processed in another replica
        assert client.get(f"{base}/files").json() == [
            "incoming",
            "incoming/big.bin",
            "incoming/small.txt",
            "processed",
            "processed/big.bin.json",
            "processed/small.txt.json",
        ]
    assert rayweb.Dict.from_name("uploads-results")["small.txt"]["lines"] == 3
    listed = _cli("volume", "ls", "uploads-files", "incoming")
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == ["incoming/big.bin", "incoming/small.txt"]
    fetched = _cli("volume", "get", "uploads-files", "incoming/small.txt", "-")
    assert fetched.stdout == files["small.txt"].decode()
    items = _cli("dict", "items", "uploads-results", "--json")
    assert "small.txt" in items.stdout and "sha256" in items.stdout, items.stderr
