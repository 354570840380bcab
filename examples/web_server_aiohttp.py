"""@rayweb.web_server with an aiohttp app: WebSockets, server-sent events and streaming.

The server runs as its own process (like vLLM or Streamlit would), started by the function.

    rayweb serve examples/web_server_aiohttp.py
    curl -N http://127.0.0.1:8000/aiohttp-demo-server-dev/sse
"""

import asyncio
import subprocess
import sys

import rayweb

PORT = 8080
app = rayweb.App("aiohttp-demo")


@app.function()
@rayweb.concurrent(max_inputs=100)
@rayweb.web_server(PORT, startup_timeout=30)
def server():
    subprocess.Popen([sys.executable, __file__, "--serve", str(PORT)])


def build():
    from aiohttp import WSMsgType, web

    routes = web.RouteTableDef()

    @routes.get("/")
    async def index(request):
        return web.Response(text="aiohttp behind rayweb")

    @routes.get("/sse")
    async def sse(request):
        n = int(request.query.get("n", "5"))
        delay = float(request.query.get("delay", "0.2"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(n):
            await response.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(delay)
        await response.write_eof()
        return response

    @routes.get("/ws")
    async def ws(request):
        sock = web.WebSocketResponse(protocols=("echo.v1", "chat.v2"), max_msg_size=0)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT and msg.data.startswith("close:"):
                await sock.close(code=int(msg.data.split(":")[1]), message=b"bye")
            elif msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    @routes.post("/upload")
    async def upload(request):
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        return web.json_response({"bytes": total})

    @routes.get("/download")
    async def download(request):
        size = int(request.query["size"])
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        block = b"x" * 65536
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await response.write(piece)
            sent += len(piece)
        return response

    @routes.route("*", "/echo/{tail:.*}")
    async def echo(request):
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": (await request.read()).decode(),
            }
        )

    @routes.get("/pid")
    async def pid(request):
        import os

        return web.json_response({"pid": os.getpid()})

    @routes.get("/redirect")
    async def redirect(request):
        raise web.HTTPFound("/echo/redirected")

    api = web.Application()
    api.add_routes(routes)
    return api


if __name__ == "__main__" and "--serve" in sys.argv:
    from aiohttp import web

    web.run_app(build(), host="0.0.0.0", port=int(sys.argv[-1]), print=None)
