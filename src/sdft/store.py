"""Crash-safe run files: an append-only JSONL of finished records and atomically replaced JSON files.

A record is appended as whole lines with one ``write`` followed by ``fsync``; a process killed mid-write can
leave at most one partial last line, which :func:`read_records` drops (and truncates) on resume. A damaged line
anywhere else (a disk or an editor, not a kill) costs only that row: it is set aside in ``<file>.quarantine`` and
reported, and the rows after it are kept. Every other file is written to a temporary name and renamed, so it is
either the old or the new version, never half.

One process per run folder: :func:`run_lock` holds an OS lock (``flock``) on ``<out>/.sdft.lock`` for the life of a
run; a second process is refused at once, naming the holder. The kernel drops the lock when its holder dies,
however it dies, so a killed run never blocks the next one.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class RecordScan:
    """What :func:`scan_records` found: the records (first of each key), the damaged lines set aside
    (``(line number, raw bytes)``), how many later duplicates of a key were ignored, and the bytes of a torn tail."""

    records: list[dict] = field(default_factory=list)
    quarantined: list[tuple[int, bytes]] = field(default_factory=list)
    duplicates: int = 0
    duplicate_keys: list = field(default_factory=list)
    torn_bytes: int = 0

    @property
    def clean(self) -> bool:
        return not (self.quarantined or self.duplicates or self.torn_bytes)

    def summary(self) -> dict[str, Any]:
        """For a manifest: counts and line numbers (never the damaged bytes themselves)."""
        return {"quarantined": len(self.quarantined), "quarantined_lines": [n for n, _ in self.quarantined],
                "duplicates": self.duplicates, "duplicate_keys": self.duplicate_keys[:20],
                "torn_tail_bytes": self.torn_bytes}

    def warnings(self, path: Path) -> list[str]:
        out = []
        if self.quarantined:
            lines = ", ".join(str(n) for n, _ in self.quarantined[:10]) + (" ..." if len(self.quarantined) > 10 else "")
            out.append(f"{path}: {len(self.quarantined)} damaged line(s) set aside (line {lines}) in "
                       f"{quarantine_path(path)}; those rows count as not done and are made again")
        if self.duplicates:
            out.append(f"{path}: {self.duplicates} duplicate record(s) ignored (the first of each is kept)")
        if self.torn_bytes:
            out.append(f"{path}: a torn last line ({self.torn_bytes} bytes, from a killed write) was dropped")
        return out


def quarantine_path(path: Path) -> Path:
    return path.with_name(path.name + ".quarantine")


def _decode(line: bytes) -> dict | None:
    """The record of one line; None for a blank line; ValueError when it is not a JSON object."""
    if not line.strip():
        return None
    rec = json.loads(line)  # bytes: a UnicodeDecodeError is a ValueError too
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    return rec


def scan_records(path: Path, key: str = "index", repair: bool = True) -> RecordScan:
    """Records of a JSONL file, line by line.

    - A torn last line (no trailing newline, or an undecodable last line: a killed write) is dropped and, with
      ``repair``, cut off the file.
    - A damaged line before the last is *not* a kill: only that line is lost. With ``repair`` it is appended to
      ``<file>.quarantine`` (with its line number) and the file is rewritten atomically without it, so the rows
      after it stay and the row it held is simply missing (a resumed run makes it again).
    - A later duplicate of a key is ignored (counted), so a record is never counted twice.
    """
    scan = RecordScan()
    if not path.exists():
        return scan
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" for a whole file, else a torn write
    scan.torn_bytes = len(tail)
    decoded: list[tuple[int, bytes, dict | None]] = []
    for lineno, line in enumerate(lines, 1):
        try:
            rec = _decode(line)
        except ValueError:
            decoded.append((lineno, line, None))
            scan.quarantined.append((lineno, line))
            continue
        decoded.append((lineno, line, rec))
    if scan.quarantined and scan.quarantined[-1][0] == len(lines) and not tail:
        # the last whole line is undecodable: treat it as the torn write it almost certainly is
        lineno, line = scan.quarantined.pop()
        decoded.pop()
        scan.torn_bytes = len(line) + 1
    seen: set = set()
    for _, _, rec in decoded:
        if rec is None:
            continue
        k = rec.get(key)
        if k in seen:
            scan.duplicates += 1
            scan.duplicate_keys.append(k)
            continue
        seen.add(k)
        scan.records.append(rec)
    if repair and scan.quarantined:
        bad = {n for n, _ in scan.quarantined}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(quarantine_path(path), "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"line": n, "file": path.name, "time": stamp,
                                        "text": raw.decode("utf-8", errors="replace")}, ensure_ascii=False) + "\n"
                            for n, raw in scan.quarantined))
            f.flush()
            os.fsync(f.fileno())
        kept = b"".join(line + b"\n" for n, line, _ in decoded if n not in bad)
        _atomic_write_bytes(path, kept)
    elif repair and scan.torn_bytes:
        good_end = len(data) - scan.torn_bytes
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return scan


def read_records(path: Path, key: str = "index", repair: bool = True,
                 warn: Callable[[str], None] | None = None) -> list[dict]:
    """Records of a JSONL file (see :func:`scan_records`); what was dropped or set aside is passed to ``warn``."""
    scan = scan_records(path, key, repair)
    if warn is not None:
        for w in scan.warnings(path):
            warn(w)
    return scan.records


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RecordWriter:
    """Appends records durably; use as a context manager."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, records: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if text:
            self._f.write(text)
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunConflict(RuntimeError):
    """The output folder holds a run made with a different config, files sdft did not write, or is in use."""


class RunLocked(RunConflict):
    """Another process holds the run folder's lock."""


LOCK_NAME = ".sdft.lock"
_held: dict[str, list] = {}  # folder (resolved) -> [fd, depth]: this process's locks, so re-entering never blocks
_held_guard = threading.Lock()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid"):
        return "another process (it has not written its name yet)"
    where = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    return (f"pid {info['pid']}{where}, `{info.get('command', '?')}`, since {info.get('since', '?')}")


def _release_files(out: Path, created: bool) -> None:
    """On release the lock file goes (while still held: whoever opened it meanwhile finds it gone and starts
    again), and a folder this run created and left empty goes too (a failed start leaves no output folder)."""
    try:
        (out / LOCK_NAME).unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
    except OSError:
        pass


@contextmanager
def run_lock(out: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``<out>/.sdft.lock`` (an exclusive ``flock``) while a run writes ``out``; creates ``out``.

    A second process asking for the same folder gets :class:`RunLocked` at once, naming the holder (pid, host,
    command, since when). The kernel releases the lock when the holder exits or is killed, so a stale lock file
    never blocks. The same process may re-enter a folder it holds (an experiment running a stage in-process).
    On exit the lock file is removed, and ``out`` too if this call created it and the run left it empty."""
    import fcntl

    out = Path(out)
    key = os.path.realpath(out)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            reenter = True
        else:
            reenter = False
    if reenter:
        try:
            yield out
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never O_TRUNC: the holder's name is in there
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"{out}: in use by another sdft run ({_holder(path)}); two processes must never write "
                            "one run folder: wait for it to finish, stop it, or choose another --out") from None
        except OSError as e:  # a filesystem without flock (some network mounts): run, but say it is unguarded
            import errno
            import warnings

            if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            warnings.warn(f"{out}: this filesystem cannot lock files ({e.strerror}); nothing stops a second "
                          "process from writing this run folder at the same time", stacklevel=3)
        try:  # the file may have been removed (and the folder with it) between open and flock: take it again
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        out.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "command": command or " ".join(["sdft" if i == 0 and a.endswith(("sdft", "__main__.py")) else a
                                            for i, a in enumerate(sys.argv)])[:500],
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield out
    finally:
        with _held_guard:
            del _held[key]
        try:
            _release_files(out, created)
        finally:
            os.close(fd)  # releases the lock (after any removal, so no one can take a lock on a removed file)


def is_sdft_run(cfg_path: Path) -> bool:
    """Whether ``cfg_path`` is a run config sdft wrote (a JSON object with the run's fingerprint)."""
    try:
        doc = read_json(cfg_path)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("fingerprint"), dict)


def guard_run_folder(out: Path, fingerprint: dict, overwrite: bool, outputs: Iterable[str],
                     config_name: str = "config.json") -> None:
    """Refuse to mix runs: if ``out`` holds a run whose fingerprint differs, raise (naming the differing keys)
    unless ``overwrite``, in which case the old ``outputs`` (and their quarantine files) are removed.

    ``--overwrite`` only ever removes an sdft run's own files: a folder whose ``config_name`` sdft did not write
    (e.g. a model folder's config.json), or which holds files with output names but no run config (e.g. a
    ``results.md`` of one's own), is refused and left as it is."""
    cfg_path = out / config_name
    outputs = list(outputs)
    if cfg_path.exists():
        if not is_sdft_run(cfg_path):
            raise RunConflict(f"{out}: its {config_name} was not written by sdft (no run fingerprint in it); "
                              "nothing there is written or removed, even with --overwrite: choose another --out")
        old = read_json(cfg_path)["fingerprint"]
        if old == fingerprint:
            return
        if not overwrite:
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise RunConflict(f"{out}: already holds a run made with a different config (differs in: "
                              f"{', '.join(diff)}); choose another --out or pass --overwrite")
    else:
        present = [o for o in outputs if (out / o).exists()]
        if not present:
            return
        if overwrite:
            raise RunConflict(f"{out}: holds {', '.join(present)} but no {config_name} of an sdft run, so sdft cannot "
                              "tell they are its own; --overwrite removes only an sdft run's files: move them away or "
                              "choose another --out")
        raise RunConflict(f"{out}: holds earlier results ({', '.join(present)}) without {config_name}; move them away "
                          "or choose another --out")
    import shutil

    for name in outputs + [config_name]:
        for p in (out / name, quarantine_path(out / name)):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
