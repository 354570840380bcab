"""What the driver, the replicas and the cluster's services all need: no Ray, no user code.

- the markers around a user's traceback in a replica's error (written in the replica by
  :func:`user_failure`, found by the driver with :func:`extract_user_error`);
- the gateway's header names and the autoscaling metric a replica reports;
- :func:`remote_error` (an actor's own exception instead of Ray's wrapper);
- :func:`local_modules` / :func:`drop_local_modules` (the app's own modules, which the dev
  loop and a hot-swapping replica both re-import), :func:`free_port` and
  :func:`port_unavailable`.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

# --- headers the gateway sets and replicas check --------------------------------------------
KEY_HEADER = "x-rayweb-gateway-key"  # a per-cluster random key: "this came through HAProxy"
CLIENT_HEADER = "x-rayweb-client"  # the client address HAProxy saw
# The gateway's holder already ran proxy auth and the rate limit (HAProxy strips any copy a
# client sends; a replica honours it only next to the gateway key).
ADMITTED_HEADER = "x-rayweb-admitted"
# The request came to its endpoint's own origin (`<label>.<domain>`): the gateway added the
# route prefix for routing, and the replica takes it away again (root_path "").
ORIGIN_HEADER = "x-rayweb-origin"

# --- the custom autoscaling metric of requests on a replica's own port ----------------------
DIRECT_ONGOING = "rayweb_direct_ongoing"

# --- names of the actors a replica starts (``rayweb app logs`` finds them by it) -----------
SIDECAR_PREFIX = "rayweb-sidecar:"  # + "<endpoint>:<id>": a web_server's sidecar actor

# --- environment a replica (or web_server process) runs with --------------------------------
REMOTE_ENV = "RAYWEB_IS_REMOTE"  # "1" inside a replica: serve() and from_local_environ know
CALLER_RAY_ENV = "RAYWEB_RAY_ADDRESS"  # a web_server's process: the Ray its calls join
DEV_ENV = "RAYWEB_DEV"  # "1" in replicas of a `rayweb serve`/`app.run()` app: calls reach -dev apps


def is_remote() -> bool:
    """True inside a rayweb replica or web_server process."""
    return os.environ.get(REMOTE_ENV) == "1"


# --- user errors across the replica/driver boundary -----------------------------------------
USER_ERROR_BEGIN = "--- rayweb user error ---"
USER_ERROR_END = "--- end of rayweb user error ---"

_HIDDEN_FRAMES = (
    os.sep + os.path.join("rayweb", "replica") + os.sep,
    os.sep + os.path.join("ray", ""),
    os.sep + "asyncio" + os.sep,
    os.sep + "concurrent" + os.sep,
)


class UserCodeError(RuntimeError):
    """User code failed inside a replica; the message carries the user's own traceback."""


def user_failure(phase: str, exc: BaseException) -> UserCodeError:
    """Wrap ``exc`` so the driver can show one rayweb line plus the user's traceback."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not any(h in f.filename for h in _HIDDEN_FRAMES)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip()
    first = (str(exc).strip().splitlines() or [""])[0]
    summary = f"{phase} raised {type(exc).__name__}" + (f": {first}" if first else "")
    return UserCodeError(f"{summary}\n{USER_ERROR_BEGIN}\n{text}\n{USER_ERROR_END}")


def extract_user_error(message: str) -> tuple[str, str] | None:
    """Find ``(summary, traceback)`` in a Serve status message, if our marker is there."""
    start = message.find(USER_ERROR_BEGIN)
    if start < 0:
        return None
    end = message.find(USER_ERROR_END, start)
    body = message[start + len(USER_ERROR_BEGIN) : end if end >= 0 else None].strip("\n")
    # Ray replaces the "Traceback" header with its own actor line ("ray::ServeReplica...").
    kept = [ln for ln in body.splitlines() if "ray::" not in ln and not ln.startswith("Traceback")]
    body = "\n".join(["Traceback (most recent call last):", *kept])
    head = message[:start].rstrip().splitlines()
    summary = head[-1].split("UserCodeError: ")[-1].strip() if head else "user code failed"
    return summary, body


def use_ray_token() -> None:
    """Before Ray is imported by a process that joins a running cluster: Ray 2.60 clusters
    use token auth by default, and a driver without it retries for ~20 s and fails; use the
    machine's token when there is one (Ray reads the mode when it is imported)."""
    token = Path.home() / ".ray" / "auth_token"
    if token.exists() or os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def remote_error(exc: BaseException) -> BaseException:
    """An actor's own exception (NotFoundError, TimeoutError, ...), not Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


# --- the app's own modules ------------------------------------------------------------------
def local_modules(root: Path) -> list[tuple[str, Path]]:
    """Imported modules whose file lives under ``root`` (the app's own code). Those of the
    interpreter and its installed packages are skipped before their paths are resolved (a
    driver has ~2,000 modules imported, Ray's, Serve's and FastAPI's: 0.15 s of resolving)."""
    installed = tuple(
        prefix + os.sep
        for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}
        if not _under(root, Path(prefix).resolve())
    )
    out = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name.startswith("rayweb") or file.startswith(installed):
            continue
        path = Path(file).resolve()
        if path.suffix == ".py" and _under(path, root) and "site-packages" not in path.parts:
            out.append((name, path))
    return out


def drop_local_modules(root: Path) -> None:
    """Forget the app's own modules, so the next import reads the files again."""
    for name, _ in local_modules(root):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host to put in URLs: a wildcard bind address is reached on loopback."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def free_port() -> int:
    """A port nothing on loopback listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_unavailable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, as a message naming the fix (None: free).

    A plain bind, without ``SO_REUSEPORT``: it fails too where another process holds the
    port with that option (gRPC servers do, Ray's own workers among them, on ports
    10002-19999). HAProxy sets the option as well, and would share such a port silently,
    handing some of the connections to the other process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return (
                f"Port {port} on {host} is not available ({exc.strerror}). "
                f"Suggestion: --port {port + 1} (or rayweb.serve(app, port={port + 1}))."
            )
    return None


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def descendant_pids(root: int) -> list[int]:
    """Every process below ``root``, parents before children."""
    found, queue = [], [root]
    while queue:
        children = child_pids(queue.pop(0))
        found += children
        queue += children
    return found


# --- a user exception raised by a function replica, on its way to the caller ----------------
@dataclass(frozen=True)
class RemoteFailure:
    """What a function replica sends back for an exception from user code: its type, text
    and traceback, and the exception itself pickled when it pickles (``calls`` raises it)."""

    type_name: str
    message: str
    traceback: str
    pickled: bytes | None = None
