"""The process that runs a ``@web_server`` function (or an ``@app.server``'s ``@enter``),
started by the sidecar actor.

It leads its own session, so the server processes the user's function starts share its
process group and die with it. It runs ``@enter`` and the function (which starts the server
and normally returns; a Server has no function: its ``@enter`` starts it), then stays alive,
watching its parent: when the sidecar actor goes away for any reason, it kills the whole
group, so no server outlives its replica. When the sidecar stops it (SIGTERM), it runs the
class's ``@exit`` methods first, as Modal does at container shutdown.

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
    server = payload.web.kind == "server"
    instances: list[object] = []

    def run_user_code() -> None:
        from ..common import user_failure
        from .loader import load_target

        try:
            target = load_target(payload.code)
            if payload.is_cls:
                instance = target._instantiate()
                instances.append(instance)
                for name in payload.enter_methods:
                    getattr(instance, name)()
                if server:
                    return  # @enter started the server
                fn = getattr(instance, payload.code.attr or "")
            else:
                fn = target.raw_f
            fn()
        except BaseException as exc:
            what = "@app.server @enter" if server else "@rayweb.web_server function"
            print(str(user_failure(what, exc)), file=sys.stderr, flush=True)
            failed.set()

    def stop(_signum: int, _frame: object) -> None:
        for instance in instances:
            for name in payload.exit_methods:
                try:
                    getattr(instance, name)()
                except Exception:
                    traceback.print_exc()
        # The rest of the group got the same SIGTERM; the sidecar waits for it, then kills it.
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)

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
