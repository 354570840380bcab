"""The ``rayweb serve`` dev loop: serve, watch the app's files, redeploy what changed.

On a save, rayweb re-imports the app (its own modules are dropped from ``sys.modules``
first), compiles it and compares each endpoint's fingerprint (options, payload and the
source of its function or class; any change to a helper module counts for all endpoints).
Only changed endpoints are redeployed, and Serve keeps the old replicas serving until the new
ones are ready (``max_surge_percent=100``), so requests in flight finish on the old code. A
file that no longer imports (a syntax error, say) is reported and the last good version
keeps serving; so does a new version whose replicas fail to start.

When only the source changed (same options, same payload), the running replicas swap the new
code in place instead (``runtime/hotswap.py``): no new process, so a save is live in well
under a second. Everything else (new options, new endpoints, no gateway) is redeployed.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .app import App
from .compiler import CompiledEndpoint, compile_app
from .exception import Error
from .import_refs import AppRef, find_app, import_module_of, parse_app_ref

Say = Callable[[str], None]


@dataclass
class DevSession:
    """One ``rayweb serve`` run: the served app and what it was built from."""

    ref: AppRef
    serve_kwargs: dict[str, Any]
    say: Say = print
    app: App | None = None
    handle: Any = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=Path.cwd)
    compiled: dict[str, CompiledEndpoint] = field(default_factory=dict)

    @classmethod
    def from_ref(cls, ref: str, *, is_module: bool, say: Say, **serve_kwargs: Any) -> DevSession:
        parsed = parse_app_ref(ref, is_module=is_module)
        root = Path.cwd() if parsed.is_module else Path(parsed.target).resolve().parent
        return cls(parsed, serve_kwargs, say, root=root)

    def load(self) -> App:
        return find_app(import_module_of(self.ref), self.ref)

    def start(self, progress: Say | None = None) -> Any:
        """Serve the app (loaded by ``load()`` beforehand, or now)."""
        from .serving import serve

        self.app = self.app or self.load()
        self.handle = serve(self.app, dev=True, quiet=True, progress=progress, **self.serve_kwargs)
        self.fingerprints = fingerprints(self.app, self.handle.endpoints, self.root)
        self.compiled = {ep.name: ep for ep in self.handle.endpoints}
        return self.handle

    def watched_files(self) -> set[Path]:
        return {path for _, path in local_modules(self.root)}

    def reload(self) -> bool:
        """Re-import and redeploy what changed; True if the served app changed."""
        from .serving import deploy, print_urls

        start = time.monotonic()
        drop_local_modules(self.root)
        try:
            app = self.load()
            endpoints = compile_app(app, dev=True)
        except Exception:
            self.say("[reload] the app does not load; the last good version keeps serving:")
            self.say(_user_traceback())
            return False
        new = fingerprints(app, endpoints, self.root)
        changed = [ep for ep in endpoints if self.fingerprints.get(ep.name) != new[ep.name]]
        removed = [name for name in self.fingerprints if name not in new]
        if not changed and not removed:
            self.say("[reload] no endpoint changed")
            return False
        handle = self.handle
        try:
            swap = [ep for ep in changed if self._swappable(ep)]
            swapped = hot_swap(swap) if swap else []
            redeploy = [ep for ep in changed if ep not in swapped]
            if swapped:
                self.say(f"[reload] swapped in new code: {', '.join(ep.tag for ep in swapped)}")
            if redeploy:
                self.say(f"[reload] redeploying {', '.join(ep.tag for ep in redeploy)}")
                limit = self.serve_kwargs.get("deploy_timeout") or 300.0
                deploy(redeploy, timeout=limit, progress=lambda _m: None, delete_on_failure=False)
        except Error as exc:
            self.say(
                f"[reload] the new version failed to start; the last good one keeps serving:\n{exc}"
            )
            return False
        _delete_apps(removed)
        added = [ep for ep in changed if ep.name not in self.fingerprints]
        handle.endpoints = endpoints
        handle.app = app
        handle.urls = {ep.tag: f"{handle.base_url}{ep.route_prefix}" for ep in endpoints}
        for function in app.web_endpoints:
            function._hydrate(handle.urls.get(function.tag))
        self.app, self.fingerprints = app, new
        self.compiled = {ep.name: ep for ep in endpoints}
        self.say(f"[reload] done in {time.monotonic() - start:.2f}s")
        if removed or added:
            print_urls(handle)
        return True

    def _swappable(self, ep: CompiledEndpoint) -> bool:
        """Only the source changed: the running replicas can swap the code in place."""
        old = self.compiled.get(ep.name)
        return (
            old is not None
            and ep.payload.hot_swap
            and ep.payload == old.payload
            and _options_key(ep) == _options_key(old)
        )


def _options_key(ep: CompiledEndpoint) -> str:
    return json.dumps(ep.deployment_options, sort_keys=True, default=repr)


SWAP_TIMEOUT_S = 30.0


def hot_swap(endpoints: list[CompiledEndpoint]) -> list[CompiledEndpoint]:
    """Ask the running replicas of ``endpoints`` to swap in the new code; return those that
    did (all their replicas answered). Raises ``DeploymentError`` with the user's traceback
    if a replica could not load the new code (it keeps the old)."""
    import ray

    from .exception import DeploymentError
    from .runtime.gateway import find_gateway
    from .runtime.loader import extract_user_error

    gateway = find_gateway()
    if gateway is None:
        return []
    asked = {}
    for ep in endpoints:
        generation, replicas = ray.get(gateway.bump_generation.remote(ep.name))
        if replicas:
            asked[ep.name] = (generation, set(replicas))
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    done: set[str] = set()
    while asked.keys() - done and time.monotonic() < deadline:
        for name, (generation, replicas) in asked.items():
            if name in done:
                continue
            answers = ray.get(gateway.generation_answers.remote(name, generation))
            for error in answers.values():
                if error:
                    found = extract_user_error(error)
                    summary, tb = found if found else (error.splitlines()[0], "")
                    raise DeploymentError(
                        f"rayweb: endpoint {name!r} could not load the new code: {summary}",
                        user_traceback=tb,
                    )
            if replicas <= answers.keys():
                done.add(name)
        time.sleep(0.02)
    return [ep for ep in endpoints if ep.name in done]


def fingerprints(app: App, endpoints: list[CompiledEndpoint], root: Path) -> dict[str, str]:
    """What identifies each endpoint's deployed version."""
    by_tag = {f.tag: f for f in app.web_endpoints}
    helpers = hashlib.sha256()
    app_files = {
        Path(inspect.getfile(f.cls.user_cls if f.cls else f.raw_f)) for f in by_tag.values()
    }
    for name, path in sorted(local_modules(root)):
        if path not in app_files:
            helpers.update(name.encode() + path.read_bytes())
    out = {}
    for ep in endpoints:
        function = by_tag[ep.tag]
        target = function.cls.user_cls if function.cls else function.raw_f
        digest = hashlib.sha256()
        digest.update(json.dumps(ep.deployment_options, sort_keys=True, default=repr).encode())
        digest.update(repr((ep.payload.web, ep.payload.secrets, ep.payload.limits)).encode())
        digest.update(ep.payload.code.pickled or _source(target).encode())
        digest.update(helpers.digest())
        out[ep.name] = digest.hexdigest()
    return out


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return repr(obj)


def local_modules(root: Path) -> list[tuple[str, Path]]:
    """Imported modules whose file lives under ``root`` (the app's own code)."""
    out = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name.startswith("rayweb"):
            continue
        path = Path(file).resolve()
        if path.suffix == ".py" and _under(path, root) and "site-packages" not in path.parts:
            out.append((name, path))
    return out


def drop_local_modules(root: Path) -> None:
    for name, _ in local_modules(root):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _user_traceback() -> str:
    exc = sys.exc_info()[1]
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__ if exc else None)
        if "importlib" not in f.filename and "/rayweb/" not in f.filename
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    if exc is not None:
        lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _delete_apps(names: Iterable[str]) -> None:
    from .serving import delete_apps

    delete_apps(list(names), wait_s=10)


def watch_changes(
    session: DevSession,
    stop: threading.Event,
    on_change: Callable[[set[str]], None],
    ready: threading.Event | None = None,
) -> None:
    """Call ``on_change`` with the changed paths after each save (50 ms debounce).

    ``ready`` is set once the file watches are in place (the first idle tick)."""
    import watchfiles

    # The folders of the app's own modules, not recursively: a project folder may also
    # hold a virtualenv with thousands of folders.
    folders = {session.root, *(p.parent for p in session.watched_files())}
    for changes in watchfiles.watch(
        *sorted(folders),
        watch_filter=watchfiles.PythonFilter(),
        debounce=50,
        step=20,
        stop_event=stop,
        raise_interrupt=False,
        recursive=False,
        yield_on_timeout=True,
        rust_timeout=200,
    ):
        if ready is not None:
            ready.set()
        if not changes:
            continue
        watched = {str(p) for p in session.watched_files()}
        paths = {path for _, path in changes}
        new_files = {p for p in paths if p not in watched and Path(p).exists()}
        if paths & watched or new_files:
            on_change(paths)
