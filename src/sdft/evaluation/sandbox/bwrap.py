"""bwrap mode: finding bubblewrap, the command line (mounts, environment, program files, seccomp filter) and the
user namespace's uid/gid maps written for it as root. Whether it works here is probed by running a program
(:func:`sdft.evaluation.sandbox.run.bwrap_status`)."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from sdft.evaluation.sandbox.base import BOX, CLONE_NEWUSER, SANDBOX_GID, SANDBOX_UID, SRC, THREAD_ENV


def find_bwrap() -> str | None:
    """The bubblewrap binary (``$SDFT_BWRAP`` or ``bwrap`` on ``PATH``, then ``/usr/bin/bwrap``)."""
    found = os.environ.get("SDFT_BWRAP") or shutil.which("bwrap")
    if not found and os.access("/usr/bin/bwrap", os.X_OK):
        found = "/usr/bin/bwrap"
    return found


@functools.lru_cache(maxsize=8)
def python_prefixes(python: str) -> tuple[str, ...]:
    """The installation folders ``python`` needs: its prefixes (a venv and its base) and its binary's folder."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # not realpath: venvs share their base's binary
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
def bwrap_options(bwrap: str) -> frozenset:
    """The options this bwrap knows (from ``--help``): older ones lack ``--size`` (0.7), ``--disable-userns``
    (0.8), ...; those are then left out (the tmpfs folders unbounded, nested user namespaces left to seccomp)."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(re.findall(r"^\s*(--[a-z0-9-]+)", out.stdout + out.stderr, re.M))


def _opt(options: frozenset, name: str, *values: str) -> list[str]:
    return [name, *values] if name in options else []


def mount_args(python: str, options: frozenset = frozenset({"--perms"}), made: tuple[str, ...] = ()) -> list[str]:
    """Read-only binds of the system folders and ``python``'s installation. ``made``: folders already mounted
    (the tmpfs ones), whose own permissions stay as they are when an installation lies under one (a venv in
    ``/tmp``: it is bound *after* the ``/tmp`` tmpfs, else the tmpfs would hide it)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/localtime"):
        args += ["--ro-bind-try", etc, etc]
    bound, made = ["/usr"], set(made)
    for prefix in sorted(python_prefixes(python), key=len):
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
def seccomp_filter() -> bytes | None:
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


def command(bwrap: str, python: str, files: dict[str, str], runner_args: list[str], fsize_mb: int, is_root: bool,
            fds: list[int], pass_fds: list[int]) -> tuple[list[str], int, int, int | None]:
    """The bwrap command line that runs ``python -I -B /sdft/runner.py *runner_args`` with ``files`` (name ->
    text, ``runner.py`` among them) copied in read-only, and ``(cmd, info_r, info_w, block_w)``: bwrap reports
    its init's pid on ``info_w``; as root it waits for a byte on ``block_w`` (``None`` otherwise) until the maps
    are written (:func:`write_id_maps`). The descriptors it opens are added to ``fds`` (ours to close), those
    bwrap inherits to ``pass_fds``."""
    info_r, info_w = os.pipe()
    fds += [info_r, info_w]
    env = {"PATH": "/usr/bin:/bin", "HOME": BOX, "TMPDIR": BOX, "LANG": "C.UTF-8", **THREAD_ENV}
    tmpfs_size = str(max(4 * fsize_mb, 16) * 1024 * 1024)
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
           "--hostname", "sdft-sandbox", "--clearenv"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    options = bwrap_options(bwrap)
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    tmpfs = (("/tmp", "1777"), (BOX, "0777"))
    for folder, perms in tmpfs:
        cmd += [*_opt(options, "--perms", perms), *_opt(options, "--size", tmpfs_size), "--tmpfs", folder]
    cmd += mount_args(python, options, made=tuple(f for f, _ in tmpfs))  # after the tmpfs: it would hide a bind
    cmd += ["--dir", SRC]
    for name, text in files.items():
        fd = _memfd(name, text.encode("utf-8", "surrogatepass"))
        fds.append(fd)
        pass_fds.append(fd)
        cmd += [*_opt(options, "--perms", "0444"), "--ro-bind-data", str(fd), f"{SRC}/{name}"]
    cmd += ["--chdir", BOX, "--info-fd", str(info_w)]
    pass_fds.append(info_w)
    filt = seccomp_filter()
    if filt is not None:
        fd = _memfd("seccomp", filt)
        fds.append(fd)
        pass_fds.append(fd)
        cmd += ["--seccomp", str(fd)]
    block_w = None
    if is_root:  # we write the uid/gid maps (0 -> 0 for bwrap's setup, 65534 -> 65534 for the code)
        block_r, block_w = os.pipe()
        fds += [block_r, block_w]
        pass_fds.append(block_r)
        cmd += ["--userns-block-fd", str(block_r), "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), *_opt(options, "--disable-userns")]
    cmd += ["--", python, "-I", "-B", f"{SRC}/runner.py", *runner_args]
    return cmd, info_r, info_w, block_w


def write_id_maps(child_pid: int) -> None:
    """As root: the sandbox's user namespace maps 0 -> 0 (bwrap's setup) and 65534 -> 65534 (the code)."""
    maps = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n"
    Path(f"/proc/{child_pid}/uid_map").write_text(maps)
    Path(f"/proc/{child_pid}/gid_map").write_text(maps.replace(str(SANDBOX_UID), str(SANDBOX_GID)))
