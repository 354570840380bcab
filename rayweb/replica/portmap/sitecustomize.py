"""Loaded by every Python process a rayweb web_server starts (it is first on PYTHONPATH).

Modal gives each container its own network, so every replica of ``@web_server(8000)`` binds
port 8000. Several replicas on one Ray node would collide, so rayweb gives each replica its
own port and maps the declared one onto it: ``bind`` and ``connect`` to the declared port on
a local address use the assigned port instead (``RAYWEB_PORT_MAP="8000=41234"``). Servers
written in other languages are not mapped; rayweb then uses the declared port itself.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def _install() -> None:
    spec = os.environ.get("RAYWEB_PORT_MAP", "")
    if not spec or "=" not in spec:
        return
    declared, assigned = (int(x) for x in spec.split("=", 1))
    local = {"", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"}

    def remap(address: Any) -> Any:
        if (
            isinstance(address, tuple)
            and len(address) >= 2
            and address[1] == declared
            and address[0] in local
        ):
            return (address[0], assigned, *address[2:])
        return address

    original_bind = socket.socket.bind
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def bind(self: socket.socket, address: Any) -> None:
        original_bind(self, remap(address))

    def connect(self: socket.socket, address: Any) -> None:
        original_connect(self, remap(address))

    def connect_ex(self: socket.socket, address: Any) -> int:
        return original_connect_ex(self, remap(address))

    socket.socket.bind = bind  # type: ignore[method-assign, assignment]
    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]


def _chain() -> None:
    """Run the environment's own sitecustomize, which this file shadows."""
    import importlib.machinery
    import importlib.util
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    paths = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", paths)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_install()
_chain()
