"""Executors without Ray or submitit: settings validation, the local loop, the DAG readiness rule, the stage mark,
and that nothing of Ray or submitit is imported unless chosen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.options import ConfigError
from sdft.executors import make_executor
from sdft.executors.common import DONE_FILE, executor_spec, finish_stage, ready, stage_gpus
from sdft.executors.local import LocalExecutor
from sdft.executors.slurm import SubmititExecutor


class FakeStage:
    def __init__(self, kind, key, deps=()):
        self.kind, self.key, self.label, self.deps, self.meta = kind, key, f"{kind} {key}", list(deps), {}

    def folder(self, root):
        return Path(root) / "stages" / f"{self.kind}-{self.key}"

    def done(self, root):
        return (self.folder(root) / DONE_FILE).exists()


def test_done_mark_is_the_experiments():
    from sdft.experiment import DONE

    assert DONE_FILE == DONE


def test_spec_validation_names_the_key():
    with pytest.raises(ConfigError, match="unknown key.*partitoin"):
        executor_spec({"kind": "slurm", "partitoin": "gpu"})
    with pytest.raises(ConfigError, match="'kind' is 'k8s'"):
        make_executor({"kind": "k8s"})
    with pytest.raises(ConfigError, match="gpus_per_stage: unknown stage kind.*trian"):
        executor_spec({"gpus_per_stage": {"trian": 1}})
    spec = executor_spec({"kind": "ray", "gpus_per_stage": {"eval": 2}})
    assert stage_gpus(spec, "eval", True) == 2 and stage_gpus(spec, "train", True) == 1
    assert stage_gpus(spec, "train", False) == 0 and stage_gpus(spec, "shift", True) == 0


def test_experiment_dry_run_checks_the_executor(tmp_path, tiny_model_dir):
    from test_experiment import write_cfg

    from sdft.experiment import load_experiment, run_experiment

    cfg = load_experiment(write_cfg(tmp_path, tiny_model_dir, executor={"kind": "ray", "adress": "auto"}))
    with pytest.raises(ConfigError, match=r"\[executor\].*adress"):
        run_experiment(cfg, dry_run=True, log=lambda m: None)


def test_local_executor_runs_pending_stages_in_order_and_marks_them(tmp_path):
    a, b, c = FakeStage("distill", "a"), FakeStage("train", "b", ["a"]), FakeStage("shift", "c", ["b"])
    finish_stage(lambda *args: None, a, tmp_path, {}, print, False)  # a is done already
    seen = []
    ran, cached = LocalExecutor().run([a, b, c], tmp_path, lambda st, *rest: seen.append(st.key),
                                      by_key={}, log=lambda m: None, progress=False)
    assert (ran, cached) == (2, 1) and seen == ["b", "c"]
    rec = json.loads((c.folder(tmp_path) / DONE_FILE).read_text())
    assert rec["started"] <= rec["ended"] and rec["pid"] and rec["host"] and rec["label"] == "shift c"


def test_ready_waits_for_unfinished_dependencies():
    a, b, c = FakeStage("distill", "a"), FakeStage("train", "b", ["a"]), FakeStage("eval", "c")
    assert [s.key for s in ready([a, b, c], {"a", "b", "c"})] == ["a", "c"]
    assert [s.key for s in ready([b], {"b"})] == ["b"]


def test_slurm_job_parameters_per_stage_kind():
    ex = SubmititExecutor(executor_spec({"kind": "slurm", "partition": "gpu", "time_min": 600,
                                         "time_min_per_stage": {"eval": 120}, "gpus_per_stage": {"train": 2},
                                         "mem_gb_per_stage": {"train": 64}, "slurm": {"slurm_account": "lab"}}))
    p = ex.parameters("train")
    assert p["gpus_per_node"] == 2 and p["timeout_min"] == 600 and p["slurm_partition"] == "gpu"
    assert p["mem_gb"] == 64 and p["slurm_account"] == "lab"
    assert ex.parameters("eval")["timeout_min"] == 120 and ex.parameters("eval")["gpus_per_node"] == 0


def test_local_run_imports_neither_ray_nor_submitit(tmp_path, tiny_model_dir):
    """Ray and submitit are optional extras: a whole local experiment (and the CLI module) never imports them."""
    from test_experiment import write_cfg

    p = write_cfg(tmp_path, tiny_model_dir, gap=False, shift_task=None, methods=["seed", "sdft"])
    code = ("import sys\nimport sdft.cli, sdft.api, sdft.executors, sdft.generation\n"
            "from sdft.experiment import load_experiment, run_experiment\n"
            f"run_experiment(load_experiment({str(p)!r}), progress=False, log=lambda m: None)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'submitit'))\n"
            "assert not bad, bad\nprint('clean')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr[-3000:]
