"""The ``rayweb serve`` dev loop: serve, watch the app's files, redeploy what changed.

On a save, rayweb re-imports the app (its own modules are dropped from ``sys.modules``
first), compiles it and compares each endpoint's fingerprint (options, payload and the
source of its function or class; any change to a helper module counts for all endpoints).
The app's non-web functions and classes (called with ``.remote()``) are compared the same way.
Only what changed is redeployed, and Serve keeps the old replicas serving until the new
ones are ready (``max_surge_percent=100``), so requests in flight finish on the old code. A
file that no longer imports (a syntax error, say) is reported and the last good version
keeps serving; so does a new version whose replicas fail to start.

When only the source changed (same options, same payload), the running replicas swap the new
code in place instead (``replica/hotswap.py``): no new process, so a save is live in well
under a second. Everything else (new options, new endpoints, no gateway, any function called
with ``.remote()``: its replicas are not on the gateway) is redeployed.
What to swap, redeploy or delete is decided by :func:`plan_reload`, a pure function.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..app import App
from ..common import drop_local_modules, extract_user_error, local_modules
from ..compiler import CompiledEndpoint, compile_app, compile_functions, deploy_timeout
from ..exception import DeploymentError, Error
from .import_refs import AppRef, find_app, import_module_of, parse_app_ref
from .output import print_urls
from .serve import record_served, serve
from .status import delete_apps, deploy, endpoint_labels
from .volumes import prepare_volumes

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
        self.app = self.app or self.load()
        self.handle = serve(self.app, dev=True, quiet=True, progress=progress, **self.serve_kwargs)
        everything = [*self.handle.endpoints, *self.handle.functions]
        self.fingerprints = fingerprints(self.app, everything, self.root)
        self.compiled = {ep.name: ep for ep in everything}
        return self.handle

    def watched_files(self) -> set[Path]:
        return {path for _, path in local_modules(self.root)}

    def reload(self) -> bool:
        """Re-import and redeploy what changed; True if the served app changed."""
        start = time.monotonic()
        drop_local_modules(self.root)
        try:
            app = self.load()
            pool = self.handle.pool  # as the first deploy compiled it
            endpoints = compile_app(app, dev=True, pool=pool)
            functions = compile_functions(app, dev=True, pool=pool)
            prepare_volumes(app)
        except Exception:
            self.say("[reload] the app does not load; the last good version keeps serving:")
            self.say(_user_traceback())
            return False
        everything = [*endpoints, *functions]
        new = fingerprints(app, everything, self.root)
        plan = plan_reload(self.fingerprints, self.compiled, new, everything)
        if not plan.changed and not plan.removed:
            self.say("[reload] nothing changed")
            return False
        handle = self.handle
        try:
            swapped = hot_swap(plan.swap) if plan.swap else []
            # Replicas that could not be asked (none registered, no gateway) get a redeploy.
            redeploy = [ep for ep in plan.changed if ep not in swapped]
            if swapped:
                self.say(f"[reload] swapped in new code: {', '.join(ep.tag for ep in swapped)}")
            if redeploy:
                self.say(f"[reload] redeploying {', '.join(ep.tag for ep in redeploy)}")
                limit = self.serve_kwargs.get("deploy_timeout") or deploy_timeout(redeploy)
                deploy(redeploy, timeout=limit, progress=lambda _m: None, delete_on_failure=False)
        except Error as exc:
            self.say(
                f"[reload] the new version failed to start; the last good one keeps serving:\n{exc}"
            )
            return False
        delete_apps(plan.removed, wait_s=10)
        handle.endpoints, handle.functions = endpoints, functions
        handle.app = app
        handle.labels = endpoint_labels(everything)
        for function in app.web_endpoints:
            function._hydrate(handle.urls.get(function.tag))
        record_served(app, True)
        self.app, self.fingerprints = app, new
        self.compiled = {ep.name: ep for ep in everything}
        self.say(f"[reload] done in {time.monotonic() - start:.2f}s")
        if plan.removed or plan.added:
            print_urls(handle.labels, handle.reach)
        return True


@dataclass(frozen=True)
class ReloadPlan:
    """What a save changes: endpoints whose code can be swapped into the running replicas,
    every changed endpoint (the ones not swapped are redeployed), new ones, removed ones."""

    changed: list[CompiledEndpoint]
    swap: list[CompiledEndpoint]
    added: list[str]
    removed: list[str]


def plan_reload(
    old_fingerprints: Mapping[str, str],
    old_compiled: Mapping[str, CompiledEndpoint],
    new_fingerprints: Mapping[str, str],
    endpoints: list[CompiledEndpoint],
) -> ReloadPlan:
    """Decide what a reload does (pure). An endpoint is swappable when only its source
    changed: it ran before, its payload allows hot swap (not a web_server, `rayweb serve`
    only), and its payload and deployment options are what they were."""
    changed = [ep for ep in endpoints if old_fingerprints.get(ep.name) != new_fingerprints[ep.name]]

    def swappable(ep: CompiledEndpoint) -> bool:
        old = old_compiled.get(ep.name)
        return (
            old is not None
            and ep.payload.hot_swap  # a web endpoint's or a class pool's replicas
            and ep.payload == old.payload
            and _options_key(ep) == _options_key(old)
        )

    return ReloadPlan(
        changed=changed,
        swap=[ep for ep in changed if swappable(ep)],
        added=[ep.name for ep in changed if ep.name not in old_fingerprints],
        removed=[name for name in old_fingerprints if name not in new_fingerprints],
    )


def _options_key(ep: CompiledEndpoint) -> str:
    return json.dumps(ep.deployment_options, sort_keys=True, default=repr)


SWAP_TIMEOUT_S = 30.0


def hot_swap(endpoints: list[CompiledEndpoint]) -> list[CompiledEndpoint]:
    """Ask the running replicas of ``endpoints`` to swap in the new code; return those that
    did (all their replicas answered). Raises ``DeploymentError`` with the user's traceback
    if a replica could not load the new code (it keeps the old)."""
    import ray

    from ..services.gateway import find_gateway

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


def _code_of(app: App, ep: CompiledEndpoint) -> Any:
    """The user's function or class an endpoint (or a ``.remote()`` function) runs."""
    if ep.route_prefix is None:  # a function or class called through its handle
        owner = app.registered_classes.get(ep.tag) or app.registered_functions[ep.tag]
        return getattr(owner, "user_cls", None) or owner.raw_f
    function = next(f for f in app.web_endpoints if f.tag == ep.tag)
    return function.cls.user_cls if function.cls else function.raw_f


def fingerprints(app: App, endpoints: list[CompiledEndpoint], root: Path) -> dict[str, str]:
    """What identifies each endpoint's (and function's) deployed version."""
    targets = {ep.name: _code_of(app, ep) for ep in endpoints}
    helpers = hashlib.sha256()
    app_files = {Path(inspect.getfile(target)) for target in targets.values()}
    for name, path in sorted(local_modules(root)):
        if path not in app_files:
            helpers.update(name.encode() + path.read_bytes())
    out = {}
    for ep in endpoints:
        target = targets[ep.name]
        digest = hashlib.sha256()
        digest.update(json.dumps(ep.deployment_options, sort_keys=True, default=repr).encode())
        web, limits = getattr(ep.payload, "web", None), getattr(ep.payload, "limits", None)
        digest.update(repr((web, ep.payload.secrets, limits)).encode())
        if ep.route_prefix is None:  # what a function's replicas are told besides its code
            digest.update(repr(ep.payload).encode())
        digest.update(ep.payload.code.pickled or _source(target).encode())
        digest.update(helpers.digest())
        out[ep.name] = digest.hexdigest()
    return out


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return repr(obj)


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
