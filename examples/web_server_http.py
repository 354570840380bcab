"""@rayweb.web_server: put any HTTP server on the web. Here: `python -m http.server`.

Each replica runs the server in a sidecar actor that holds the function's resources; the
replica proxies to it.

    rayweb serve examples/web_server_http.py
    curl http://127.0.0.1:8000/static-site-files-dev/hello.txt
"""

import subprocess
import sys
from pathlib import Path

import rayweb

SITE = Path(__file__).resolve().parent / "static"
app = rayweb.App("static-site")


@app.function(cpu=0.2)
@rayweb.web_server(8000, startup_timeout=20)
def files():
    subprocess.Popen(
        [sys.executable, "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", str(SITE)]
    )
