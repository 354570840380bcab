"""``rayweb volume``, like ``modal volume``: the named volumes of this machine's volume root
(``RAYWEB_VOLUME_ROOT``, default ``~/.rayweb/volumes``: what ``rayweb serve`` and local
clusters mount). No Ray: a volume is a directory."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..volume import FileEntry, FileEntryType, Volume, volume_root
from .common import user_errors, when

volume_cli = typer.Typer(help="Named volumes: directories every replica can mount.")

YesOption = Annotated[
    bool, typer.Option("-y", "--yes", help="Run without pausing for confirmation.")
]
EnvOption = Annotated[str | None, typer.Option("-e", "--env", help="Not used: no environments.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RecursiveOption = Annotated[bool, typer.Option("-r", "--recursive", help="Include directories.")]
_KINDS = {
    FileEntryType.DIRECTORY: "dir",
    FileEntryType.SYMLINK: "link",
    FileEntryType.FIFO: "fifo",
    FileEntryType.SOCKET: "socket",
}


@contextmanager
def _errors(phase: str) -> Iterator[None]:
    """rayweb's errors and file errors as one line (exit 1)."""
    err = Console(stderr=True, soft_wrap=True)
    usage: typer.BadParameter | None = None
    with user_errors(err, phase):
        try:
            yield
        except typer.BadParameter as exc:
            usage = exc  # Click prints it with the usage line (exit 2)
        except (FileExistsError, IsADirectoryError, FileNotFoundError, NotADirectoryError) as exc:
            err.print(f"[red]Error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
    if usage is not None:
        raise usage


def _volume(name: str, env: str | None = None) -> Volume:
    return Volume.from_name(name, environment_name=env).hydrate()


def _say(text: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(text, markup=False)


@volume_cli.command("create")
def volume_create(
    name: str,
    version: Annotated[int | None, typer.Option(help="Accepted; volumes are directories.")] = None,
    env: EnvOption = None,
) -> None:
    """Create a named volume."""
    with _errors("creating the volume"):
        Volume.objects.create(name, version=version, environment_name=env)
    _say(f"Created Volume '{name}' in {volume_root()}.")


@volume_cli.command("list")
def volume_list(as_json: JsonOption = False, env: EnvOption = None) -> None:
    """List the named volumes, newest first."""
    with _errors("listing volumes"):
        rows: list[dict[str, Any]] = []
        for vol in Volume.objects.list(environment_name=env or ""):
            info = vol.info()
            created = info.created_at.timestamp()
            rows.append({"name": vol.name, "created": created, "created_by": info.created_by})
    if as_json:
        typer.echo(json.dumps([{**r, "created": when(r["created"])} for r in rows], indent=2))
        return
    from rich.table import Table

    from ..driver.output import wide_console

    table = Table("Name", "Created at", "Created by")
    for r in rows:
        table.add_row(str(r["name"]), when(r["created"]), str(r["created_by"] or "-"))
    wide_console().print(table)


@volume_cli.command("ls")
def volume_ls(
    volume_name: str,
    path: Annotated[str, typer.Argument()] = "/",
    as_json: JsonOption = False,
    env: EnvOption = None,
) -> None:
    """List the files of a directory of the volume."""
    with _errors("listing the volume"):
        entries = _volume(volume_name, env).listdir(path)
    if as_json:
        typer.echo(json.dumps([_row(e) for e in entries], indent=2))
    elif not sys.stdout.isatty():
        for e in entries:
            typer.echo(e.path)
    else:
        from rich.table import Table

        from ..driver.output import wide_console

        table = Table("Filename", "Type", "Created/Modified", "Size")
        for e in entries:
            row = _row(e)
            table.add_row(escape(e.path), row["Type"], row["Created/Modified"], row["Size"])
        wide_console().print(table)


def _row(e: FileEntry) -> dict[str, str]:
    size = "" if e.type == FileEntryType.DIRECTORY else f"{e.size} B"
    return {
        "Filename": e.path,
        "Type": _KINDS.get(e.type, "file"),
        "Created/Modified": when(e.mtime),
        "Size": size,
    }


@volume_cli.command("put")
def volume_put(
    volume_name: str,
    local_path: str,
    remote_path: Annotated[str, typer.Argument()] = "/",
    force: Annotated[bool, typer.Option("-f", "--force", help="Overwrite existing files.")] = False,
    env: EnvOption = None,
) -> None:
    """Upload a file or a directory (recursively) to the volume."""
    if "*" in local_path:
        raise typer.BadParameter("Glob uploads are currently not supported")
    if remote_path.endswith("/"):
        remote_path = remote_path + Path(local_path).name
    with _errors("uploading"):
        vol = _volume(volume_name, env)
        try:
            with vol.batch_upload(force=force) as batch:
                if Path(local_path).is_dir():
                    batch.put_directory(local_path, remote_path)
                else:
                    batch.put_file(local_path, remote_path)
        except FileExistsError as exc:
            text = str(exc).split(" Suggestion:")[0]
            raise typer.BadParameter(f"{text} Use -f/--force to overwrite it.") from None
    _say(f"Uploaded {local_path} to {volume_name}:{remote_path}.")


@volume_cli.command("get")
def volume_get(
    volume_name: str,
    remote_path: str,
    local_destination: Annotated[str, typer.Argument()] = ".",
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
    env: EnvOption = None,
) -> None:
    """Download a file or a directory (recursively); LOCAL_DESTINATION "-" is stdout."""
    with _errors("downloading"):
        vol = _volume(volume_name, env)
        entries = [e for e in vol.iterdir(remote_path, recursive=True)]
        if local_destination == "-":
            for e in entries:
                if e.type == FileEntryType.FILE:
                    for chunk in vol.read_file(e.path):
                        sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        dest = Path(local_destination)
        start = PurePosixPath(remote_path.strip("/")).parent.as_posix().lstrip(".")
        for e in entries:
            out = dest / PurePosixPath(e.path).relative_to(start or ".") if dest.is_dir() else dest
            if out.exists() or out.is_symlink():
                if not force:
                    raise typer.BadParameter(
                        f"Output path '{out}' already exists. Use --force to overwrite the "
                        "output directory"
                    )
                if e.type != FileEntryType.DIRECTORY or not out.is_dir():
                    shutil.rmtree(out) if out.is_dir() else out.unlink()
            if e.type == FileEntryType.DIRECTORY:
                out.mkdir(parents=True, exist_ok=True)
            elif e.type == FileEntryType.FILE:
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("wb") as handle:
                    vol.read_file_into_fileobj(e.path, handle)


@volume_cli.command("rm")
def volume_rm(
    volume_name: str, remote_path: str, recursive: RecursiveOption = False, env: EnvOption = None
) -> None:
    """Delete a file, or a directory with -r."""
    with _errors("deleting"):
        _volume(volume_name, env).remove_file(remote_path, recursive=recursive)
    _say(f"{remote_path} was deleted successfully!")


@volume_cli.command("cp")
def volume_cp(
    volume_name: str,
    paths: Annotated[list[str], typer.Argument(help="Sources, then the destination.")],
    recursive: RecursiveOption = False,
    env: EnvOption = None,
) -> None:
    """Copy files inside the volume (the last path is the destination)."""
    if len(paths) < 2:
        raise typer.BadParameter("Give at least one source and a destination.")
    with _errors("copying"):
        _volume(volume_name, env).copy_files(paths[:-1], paths[-1], recursive=recursive)


@volume_cli.command("rename")
def volume_rename(
    old_name: str, new_name: str, yes: YesOption = False, env: EnvOption = None
) -> None:
    """Rename a volume (apps that mount it by its old name stop finding it)."""
    if not yes:
        typer.confirm(
            f"Are you sure you want rename the rayweb.Volume '{old_name}'? This may break any "
            "Apps currently using it.",
            default=False,
            abort=True,
        )
    with _errors("renaming the volume"):
        Volume.rename(old_name, new_name, environment_name=env)
    _say(f"Renamed Volume '{old_name}' to '{new_name}'.")


@volume_cli.command("delete")
def volume_delete(
    name: str,
    allow_missing: Annotated[bool, typer.Option(help="Succeed if it does not exist.")] = False,
    yes: YesOption = False,
    env: EnvOption = None,
) -> None:
    """Delete a volume and every file in it."""
    if not yes:
        typer.confirm(
            f"Are you sure you want to irrevocably delete the rayweb.Volume '{name}'?",
            default=False,
            abort=True,
        )
    with _errors("deleting the volume"):
        Volume.objects.delete(name, allow_missing=allow_missing, environment_name=env)
    _say(f"Deleted Volume '{name}'.")
