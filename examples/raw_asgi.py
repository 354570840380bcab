"""A bare ASGI callable with no lifespan support: rayweb completes the lifespan for it.

rayweb serve examples/raw_asgi.py
"""

import rayweb

app = rayweb.App("raw-asgi")


async def hello_app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError(f"this app only speaks http, not {scope['type']}")
    body = f"raw asgi at {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@app.function()
@rayweb.asgi_app()
def raw():
    return hello_app
