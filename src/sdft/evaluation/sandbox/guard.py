"""Guard mode's OS layers for a child on the host (its own network namespace when root, a pids cgroup where one
is writable, an ``RLIMIT_NPROC`` above the user's count), and the rlimits both modes set between fork and exec.
The in-process guard itself is part of the child's script (``child.py``)."""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import resource
import signal
import time
from pathlib import Path

from sdft.evaluation.sandbox.base import CLONE_NEWNET

_counter = itertools.count()


@functools.lru_cache(maxsize=1)
def libc_unshare():
    try:
        fn = ctypes.CDLL(None, use_errno=True).unshare
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def pids_cgroup_root() -> Path | None:
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


class PidsCgroup:
    """A per-run pids cgroup; ``None`` path when unavailable."""

    def __init__(self, max_procs: int):
        self.path: Path | None = None
        root = pids_cgroup_root()
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


def user_task_count(uid: int) -> int:
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


def preexec(memory_mb: int, cpu_seconds: int, fsize_mb: int, nproc: int | None, cgroup_procs: bytes | None,
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
