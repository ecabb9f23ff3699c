"""Run untrusted Python (model-written code plus its tests) in a separate, contained process.

Two modes, chosen by name (:func:`resolve_mode`; ``DEFAULT_MODE`` is ``"bwrap"``; :func:`using_mode` sets it for
a block). See ``docs/sandbox.md``. The parts: ``base`` (constants, :class:`SandboxResult`, the default mode),
``child.py`` (the child's script, read as text), ``guard`` (guard mode's OS layers, the rlimits), ``bwrap``
(the bwrap command line), ``run`` (:func:`run_python`, the probe).

``bwrap`` (the default): every program runs under bubblewrap in new user, PID, mount, network, IPC, UTS and
cgroup namespaces. Inside it sees a read-only ``/usr`` (plus the ``/bin``, ``/lib*`` links), the Python
installation(s) it needs (``sys.base_prefix``, ``sys.prefix``, read-only), ``/etc/ld.so.cache`` and
``/etc/localtime``, a fresh ``/proc`` (its own processes only) and a minimal ``/dev``, and two empty, size-bounded
tmpfs folders: ``/sandbox`` (its working folder, ``HOME`` and ``TMPDIR``) and ``/tmp``. The program and the
runner are copied in read-only under ``/sdft``. Nothing else of the host exists there: no ``/sys``, no home
folders, no host ``/tmp``, no network (only its own loopback), an empty environment (``PATH``, ``HOME``,
``TMPDIR``, ``LANG`` and thread counts only), no terminal (``--new-session``). It runs as uid/gid 65534 with
no capabilities and ``no_new_privs`` on ``nosuid`` mounts: as root, the host uid is 65534 too (we write the
user namespace's map: 0 -> 0 for bubblewrap's setup and the runner's first lines, which hold only
CAP_SETUID/CAP_SETGID, and 65534 -> 65534; the runner drops to 65534 before it reads the program, so the
Python installation must be world-readable, as it normally is); as a normal user it is that user's uid, seen
as 65534. A seccomp filter (x86-64 and aarch64) refuses new user namespaces, ``clone3``, ``ptrace``, ``bpf``,
``io_uring``, keyrings, ``userfaultfd``, ``perf_event_open``, ``mount``, ``setns`` and a few more. When the wall
clock runs out, the namespace's init is killed, which makes the kernel kill every process in the sandbox, and
the call returns only after they are gone; when the program ends, the same happens to anything it left. A
missing ``bwrap`` or one that cannot create namespaces (probed once) makes :func:`run_python` refuse to run
code (:class:`SandboxUnavailable`) unless ``mode="guard"`` is chosen by name.

``guard`` (weaker, by name only): the child runs on the host as the caller, in a fresh temporary folder
(removed afterwards), with a minimal environment; root gets its own network namespace
(``unshare(CLONE_NEWNET)``), and a writable pids cgroup, where there is one, bounds forks. It reads what the
caller may read (e.g. ``/proc/<ppid>/environ``) and its only barrier against writing elsewhere is the
in-process guard below, which Python code can undo.

Both modes: rlimits (``RLIMIT_AS`` memory, ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_CORE`` = 0, and
``RLIMIT_NPROC`` set by the runner -- enforced in bwrap mode even as root, since the host uid is not 0), a
wall-clock timeout, no stdin, and (``guards=True``) the in-process guard prelude as a second layer:
``os.fork``/``system``/``exec*``/``spawn*``/``kill``/``_exit``, ``subprocess``, sockets, ``shutil.rmtree``/
``move`` and ``importlib.reload`` raise ``PermissionError``; ``ctypes``, ``multiprocessing`` and ``resource``
cannot be imported; files may be written, removed, renamed or chmod-ed only inside the working folder.

**The verdict** is decided outside the program. The parent passes a random per-run token on a pipe, which the
runner reads and closes before it reads the program; the runner writes the token to an inherited file only
after the code -- and then ``test``, when given: compiled and run on its own, so that it runs as written
whatever the code is (the code cannot quote or comment it away) -- returned without an exception.
``passed`` needs that token and exit status 0. Exit status 0 alone is not enough: ``os._exit(0)``,
``sys.exit(0)``, ``SystemExit(0)``, the runner's own ``_exit``, killing itself or printing anything score
``error``. Limits (see ``docs/sandbox.md``): the code and
its tests share one interpreter, so a program written against this harness that digs the token out of the
runner's memory (its frames) can forge the marker -- in bwrap mode without ever leaving the sandbox -- and a
program can always fool its tests in-process (e.g. an object whose ``__eq__`` is always true); the test code
gets the builtins as they were before the code ran, and the runner uses only references taken before.

Status: ``passed``, ``failed`` (an ``AssertionError``), ``error`` (any other exception, including
``SyntaxError``, ``MemoryError``, ``SystemExit`` and the guards' ``PermissionError``; an exit before the end;
or the sandbox could not start), ``timeout`` (wall clock), ``killed`` (ended by a signal, e.g.
``SIGXCPU``/``SIGSEGV``). As in the HumanEval harnesses, the code runs with ``__name__ != "__main__"``.

>>> run_python("assert 1 + 1 == 2").status
'passed'
>>> run_python("assert 1 + 1 == 3").status
'failed'
>>> run_python("def f(x):\\n    return x", test="assert f(2) == 2").mode
'bwrap'
"""

from __future__ import annotations

from typing import Any

from sdft.evaluation.sandbox import base
from sdft.evaluation.sandbox.base import (INSTALL_HINT, MODES, STATUSES, STDERR_TAIL, SandboxResult,
                                         SandboxUnavailable, resolve_mode, using_mode)
from sdft.evaluation.sandbox.run import bwrap_status, capabilities, run_python

__all__ = ["DEFAULT_MODE", "INSTALL_HINT", "MODES", "STATUSES", "STDERR_TAIL", "SandboxResult", "SandboxUnavailable",
           "bwrap_status", "capabilities", "resolve_mode", "run_python", "using_mode"]


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_MODE":  # read where it lives, so that it is always the current one
        return base.DEFAULT_MODE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
