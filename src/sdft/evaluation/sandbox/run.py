"""Running one program: :func:`run_python` (both modes), the bwrap probe (:func:`bwrap_status`) and
:func:`capabilities`. The child's script is ``child.py`` next to this file, read as text."""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdft.evaluation.sandbox.base import (INSTALL_HINT, SANDBOX_UID, SRC, STDERR_TAIL, THREAD_ENV, SandboxResult,
                                         SandboxUnavailable, resolve_mode)
from sdft.evaluation.sandbox.bwrap import command, find_bwrap, write_id_maps
from sdft.evaluation.sandbox.guard import PidsCgroup, libc_unshare, preexec, user_task_count

CHILD = Path(__file__).with_name("child.py")


@functools.lru_cache(maxsize=1)
def runner_source() -> str:
    """The child's entry point (``child.py``), the same in both modes; its first line (a comment) is left blank,
    so that the text and its line numbers are those the runner always had. argv: program folder, token fd,
    verdict fd, nproc, uid to drop to (-1: none), guards (1/0)."""
    return "\n" + CHILD.read_text(encoding="utf-8").split("\n", 1)[1]


def _read_all(fd: int, deadline: float) -> bytes:
    data = b""
    while True:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return data
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def bwrap_status(python: str | None = None) -> tuple[bool, str]:
    """Whether bwrap mode works here for ``python`` (default: this interpreter), probed once by running a
    program: ``(ok, reason)``. ``bwrap_status.cache_clear()`` forgets the answers."""
    return _probe(python or sys.executable)


@functools.lru_cache(maxsize=8)
def _probe(python: str) -> tuple[bool, str]:
    bwrap = find_bwrap()
    if not bwrap:
        return False, "bwrap was not found"
    if not hasattr(os, "memfd_create"):
        return False, "os.memfd_create is missing (not Linux?)"
    try:
        r = _run("import os\nassert os.getuid() == 65534 and os.getpid() < 10, (os.getuid(), os.getpid())",
                 None, 10.0, 256, True, 16, 16, python, "bwrap", bwrap)
    except Exception as e:  # noqa: BLE001 -- any failure means: not usable
        return False, f"{bwrap} failed to start: {e}"
    if r.passed:
        return True, f"{bwrap} works"
    return False, f"{bwrap} could not run a program ({r.status}): {r.stderr.strip()[-400:]}"


bwrap_status.cache_clear = _probe.cache_clear


def _require_bwrap(python: str) -> str:
    ok, reason = bwrap_status(python)
    if not ok:
        raise SandboxUnavailable(f"the bwrap sandbox is unavailable here ({reason}); {INSTALL_HINT}")
    return find_bwrap()


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024, *, test: str | None = None,
               mode: str | None = None, guards: bool = True, max_procs: int = 16, fsize_mb: int = 16,
               python: str | None = None) -> SandboxResult:
    """Run ``code`` (then ``test``, compiled separately) in a fresh contained process; see the package docstring.

    ``mode``: ``"bwrap"`` | ``"guard"`` | ``None`` (``DEFAULT_MODE``). Raises :class:`SandboxUnavailable` when
    bwrap mode cannot run here.

    >>> r = run_python("while True: pass", timeout=1)
    >>> (r.passed, r.status)
    (False, 'timeout')
    """
    mode = resolve_mode(mode)
    python = python or sys.executable
    bwrap = _require_bwrap(python) if mode == "bwrap" else None
    return _run(code, test, timeout, memory_mb, guards, max_procs, fsize_mb, python, mode, bwrap)


def _run(code: str, test: str | None, timeout: float, memory_mb: int, guards: bool, max_procs: int,
         fsize_mb: int, python: str, mode: str, bwrap: str | None) -> SandboxResult:
    start = time.monotonic()
    token = secrets.token_hex(16).encode()
    is_root = os.geteuid() == 0
    fds: list[int] = []  # ours to close
    workdir = cgroup = None
    child_pid = None
    timed_out = False
    try:
        token_r, token_w = os.pipe()
        fds += [token_r, token_w]
        os.write(token_w, token)
        os.close(token_w)
        fds.remove(token_w)
        with tempfile.TemporaryFile() as verdict, tempfile.TemporaryFile() as err:
            pass_fds = [token_r, verdict.fileno()]
            preexec_nproc, unshare = None, None
            if mode == "bwrap":
                drop_uid = SANDBOX_UID if is_root else -1
                runner_args = [SRC, str(token_r), str(verdict.fileno()), str(max_procs), str(drop_uid),
                               "1" if guards else "0"]
                files = {"runner.py": runner_source(), "solution.py": code}
                if test is not None:
                    files["test.py"] = test
                cmd, info_r, info_w, block_w = command(bwrap, python, files, runner_args, fsize_mb, is_root, fds,
                                                       pass_fds)
                cwd, popen_env = "/", {}  # bwrap itself gets an empty environment: its init keeps it
            else:
                workdir = Path(tempfile.mkdtemp(prefix="sdft-sandbox-"))
                (workdir / "solution.py").write_text(code, encoding="utf-8")
                if test is not None:
                    (workdir / "test.py").write_text(test, encoding="utf-8")
                (workdir / "runner.py").write_text(runner_source(), encoding="utf-8")
                cgroup = PidsCgroup(max_procs)
                preexec_nproc = None if is_root else user_task_count(os.getuid()) + max_procs
                unshare = libc_unshare() if is_root else None
                cmd = [python, "-I", "-B", "runner.py", str(workdir), str(token_r), str(verdict.fileno()),
                       str(max_procs), "-1", "1" if guards else "0"]
                cwd = workdir
                popen_env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
                             "LANG": "C.UTF-8", **THREAD_ENV}
            limits = functools.partial(preexec, memory_mb, int(timeout) + 1, fsize_mb, preexec_nproc,
                                       cgroup.procs_file() if cgroup else None, unshare)
            deadline = start + timeout
            try:
                proc = subprocess.Popen(cmd, cwd=cwd, env=popen_env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                        close_fds=True, pass_fds=pass_fds, preexec_fn=limits)
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult(False, "error", f"sandbox could not start: {e}", None,
                                     time.monotonic() - start, mode)
            try:
                if mode == "bwrap":
                    os.close(info_w)
                    fds.remove(info_w)
                    info = _read_all(info_r, time.monotonic() + 10)
                    try:
                        child_pid = int(json.loads(info)["child-pid"])
                    except (ValueError, KeyError, TypeError):
                        child_pid = None
                    if is_root and child_pid is not None:
                        try:
                            write_id_maps(child_pid)
                        except OSError as e:
                            err.write(f"sdft sandbox: could not write the user namespace maps: {e}\n".encode())
                        try:
                            os.write(block_w, b"1")
                        except OSError:
                            pass  # bwrap is gone already: its exit status says why
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if proc.poll() is None and child_pid is not None:
                    try:  # the PID namespace's init: the kernel kills every process in the sandbox
                        os.kill(child_pid, signal.SIGKILL)
                    except OSError:
                        pass
                    try:
                        proc.wait(timeout=5)  # bwrap exits once its init (and so everything) is gone
                    except subprocess.TimeoutExpired:
                        pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, also on success (stray children)
                except OSError:
                    pass
                proc.wait()
                if cgroup is not None:
                    cgroup.kill_all_and_remove()
            verdict.seek(0)
            marker = verdict.read(len(token) + 1)
            completed = marker == token
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - STDERR_TAIL))
            tail = err.read().decode("utf-8", "replace")
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if cgroup is not None:
            cgroup.kill_all_and_remove()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    rc = proc.returncode
    if timed_out:
        status = "timeout"
    elif rc == 0:
        status = "passed" if completed else "error"
        if not completed:
            tail = (tail + "\nsdft sandbox: the program exited (status 0) before its code and tests completed; "
                           "not passed\n")[-STDERR_TAIL:]
    elif rc == 1:
        status = "failed" if marker == b"F" else "error"  # else: bwrap or the interpreter failed
    elif rc is not None and (rc < 0 or (mode == "bwrap" and rc > 128)):
        status = "killed"  # bwrap reports a signal as 128 + its number
    else:
        status = "error"
    return SandboxResult(status == "passed", status, tail, rc, time.monotonic() - start, mode)


@functools.lru_cache(maxsize=1)
def capabilities() -> dict[str, bool]:
    """Which containment layers are available on this machine (probed once by running children).

    Keys: ``bwrap`` (bwrap mode works), ``netns`` (guard mode: own network namespace), ``pids_cgroup`` (guard
    mode: bounded process count), ``nproc_rlimit`` (guard mode: ``RLIMIT_NPROC`` is honoured, i.e. not root;
    bwrap mode always honours it), ``guards`` (always available).
    """
    netns = False
    if os.path.exists("/proc/self/ns/net"):
        probe = ("import os\nns = os.readlink('/proc/self/ns/net')\n"
                 f"assert ns != {os.readlink('/proc/self/ns/net')!r}, 'same network namespace'")
        netns = run_python(probe, timeout=10, guards=False, mode="guard").passed
    cgroup = PidsCgroup(4)
    pids = cgroup.path is not None
    cgroup.kill_all_and_remove()
    return {"bwrap": bwrap_status()[0], "netns": bool(netns), "pids_cgroup": pids,
            "nproc_rlimit": os.geteuid() != 0, "guards": True}
