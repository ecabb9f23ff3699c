"""Crash-safe run files: an append-only JSONL of finished records and atomically replaced JSON files.

A record is appended as whole lines with one ``write`` followed by ``fsync``; a process killed mid-write can
leave at most one partial last line, which :func:`read_records` drops (and truncates) on resume. Every other
file is written to a temporary name and renamed, so it is either the old or the new version, never half.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


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


def read_records(path: Path, key: str = "index", repair: bool = True) -> list[dict]:
    """Records of a JSONL file; a torn last line (from a kill) is dropped and, with ``repair``, cut off.
    Later duplicates of a key are ignored, so a record is never counted twice."""
    if not path.exists():
        return []
    data = path.read_bytes()
    good_end = 0
    records: list[dict] = []
    seen: set = set()
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # no newline: torn write
        line = data[pos:nl]
        try:
            rec = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            break  # torn in the middle (cannot happen with single writes, but never trust a file)
        pos = nl + 1
        good_end = pos
        if rec is None:
            continue
        if rec.get(key) not in seen:
            seen.add(rec.get(key))
            records.append(rec)
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


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
    """The output folder holds a run made with a different config."""


def guard_run_folder(out: Path, fingerprint: dict, overwrite: bool, outputs: Iterable[str],
                     config_name: str = "config.json") -> None:
    """Refuse to mix runs: if ``out`` holds a run whose fingerprint differs, raise (naming the differing keys)
    unless ``overwrite``, in which case the old ``outputs`` are removed."""
    cfg_path = out / config_name
    outputs = list(outputs)
    if cfg_path.exists():
        old = read_json(cfg_path).get("fingerprint", {})
        if old == fingerprint:
            return
        if not overwrite:
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise RunConflict(f"{out}: already holds a run made with a different config (differs in: "
                              f"{', '.join(diff)}); choose another --out or pass --overwrite")
    elif not overwrite and any((out / o).exists() for o in outputs):
        raise RunConflict(f"{out}: holds earlier results without {config_name}; use --overwrite to start again")
    import shutil

    for name in outputs + [config_name]:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
