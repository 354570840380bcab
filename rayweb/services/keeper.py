"""Keeps the gateway's HAProxy running: ``python -m rayweb.services.keeper DIR --watch PID ...``.

A small process of its own (not the gateway actor), so that the data path outlives the
actor: the actor can die and be restarted by Ray while HAProxy keeps serving, and the new
actor adopts this keeper (``haproxy.HAProxyProcess.adopt``). The keeper

- starts HAProxy's master (``-W``, master socket) on ``DIR/haproxy.cfg`` (the last config
  that passed ``haproxy -c``) and starts it again whenever it exits: a killed worker makes
  the master exit (``exit-on-failure``), a killed master leaves its worker unbound; either
  way a new master is listening within a fraction of a second;
- writes the master's pid to ``DIR/haproxy.pid`` and one line per restart to
  ``DIR/events.log`` (what ``rayweb serve`` prints);
- stops HAProxy and exits on SIGTERM, or when the ``--watch`` process (the head node's
  raylet) exits, so nothing outlives the Ray node it serves.

Linux only (pidfds, ``PR_SET_CHILD_SUBREAPER``); no Ray here.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from ..common import child_pids

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_GRACE_S = 5.0


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


def _die_with_parent() -> None:
    """Runs in HAProxy before exec: SIGTERM when the keeper dies, however it dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def event(directory: Path, text: str) -> None:
    """Append one line for ``rayweb serve`` to print (``<unix time> <text>``)."""
    with contextlib.suppress(OSError), open(directory / "events.log", "a") as log:
        log.write(f"{time.time():.3f} {text}\n")


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    if code == 137:
        return "exited after one of its workers was killed"
    return f"exited with code {code}"


class Keeper:
    """One HAProxy master at a time, restarted with backoff when it exits."""

    def __init__(self, directory: Path, binary: str, sock: str) -> None:
        self.dir = directory
        self.binary = binary
        self.sock = sock
        self.master: subprocess.Popen[bytes] | None = None
        self.master_fd = -1
        self.started_at = 0.0
        self.quick_failures = 0

    def start(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.sock)  # a killed master leaves its socket behind
        with open(self.dir / "haproxy.log", "ab") as log:
            self.master = subprocess.Popen(
                [
                    self.binary,
                    "-W",
                    "-S",
                    f"{self.sock},mode,600",
                    "-f",
                    str(self.dir / "haproxy.cfg"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        self.master_fd = os.pidfd_open(self.master.pid)
        self.started_at = time.monotonic()
        (self.dir / "haproxy.pid").write_text(str(self.master.pid))

    def reap(self) -> int | None:
        """Collect every exited child (orphaned old workers are ours too); the master's
        wait status if it was among them."""
        master_status = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if self.master is not None and pid == self.master.pid:
                master_status = status
                self.master.returncode = os.waitstatus_to_exitcode(status)
        return master_status

    def restart(self, status: int) -> None:
        os.close(self.master_fd)
        lived = time.monotonic() - self.started_at
        self.quick_failures = self.quick_failures + 1 if lived < 2.0 else 0
        delay = min(5.0, 0.1 * 2 ** (self.quick_failures - 1)) if self.quick_failures else 0.0
        time.sleep(delay)
        self.start()
        event(
            self.dir,
            f"the gateway's HAProxy {describe_exit(status)}; started again "
            f"(pid {self.master.pid if self.master else '?'}) after {lived:.1f} s up",
        )

    def stop(self) -> None:
        master = self.master
        if master is not None and master.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                master.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and self.reap() is None:
                time.sleep(0.02)
            if master.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    master.kill()
        for pid in child_pids(os.getpid()):  # workers a killed master left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reap()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rayweb.services.keeper")
    parser.add_argument("dir")
    parser.add_argument("--watch", type=int, required=True, help="stop when this pid exits")
    parser.add_argument("--socket", required=True, help="HAProxy's master socket")
    parser.add_argument("--binary", required=True, help="the HAProxy executable")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    try:
        watched = os.pidfd_open(args.watch)
    except ProcessLookupError:
        return
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    (directory / "keeper.pid").write_text(str(os.getpid()))
    keeper = Keeper(directory, args.binary, args.socket)
    keeper.start()
    try:
        while not stopping:
            ready, _, _ = select.select([watched, keeper.master_fd, wake_r], [], [], 5.0)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            if watched in ready:
                break
            status = keeper.reap()
            if status is not None and not stopping:
                keeper.restart(status)
    finally:
        keeper.stop()


if __name__ == "__main__":
    main()
