"""``rayweb.Volume``, mount checks, ``Image.add_local_*`` and the replica's link helper,
without Ray: a volume is a directory under ``RAYWEB_VOLUME_ROOT``."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rayweb
from rayweb.compiler import compile_app, compile_functions
from rayweb.exception import AlreadyExistsError, InvalidError, NotFoundError
from rayweb.replica import mounts
from rayweb.spec import FunctionPayload
from rayweb.volume import FileEntry, FileEntryType, Volume


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAYWEB_VOLUME_ROOT", str(tmp_path / "volumes"))
    return tmp_path / "volumes"


def test_from_name_is_lazy_and_names_the_fix(root: Path):
    vol = Volume.from_name("missing")  # nothing happens yet
    with pytest.raises(NotFoundError, match="`rayweb volume create missing`"):
        vol.listdir("/")
    made = Volume.from_name("made", create_if_missing=True)
    assert made.listdir("/") == [] and (root / "made").is_dir()
    assert made.name == "made" and made.info().name == "made"
    with pytest.raises(InvalidError, match=r"Invalid Volume name: 'a b'"):
        Volume.from_name("a b")
    with pytest.raises(InvalidError, match="Invalid Volume name"):
        Volume.from_name("..")
    with pytest.raises(InvalidError, match="has no constructor"):
        Volume()


def test_objects_create_list_delete_and_rename():
    Volume.objects.create("one")
    with pytest.raises(AlreadyExistsError):
        Volume.objects.create("one")
    Volume.objects.create("one", allow_existing=True)
    Volume.objects.create("two")
    assert [v.name for v in Volume.objects.list()] == ["two", "one"]  # newest first
    Volume.rename("two", "three")
    assert {v.name for v in Volume.objects.list()} == {"one", "three"}
    Volume.objects.delete("one")
    with pytest.raises(NotFoundError):
        Volume.objects.delete("one")
    Volume.objects.delete("one", allow_missing=True)
    with pytest.raises(InvalidError, match="max_objects cannot be negative"):
        Volume.objects.list(max_objects=-1)


def test_files_round_trip(tmp_path: Path):
    vol = Volume.from_name("files", create_if_missing=True)
    local = tmp_path / "local.txt"
    local.write_text("from disk")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b.txt").write_text("b")
    with vol.batch_upload() as batch:
        batch.put_file(local, "/docs/local.txt")
        batch.put_file(io.BytesIO(b"in memory"), "docs/mem.bin", mode=0o600)
        batch.put_directory(tree, "/tree")
    assert b"".join(vol.read_file("/docs/mem.bin")) == b"in memory"
    entries = vol.listdir("/docs")
    assert [e.path for e in entries] == ["docs/local.txt", "docs/mem.bin"]
    assert all(isinstance(e, FileEntry) and e.type == FileEntryType.FILE for e in entries)
    assert entries[0].size == len("from disk") and isinstance(entries[0].mtime, int)
    assert [e.path for e in vol.iterdir("/tree")] == ["tree/sub", "tree/sub/b.txt"]
    assert vol.listdir("docs/local.txt") == [entries[0]]  # a file: its own entry
    out = io.BytesIO()
    assert vol.read_file_into_fileobj("docs/local.txt", out) == 9 and out.getvalue() == b"from disk"
    vol.copy_files(["docs/local.txt"], "copy.txt")
    vol.copy_files(["tree"], "tree2", recursive=True)
    assert b"".join(vol.read_file("tree2/sub/b.txt")) == b"b"
    with pytest.raises(IsADirectoryError):
        vol.copy_files(["tree"], "tree3")
    vol.remove_file("copy.txt")
    with pytest.raises(IsADirectoryError):
        vol.remove_file("tree2")
    vol.remove_file("tree2", recursive=True)
    with pytest.raises(FileNotFoundError):
        vol.read_file("copy.txt")
    with pytest.raises(NotFoundError):
        vol.listdir("nowhere")
    vol.commit()
    vol.reload()


def test_batch_upload_rules(tmp_path: Path):
    vol = Volume.from_name("up", create_if_missing=True)
    with pytest.raises(
        ValueError, match=r"remote_path \(/dir/\) must refer to a file - cannot end with /"
    ):
        vol.batch_upload().put_file(io.BytesIO(b"x"), "/dir/")
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"1"), "/f")
    with pytest.raises(FileExistsError, match="already exists"), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"2"), "/f")
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"2"), "/f")
    # an error in the block: nothing is uploaded
    with pytest.raises(RuntimeError), vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"3"), "/f")
        raise RuntimeError
    assert b"".join(vol.read_file("f")) == b"2"


def test_paths_stay_inside_the_volume(root: Path, tmp_path: Path):
    vol = Volume.from_name("jail", create_if_missing=True)
    with pytest.raises(InvalidError, match="leaves the volume"):
        vol.read_file("../other/secret")
    with pytest.raises(InvalidError, match="leaves the volume"):
        vol.batch_upload().put_file(io.BytesIO(b"x"), "a/../../x")
    (tmp_path / "outside.txt").write_text("no")
    os.symlink(tmp_path / "outside.txt", root / "jail" / "link")
    with pytest.raises(InvalidError, match="outside the volume"):
        vol.read_file("link")
    assert vol.listdir("/")[0].type == FileEntryType.SYMLINK  # listed, not followed


def test_ephemeral_sync_and_async(root: Path):
    with Volume.ephemeral() as vol:
        assert vol.name is None
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"x"), "x")
        where = vol.path()
        assert where.is_dir()
    assert not where.exists()

    async def main() -> list[str]:
        async with Volume.ephemeral() as avol:
            async with avol.batch_upload() as batch:
                batch.put_file(io.BytesIO(b"y"), "y")
            chunks = [c async for c in avol.read_file.aio("y")]
            assert chunks == [b"y"]
            return [e.path for e in await avol.listdir.aio("/")]

    assert asyncio.run(main()) == ["y"]
    assert Volume.objects.list() == []  # ephemeral volumes are not listed


def test_mount_checks():
    vol = Volume.from_name("m")
    other = Volume.from_name("n")
    cases = {
        "data": "Volume data must be a canonical, absolute path.",
        "/data/../x": "must be a canonical, absolute path",
        "/": "Volume / cannot be mounted into root directory.",
        "/root": "Volume /root cannot be mounted at '/root'.",
        "/tmp": "Volume /tmp cannot be mounted at '/tmp'.",
        "/usr": "system directory",
        "/proc/x": "system directory",
        "/etc": "Suggestion: mount it under a path of its own, such as /data",
    }
    for path, message in cases.items():
        with pytest.raises(InvalidError, match=message.replace("(", r"\(").replace(".", r"\.")):
            rayweb.App("a").function(volumes={path: vol})
    with pytest.raises(InvalidError, match="not usable as a volume"):
        rayweb.App("a").function(volumes={"/data": "m"})
    with pytest.raises(
        InvalidError,
        match="The same Volume cannot be mounted in multiple locations for the same function: "
        "/a, /b",
    ):
        rayweb.App("a").function(volumes={"/a": vol, "/b": Volume.from_name("m")})
    with pytest.raises(InvalidError, match=r"Volume 'm' at /data and Volume 'n' at /data/x"):
        rayweb.App("a").cls(volumes={"/data": vol, "/data/x": other})
    app = rayweb.App("a", volumes={"/data": vol})
    with pytest.raises(InvalidError, match="overlap"):  # the app's and the function's
        app.function(volumes={"/data/n": other})


def _function_app(tmp_path: Path, image: rayweb.Image | None = None) -> rayweb.App:
    app = rayweb.App("vol-compile", volumes={str(tmp_path / "d"): Volume.from_name("cv")})

    @app.function(serialized=True, image=image)
    def f() -> None: ...

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def web() -> None: ...

    return app


def test_compiled_payloads_carry_mounts_and_the_root(tmp_path: Path, root: Path):
    app = _function_app(tmp_path)
    (fn,) = compile_functions(app)
    (web,) = compile_app(app)
    for ep in (fn, web):
        assert ep.payload.mounts == ((str(tmp_path / "d"), "cv"),)
        assert ep.payload.volume_root == str(root.resolve())
    from rayweb.driver.volumes import prepare_volumes

    with pytest.raises(NotFoundError, match="rayweb volume create cv"):
        prepare_volumes(app)
    Volume.objects.create("cv")
    prepare_volumes(app)


def test_image_local_files(tmp_path: Path, root: Path):
    (tmp_path / "cfg.txt").write_text("c")
    assets = tmp_path / "assets"
    (assets / ".venv").mkdir(parents=True)
    (assets / ".venv" / "junk").write_text("j")
    (assets / "keep.txt").write_text("k")
    (assets / "skip.log").write_text("s")
    with pytest.raises(InvalidError, match=r"add_local_file\(\) currently only supports absolute"):
        rayweb.Image.debian_slim().add_local_file(tmp_path / "cfg.txt", "rel/cfg.txt")
    with pytest.raises(InvalidError, match=r"add_local_dir\(\) currently only supports absolute"):
        rayweb.Image.debian_slim().add_local_dir(assets, "assets")
    image = (
        rayweb.Image.debian_slim()
        .add_local_file(tmp_path / "cfg.txt", f"{tmp_path}/in/")
        .add_local_dir(assets, f"{tmp_path}/all")
        .add_local_dir(assets, f"{tmp_path}/some", ignore=["*.log", ".venv"])
        .add_local_dir(assets, f"{tmp_path}/fn", ignore=lambda p: p.suffix == ".txt")
    )
    (fn,) = compile_functions(_function_app(tmp_path, image))
    links = dict(fn.payload.links)
    assert links[f"{tmp_path}/in/cfg.txt"] == str(tmp_path / "cfg.txt")
    assert links[f"{tmp_path}/all"] == str(assets)
    staged = Path(links[f"{tmp_path}/some"])
    assert staged.parent == root.resolve() / ".rayweb-images"
    assert sorted(p.name for p in staged.rglob("*")) == ["keep.txt"]
    assert "keep.txt" not in {p.name for p in Path(links[f"{tmp_path}/fn"]).rglob("*")}
    missing = rayweb.Image.debian_slim().add_local_file(tmp_path / "nope", "/x")
    with pytest.raises(InvalidError, match="nope does not exist"):
        compile_functions(_function_app(tmp_path, missing))
    inside_mount = rayweb.Image.debian_slim().add_local_file(
        tmp_path / "cfg.txt", f"{tmp_path}/d/cfg.txt"
    )
    with pytest.raises(InvalidError, match="overlap"):
        compile_functions(_function_app(tmp_path, inside_mount))


def _payload(root: Path, mounts=(), links=()) -> FunctionPayload:
    from rayweb.spec import CodeRef

    return FunctionPayload(
        label="t", code=CodeRef("q"), max_inputs=1, mounts=tuple(mounts), links=tuple(links),
        volume_root=str(root),
    )  # fmt: skip


def test_links_and_the_owner_record(tmp_path: Path, root: Path):
    Volume.objects.create("a")
    Volume.objects.create("b")
    at = str(tmp_path / "mnt" / "data")
    mounts.setup_files(_payload(root, [(at, "a")]))
    assert os.readlink(at) == str(root / "a")
    mounts.setup_files(_payload(root, [(at, "a")]))  # the same again: fine
    # another live process holds /data for volume a: volume b there names both
    record = root / ".rayweb-mounts"
    (host_file,) = record.glob("*.json")
    data = json.loads(host_file.read_text())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        data[at]["pids"] = [sleeper.pid]
        host_file.write_text(json.dumps(data))
        with pytest.raises(InvalidError, match=r"Volume 'b' at .*Volume 'a'"):
            mounts.setup_files(_payload(root, [(at, "b")]))
    finally:
        sleeper.kill()
        sleeper.wait()
    # its owner is dead now: the stale link is replaced
    mounts.setup_files(_payload(root, [(at, "b")]))
    assert os.readlink(at) == str(root / "b")


def test_links_refuse_what_is_there(tmp_path: Path, root: Path):
    Volume.objects.create("a")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(InvalidError, match="a directory with files in it"):
        mounts.setup_files(_payload(root, [(str(full), "a")]))
    empty = tmp_path / "empty"
    empty.mkdir()
    mounts.setup_files(_payload(root, [(str(empty), "a")]))  # an empty directory is replaced
    assert empty.is_symlink()
    theirs = tmp_path / "theirs"
    os.symlink(tmp_path, theirs)
    with pytest.raises(InvalidError, match="that rayweb did not make"):
        mounts.setup_files(_payload(root, [(str(theirs), "a")]))
    with pytest.raises(NotFoundError, match="rayweb volume create gone"):
        mounts.setup_files(_payload(root, [(str(tmp_path / "g"), "gone")]))
    if os.getuid() != 0:
        with pytest.raises(InvalidError, match="Permission denied"):
            mounts.setup_files(_payload(root, [("/proc/rayweb-test", "a")]))
    local = tmp_path / "cfg.txt"
    local.write_text("c")
    mounts.setup_files(_payload(root, links=[(str(tmp_path / "app" / "cfg.txt"), str(local))]))
    assert (tmp_path / "app" / "cfg.txt").read_text() == "c"


def test_a_path_that_is_the_volume_already_is_left_alone(tmp_path: Path, root: Path):
    """As in a KubeRay pod, where the claim is mounted at the root and at the script's path:
    here a symlinked parent gives the volume's directory a second path, without a mount."""
    Volume.objects.create("a")
    (root / "a" / "x").write_text("x")
    os.symlink(root, tmp_path / "pod")
    at = tmp_path / "pod" / "a"  # a real directory (not a link), the same as root/a
    for _ in range(2):  # with files in it, or empty: neither refused nor removed
        mounts.setup_files(_payload(root, [(str(at), "a")]))
        assert not at.is_symlink() and at.is_dir()
        assert os.path.samefile(at, root / "a")
        (root / "a" / "x").unlink(missing_ok=True)
    assert (root / "a").is_dir()


def _cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayweb.cli", "volume", *args],
        capture_output=True, text=True, env=env, input=stdin, timeout=60,
    )  # fmt: skip


def test_cli(tmp_path: Path, root: Path):
    env = {**os.environ, "RAYWEB_VOLUME_ROOT": str(root)}
    (tmp_path / "h.txt").write_text("hello")
    assert _cli("create", "cli", env=env).returncode == 0
    assert _cli("put", "cli", str(tmp_path / "h.txt"), "/a/", env=env).returncode == 0
    again = _cli("put", "cli", str(tmp_path / "h.txt"), "/a/", env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert _cli("put", "cli", "-f", str(tmp_path / "h.txt"), "/a/", env=env).returncode == 0
    assert _cli("ls", "cli", env=env).stdout.split() == ["a"]  # not a tty: one path a line
    listed = json.loads(_cli("ls", "cli", "/a", "--json", env=env).stdout)
    assert listed[0]["Filename"] == "a/h.txt" and listed[0]["Type"] == "file"
    assert _cli("get", "cli", "/a/h.txt", "-", env=env).stdout == "hello"
    out = tmp_path / "out"
    out.mkdir()
    assert _cli("get", "cli", "/a", str(out), env=env).returncode == 0
    assert (out / "a" / "h.txt").read_text() == "hello"
    assert "already exists" in _cli("get", "cli", "/a", str(out), env=env).stderr
    assert _cli("cp", "cli", "a/h.txt", "b.txt", env=env).returncode == 0
    removed = _cli("rm", "cli", "-r", "a", env=env)
    assert "a was deleted successfully!" in removed.stderr
    names = json.loads(_cli("list", "--json", env=env).stdout)
    assert [n["name"] for n in names] == ["cli"]
    assert _cli("delete", "cli", env=env, stdin="n\n").returncode == 1  # not confirmed
    assert _cli("rename", "cli", "cli2", "-y", env=env).returncode == 0
    assert _cli("delete", "cli2", "-y", env=env).returncode == 0
    missing = _cli("ls", "cli2", env=env)
    assert missing.returncode == 1 and "rayweb volume create cli2" in missing.stderr
    assert _cli("delete", "cli2", "-y", "--allow-missing", env=env).returncode == 0


def test_class_variants_take_volumes(tmp_path: Path):
    app = rayweb.App("variants", volumes={f"{tmp_path}/a": Volume.from_name("va")})

    @app.cls(serialized=True)
    class Model:
        @rayweb.method()
        def f(self) -> None: ...

    variant = Model.with_options(volumes={f"{tmp_path}/b": Volume.from_name("vb")})
    assert dict(variant.options.volumes) == {
        f"{tmp_path}/a": Volume.from_name("va"),
        f"{tmp_path}/b": Volume.from_name("vb"),
    }
    assert variant.variant_key and variant.variant_key != Model.with_options().variant_key
    with pytest.raises(InvalidError, match="canonical, absolute path"):
        Model.with_options(volumes={"rel": Volume.from_name("vb")})


def test_deploy_links_files_under_the_source_root_to_the_shipped_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import dataclasses

    from rayweb.compiler import ship
    from rayweb.spec import SHIPPED, CodeRef

    (fn,) = compile_functions(_function_app(tmp_path))
    code = CodeRef("f", module="app", sys_path=str(tmp_path / "src"))
    links = ((f"{tmp_path}/x", str(tmp_path / "src" / "data" / "x.txt")), ("/y", "/elsewhere/y"))
    fn = dataclasses.replace(fn, payload=dataclasses.replace(fn.payload, code=code, links=links))
    shipped = ship(fn, "gcs://pkg.zip").payload.links
    assert shipped == ((f"{tmp_path}/x", f"{SHIPPED}data/x.txt"), ("/y", "/elsewhere/y"))
    cwd = tmp_path / "work"
    (cwd / "data").mkdir(parents=True)
    (cwd / "data" / "x.txt").write_text("shipped")
    monkeypatch.chdir(cwd)  # a replica's working directory is the shipped code
    mounts.setup_files(dataclasses.replace(_payload(tmp_path / "volumes"), links=shipped[:1]))
    assert Path(f"{tmp_path}/x").read_text() == "shipped"
