"""``rayweb.Image``: what a replica's Python environment needs, compiled to a Ray runtime_env.

On Modal an Image is a container image. On Ray the cluster's nodes already have an image, so
rayweb maps each builder step to what Ray can provide per deployment:

- ``pip_install``/``uv_pip_install``: ``runtime_env["pip"]``, except packages the driver's
  environment already satisfies (the embedded local Ray shares that environment);
- ``env``: ``runtime_env["env_vars"]``;
- ``add_local_python_source``: ``runtime_env["py_modules"]``;
- ``add_local_file``/``add_local_dir``: the replica's ``remote_path`` links to the local path
  (``localfiles.py``; the same machine, or shipped with ``rayweb deploy``'s code when the
  files are under the app's source root);
- ``from_registry``: recorded as the container image for KubeRay manifests;
- ``apt_install``/``run_commands``: cannot be done per deployment on Ray; they are recorded,
  and ``rayweb`` warns when the app is deployed that the cluster's image must provide them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .exception import InvalidError
from .localfiles import LocalFile, local_dir, local_file


@dataclass(frozen=True)
class Image:
    """An immutable description of a replica's environment; each builder returns a new Image."""

    python_version: str | None = None
    base_image: str | None = None
    pip_packages: tuple[str, ...] = ()
    env_vars: tuple[tuple[str, str], ...] = ()
    apt_packages: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    local_modules: tuple[str, ...] = ()
    local_files: tuple[LocalFile, ...] = ()

    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> Image:
        """The default image: the cluster's own Python environment."""
        if python_version is not None and not isinstance(python_version, str):
            raise TypeError("python_version must be a string, such as '3.11'.")
        return Image(python_version=python_version)

    @staticmethod
    def from_registry(tag: str, **_kwargs: Any) -> Image:
        """A container image, used as the node image in generated KubeRay manifests."""
        return Image(base_image=tag)

    def pip_install(self, *packages: str | Sequence[str], **_kwargs: Any) -> Image:
        """Python packages each replica needs (installed by Ray's runtime_env if missing)."""
        return replace(self, pip_packages=self.pip_packages + _flatten(packages))

    uv_pip_install = pip_install

    def apt_install(self, *packages: str | Sequence[str], **_kwargs: Any) -> Image:
        """System packages: the cluster's node image must provide them."""
        return replace(self, apt_packages=self.apt_packages + _flatten(packages))

    def run_commands(self, *commands: str | Sequence[str], **_kwargs: Any) -> Image:
        """Build commands: the cluster's node image must already reflect them."""
        return replace(self, commands=self.commands + _flatten(commands))

    def env(self, vars: dict[str, str]) -> Image:
        """Environment variables for every replica using this image."""
        bad = [k for k, v in vars.items() if not isinstance(v, str)]
        if bad:
            raise InvalidError(f"Image ENV variables must be strings. Invalid keys: {bad}")
        return replace(self, env_vars=self.env_vars + tuple(vars.items()))

    def add_local_python_source(self, *modules: str, copy: bool = False, **_kwargs: Any) -> Image:
        """Ship these local packages/modules to the replicas (runtime_env py_modules)."""
        return replace(self, local_modules=self.local_modules + modules)

    def add_local_file(
        self, local_path: str | Path, remote_path: str, *, copy: bool = False
    ) -> Image:
        """Make a local file appear at ``remote_path`` (absolute; ending "/" keeps the
        file's name) in every replica. ``copy`` is accepted; the file is always linked."""
        return replace(self, local_files=(*self.local_files, local_file(local_path, remote_path)))

    def add_local_dir(
        self,
        local_path: str | Path,
        remote_path: str,
        *,
        copy: bool = False,
        ignore: Sequence[str] | Callable[[Path], bool] = (),
    ) -> Image:
        """Make a local directory appear at ``remote_path`` (absolute) in every replica,
        without the files ``ignore`` names (dockerignore patterns, or a function of the
        relative Path that returns True to leave a file out)."""
        step = local_dir(local_path, remote_path, ignore)
        return replace(self, local_files=(*self.local_files, step))

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """Imports that only the replica's image may have: ImportError is ignored locally."""
        with contextlib.suppress(ImportError):
            yield

    def runtime_env(self) -> dict[str, Any]:
        """The Ray runtime_env for this image (empty when nothing is needed)."""
        env: dict[str, Any] = {}
        missing = [p for p in self.pip_packages if not _installed(p)]
        if missing:
            env["pip"] = list(missing)
        if self.env_vars:
            env["env_vars"] = dict(self.env_vars)
        if self.local_modules:
            import importlib

            env["py_modules"] = [importlib.import_module(m) for m in self.local_modules]
        return env

    def unsupported_steps(self) -> list[str]:
        """Builder steps that Ray cannot apply per deployment (for a warning at deploy time)."""
        steps = [f"apt_install({p!r})" for p in self.apt_packages]
        steps += [f"run_commands({c!r})" for c in self.commands]
        return steps


def _flatten(items: tuple[str | Sequence[str], ...]) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(item.split())
        else:
            out.extend(item)
    return tuple(out)


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def _installed(requirement: str) -> bool:
    """True when the local environment already satisfies ``requirement`` (name and version)."""
    match = _REQ_NAME.match(requirement)
    if not match:
        return False
    name, _, spec = match.groups()
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    spec = spec.strip()
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return version in SpecifierSet(spec)
    except Exception:
        return False
