"""The replica's one middleware chain: the same order on both data paths, no Ray.

gateway trust -> limits -> proxy auth -> concurrency slot -> app (replica/chain.py).
"""

from __future__ import annotations

import asyncio

from rayweb.common import CLIENT_HEADER, KEY_HEADER
from rayweb.replica.chain import Chain
from rayweb.services.ratelimit import local_limiter
from rayweb.spec import Limits
from rayweb.tokens import hash_secret

KEY = "gateway-key"
GOOD = [(KEY_HEADER.encode(), KEY.encode()), (CLIENT_HEADER.encode(), b"198.51.100.9")]


def _request(headers=(), path="/ep/"):
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(headers),
        "client": ("127.0.0.1", 5),
    }


async def _call(app, scope):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"] if sent else None


def _blocking_app():
    """An app whose requests wait until ``release`` is set (they hold their slot)."""
    started, release = asyncio.Event(), asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app, started, release


def test_a_request_without_the_gateway_key_is_refused_even_when_every_slot_is_taken():
    async def main():
        app, started, release = _blocking_app()
        chain = Chain(app, max_inputs=1, gateway_key=KEY)
        direct = chain.direct_path("/ep")
        holder = asyncio.ensure_future(_call(direct, _request(GOOD)))
        await asyncio.wait_for(started.wait(), 5)  # the only slot is taken
        refused = await asyncio.wait_for(_call(direct, _request()), 1)
        waiting = asyncio.ensure_future(_call(direct, _request(GOOD)))
        await asyncio.sleep(0.05)
        queued = not waiting.done()  # a legit request does wait for the slot
        release.set()
        return refused, queued, await holder, await waiting

    refused, queued, first, second = asyncio.run(main())
    assert refused == 403
    assert queued
    assert (first, second) == (200, 200)


def test_auth_and_rate_limit_answer_without_a_slot():
    salt, digest = hash_secret("ws-right")

    async def fetch(version):
        return 1, {"wk-key": (salt, digest)}

    async def main():
        app, started, release = _blocking_app()
        limits = Limits(rate_limit=2, rate_limit_burst_s=1)  # two requests per second
        chain = Chain(
            app,
            max_inputs=1,
            limits=limits,
            acquire=local_limiter(2, 1),
            auth=(fetch, ("Modal-Key", "Modal-Secret")),
            gateway_key=KEY,
        )
        serve_path = chain.serve_path
        creds = [(b"modal-key", b"wk-key"), (b"modal-secret", b"ws-right")]
        holder = asyncio.ensure_future(_call(serve_path, _request(GOOD + creds)))
        await asyncio.wait_for(started.wait(), 5)
        unauthorized = await asyncio.wait_for(_call(serve_path, _request(GOOD)), 2)
        limited = await asyncio.wait_for(_call(serve_path, _request(GOOD + creds)), 2)
        release.set()
        return unauthorized, limited, await holder

    unauthorized, limited, first = asyncio.run(main())
    assert unauthorized == 401  # without the slot
    assert limited == 429  # before auth: the two tokens went to the first two requests
    assert first == 200


def test_both_paths_share_the_slots():
    async def main():
        app, started, release = _blocking_app()
        chain = Chain(app, max_inputs=1, gateway_key=KEY)
        on_serve = asyncio.ensure_future(_call(chain.serve_path, _request()))
        await asyncio.wait_for(started.wait(), 5)
        on_direct = asyncio.ensure_future(_call(chain.direct_path("/ep"), _request(GOOD)))
        await asyncio.sleep(0.05)
        blocked = not on_direct.done() and chain.slots.ongoing == 2
        release.set()
        return blocked, await on_serve, await on_direct

    blocked, a, b = asyncio.run(main())
    assert blocked
    assert (a, b) == (200, 200)


def test_the_request_timeout_counts_from_the_slot_not_from_the_queue():
    """Modal's timeout is execution time: waiting for a slot does not use it up."""

    async def slow(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        limits = Limits(request_timeout=0.5, rate_limit=None)
        app = Chain(slow, max_inputs=1, limits=limits).serve_path
        # The second waits ~0.3 s for the slot, then runs 0.3 s: 0.6 s in all, but 0.3 s of it.
        return await asyncio.gather(_call(app, _request()), _call(app, _request()))

    assert asyncio.run(main()) == [200, 200]

    async def too_slow():
        app = Chain(slow, limits=Limits(request_timeout=0.1, rate_limit=None)).serve_path
        return await _call(app, _request())

    assert asyncio.run(too_slow()) == 504


def test_a_wrong_secret_flood_is_rate_limited_first_and_costs_one_scrypt(monkeypatch):
    import rayweb.tokens as auth

    salt, digest = hash_secret("right")
    checks = []

    def counting_verify(secret, salt_, digest_):
        checks.append(secret)
        return real_verify(secret, salt_, digest_)

    real_verify = auth.verify_secret
    monkeypatch.setattr(auth, "verify_secret", counting_verify)

    async def fetch(version):
        return 1, {"k": (salt, digest)}

    async def main():
        async def ok_app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        chain = Chain(
            ok_app,
            limits=Limits(rate_limit=20, rate_limit_burst_s=1),
            acquire=local_limiter(20, 1),
            auth=(fetch, ("Modal-Key", "Modal-Secret")),
            gateway_key=KEY,
        )
        wrong = [(b"modal-key", b"k"), (b"modal-secret", b"wrong")]
        return [await _call(chain.serve_path, _request(GOOD + wrong)) for _ in range(100)]

    statuses = asyncio.run(main())
    assert set(statuses[:20]) == {401}  # the burst: wrong credentials
    assert statuses.count(429) >= 70  # then the flood is throttled before auth
    assert checks == ["wrong"]  # one scrypt: the failure is remembered
