"""A distillation run folder is safe: one process at a time, damaged rows cost only themselves, a failed start
leaves nothing behind, and --overwrite never touches files sdft did not write (issue #15 items 2, 3, 6)."""

import json
import os
import subprocess
import sys
import time

import pytest

from sdft.config import DistillConfig
from sdft.distillation.distill import distill
from sdft.generation import Completion
from sdft.models import ModelError
from sdft.store import LOCK_NAME, RunConflict, quarantine_path

GSM = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is {2 * i}."}
       for i in range(1, 5)]


class Scripted:
    name = "scripted"

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts += prompts
        return [Completion(f"so {len(self.prompts)}", "stop", 10, 5) for _ in prompts]

    def close(self):
        pass


def _cfg(tmp_path, **kw):
    data = tmp_path / "gsm.json"
    data.write_text(json.dumps(GSM))
    return DistillConfig(**{"data": str(data), "out": str(tmp_path / "run"), "task": "gsm8k", "model": "unused", **kw})


def test_a_damaged_middle_row_is_set_aside_reported_and_made_again(tmp_path, tokenizer):
    cfg = _cfg(tmp_path)
    distill(cfg, backend=Scripted(), tokenizer=tokenizer, progress=False)
    rows_file = tmp_path / "run" / "rows.jsonl"
    lines = rows_file.read_bytes().split(b"\n")
    bad = lines[1][:25] + b"\xe9\x00 disk error"  # row 1 damaged in place; rows 2 and 3 follow it
    rows_file.write_bytes(b"\n".join(lines[:1] + [bad] + lines[2:]))
    logs, again = [], Scripted()
    res = distill(cfg, backend=again, tokenizer=tokenizer, progress=False, log=logs.append)
    assert len(again.prompts) == 1 and "What is 2 plus 2?" in again.prompts[0]  # exactly that row, made again
    idx = [json.loads(line)["index"] for line in rows_file.read_text().splitlines()]
    assert sorted(idx) == [0, 1, 2, 3] and len(idx) == 4  # every other row kept, none twice
    q = [json.loads(line) for line in quarantine_path(rows_file).read_text().splitlines()]
    assert len(q) == 1 and q[0]["line"] == 2 and "disk error" in q[0]["text"]
    info = res.manifest["rows_file"]
    assert info["quarantined"] == 1 and info["quarantined_lines"] == [2] and info["quarantined_ever"] == 1
    assert any("damaged line" in m and "line 2" in m for m in logs)
    assert res.summary["rows"] == 4 and len(json.loads((tmp_path / "run" / "distilled.json").read_text())) == 4


def test_a_failed_start_leaves_no_output_folder(tmp_path, tokenizer):
    with pytest.raises(ModelError):  # the model is looked up inside the run: the folder it made is removed
        distill(_cfg(tmp_path, model="no-such-model"), progress=False, log=lambda m: None)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="missing.json"):  # bad data fails before the folder exists
        distill(_cfg(tmp_path, data=str(tmp_path / "missing.json")), progress=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # a folder that was there before is never removed
    with pytest.raises(ModelError):
        distill(_cfg(tmp_path, model="no-such-model"), progress=False, log=lambda m: None)
    assert (tmp_path / "run").is_dir() and not list((tmp_path / "run").iterdir())


def test_overwrite_never_removes_files_sdft_did_not_write(tmp_path, tokenizer):
    out = tmp_path / "run"
    out.mkdir()
    (out / "distilled.json").write_text("[my own data]")
    for overwrite in (False, True):
        with pytest.raises(RunConflict, match="distilled.json"):
            distill(_cfg(tmp_path, overwrite=overwrite), backend=Scripted(), tokenizer=tokenizer, progress=False)
    assert (out / "distilled.json").read_text() == "[my own data]"
    assert sorted(p.name for p in out.iterdir()) == ["distilled.json"]


def _cli(*args):
    return [sys.executable, "-m", "sdft", *args]


def test_two_concurrent_distills_into_one_folder(tmp_path, tiny_model_dir):
    """The second `sdft distill --out` fails at once naming the first (pid), writes nothing, and the first
    finishes unaffected with every row once."""
    rows = [{"instruction": f"Say the number {i}.", "output": f"The number is {i}."} for i in range(120)]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "run"
    args = _cli("distill", "--data", str(data), "--out", str(out), "--model", str(tiny_model_dir),
                "--max-new-tokens", "8", "--chunk-size", "1", "--batch-size", "1", "--no-progress")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows_file = out / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (rows_file.exists() and rows_file.read_text().count("\n") >= 2):
        time.sleep(0.05)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in {"rows.jsonl", "manifest.json"}}
    lock = json.loads((out / LOCK_NAME).read_text())
    assert lock["pid"] == first.pid and "distill" in lock["command"]
    second = subprocess.run(args + ["--overwrite"], env=env, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run should still be running"
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in {"rows.jsonl", "manifest.json"}}
    assert after == before  # the second one wrote (and removed) nothing, --overwrite or not
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    idx = [json.loads(line)["index"] for line in rows_file.read_text().splitlines()]
    assert sorted(idx) == list(range(120))
    third = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)  # the lock went with it
    assert third.returncode == 0, third.stderr[-3000:]
