"""The gateway's holder: where HAProxy sends a request for an endpoint with no replica.

Every backend's backup server (its only server while the endpoint has none registered) is
this small relay in the gateway actor's process, not Serve's proxy, which reads a whole
request body into memory before a replica exists. The holder reads only the request head,
runs the gateway's admission for the endpoint (``admit``: proxy auth and the rate limit, so
a 401 or 429 does not wake a scaled-to-zero endpoint), wakes the endpoint (``wake``: a call
through its Serve handle, which Serve counts like a queued request, so it scales up from
zero as it does for its own proxy) and gets back the address of a replica's own port, then
relays bytes both ways between HAProxy and that port with flow control: while the request
waits, its body stays in the client's socket buffers, and once relayed at most one chunk
per direction is in memory. An endpoint that cannot be woken that way (not a rayweb
endpoint, or its replica has no port of its own) is relayed to Serve's proxy, as before.

No Ray here: ``wake`` and ``admit`` are passed in (unit-tested with real sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

from ..common import ADMITTED_HEADER

logger = logging.getLogger("rayweb.holder")

HEAD_LIMIT = 64 * 1024  # HAProxy's own buffer (16 KiB by default) bounds a head before this
CHUNK = 64 * 1024
ADMITTED = ADMITTED_HEADER.encode()

Address = tuple[str, int]
Wake = Callable[[str], Awaitable[Address | None]]
# (app, head) -> None to let the request on, or a complete HTTP response to answer with.
Admit = Callable[[str, "Head"], Awaitable[bytes | None]]


class Head:
    """A request head as HAProxy sent it: the request line and the raw header lines."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        self.method = parts[0].decode("latin-1")
        target = parts[1].decode("latin-1") if len(parts) > 1 else "/"
        self.path = unquote(urlsplit(target).path or "/")
        self.headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.append((name.strip().lower(), value.strip()))

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    def admitted(self) -> bytes:
        """This head marked as admitted (the replica skips its own auth and rate limit)."""
        return self.raw[:-2] + ADMITTED + b": 1\r\n\r\n"


def match(prefixes: dict[str, str], path: str) -> str | None:
    """The app whose route prefix matches ``path`` (decoded), longest first, as HAProxy does."""
    best: tuple[int, str] | None = None
    for app, prefix in prefixes.items():
        matches = prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")
        if matches and (best is None or len(prefix) > best[0]):
            best = (len(prefix), app)
    return best[1] if best else None


def response(status: int, reason: str, body: bytes, headers: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{headers}connection: close\r\n\r\n"
    ).encode() + body


class Holder:
    """The relay on ``host`` (a free port), for the routes ``prefixes()`` returns."""

    def __init__(
        self,
        prefixes: Callable[[], dict[str, str]],
        wake: Wake,
        fallback: Address,
        admit: Admit | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.prefixes, self.wake, self.fallback, self.admit = prefixes, wake, fallback, admit
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(1024)  # connections wait in the backlog until start()
        self.sock.setblocking(False)
        self.address: Address = (host, self.sock.getsockname()[1])
        self.held = 0  # requests waiting for a replica now
        self.relayed = 0  # connections relayed so far
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self.sock, limit=HEAD_LIMIT)

    def start_in_thread(self) -> None:
        """Serve on an event loop of its own in a daemon thread: from the moment its owner
        exists (a restarted gateway actor gets no call that would start it on its loop)."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, name="rayweb-holder", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("rayweb: the gateway's holder did not start")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except Exception:
            logger.warning("rayweb: the gateway's holder failed on a request", exc_info=True)
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = Head(await reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        app = match(self.prefixes(), head.path)
        target: Address | None = None
        raw = head.raw
        if app is not None:
            if self.admit is not None:
                answer = await self.admit(app, head)
                if answer is not None:
                    writer.write(answer)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    return
                raw = head.admitted()
            self.held += 1
            try:
                target = await self.wake(app)
            except Exception:
                logger.info("rayweb: waking %s through its handle failed", app, exc_info=True)
            finally:
                self.held -= 1
        if target is None:
            target, raw = self.fallback, head.raw
        try:
            up_reader, up_writer = await asyncio.open_connection(*target, limit=CHUNK)
        except OSError:
            writer.write(response(503, "Service Unavailable", b'{"detail": "no replica"}'))
            return
        self.relayed += 1
        try:
            up_writer.write(raw)
            await _both_ways(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()


async def _both_ways(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Relay until either side closes, then close both (HAProxy never half-closes a server
    connection, so an end on one side is the end of the exchange)."""
    tasks = [
        asyncio.ensure_future(_pipe(reader, up_writer)),
        asyncio.ensure_future(_pipe(up_reader, writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
