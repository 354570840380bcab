"""``@app.server``: a stand-alone HTTP server started by ``@enter``, in two containers, with
sticky sessions: requests that carry the same ``Modal-Session-Id`` header reach the same
container (each container counts the requests of each session it sees).

    rayweb serve examples/server_sticky.py
    curl -H 'Modal-Session-Id: alice' http://127.0.0.1:8000/server-sticky-counter-dev/
    curl -H 'Modal-Session-Id: alice' http://127.0.0.1:8000/server-sticky-counter-dev/

The server is any program that listens on ``port``; here a few lines of Python's standard
library, as a vLLM or SGLang server would be started with ``subprocess.Popen``. ``Guarded``
keeps Modal's default for Servers, proxy auth (``rayweb token create``), and takes at most
one request per container at once (``max_concurrency=1``: a second one gets 429).
"""

import subprocess
import sys

import rayweb

app = rayweb.App("server-sticky")

SERVER = """
import collections, http.server, json, os, sys, time

seen = collections.Counter()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(2)
        session = self.headers.get("Modal-Session-Id")
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

port = int(sys.argv[1])
print(f"counting sessions on port {port}", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
"""


@app.server(port=8000, min_containers=2, unauthenticated=True, startup_timeout=30)
class Counter:
    @rayweb.enter()
    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, "8000"])

    @rayweb.exit()
    def stop(self):
        self.proc.terminate()


@app.server(port=8001, max_concurrency=1, scaledown_window=60)
class Guarded:
    @rayweb.enter()
    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, "8001"])
