"""The process that runs a ``@web_server`` function, started by the sidecar actor.

It leads its own session, so the server processes the user's function starts share its
process group and die with it. It runs ``@enter`` and the function (which starts the server
and normally returns), then stays alive, watching its parent: when the sidecar actor goes
away for any reason, it kills the whole group, so no server outlives its replica.

Usage: ``python -m rayweb.replica.webserver_runner PAYLOAD_FILE``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback


def main(payload_file: str) -> None:
    from ray import cloudpickle

    with open(payload_file, "rb") as f:
        payload = cloudpickle.load(f)
    os.unlink(payload_file)
    parent = os.getppid()
    failed = threading.Event()

    def run_user_code() -> None:
        from ..common import user_failure
        from .loader import load_target

        try:
            target = load_target(payload.code)
            if payload.is_cls:
                instance = target._instantiate()
                for name in payload.enter_methods:
                    getattr(instance, name)()
                fn = getattr(instance, payload.code.attr or "")
            else:
                fn = target.raw_f
            fn()
        except BaseException as exc:
            print(
                str(user_failure("@rayweb.web_server function", exc)), file=sys.stderr, flush=True
            )
            failed.set()

    # The function usually starts a subprocess and returns; one that serves in-process and
    # blocks is fine too, so it runs in a thread.
    threading.Thread(target=run_user_code, name="web_server", daemon=True).start()
    while True:
        if failed.is_set():
            _kill_group(exit_code=3)
        if os.getppid() != parent:  # the sidecar died: take the servers with us
            _kill_group(exit_code=0)
        time.sleep(0.2)


def _kill_group(exit_code: int) -> None:
    sys.stderr.flush()
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(exit_code)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception:
        traceback.print_exc()
        _kill_group(exit_code=2)
