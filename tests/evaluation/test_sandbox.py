"""The sandbox contains what model-written code may do: endless loops, fork bombs, huge allocations, network
access, writing outside its folder -- each is scored as a failure; correct code passes. (~15 s in all.)"""

from __future__ import annotations

import doctest
import os
import socket
import time
from pathlib import Path

import pytest

import sdft.evaluation.sandbox as sandbox
from sdft.evaluation.sandbox import capabilities, run_python

SOLUTION = "def add(a, b):\n    return a + b\n\ndef check(f):\n    assert f(2, 3) == 5\n\ncheck(add)\n"


def test_doctests():
    result = doctest.testmod(sandbox)
    assert result.attempted > 0 and result.failed == 0


def test_correct_solution_passes_and_wrong_fails():
    ok = run_python(SOLUTION)
    assert ok.passed and ok.status == "passed" and ok.returncode == 0
    bad = run_python(SOLUTION.replace("a + b", "a - b"))
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr
    syntax = run_python("def f(:\n    pass")
    assert not syntax.passed and syntax.status == "error" and "SyntaxError" in syntax.stderr


def test_endless_loop_times_out():
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout=1.5)
    assert (r.passed, r.status) == (False, "timeout")
    assert time.monotonic() - start < 5


def test_fork_bomb_attempts_are_blocked():
    bomb = "import os\nwhile True:\n    os.fork()\n"
    r = run_python(bomb, timeout=3)
    assert not r.passed and r.status == "error" and "PermissionError" in r.stderr
    for code in ("import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])",
                 "import os\nos.system('echo hi')",
                 "import multiprocessing\nmultiprocessing.Process(target=print).start()",
                 "import ctypes\nctypes.CDLL(None).fork()",
                 "import pty\npty.fork()"):
        r = run_python(code, timeout=3)
        assert not r.passed and r.status == "error", code


def _processes_in(folder: str) -> list[int]:
    """Processes whose working directory is ``folder`` (the sandbox's own, removed after the run)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and os.readlink(p / "cwd").startswith(folder):
                found.append(int(p.name))
        except OSError:
            pass
    return found


def test_os_level_process_limit():
    """With the guards off, forking (finitely, so that this test is safe anywhere) stops at the limit."""
    caps = capabilities()
    if not (caps["pids_cgroup"] or caps["nproc_rlimit"]):
        pytest.skip("no OS-level process limit available here (root without a writable pids cgroup)")
    code = ("import ctypes, os, time\nlibc = ctypes.CDLL(None)\nn = 0\nfor _ in range(40):\n"
            "    pid = libc.fork()\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n"
            "    if pid < 0:\n        break\n    n += 1\nassert n < 16, n\n")
    r = run_python(code, timeout=5, guards=False, max_procs=16)
    assert r.passed, r.stderr


def test_os_level_fork_bomb_is_contained():
    """Even with the in-process guards off (a ctypes fork bomb), the pids cgroup (as root) or RLIMIT_NPROC
    (as a normal user) bounds the processes and the timeout kills them all."""
    caps = capabilities()
    if not (caps["pids_cgroup"] or caps["nproc_rlimit"]):
        pytest.skip("no OS-level process limit available here (root without a writable pids cgroup)")
    start = time.monotonic()
    bomb = "import ctypes, os, sys\nsys.stderr.write(os.getcwd())\nsys.stderr.flush()\nlibc = ctypes.CDLL(None)\n" \
           "while True:\n    libc.fork()\n"
    r = run_python(bomb, timeout=2, guards=False, max_procs=16)
    assert not r.passed and r.status in {"timeout", "killed", "error"}
    assert time.monotonic() - start < 10
    assert r.stderr.startswith("/") and not _processes_in(r.stderr[:200])  # nothing left behind


def test_huge_allocation_fails():
    r = run_python("x = bytearray(10 * 1024 ** 3)\n", memory_mb=512)
    assert not r.passed and r.status == "error" and "MemoryError" in r.stderr
    r = run_python("x = [0] * (10 * 1024 ** 3 // 8)\n", memory_mb=512)
    assert not r.passed


@pytest.fixture
def server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.3)
    yield srv
    srv.close()


def _connected(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
        conn.close()
        return True
    except socket.timeout:
        return False


def test_socket_to_localhost_is_blocked(server):
    port = server.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'x')\n"
    r = run_python(code, timeout=5)
    assert not r.passed and r.status == "error"
    assert not _connected(server)
    raw = f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n"
    assert not run_python(raw, timeout=5).passed
    assert not _connected(server)


def test_network_namespace_blocks_even_without_guards(server):
    if not capabilities()["netns"]:
        pytest.skip("cannot create a network namespace here (not root)")
    port = server.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    r = run_python(code, timeout=5, guards=False)
    assert not r.passed and r.status == "error" and "OSError" in r.stderr
    assert not _connected(server)


def test_files_only_inside_a_fresh_folder(tmp_path):
    target = tmp_path / "outside.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')\n")
    assert not r.passed and "PermissionError" in r.stderr and not target.exists()
    r = run_python(f"import os\nos.remove({str(Path(__file__))!r})\n")
    assert not r.passed and Path(__file__).exists()
    # inside its folder it may write, read and remove files; the folder is new each run and removed after
    code = ("import os, sys\nassert not os.path.exists('marker')\nopen('marker', 'w').write('1')\n"
            "assert open('marker').read() == '1'\nsys.stderr.write(os.getcwd())\n")
    first, second = run_python(code), run_python(code)
    assert first.passed and second.passed and first.stderr != second.stderr
    assert not Path(first.stderr).exists()


def test_file_size_limit():
    r = run_python("open('big', 'wb').write(b'x' * (64 * 1024 * 1024))\n", fsize_mb=8)
    assert not r.passed and "File too large" in r.stderr


def test_exits_and_signals_are_failures():
    assert run_python("import sys\nsys.exit(0)\n").status == "error"
    assert run_python("exit()\n").status == "error"
    assert run_python("import os\nos._exit(0)\n").status == "error"
    r = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", guards=False)
    assert (r.passed, r.status) == (False, "killed")
    assert run_python("assert __name__ != '__main__'\n").passed  # as the harnesses: no main blocks run


def test_stderr_tail_is_bounded():
    r = run_python("import sys\nsys.stderr.write('x' * 100000)\nraise ValueError('end')\n")
    assert r.status == "error" and len(r.stderr) <= sandbox.STDERR_TAIL and r.stderr.rstrip().endswith("end")


def test_capabilities_report():
    caps = capabilities()
    assert set(caps) == {"netns", "pids_cgroup", "nproc_rlimit", "guards"}
    assert caps["nproc_rlimit"] == (os.geteuid() != 0)
