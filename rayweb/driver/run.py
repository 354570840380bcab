"""``rayweb run file.py[::name]``: run a local entrypoint (in this process, with the app
running on Ray) or one function of the app (remotely), as ``modal run`` does.

``::name`` names an ``@app.local_entrypoint``, a function (``square``) or a class method
(``Model.predict``) of the module's app, or the App variable itself; with no name the app's
one local entrypoint runs, else its one function. The app is deployed for the run with -dev
names (``rayweb.serve(app, dev=True)``) and deleted after it, whatever happens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..app import App
from ..exception import InvalidError, NotFoundError
from ..functions import Function
from .import_refs import AppRef, find_app, import_module_of, parse_app_ref
from .serve import serve


@dataclass(frozen=True)
class Runnable:
    """What ``rayweb run`` runs: a local entrypoint (called here) or a function (``.remote``)."""

    app: App
    name: str
    target: Callable[..., Any]
    is_entrypoint: bool

    @property
    def signature(self) -> inspect.Signature:
        raw = self.target.raw_f if isinstance(self.target, Function) else self.target
        return inspect.signature(raw)


def _choices(app: App) -> list[str]:
    names = list(app.local_entrypoints)
    names += [f.tag for f in app.registered_functions.values() if not f.is_web]
    for cls in app.registered_classes.values():
        names += [f.tag for f in cls.functions.values() if not f.is_web]
    return names


def find_runnable(ref: str, *, is_module: bool = False) -> Runnable:
    parsed = parse_app_ref(ref, is_module=is_module)
    module = import_module_of(parsed)
    name = parsed.variable
    if name is not None and not isinstance(vars(module).get(name), App):
        app = find_app(module, AppRef(parsed.target, None, parsed.is_module))
    else:
        app = find_app(module, parsed)
        name = None
    if name is None:
        entrypoints = list(app.local_entrypoints)
        functions = [f.tag for f in app.registered_functions.values() if not f.is_web]
        if len(entrypoints) == 1:
            name = entrypoints[0]
        elif not entrypoints and len(functions) == 1:
            name = functions[0]
        else:
            raise InvalidError(
                "Specify a rayweb Function or local entrypoint to run. E.g.\n"
                f"> rayweb run {parsed.target}::{(_choices(app) or ['my_function'])[0]} [...args]"
                f"\n\nFound: {', '.join(_choices(app)) or 'nothing runnable'}."
            )
    if name in app.local_entrypoints:
        return Runnable(app, name, app.local_entrypoints[name], True)
    owner, _, method = name.partition(".")
    function = app.registered_functions.get(owner)
    if method and owner in app.registered_classes:
        function = app.registered_classes[owner].functions.get(method)
    if function is None or function.is_web:
        raise NotFoundError(
            f"No local entrypoint or function {name!r} in {parsed.target}. "
            f"Found: {', '.join(_choices(app)) or 'nothing runnable'}."
        )
    return Runnable(app, name, function, False)


def run(
    runnable: Runnable,
    kwargs: dict[str, Any],
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Deploy the app (-dev), run ``runnable`` with ``kwargs``, delete the app; the result."""
    handle = serve(
        runnable.app, dev=True, quiet=True, address=address, host=host, port=port,
        progress=progress,
    )  # fmt: skip
    try:
        if runnable.is_entrypoint:
            return runnable.target(**kwargs)
        function = runnable.target
        assert isinstance(function, Function)
        if function.is_generator:
            return list(function.remote_gen(**kwargs))
        if function.cls is not None:
            return getattr(function.cls(), function.tag.split(".")[1]).remote(**kwargs)
        return function.remote(**kwargs)
    finally:
        handle.stop()
