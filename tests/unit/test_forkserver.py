"""The driver kept imported beside a local cluster (``rayweb/driver/forkserver.py``), without
Ray: a real server process forks a child for each command handed over, in the command's
terminal (its stdout here is a pipe), environment and folder; exit codes come back, Ctrl-C
is forwarded, a dead command's child is stopped, and a command whose Ray settings differ
runs on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayweb.driver import forkserver

TARGET = textwrap.dedent(
    """
    import os, sys, time

    def run():
        mode = sys.argv[1]
        if mode == "show":
            print("cwd", os.getcwd())
            print("env", os.environ.get("FOO"), os.environ.get("RAYWEB_FORKED_DRIVER"))
            print("argv", sys.argv[1:])
            print("ppid is the server", str(os.getppid()) == os.environ["SERVER_PID"])
            sys.exit(3)
        if mode == "stdin":
            print("stdin is /dev/null", os.path.samestat(os.fstat(0), os.stat(os.devnull)))
            sys.exit(3)
        if mode == "wait":
            with open(sys.argv[2], "w") as f:
                f.write(str(os.getpid()))
            try:  # a Ctrl-C right after "ready" is caught too
                print("ready", flush=True)
                # Short sleeps, as a serve loop waits: CPython runs a handler for a signal
                # that lands just before a blocking call only once that call returns.
                for _ in range(1200):
                    time.sleep(0.05)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(130)
    """
)

SERVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from fork_target import run
    from rayweb.driver.forkserver import serve_forever
    serve_forever(sys.argv[1], run)
    """
)

CLIENT = textwrap.dedent(
    """
    import sys
    from rayweb.driver.forkserver import driver_env, hand_off
    driver_env()
    code = hand_off(sys.argv[1], sys.argv[2:])
    sys.exit(97 if code is None else code)
    """
)
RAN_HERE = 97  # the client's code when the server refused (the command would run itself)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    (tmp_path / "fork_target.py").write_text(TARGET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cluster_dir), str(tmp_path)], env=env
    )
    deadline = time.monotonic() + 30
    while forkserver.running_pid(str(cluster_dir)) != proc.pid:
        assert proc.poll() is None, "the server exited"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield cluster_dir, proc
    proc.kill()
    proc.wait(10)


def _client(cluster_dir: Path, *argv: str, **kwargs: object) -> subprocess.Popen[str]:
    env = kwargs.pop("env", None) or {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_")
    }
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(cluster_dir), *argv],
        stdout=subprocess.PIPE,
        text=True,
        env=env,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_command_runs_in_a_fork_with_its_terminal_environment_and_folder(server, tmp_path):
    cluster_dir, proc = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(FOO="bar", SERVER_PID=str(proc.pid))
    client = _client(cluster_dir, "show", "x", env=env, cwd=str(tmp_path))
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 3, out
    assert f"cwd {tmp_path}" in out
    assert "env bar 1" in out
    assert "argv ['show', 'x']" in out
    assert "ppid is the server True" in out


def test_a_command_without_stdin_still_hands_over(server, tmp_path):
    """A CI runner starts commands with no standard input at all (fd 0 closed): the child
    gets /dev/null there, as the command's own process would read nothing."""
    cluster_dir, proc = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(FOO="nostdin", SERVER_PID=str(proc.pid))
    client = _client(cluster_dir, "stdin", env=env, preexec_fn=lambda: os.close(0))
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 3, out
    assert "stdin is /dev/null True" in out


def test_ctrl_c_reaches_the_child_and_its_exit_code_comes_back(server, tmp_path):
    cluster_dir, _ = server
    client = _client(cluster_dir, "wait", str(tmp_path / "pid"))
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "ready"
    client.send_signal(signal.SIGINT)
    out, _ = client.communicate(timeout=30)
    assert "interrupted" in out
    assert client.returncode == 130


def test_a_dead_command_takes_its_child_with_it(server, tmp_path):
    cluster_dir, _ = server
    client = _client(cluster_dir, "wait", str(tmp_path / "pid"))
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "ready"
    child = int((tmp_path / "pid").read_text())
    client.kill()
    client.wait(10)
    deadline = time.monotonic() + 15
    while _alive(child):
        assert time.monotonic() < deadline, "the child outlived the command that started it"
        time.sleep(0.1)


def test_the_child_outlives_a_killed_server_and_its_command_still_gets_the_exit_code(
    server, tmp_path
):
    """The server is gone (OOM-killed, say): the command keeps waiting and forwarding its
    signals to the child, which reports its own exit code."""
    cluster_dir, proc = server
    client = _client(cluster_dir, "wait", str(tmp_path / "pid"))
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(10)
    time.sleep(0.5)
    assert client.poll() is None, "the command ended while its child still ran"
    client.send_signal(signal.SIGINT)
    out, _ = client.communicate(timeout=30)
    assert "interrupted" in out
    assert client.returncode == 130


def test_a_command_with_other_ray_settings_runs_on_its_own(server):
    cluster_dir, _ = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_SOMETHING"] = "1"  # Ray reads its variables when imported: the server's differ
    client = _client(cluster_dir, "show", "x", env=env)
    out, _ = client.communicate(timeout=30)
    assert client.returncode == RAN_HERE, out
    assert out == ""


def test_off_hands_nothing_over(server):
    cluster_dir, _ = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env[forkserver.ENV_OFF] = "0"
    client = _client(cluster_dir, "show", "x", env=env)
    client.communicate(timeout=30)
    assert client.returncode == RAN_HERE


def test_the_server_exits_when_its_socket_is_removed(server):
    cluster_dir, proc = server
    forkserver.socket_path(str(cluster_dir)).unlink()
    assert proc.wait(timeout=15) == 0
    assert forkserver.running_pid(str(cluster_dir)) is None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


STALE_CLIENT = textwrap.dedent(
    """
    import os, socket, sys
    from rayweb.driver import forkserver
    forkserver.driver_env()
    found = forkserver.fingerprint()
    found["rayweb"] = [found["rayweb"][0], found["rayweb"][1] + 1]  # as after an edit
    header = {"argv": ["show"], "argv0": "x", "env": dict(os.environ), "cwd": os.getcwd(),
              "path": sys.path, "umask": 0o22, "fingerprint": found}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(forkserver.socket_path(sys.argv[1])))
    forkserver.send_command(conn, header)
    print(forkserver.read_message(conn)["why"])
    """
)


def test_a_server_older_than_rayweb_files_refuses_and_imports_them_again(server, tmp_path):
    """An edited (or upgraded) rayweb: the server refuses, then execs itself in place (same
    pid, a new socket) to import the new files; the next command runs in it."""
    cluster_dir, proc = server
    sock = forkserver.socket_path(str(cluster_dir))
    before = _made(sock)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    said = subprocess.run(
        [sys.executable, "-c", STALE_CLIENT, str(cluster_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert said.stdout.strip() == forkserver.STALE, said.stderr
    deadline = time.monotonic() + 30
    while not sock.exists() or _made(sock) == before:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    while forkserver.running_pid(str(cluster_dir)) != proc.pid:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    env.update(FOO="again", SERVER_PID=str(proc.pid))
    client = _client(cluster_dir, "show", env=env)
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 3 and "env again 1" in out, out


def _made(path: Path) -> tuple[int, int]:
    """Which file it is (an inode number can be reused at once on tmpfs)."""
    found = path.stat()
    return found.st_ino, found.st_ctime_ns
