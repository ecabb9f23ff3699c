"""Run untrusted Python (model-written code plus its tests) in a separate, contained process.

Every call gets its own process (``python -I -B``), a fresh temporary working folder (removed afterwards), no
stdin, a minimal environment, and these layers of containment:

- **wall-clock timeout**: the whole process group (``start_new_session``) is killed with SIGKILL;
- **rlimits** (set in ``preexec_fn``): ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` (largest file it
  may write), ``RLIMIT_CORE`` = 0, and ``RLIMIT_NPROC`` when not running as root (root ignores it);
- **network namespace**: when root, the child calls ``unshare(CLONE_NEWNET)`` before ``exec`` and so has no
  network at all, not even the host's loopback (falls back silently where not permitted);
- **pids cgroup**: when a pids cgroup (v1, or v2 with the controller delegated) is writable, the child runs in
  its own cgroup with ``pids.max``, which bounds a fork bomb even as root; every task left in it is killed;
- **in-process guards** (``guards=True``), a prelude run before the code: ``os.fork``/``system``/``exec*``/
  ``spawn*``/``kill``/``setsid``, ``subprocess``, sockets, ``shutil.rmtree``/``move`` and ``importlib.reload``
  raise ``PermissionError``; ``ctypes``, ``multiprocessing`` and ``resource`` cannot be imported; files may be
  opened for writing, removed, renamed or chmod-ed only inside the working folder. These are best effort (Python
  cannot sandbox itself); the OS-level layers above are what contain a determined program.

Status: ``passed`` (ran to the end), ``failed`` (an ``AssertionError``), ``error`` (any other exception,
including ``SyntaxError``, ``MemoryError``, ``SystemExit`` and the guards' ``PermissionError``; or the sandbox
could not start), ``timeout`` (wall clock), ``killed`` (ended by a signal, e.g. ``SIGXCPU``/``SIGSEGV``).
As in the HumanEval harnesses, the code runs with ``__name__ != "__main__"`` and any exception -- even
``SystemExit(0)`` -- is a failure.

>>> run_python("assert 1 + 1 == 2").status
'passed'
>>> run_python("assert 1 + 1 == 3").status
'failed'
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "error", "killed")
CLONE_NEWNET = 0x40000000
STDERR_TAIL = 2000
_counter = itertools.count()

# the child's entry point; ``{guards}`` is replaced by True/False
_RUNNER = r'''
import builtins, io, os, sys, traceback
_exit, _root = os._exit, os.path.realpath(os.getcwd())
with open("solution.py", encoding="utf-8") as _f:
    _code = _f.read()

def _guard():
    import _posixsubprocess, _socket, importlib, posix, shutil, socket, subprocess

    def denied(*args, **kwargs):
        raise PermissionError("not allowed in the sdft sandbox")

    def inside(path):
        p = os.fsdecode(os.path.realpath(path))
        return p == _root or p.startswith(_root + os.sep) or p == os.devnull

    def confined(fn):  # allowed on paths inside the working folder only
        def wrapper(*args, **kwargs):
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if not paths or not all(inside(p) for p in paths) or "dir_fd" in kwargs:
                raise PermissionError(f"not allowed outside the sdft sandbox folder: {args[:2]!r}")
            return fn(*args, **kwargs)
        return wrapper

    for name in ("fork", "forkpty", "system", "popen", "execv", "execve", "execl", "execle", "execlp", "execlpe",
                 "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
                 "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg", "setuid", "setgid", "setsid",
                 "setpgid", "setpgrp", "unshare", "setns", "chroot", "fchdir", "fchmod", "fchown", "_exit"):
        for mod in (os, posix):
            if hasattr(mod, name):
                setattr(mod, name, denied)
    for name in ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
                 "lchmod", "chown", "lchown", "link", "symlink"):
        for mod in (os, posix):
            if hasattr(mod, name):
                setattr(mod, name, confined(getattr(mod, name)))
    subprocess.Popen = _posixsubprocess.fork_exec = denied
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, denied)
    importlib.reload = denied

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise PermissionError("network access is not allowed in the sdft sandbox")

    socket.socket = _socket.socket = socket.SocketType = NoSocket
    for name in ("socketpair", "create_connection", "create_server", "fromfd"):
        setattr(socket, name, denied)
    for name in ("ctypes", "_ctypes", "cffi", "multiprocessing", "_multiprocessing", "resource", "psutil", "pty"):
        sys.modules[name] = None

    real_open, real_os_open = io.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def safe_open(file, mode="r", *args, **kwargs):
        if not isinstance(file, int) and any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing outside the sandbox folder is not allowed: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def safe_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"writing outside the sandbox folder is not allowed: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = safe_open
    os.open = posix.open = safe_os_open

if {guards}:
    _guard()
try:
    exec(compile(_code, "solution.py", "exec"), {"__name__": "__sdft_solution__", "__builtins__": builtins})
except AssertionError:
    traceback.print_exc()
    sys.stderr.flush()
    _exit(1)
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    _exit(2)
sys.stderr.flush()
_exit(0)
'''


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # one of STATUSES
    stderr: str = ""  # the last STDERR_TAIL characters
    returncode: int | None = None
    seconds: float = 0.0


@functools.lru_cache(maxsize=1)
def _libc_unshare():
    try:
        fn = ctypes.CDLL(None, use_errno=True).unshare
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def _pids_cgroup_root() -> Path | None:
    """A writable pids cgroup folder of this process (v1 ``pids`` hierarchy, or v2 with pids delegated)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids") / rel.lstrip("/")
        elif controllers == "":
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
            try:
                if "pids" not in (base / "cgroup.subtree_control").read_text().split():
                    continue
            except OSError:
                continue
        else:
            continue
        if base.is_dir() and os.access(base, os.W_OK):
            return base
    return None


class _PidsCgroup:
    """A per-run pids cgroup; ``None`` path when unavailable."""

    def __init__(self, max_procs: int):
        self.path: Path | None = None
        root = _pids_cgroup_root()
        if root is None:
            return
        path = root / f"sdft-sandbox-{os.getpid()}-{next(_counter)}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_procs))
            self.path = path
        except OSError:
            try:
                path.rmdir()
            except OSError:
                pass

    def procs_file(self) -> bytes | None:
        return str(self.path / "cgroup.procs").encode() if self.path else None

    def kill_all_and_remove(self) -> None:
        if self.path is None:
            return
        for _ in range(100):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
        try:
            self.path.rmdir()
        except OSError:
            pass
        self.path = None


def _user_task_count(uid: int) -> int:
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def _preexec(memory_mb: int, cpu_seconds: int, fsize_mb: int, nproc: int | None, cgroup_procs: bytes | None,
             unshare) -> None:
    """Runs in the child between fork and exec: no imports, no locks, only system calls."""
    if cgroup_procs is not None:
        try:
            fd = os.open(cgroup_procs, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        except OSError:
            pass
    if unshare is not None:
        unshare(CLONE_NEWNET)  # fails (returns -1) without privileges: silently keep the host network
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024, *, guards: bool = True,
               max_procs: int = 16, fsize_mb: int = 16, python: str | None = None) -> SandboxResult:
    """Run ``code`` in a fresh contained process; see the module docstring for the layers and statuses.

    >>> r = run_python("while True: pass", timeout=1)
    >>> (r.passed, r.status)
    (False, 'timeout')
    """
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="sdft-sandbox-"))
    cgroup = _PidsCgroup(max_procs)
    is_root = os.geteuid() == 0
    nproc = None if is_root else _user_task_count(os.getuid()) + max_procs
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    preexec = functools.partial(_preexec, memory_mb, int(timeout) + 1, fsize_mb, nproc, cgroup.procs_file(),
                                _libc_unshare() if is_root else None)
    timed_out = False
    try:
        (workdir / "solution.py").write_text(code, encoding="utf-8")
        (workdir / "runner.py").write_text(_RUNNER.replace("{guards}", str(bool(guards))), encoding="utf-8")
        with open(workdir / ".stderr", "w+b") as err:
            try:
                proc = subprocess.Popen([python or sys.executable, "-I", "-B", "runner.py"], cwd=workdir, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True, close_fds=True, preexec_fn=preexec)
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult(False, "error", f"sandbox could not start: {e}", None,
                                     time.monotonic() - start)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, also on success (stray children)
                except OSError:
                    pass
                proc.wait()
                cgroup.kill_all_and_remove()
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - STDERR_TAIL))
            tail = err.read().decode("utf-8", "replace")
    finally:
        cgroup.kill_all_and_remove()
        shutil.rmtree(workdir, ignore_errors=True)
    rc = proc.returncode
    if timed_out:
        status = "timeout"
    elif rc == 0:
        status = "passed"
    elif rc == 1:
        status = "failed"
    elif rc is not None and rc < 0:
        status = "killed"
    else:
        status = "error"
    return SandboxResult(status == "passed", status, tail, rc, time.monotonic() - start)


@functools.lru_cache(maxsize=1)
def capabilities() -> dict[str, bool]:
    """Which containment layers are active on this machine (probed once by running a child).

    Keys: ``netns`` (own network namespace), ``pids_cgroup`` (bounded process count), ``nproc_rlimit``
    (``RLIMIT_NPROC`` is honoured: not root), ``guards`` (always available).
    """
    netns = False
    if os.path.exists("/proc/self/ns/net"):
        probe = ("import os\nns = os.readlink('/proc/self/ns/net')\n"
                 f"assert ns != {os.readlink('/proc/self/ns/net')!r}, 'same network namespace'")
        netns = run_python(probe, timeout=10, guards=False).passed
    cgroup = _PidsCgroup(4)
    pids = cgroup.path is not None
    cgroup.kill_all_and_remove()
    return {"netns": bool(netns), "pids_cgroup": pids, "nproc_rlimit": os.geteuid() != 0, "guards": True}
