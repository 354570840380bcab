"""rayweb's errors, named after Modal's so that ``except modal.exception.X`` keeps working.

Hierarchy::

    Error
    ├── InvalidError          misuse caught at decoration or deploy time
    ├── DeprecationError      a removed Modal name or argument
    ├── NotFoundError         an app, object or secret that does not exist
    ├── AlreadyExistsError    a named object that exists already (``objects.create``)
    ├── RequestSizeError      a value over the size limit (``Dict.put``, ``Queue.put``)
    ├── ExecutionError        something failed while running on the cluster
    │   ├── DeploymentError   an endpoint could not be brought up (user code raised, ...)
    │   └── DeployTimeoutError a deploy waited too long (for example on missing GPUs)
    ├── TimeoutError          (also the built-in TimeoutError) a result was not ready in time
    │   ├── FunctionTimeoutError  a call ran longer than its function's ``timeout=``
    │   ├── VolumeUploadTimeoutError  a ``batch_upload`` did not finish in time
    │   └── OutputExpiredError    a spawned call's result is no longer kept
    └── InputCancellation     the call was cancelled (``FunctionCall.cancel()``)
"""

from __future__ import annotations

import builtins


class Error(Exception):
    """Base class for every rayweb error."""


class InvalidError(Error):
    """A decorator, argument or object is used in a way rayweb (and Modal) rejects."""


class DeprecationError(Error):
    """A name or argument that Modal removed; the message says what replaced it."""


class NotFoundError(Error):
    """An app, deployment or named object does not exist."""


class AlreadyExistsError(Error):
    """A named object (Dict, Queue, Volume) that already exists."""


class RequestSizeError(Error):
    """A value or request over the size limit (Modal: rejected by the server as too large)."""


class ExecutionError(Error):
    """Something failed while the app was running or being deployed."""


class DeploymentError(ExecutionError):
    """An endpoint failed to start; ``user_traceback`` holds the user's own traceback."""

    def __init__(self, message: str, user_traceback: str | None = None) -> None:
        super().__init__(message)
        self.user_traceback = user_traceback

    def __str__(self) -> str:
        base = super().__str__()
        if self.user_traceback:
            return f"{base}\n\n{self.user_traceback.rstrip()}"
        return base


class DeployTimeoutError(ExecutionError, TimeoutError):
    """A deploy did not finish in time; the message names what was still pending."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 (Modal's name)
    """A result was not ready in time (``FunctionCall.get(timeout=...)``)."""


class FunctionTimeoutError(TimeoutError):
    """A call ran longer than its function's ``timeout=``."""


class VolumeUploadTimeoutError(TimeoutError):
    """A volume upload did not finish in time."""


class OutputExpiredError(TimeoutError):
    """A spawned call's result expired (or was evicted from the bounded result store)."""


class InputCancellation(Error):
    """The call was cancelled before it finished."""


__all__ = [
    "AlreadyExistsError",
    "RequestSizeError",
    "VolumeUploadTimeoutError",
    "DeployTimeoutError",
    "DeploymentError",
    "DeprecationError",
    "Error",
    "ExecutionError",
    "FunctionTimeoutError",
    "InputCancellation",
    "OutputExpiredError",
    "TimeoutError",
    "InvalidError",
    "NotFoundError",
]
