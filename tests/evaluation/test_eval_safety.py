"""`sdft eval` and `sdft train` folders: one process at a time (the second is refused at once), a failed start
leaves no folder, --overwrite never removes a file sdft did not write, a damaged generation costs one answer
(issue #15 items 2, 3, 6)."""

import json
import subprocess
import sys

import pytest

from sdft.config import EvalConfig, TrainConfig
from sdft.evaluation.evaluate import evaluate
from sdft.generation import Completion
from sdft.models import ModelError
from sdft.store import RunConflict, RunLocked, quarantine_path
from sdft.training import train


class Echo:
    name = "scripted"

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += len(prompts)
        return [Completion("The answer is 1.", "stop", 1, 1) for _ in prompts]

    def close(self):
        pass


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom sdft.store import run_lock\n"
                             "with run_lock(sys.argv[1], command='sdft eval --out held'):\n"
                             "    print('held', flush=True); time.sleep(600)", str(folder)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_folder_is_refused_by_eval_and_train(tmp_path, tokenizer):
    out = tmp_path / "held"
    proc = _holder(out)
    try:
        with pytest.raises(RunLocked, match=f"pid {proc.pid}"):
            evaluate(EvalConfig(out=str(out), tasks=("gsm8k",), limit=2), backend=Echo(), tokenizer=tokenizer,
                     progress=False, log=lambda m: None)
        with pytest.raises(RunLocked, match=f"pid {proc.pid}"):
            train(TrainConfig(data=str(tmp_path / "none"), out=str(out)), log=lambda m: None)
        assert [p.name for p in out.iterdir()] == [".sdft.lock"]
    finally:
        proc.kill()
        proc.wait()


def test_a_failed_eval_start_leaves_no_folder(tmp_path):
    with pytest.raises(ModelError):
        evaluate(EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k",), model="no-such-model"), progress=False,
                 log=lambda m: None)
    with pytest.raises(ValueError):
        evaluate(EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k", "no-such-task")), progress=False)
    assert not (tmp_path / "ev").exists()


def test_overwrite_leaves_foreign_results_alone(tmp_path, tokenizer):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.md").write_text("# my results\n")
    with pytest.raises(RunConflict, match="results.md"):
        evaluate(EvalConfig(out=str(out), tasks=("gsm8k",), limit=2, overwrite=True), backend=Echo(),
                 tokenizer=tokenizer, progress=False, log=lambda m: None)
    assert (out / "results.md").read_text() == "# my results\n" and len(list(out.iterdir())) == 1


def test_a_damaged_generation_costs_only_that_answer(tmp_path, tokenizer):
    cfg = EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k",), limit=4)
    evaluate(cfg, backend=Echo(), tokenizer=tokenizer, progress=False, log=lambda m: None)
    gen = tmp_path / "ev" / "gsm8k" / "generations.jsonl"
    lines = gen.read_text().splitlines()
    lines[1] = lines[1][:20]  # damaged in the middle
    gen.write_text("\n".join(lines) + "\n")
    be, logs = Echo(), []
    res = evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=logs.append)
    assert be.calls == 1 and res[0]["n"] == 4
    assert quarantine_path(gen).exists() and any("damaged line" in m for m in logs)
    assert sorted(json.loads(x)["index"] for x in gen.read_text().splitlines()) == [0, 1, 2, 3]
