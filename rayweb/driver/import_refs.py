"""Find the App a command line names: ``file.py``, ``file.py::name``, ``-m pkg.mod[::name]``.

Like ``modal serve``, the variable defaults to ``app``; a module with exactly one App is
also accepted. Errors say what was found and what to type.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .._compat import install_modal_alias
from ..app import App
from ..exception import InvalidError, NotFoundError

DEFAULT_APP_VARIABLE = "app"


@dataclass(frozen=True)
class AppRef:
    """A parsed app reference."""

    target: str  # a file path or a dotted module name
    variable: str | None
    is_module: bool

    def __str__(self) -> str:
        flag = "-m " if self.is_module else ""
        return f"{flag}{self.target}" + (f"::{self.variable}" if self.variable else "")


def parse_app_ref(ref: str, *, is_module: bool = False) -> AppRef:
    target, sep, variable = ref.partition("::")
    if sep and not variable:
        raise InvalidError(f"Empty app name after '::' in {ref!r}. Suggestion: {target}::app")
    if not target:
        raise InvalidError(f"No file or module in {ref!r}. Suggestion: rayweb serve app.py")
    module_like = not target.endswith(".py") and not Path(target).exists()
    return AppRef(target, variable or None, is_module or module_like)


def import_module_of(ref: AppRef) -> ModuleType:
    """Import the file or module; a file is imported under its stem, its folder on sys.path."""
    install_modal_alias()
    if ref.is_module:
        sys.path.insert(0, str(Path.cwd()))
        try:
            return importlib.import_module(ref.target)
        except ModuleNotFoundError as exc:
            if exc.name and ref.target.startswith(exc.name):
                raise NotFoundError(
                    f"No module named {ref.target!r} (looked in {Path.cwd()} and sys.path). "
                    f"Suggestion: run from the folder that contains it, or pass a file path."
                ) from None
            raise
    path = Path(ref.target).resolve()
    if not path.is_file():
        raise NotFoundError(
            f"File not found: {ref.target}. Suggestion: rayweb serve path/to/app.py"
        )
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidError(f"Cannot import {ref.target}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def find_app(module: ModuleType, ref: AppRef) -> App:
    apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
    wanted = ref.variable or DEFAULT_APP_VARIABLE
    if wanted in apps:
        return apps[wanted]
    if ref.variable is None and len(apps) == 1:
        return next(iter(apps.values()))
    where = ref.target
    if wanted in vars(module):
        found = type(vars(module)[wanted]).__name__
        raise InvalidError(f"{wanted!r} in {where} is a {found}, not a rayweb.App.")
    if apps:
        names = ", ".join(sorted(apps))
        example = AppRef(ref.target, sorted(apps)[0], ref.is_module)
        raise NotFoundError(
            f"Could not find a rayweb App named {wanted!r} in {where}. Found: {names}. "
            f"Suggestion: rayweb serve {example}"
        )
    raise NotFoundError(
        f"Could not find a rayweb App in {where}. Suggestion: define "
        '`app = rayweb.App("name")` at module level and decorate functions with @app.function().'
    )


def load_app(ref: str, *, is_module: bool = False) -> App:
    """Import what ``ref`` names and return its App."""
    parsed = parse_app_ref(ref, is_module=is_module)
    return find_app(import_module_of(parsed), parsed)
