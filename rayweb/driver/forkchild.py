"""The forked child of the driver kept imported (``forkserver.py``): it becomes the command
that was handed over (its terminal, environment, folder), runs it and exits with its code;
and the messages between the command, the server and the child (a length, then JSON)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

CHILD_ENV = "RAYWEB_FORKED_DRIVER"  # set in a forked child: it runs the command, never hands off
MAX_HEADER = 4 * 1024 * 1024  # an environment and a sys.path fit well under this


def read_message(conn: socket.socket) -> dict[str, Any] | None:
    size = read_exact(conn, 4)
    if size is None:
        return None
    (length,) = struct.unpack("!I", size)
    if length > MAX_HEADER:
        raise ValueError("message too large")
    data = read_exact(conn, length)
    return None if data is None else json.loads(data)


def read_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_message(conn: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    with contextlib.suppress(OSError):
        conn.sendall(struct.pack("!I", len(data)) + data)


def become_command(
    header: dict[str, Any],
    fds: list[int],
    command: socket.socket,
    inherited: list[Any],
    run: Callable[[], object],
) -> None:
    """In the fork: become the command (its terminal, environment, folder), run, exit. It
    keeps the command's connection and tells it its exit code itself: if the server is
    gone, the child's copy keeps the command waiting (and forwarding its signals) while it
    runs. When the command dies, the server stops the child (SIGTERM)."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for item in inherited:
            with contextlib.suppress(OSError):
                item.close() if isinstance(item, socket.socket) else os.close(item)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(
                signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            )
        # Not the terminal's foreground process group: a read or a mode change must not stop it.
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        # The server held the terminal's signals over the fork: the handlers are ours now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        os.environ.clear()
        os.environ.update(header["env"])
        os.environ[CHILD_ENV] = "1"
        os.chdir(str(header["cwd"]))
        os.umask(int(header["umask"]))
        sys.path[:] = list(header["path"])
        sys.argv[:] = [str(header["argv0"]), *header["argv"]]
        _reopen_stdio()
        try:
            run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
    except KeyboardInterrupt:  # Ctrl-C before the command began
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        # As the command's own process would end (Ray's shutdown, among others), but
        # without unwinding into the server's loop, whose cleanup is not the child's.
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        send_message(command, {"exit": code % 256})
        os._exit(code)


def _reopen_stdio() -> None:
    """sys.std* were made for the server's own files (a log): make them again for the
    terminal, line-buffered where it is one, as Python does at start."""
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        old = getattr(sys, name)
        tty = os.isatty(fd)
        stream: Any = open(  # noqa: SIM115 - replaces sys.std*, closed at exit
            fd,
            mode,
            buffering=-1,
            encoding=getattr(old, "encoding", None) or "utf-8",
            errors=getattr(old, "errors", None) or "strict",
            closefd=False,
        )
        if mode == "w":
            stream.reconfigure(line_buffering=tty or name == "stderr")
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
