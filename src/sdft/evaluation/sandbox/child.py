# sdft sandbox: the child's entry point, read as text (run.runner_source drops this line); never imported.
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
