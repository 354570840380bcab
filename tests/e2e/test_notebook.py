"""The quickstart notebook, executed top to bottom in a real kernel (its own embedded Ray):
web endpoints over HTTP and function calls from the notebook's cells."""

from __future__ import annotations

import json
import socket

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT


def test_quickstart_notebook_runs(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAYWEB_NOTEBOOK_PORT", str(port))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = "".join(
        o.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "{'message': 'hello notebook'}" in outputs
    assert "hi ray!" in outputs
    assert "server: 200" in outputs  # an @app.server defined in a cell
    assert "49 [0, 1, 4, 9, 16]" in outputs  # .remote() and .map() on the served app's functions
    assert "144 [3, 2, 1]" in outputs  # .spawn().get() and a generator's .remote_gen()
    serving = next(c for c in nb.cells if "rayweb.serve(app" in "".join(c.source))
    urls = serving.outputs[-1]["data"]["text/plain"]  # whichever form get_web_url() gives
    path_form = f"http://127.0.0.1:{port}/notebook-demo-hello"
    origin = f"http://notebook-demo-hello.localhost:{port}"
    assert path_form in urls or origin in urls
    table = json.dumps(serving.outputs[:-1])  # the printed URL table shows both forms
    assert path_form in table and origin in table
