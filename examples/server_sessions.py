"""``@rayweb.sessioned()``: sticky sessions on an ``@app.server``, as in Modal's streaming
speech-to-text and multiplayer-room examples. Every request to ``Room`` must carry a session's
token and reaches the container the session was started on, which sees the session's id in
the ``x-modal-server-session-id`` header (here each container keeps a counter per session).

    rayweb serve examples/server_sessions.py
    # a browser: open the lobby's URL; it starts a session and redirects to the room with
    # ?modal_session_token=..., which the gateway turns into a cookie
    # a script, connected to the same Ray cluster:
    #   room = rayweb.Server.from_name("server-sessions", "Room")
    #   session = room.sessions.start(idle_timeout=60)
    curl -H "Modal-Authorization: Bearer <session.token>" \
        http://127.0.0.1:8000/server-sessions-room-dev/

A session ends when ``Room.sessions.terminate(token)`` is called, after ``idle_timeout``
seconds without a request in flight, or when its container goes; a container holding a
session is kept while scaling down.
"""

import subprocess
import sys

import rayweb

app = rayweb.App("server-sessions")

ROOM = """
import collections, http.server, json, os, sys

seen = collections.Counter()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        session = self.headers.get("x-modal-server-session-id")
        seen[session] += 1
        body = json.dumps(
            {"container": os.getpid(), "session": session, "count": seen[session],
             "path": self.path}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


@app.server(port=8000, min_containers=2, startup_timeout=30)
@rayweb.sessioned()
class Room:
    @rayweb.enter()
    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ROOM, "8000"])

    @rayweb.exit()
    def stop(self):
        self.proc.terminate()


@app.function()
@rayweb.concurrent(max_inputs=100)
@rayweb.asgi_app()
def lobby():
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    web_app = FastAPI()

    @web_app.get("/")
    async def launch():
        session = await Room.sessions.start.aio(idle_timeout=60)
        url = await Room.get_url.aio()
        return RedirectResponse(f"{url}/?modal_session_token={session.token}", status_code=303)

    return web_app
