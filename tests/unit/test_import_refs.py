"""App references from the command line: file.py, file.py::name, -m module."""

from __future__ import annotations

import textwrap

import pytest

from rayweb.driver.import_refs import load_app, parse_app_ref
from rayweb.exception import InvalidError, NotFoundError
from tests.conftest import EXAMPLES


def test_parse():
    ref = parse_app_ref("x/app.py::other")
    assert (ref.target, ref.variable, ref.is_module) == ("x/app.py", "other", False)
    assert parse_app_ref("pkg.mod").is_module
    with pytest.raises(InvalidError, match="Empty app name"):
        parse_app_ref("a.py::")


def test_load_example_by_file():
    app = load_app(str(EXAMPLES / "fastapi_endpoint.py"))
    assert app.name == "api-service"
    assert {f.tag for f in app.web_endpoints} >= {"search", "echo", "order"}


def test_errors_say_what_was_found_and_what_to_type(tmp_path):
    two = tmp_path / "two_apps.py"
    two.write_text(
        textwrap.dedent("""
        import rayweb
        first = rayweb.App("a")
        second = rayweb.App("b")
    """)
    )
    with pytest.raises(NotFoundError) as info:
        load_app(str(two))
    assert "Found: first, second" in str(info.value)
    assert f"rayweb serve {two}::first" in str(info.value)
    assert load_app(f"{two}::second").name == "b"

    with pytest.raises(NotFoundError, match="File not found"):
        load_app(str(tmp_path / "missing.py"))
    with pytest.raises(NotFoundError, match="No module named 'no_such_module_xyz'"):
        load_app("no_such_module_xyz", is_module=True)


def test_single_app_under_another_name_is_found(tmp_path):
    one = tmp_path / "one_app.py"
    one.write_text("import rayweb\nmy_app = rayweb.App('solo')\n")
    assert load_app(str(one)).name == "solo"


def test_modal_scripts_import_rayweb(tmp_path):
    script = tmp_path / "modal_script.py"
    script.write_text(
        textwrap.dedent("""
        import modal
        from modal.exception import InvalidError
        app = modal.App("from-modal")

        @app.function()
        @modal.fastapi_endpoint()
        def hello():
            return "hi"
    """)
    )
    app = load_app(str(script))
    assert type(app).__module__ == "rayweb.app"
    assert app.registered_functions["hello"].label == "from-modal-hello"
