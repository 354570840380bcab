"""What `rayweb deploy` leaves out of the code it ships (no cluster: the same gitignore
patterns Ray applies)."""

from __future__ import annotations

from pathlib import Path

from rayweb.driver.shipping import describe, ship_plan


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def test_secrets_keys_virtualenvs_and_ignored_files_are_not_shipped(tmp_path):
    _tree(
        tmp_path,
        [
            "app.py",
            "id_utils.py",  # code, though it starts like an SSH key's name
            "id_service/__init__.py",
            "helpers/model.py",
            ".env",
            ".env.production",
            "config/.env.local",
            "certs/server.pem",
            "certs/server.key",
            "deploy/id_rsa",
            "deploy/id_ed25519.pub",
            ".git/config",
            ".github/workflows/ci.yml",
            ".venv/lib/site.py",
            "pyenv311/pyvenv.cfg",  # a virtualenv under another name
            "pyenv311/lib/x.py",
            "data/big.bin",
            "notes/todo.md",
        ],
    )
    (tmp_path / ".raywebignore").write_text("# local only\ndata/\n*.md\n")
    plan = ship_plan(tmp_path)
    assert plan.excluded == [
        ".env",
        ".env.production",
        ".git/",
        ".github/",
        ".venv/",
        "certs/server.key",
        "certs/server.pem",
        "config/.env.local",
        "data/",
        "deploy/id_ed25519.pub",
        "deploy/id_rsa",
        "notes/todo.md",
        "pyenv311/",
    ]
    assert "/pyenv311/" in plan.excludes  # handed to Ray too
    assert "data/" in plan.excludes and "*.md" in plan.excludes
    assert describe(plan.excluded).startswith("Not shipped (")
    assert ".env, .env.production" in describe(plan.excluded)


def test_a_clean_tree_excludes_nothing(tmp_path):
    _tree(tmp_path, ["app.py", "pkg/__init__.py"])
    assert ship_plan(tmp_path).excluded == []
