"""A driver kept imported beside a local cluster: ``rayweb serve`` onto it starts in a fork.

A new ``rayweb serve`` process spends ~1 s importing Ray, Serve and FastAPI before it can
deploy (on 2 cores: Python and rayweb 0.15 s, ``import ray`` 0.4 s, ``ray.serve`` 0.3 s,
FastAPI 0.25 s), more than the deploy of a one-endpoint app onto a running cluster takes.
So ``rayweb cluster up`` (and ``rayweb serve --keep-warm``) also starts this process, which
imports all that once and waits on a Unix socket in the cluster's temp dir (mode 0600, the
user's own). A ``rayweb serve`` onto that cluster hands its command over (``hand_off``):
its arguments, environment, working directory, ``sys.path`` and its terminal (stdin,
stdout and stderr, passed as file descriptors); the server forks, and the child runs the
same command in the same terminal, as a new Ray driver (Ray is imported, never
initialized, before the fork). The command that handed off forwards Ctrl-C, SIGTERM and
SIGHUP to the child and exits with its exit code; if it dies, the server stops the child
(SIGTERM). Nothing else changes: the child is the ``rayweb serve`` the user started, with
its output, hot reload and stop.

A hand-off is refused (and the command runs in its own process, as without the server)
when the two differ in what was fixed at import: the Python executable, rayweb's files
(an upgrade, an edit of an editable install) or a ``RAY_*`` variable (Ray reads them when
imported). ``RAYWEB_FORK_DRIVER=0`` turns it off. The server stops with its cluster
(``rayweb cluster down`` stops the processes that name its temp dir, this one too), and
exits when its socket is removed. ``rayweb cluster status`` shows it.

Ray is imported only by ``preload_driver``, in the server (``rayweb.cli.forkserver`` runs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .forkchild import CHILD_ENV, become_command, read_message, send_message

SOCKET_NAME = "rayweb-driver.sock"
PID_NAME = "rayweb-driver.pid"
ENV_OFF = "RAYWEB_FORK_DRIVER"  # "0": no server, no hand-off
CHECK_S = 2.0  # how often the server looks whether its socket is still there
STALE = "rayweb's files changed"  # the refusal that makes the server import them again


def enabled() -> bool:
    return os.environ.get(ENV_OFF, "1").strip() != "0"


def socket_path(temp_dir: str) -> Path:
    return Path(temp_dir) / SOCKET_NAME


def fingerprint() -> dict[str, Any]:
    """What must be the same in the command and the server for the fork to run the same
    code the command would: the interpreter, rayweb's files, and Ray's variables."""
    package = Path(__file__).resolve().parent.parent
    newest = max((p.stat().st_mtime_ns for p in package.rglob("*.py")), default=0)
    return {
        "executable": os.path.realpath(sys.executable),
        "rayweb": [str(package), newest],
        "ray_env": sorted((k, v) for k, v in os.environ.items() if k.startswith("RAY_")),
    }


def running_pid(temp_dir: str) -> int | None:
    """The server's pid when it runs for the cluster in ``temp_dir``."""
    try:
        pid = int((Path(temp_dir) / PID_NAME).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if socket_path(temp_dir).exists() else None


def start(temp_dir: str) -> subprocess.Popen[bytes] | None:
    """Start the server for the cluster in ``temp_dir`` (detached; its log is in that dir)."""
    if not enabled():
        return None
    env = {k: v for k, v in os.environ.items() if k != CHILD_ENV}
    with open(Path(temp_dir) / "rayweb-driver.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rayweb.cli.forkserver", temp_dir],
            cwd=temp_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # the terminal's Ctrl-C is not for it
        )


# --- the command's side -------------------------------------------------------------------
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def hand_off(temp_dir: str, argv: Sequence[str]) -> int | None:
    """Run ``argv`` (the command's own arguments) in a fork of the server for the cluster in
    ``temp_dir``, in this terminal; its exit code, or None when there is no server or it
    refused (then the caller runs the command itself). The terminal's signals are taken
    from the start: one that comes before the child exists is sent to it once it does."""
    path = socket_path(temp_dir)
    if not enabled() or os.environ.get(CHILD_ENV) or not path.exists():
        return None
    child: list[int] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not child:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child[0], signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    _ensure_terminal()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        header = {
            "argv": list(argv),
            "argv0": sys.argv[0],
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "path": list(sys.path),
            "umask": _umask(),
            "fingerprint": fingerprint(),
        }
        conn.connect(str(path))
        send_command(conn, header)
        reply = read_message(conn)
    except (OSError, ValueError):
        reply = None
    if reply is None or "pid" not in reply:  # refused (reply["why"]), or no server
        conn.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            raise KeyboardInterrupt  # stopped while asking: the command stops here
        return None
    child.append(int(reply["pid"]))
    for waiting in pending:
        forward(waiting, None)
    return _wait_child(conn)


def send_command(conn: socket.socket, header: dict[str, Any]) -> None:
    """The terminal (fds 0-2, on one byte of their own), then the header as a message."""
    socket.send_fds(conn, [b"\0"], [0, 1, 2])
    data = json.dumps(header).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _ensure_terminal() -> None:
    """Each of stdin, stdout and stderr that is closed (a CI runner's stdin) becomes
    /dev/null, before anything else can take its number: the child gets what a process
    started here would have, and never this process's connection to the server."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


def _wait_child(conn: socket.socket) -> int:
    """Until the child's exit code comes (from the child, or from the server that reaped it)."""
    with conn:
        while True:
            try:
                reply = read_message(conn)
            except OSError:
                reply = None
            if reply is None:
                return 1  # both went away without a word
            if "exit" in reply:
                return int(reply["exit"])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- the server's side --------------------------------------------------------------------
def driver_env() -> None:
    """The variables a driver of a local cluster sets before it imports Ray (loopback, token
    auth): the command sets them before its fingerprint, the server before its imports."""
    from ..common import use_ray_token
    from .cluster import prepare_env

    prepare_env()
    use_ray_token()


def preload_driver() -> None:
    """What a ``rayweb serve`` imports before it deploys: the driver, Ray, Serve, FastAPI."""
    import fastapi  # noqa: F401
    import ray  # noqa: F401
    import ray.serve  # noqa: F401
    import watchfiles  # noqa: F401

    from . import dev, serve  # noqa: F401


def serve_forever(
    temp_dir: str,
    run: Callable[[], object],
    preload: Iterable[Callable[[], object]] = (),
) -> None:
    """Import what ``preload`` imports, then fork a child running ``run()`` for each command
    handed over, until the socket is removed or the process is stopped. The fingerprint is
    taken before the imports (importing Ray sets ``RAY_CLIENT_MODE``)."""
    driver_env()
    expected = fingerprint()
    for step in preload:
        step()
    path = socket_path(temp_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)  # the socket: the user's only
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    listener.listen(16)
    (Path(temp_dir) / PID_NAME).write_text(str(os.getpid()))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
    children: dict[int, socket.socket | None] = {}  # pid -> the command's connection
    next_check = time.monotonic() + CHECK_S
    stale = False
    try:
        while True:
            peers = [conn for conn in children.values() if conn is not None]
            watched: list[Any] = [listener, wake_r, *peers]
            readable, _, _ = select.select(watched, [], [], 1.0)
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            _reap(children)
            for conn in readable:
                if conn is listener:
                    own = [listener, wake_r, wake_w]
                    stale = _accept(listener, expected, children, run, own) or stale
                elif conn is not wake_r:
                    _peer_gone(conn, children)
            if stale and not children:
                # rayweb (or Python) changed since the imports: import it all again, in
                # place, once no command it started still runs (exec keeps the pid).
                listener.close()
                os.execv(sys.executable, sys.orig_argv)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_S
                if not path.exists():
                    return  # the cluster's temp dir was cleaned: nothing to start onto
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            (Path(temp_dir) / PID_NAME).unlink()


def _accept(
    listener: socket.socket,
    expected: dict[str, Any],
    children: dict[int, socket.socket | None],
    run: Callable[[], object],
    own: list[Any],
) -> bool:
    """Take one command; True when it shows this server is stale (another rayweb or Python
    than the one it imported)."""
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(5)
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        header = read_message(conn)
        if header is None:
            raise ValueError("the command went away")
        why = _refusal(header, fds, expected)
        if why is not None:
            send_message(conn, {"why": why})
            conn.close()
            return why.startswith(STALE)
        conn.settimeout(None)
        # A signal the command forwards may reach the child before it has its own handlers:
        # held until then (the server's would unwind it into this loop's cleanup).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            raise
        if pid == 0:
            peers = [held for held in children.values() if held is not None]
            become_command(header, fds, conn, [*peers, *own], run)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        send_message(conn, {"pid": pid})
        children[pid] = conn
    except (OSError, ValueError) as exc:
        print(f"rayweb: a hand-off failed: {exc}", file=sys.stderr, flush=True)
        conn.close()
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    return False


def _refusal(header: dict[str, Any], fds: list[int], expected: dict[str, Any]) -> str | None:
    """Why the command must run in its own process, or None."""
    if len(fds) != 3:
        return "no terminal passed"
    found = header.get("fingerprint")
    if not isinstance(found, dict):
        return "no fingerprint"
    for key in ("executable", "rayweb", "ray_env"):
        if json.dumps(found.get(key)) == json.dumps(expected[key]):
            continue
        if key == "rayweb" and (found.get(key) or [None])[0] == expected[key][0]:
            return STALE  # the same package, edited or upgraded since the imports
        return f"{key} differs from when this server started (another environment)"
    return None


def _reap(children: dict[int, socket.socket | None]) -> None:
    """Tell each command whose child exited its exit code."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:  # None: the command died first
            send_message(conn, {"exit": os.waitstatus_to_exitcode(status) % 256})
            conn.close()


def _peer_gone(conn: socket.socket, children: dict[int, socket.socket | None]) -> None:
    """A command's connection is readable: it only closes (the command died). Stop its
    child; its exit is then reported to nobody."""
    with contextlib.suppress(OSError):
        if conn.recv(1, socket.MSG_PEEK):
            return
    for pid, held in list(children.items()):
        if held is conn:
            children[pid] = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    conn.close()
