"""Run untrusted Python (model-written code plus its tests) in a separate, contained process.

Two modes, chosen by name (:func:`resolve_mode`; ``DEFAULT_MODE`` is ``"bwrap"``). See ``docs/sandbox.md``.

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

import ctypes
import functools
import itertools
import json
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "error", "killed")
MODES = ("bwrap", "guard")
DEFAULT_MODE = "bwrap"  # what ``mode=None`` means; set it with resolve_mode's result (e.g. from the config)
SANDBOX_UID = SANDBOX_GID = 65534  # "nobody"
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
STDERR_TAIL = 2000
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
                "scripts/setup.sh does it as root) or choose the weaker in-process sandbox by name: mode='guard' "
                "(sdft eval/score: --sandbox guard)")
_counter = itertools.count()
_BOX, _SRC = "/sandbox", "/sdft"  # inside bwrap: the writable working folder, the read-only program folder
_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class SandboxUnavailable(RuntimeError):
    """The requested sandbox mode cannot run here (bwrap missing or unable to create namespaces)."""


def resolve_mode(name: str | None = None) -> str:
    """A sandbox mode by name: ``"bwrap"`` | ``"guard"``; ``None`` means ``DEFAULT_MODE``.

    >>> resolve_mode("guard"), resolve_mode(None)
    ('guard', 'bwrap')
    >>> resolve_mode("none")
    Traceback (most recent call last):
    ...
    ValueError: unknown sandbox mode 'none': choose bwrap (bubblewrap namespaces, the default) or guard (in-process guard only, weaker)
    """
    mode = DEFAULT_MODE if name is None else str(name).strip().lower()
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {name!r}: choose bwrap (bubblewrap namespaces, the default) or "
                         "guard (in-process guard only, weaker)")
    return mode


# The child's entry point, the same in both modes. argv: program folder, token fd, verdict fd, nproc,
# uid to drop to (-1: none), guards (1/0).
_RUNNER = r'''
import builtins, io, os, sys, traceback


def _drop(uid):
    # bwrap as root: we start as the user namespace's root (host root without DAC override) holding only
    # CAP_SETUID/CAP_SETGID; become uid/gid `uid` (host 65534 too) before reading anything else
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    with open("/proc/self/status") as f:  # no capabilities left, and none to be gained by exec
        status = dict(line.split(":", 1) for line in f if ":" in line)
    left = [int(status.get(key, "1"), 16) for key in ("CapPrm", "CapEff", "CapAmb")]
    if (os.getresuid() != (uid,) * 3 or os.getresgid() != (uid,) * 3 or any(left)
            or status.get("NoNewPrivs", "").strip() != "1"):
        sys.stderr.write("sdft sandbox: could not drop privileges\n")
        os._exit(3)


def _guard(_root):
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


def _main():
    src = sys.argv[1]
    token_fd, verdict_fd, nproc, uid = (int(a) for a in sys.argv[2:6])
    guards = sys.argv[6] == "1"
    if uid >= 0 and os.getuid() != uid:
        _drop(uid)
    # every reference used after the code ran is taken now: the code may rebind names, not these objects
    write, exit_, flush, print_exc = os.write, os._exit, sys.stderr.flush, traceback.print_exc
    exec_, compile_, join = builtins.exec, builtins.compile, os.path.join
    token = b""
    while True:  # the per-run token; the pipe is closed before any of the program is read
        chunk = os.read(token_fd, 256)
        if not chunk:
            break
        token += chunk
    os.close(token_fd)
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    except (ValueError, OSError):
        pass
    with open(join(src, "solution.py"), encoding="utf-8") as f:
        code = f.read()
    test = None
    if os.path.exists(join(src, "test.py")):
        with open(join(src, "test.py"), encoding="utf-8") as f:
            test = f.read()
    import linecache  # tracebacks show the program's lines, whatever the folder
    linecache.cache["solution.py"] = (len(code), None, code.splitlines(True), "solution.py")
    if test is not None:
        linecache.cache["test.py"] = (len(test), None, test.splitlines(True), "test.py")
    if guards:
        _guard(os.path.realpath(os.getcwd()))
    pristine = dict(vars(builtins))
    namespace = {"__name__": "__sdft_solution__", "__builtins__": builtins}
    try:
        exec_(compile_(code, "solution.py", "exec"), namespace)
        if test is not None:  # compiled on its own: the code cannot comment or quote it away
            namespace["__builtins__"] = pristine
            exec_(compile_(test, "test.py", "exec"), namespace)
    except AssertionError:
        try:
            write(verdict_fd, b"F")  # a failed test, not a crash (no token: cannot make a pass)
            print_exc()
            flush()
        finally:
            exit_(1)
    except BaseException:
        try:
            print_exc()
            flush()
        finally:
            exit_(2)
    try:
        flush()
    except BaseException:
        pass
    try:
        write(verdict_fd, token)  # the completion marker: written only here
    finally:
        exit_(0)


try:
    _main()
except BaseException:  # the runner itself failed before the code ran
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(3)
'''


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # one of STATUSES
    stderr: str = ""  # the last STDERR_TAIL characters
    returncode: int | None = None
    seconds: float = 0.0
    mode: str = DEFAULT_MODE  # the sandbox mode it ran in (one of MODES)


# --- guard mode: OS layers for a child on the host ---------------------------------------------------------
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


# --- bwrap mode ----------------------------------------------------------------------------------------------
def _find_bwrap() -> str | None:
    """The bubblewrap binary (``$SDFT_BWRAP`` or ``bwrap`` on ``PATH``, then ``/usr/bin/bwrap``)."""
    found = os.environ.get("SDFT_BWRAP") or shutil.which("bwrap")
    if not found and os.access("/usr/bin/bwrap", os.X_OK):
        found = "/usr/bin/bwrap"
    return found


@functools.lru_cache(maxsize=8)
def _python_prefixes(python: str) -> tuple[str, ...]:
    """The installation folders ``python`` needs: its prefixes (a venv and its base) and its binary's folder."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        out = subprocess.run([python, "-I", "-c", "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix,"
                              " sys.exec_prefix, sys.base_exec_prefix]))"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        prefixes = json.loads(out)
    prefixes.append(os.path.dirname(os.path.dirname(os.path.realpath(python))))
    return tuple(dict.fromkeys(os.path.abspath(p) for p in prefixes))


def _under(path: str, folders) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


@functools.lru_cache(maxsize=4)
def _bwrap_options(bwrap: str) -> frozenset:
    """The options this bwrap knows (from ``--help``): older ones lack ``--size`` (0.7), ``--disable-userns``
    (0.8), ...; those are then left out (the tmpfs folders unbounded, nested user namespaces left to seccomp)."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(re.findall(r"^\s*(--[a-z0-9-]+)", out.stdout + out.stderr, re.M))


def _opt(options: frozenset, name: str, *values: str) -> list[str]:
    return [name, *values] if name in options else []


def _mount_args(python: str, options: frozenset = frozenset({"--perms"})) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/localtime"):
        args += ["--ro-bind-try", etc, etc]
    bound, made = ["/usr"], set()
    for prefix in sorted(_python_prefixes(python), key=len):
        real = os.path.realpath(prefix)
        for dest in dict.fromkeys((real, prefix)):
            if dest == "/" or _under(dest, bound) or not os.path.isdir(real):
                continue  # the whole root is never bound; a folder under one already bound needs nothing
            if dest != real and os.path.islink("/" + dest.split("/")[1]):
                continue  # e.g. /lib/... -> /usr/lib/...: the same link exists inside
            parents = []
            parent = os.path.dirname(dest)
            while parent != "/" and parent not in made:
                parents.insert(0, parent)
                parent = os.path.dirname(parent)
            for parent in parents:  # traversable, whatever the host's modes (e.g. /root is 0700)
                args += [*_opt(options, "--perms", "0755"), "--dir", parent]
                made.add(parent)
            args += ["--ro-bind", real, dest]
            bound.append(dest)
    return args


# classic BPF for seccomp: per architecture, (AUDIT_ARCH, syscalls refused with EPERM, clone-like syscalls
# refused when asking for CLONE_NEWUSER, clone3 (ENOSYS: callers fall back to clone, whose flags we can see))
_SECCOMP = {
    "x86_64": (0xC000003E, (101, 248, 249, 250, 298, 321, 323, 425, 426, 427, 165, 166, 155, 308, 310, 311, 304,
                            246, 320, 175, 313), (56, 272), 435),
    "aarch64": (0xC00000B7, (117, 217, 218, 219, 241, 280, 282, 425, 426, 427, 40, 39, 41, 268, 270, 271, 265,
                             104, 294, 105, 273), (220, 97), 435),
}


@functools.lru_cache(maxsize=1)
def _seccomp_filter() -> bytes | None:
    """The seccomp program bwrap installs (``--seccomp``), or ``None`` on other architectures."""
    spec = _SECCOMP.get(platform.machine())
    if spec is None:
        return None
    arch, deny, clone_like, clone3 = spec
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog: list[tuple] = [(LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, EPERM), (LD, 0, 0, 0)]
    if arch == 0xC000003E:
        prog.append((JGE, "deny", 0, 0x40000000))  # the x32 ABI
    prog += [(JEQ, "deny", 0, nr) for nr in deny]
    prog.append((JEQ, "enosys", 0, clone3))
    prog += [(JEQ, "flags", 0, nr) for nr in clone_like]
    prog.append((RET, 0, 0, ALLOW))
    labels = {"flags": len(prog)}
    prog += [(LD, 0, 0, 16), (JSET, "deny", 0, CLONE_NEWUSER), (RET, 0, 0, ALLOW)]  # args[0], low 32 bits
    labels["deny"] = len(prog)
    prog.append((RET, 0, 0, EPERM))
    labels["enosys"] = len(prog)
    prog.append((RET, 0, 0, ENOSYS))
    if sys.byteorder != "little":
        return None  # args[0]'s low word is at offset 16 on little-endian only
    out = b""
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # not close-on-exec: bwrap reads it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


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
    bwrap = _find_bwrap()
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
    return _find_bwrap()


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024, *, test: str | None = None,
               mode: str | None = None, guards: bool = True, max_procs: int = 16, fsize_mb: int = 16,
               python: str | None = None) -> SandboxResult:
    """Run ``code`` (then ``test``, compiled separately) in a fresh contained process; see the module docstring.

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
                runner_args = [_SRC, str(token_r), str(verdict.fileno()), str(max_procs), str(drop_uid),
                               "1" if guards else "0"]
                info_r, info_w = os.pipe()
                fds += [info_r, info_w]
                env = {"PATH": "/usr/bin:/bin", "HOME": _BOX, "TMPDIR": _BOX, "LANG": "C.UTF-8", **_THREAD_ENV}
                tmpfs_size = str(max(4 * fsize_mb, 16) * 1024 * 1024)
                cmd = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                       "--hostname", "sdft-sandbox", "--clearenv"]
                for key, value in env.items():
                    cmd += ["--setenv", key, value]
                options = _bwrap_options(bwrap)
                cmd += _mount_args(python, options)
                cmd += ["--proc", "/proc", "--dev", "/dev"]
                for folder, perms in (("/tmp", "1777"), (_BOX, "0777")):
                    cmd += [*_opt(options, "--perms", perms), *_opt(options, "--size", tmpfs_size), "--tmpfs",
                            folder]
                cmd += ["--dir", _SRC]
                files = {"runner.py": _RUNNER, "solution.py": code}
                if test is not None:
                    files["test.py"] = test
                for name, text in files.items():
                    fd = _memfd(name, text.encode("utf-8", "surrogatepass"))
                    fds.append(fd)
                    pass_fds.append(fd)
                    cmd += [*_opt(options, "--perms", "0444"), "--ro-bind-data", str(fd), f"{_SRC}/{name}"]
                cmd += ["--chdir", _BOX, "--info-fd", str(info_w)]
                pass_fds.append(info_w)
                filt = _seccomp_filter()
                if filt is not None:
                    fd = _memfd("seccomp", filt)
                    fds.append(fd)
                    pass_fds.append(fd)
                    cmd += ["--seccomp", str(fd)]
                if is_root:  # we write the uid/gid maps (0 -> 0 for bwrap's setup, 65534 -> 65534 for the code)
                    block_r, block_w = os.pipe()
                    fds += [block_r, block_w]
                    pass_fds.append(block_r)
                    cmd += ["--userns-block-fd", str(block_r), "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                            "--cap-add", "CAP_SETGID"]
                else:
                    cmd += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
                            *_opt(options, "--disable-userns")]
                cmd += ["--", python, "-I", "-B", f"{_SRC}/runner.py", *runner_args]
                cwd, popen_env = "/", {}  # bwrap itself gets an empty environment: its init keeps it
            else:
                workdir = Path(tempfile.mkdtemp(prefix="sdft-sandbox-"))
                (workdir / "solution.py").write_text(code, encoding="utf-8")
                if test is not None:
                    (workdir / "test.py").write_text(test, encoding="utf-8")
                (workdir / "runner.py").write_text(_RUNNER, encoding="utf-8")
                cgroup = _PidsCgroup(max_procs)
                preexec_nproc = None if is_root else _user_task_count(os.getuid()) + max_procs
                unshare = _libc_unshare() if is_root else None
                cmd = [python, "-I", "-B", "runner.py", str(workdir), str(token_r), str(verdict.fileno()),
                       str(max_procs), "-1", "1" if guards else "0"]
                cwd = workdir
                popen_env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
                             "LANG": "C.UTF-8", **_THREAD_ENV}
            preexec = functools.partial(_preexec, memory_mb, int(timeout) + 1, fsize_mb, preexec_nproc,
                                        cgroup.procs_file() if cgroup else None, unshare)
            deadline = start + timeout
            try:
                proc = subprocess.Popen(cmd, cwd=cwd, env=popen_env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                        close_fds=True, pass_fds=pass_fds, preexec_fn=preexec)
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
                            maps = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n"
                            Path(f"/proc/{child_pid}/uid_map").write_text(maps)
                            Path(f"/proc/{child_pid}/gid_map").write_text(maps.replace(str(SANDBOX_UID),
                                                                                       str(SANDBOX_GID)))
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
    cgroup = _PidsCgroup(4)
    pids = cgroup.path is not None
    cgroup.kill_all_and_remove()
    return {"bwrap": bwrap_status()[0], "netns": bool(netns), "pids_cgroup": pids,
            "nproc_rlimit": os.geteuid() != 0, "guards": True}
