from sdft.store import RecordWriter, atomic_write_json, read_json, read_records


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    p = tmp_path / "rows.jsonl"
    with RecordWriter(p) as w:
        w.write([{"index": 0}, {"index": 1}])
    with open(p, "a") as f:
        f.write('{"index": 2, "out')  # a kill mid-write
    assert [r["index"] for r in read_records(p)] == [0, 1]
    assert p.read_text().endswith("}\n")  # truncated back to the last whole line
    with RecordWriter(p) as w:
        w.write([{"index": 2}, {"index": 1}])  # a duplicate is never counted twice
    assert [r["index"] for r in read_records(p)] == [0, 1, 2]


def test_atomic_json(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


# ---------------------------------------------------------------------------------- rows that never vanish
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from sdft.store import (LOCK_NAME, RunConflict, RunLocked, guard_run_folder, quarantine_path, run_lock,  # noqa: E402
                        scan_records)


def _rows(p, n):
    with RecordWriter(p) as w:
        w.write([{"index": i, "text": f"row {i}"} for i in range(n)])


def test_a_damaged_middle_line_costs_only_its_row(tmp_path):
    p = tmp_path / "rows.jsonl"
    _rows(p, 5)
    lines = p.read_bytes().split(b"\n")
    lines[2] = b'{"index": 2, "te\xff\x00garbage'  # damaged in place (not a kill: later rows follow)
    p.write_bytes(b"\n".join(lines))
    warnings = []
    assert [r["index"] for r in read_records(p, repair=False, warn=warnings.append)] == [0, 1, 3, 4]
    assert b"garbage" in p.read_bytes() and not quarantine_path(p).exists()  # repair=False writes nothing
    assert "line 3" in warnings[0] and "set aside" in warnings[0]
    scan = scan_records(p)  # repair: the line goes to the side file, the rest stays
    assert [r["index"] for r in scan.records] == [0, 1, 3, 4]
    assert scan.summary()["quarantined"] == 1 and scan.summary()["quarantined_lines"] == [3]
    q = [json.loads(line) for line in quarantine_path(p).read_text().splitlines()]
    assert len(q) == 1 and q[0]["line"] == 3 and "garbage" in q[0]["text"]
    assert [json.loads(line)["index"] for line in p.read_text().splitlines()] == [0, 1, 3, 4]
    assert scan_records(p).clean  # the file is whole again
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temporary left


def test_not_an_object_line_is_damaged_too_and_a_torn_last_line_is_still_cut(tmp_path):
    p = tmp_path / "rows.jsonl"
    _rows(p, 3)
    with open(p, "ab") as f:
        f.write(b"42\n" + b'{"index": 3}\n' + b'{"index": 4, "te\n')  # last whole line undecodable: torn
    scan = scan_records(p)
    assert [r["index"] for r in scan.records] == [0, 1, 2, 3]
    assert scan.summary()["quarantined_lines"] == [4] and scan.torn_bytes == len(b'{"index": 4, "te\n')
    assert p.read_bytes().endswith(b'{"index": 3}\n')


def test_duplicates_are_counted_and_the_first_kept(tmp_path):
    p = tmp_path / "rows.jsonl"
    with RecordWriter(p) as w:
        w.write([{"index": 0, "v": "first"}, {"index": 1}, {"index": 0, "v": "second"}])
    scan = scan_records(p)
    assert scan.duplicates == 1 and scan.duplicate_keys == [0] and scan.records[0]["v"] == "first"
    assert any("duplicate" in w for w in scan.warnings(p))


# ------------------------------------------------------------------------------ one process per run folder
HOLDER = """
import sys, time
from sdft.store import run_lock
with run_lock(sys.argv[1], command="sdft distill --out held"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunLocked, match=rf"pid {proc.pid}\b.*sdft distill --out held.*since") as e:
            with run_lock(out):
                pytest.fail("the lock was taken twice")
        assert time.perf_counter() - t0 < 1.0 and isinstance(e.value, RunConflict)
        assert [f.name for f in out.iterdir()] == [LOCK_NAME]  # nothing written by the refused one
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_never_blocks(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # its lock file stays ...
    with run_lock(out, command="next"):  # ... but the kernel released the lock with the process
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()  # released: the lock file goes


def test_the_same_process_may_reenter_and_a_bare_new_folder_is_removed(tmp_path):
    out = tmp_path / "new"
    with run_lock(out):
        with run_lock(out):  # an experiment running a stage in-process: no deadlock
            pass
        with run_lock(out / "stage"):  # another folder below: its own lock
            pass
    assert not out.exists()  # created here, left with nothing but the lock file: gone again
    kept = tmp_path / "kept"
    with run_lock(kept):
        (kept / "rows.jsonl").write_text("{}\n")
    assert (kept / "rows.jsonl").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with run_lock(existing):
        pass
    assert existing.is_dir()  # it was there before: never removed


# ------------------------------------------------------------------------ --overwrite removes only sdft's files
def test_overwrite_removes_only_an_sdft_runs_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.md").write_text("my own notes\n")
    with pytest.raises(RunConflict, match="results.md"):
        guard_run_folder(out, {"a": 1}, overwrite=False, outputs=["results.md", "results.json"])
    with pytest.raises(RunConflict, match="removes only an sdft run"):
        guard_run_folder(out, {"a": 1}, overwrite=True, outputs=["results.md", "results.json"])
    assert (out / "results.md").read_text() == "my own notes\n"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')  # e.g. a model folder
    with pytest.raises(RunConflict, match="not written by sdft"):
        guard_run_folder(model, {"a": 1}, overwrite=True, outputs=["rows.jsonl"])
    assert (model / "config.json").exists()
    run = tmp_path / "sdft-run"
    run.mkdir()
    atomic_write_json(run / "config.json", {"fingerprint": {"a": 1}})
    (run / "rows.jsonl").write_text("{}\n")
    quarantine_path(run / "rows.jsonl").write_text("{}\n")
    (run / "mine.txt").write_text("kept\n")
    guard_run_folder(run, {"a": 2}, overwrite=True, outputs=["rows.jsonl"])
    assert sorted(f.name for f in run.iterdir()) == ["mine.txt"]


def test_a_filesystem_without_locks_runs_with_a_warning(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.warns(UserWarning, match="cannot lock files"):
        with run_lock(tmp_path / "nfs"):
            pass
