"""The ASGI shapes, named once (as ``starlette/types.py`` does).

Loose on purpose: user apps (FastAPI, Starlette, a2wsgi, raw callables) type their own
``scope``/``receive``/``send`` in slightly different ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]  # () -> awaitable Message
Send = Callable[[Message], Any]  # (Message) -> awaitable None
ASGIApp = Callable[..., Any]  # (scope, receive, send) -> awaitable None
