"""The tiny experiment through the ray executor (a local 2-CPU Ray cluster) and the slurm executor (submitit's
local executor): the same scores as the local loop, independent stages side by side, and a worker killed in the
middle of its distillation retried without re-running finished stages or duplicating rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdft.experiment import load_experiment, plan, run_experiment
from sdft.executors import make_executor

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


def _records(out: Path) -> dict[str, dict]:
    return {r["label"]: r for r in (json.loads(p.read_text()) for p in (out / "stages").glob("*/STAGE.json"))}


def _scores(out: Path) -> dict[str, dict]:
    """Per eval stage (by label): the score of every task."""
    recs = _records(out)
    return {label: {r["task"]: r["score"] for r in json.loads((out / "stages" / f"eval-{rec['key']}" /
                                                               "results.json").read_text())}
            for label, rec in recs.items() if rec["kind"] == "eval"}


def _overlap(a: dict, b: dict) -> bool:
    return a["started"] < b["ended"] and b["started"] < a["ended"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_model_dir):
    from test_experiment import write_cfg

    tmp = tmp_path_factory.mktemp("local")
    cfg = load_experiment(write_cfg(tmp, tiny_model_dir))
    run_experiment(cfg, progress=False, log=lambda m: None)
    return Path(cfg.out)


def _faulty_workers(monkeypatch) -> None:
    """Workers (Ray's and submitit's processes inherit this environment) can import stage_faults."""
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


def _assert_resumed_after_the_kill(out: Path) -> None:
    assert (out / "killed-once").exists()  # a worker did die in the middle of the distillation
    (dist,) = [p for p in (out / "stages").glob("distill-*")]
    rows = [json.loads(line) for line in (dist / "rows.jsonl").read_text().splitlines() if line.strip()]
    assert sorted(r["index"] for r in rows) == list(range(8))  # every row once: none lost, none duplicated
    manifest = json.loads((dist / "manifest.json").read_text())
    assert manifest["this_session"]["rows"] == 5  # the retry made only the 5 rows the killed worker had not


def test_ray_executor_matches_local_runs_in_parallel_and_survives_a_killed_worker(tmp_path, tiny_model_dir,
                                                                                   local_run, monkeypatch):
    pytest.importorskip("ray")
    from test_experiment import write_cfg

    from sdft import api

    # 1. the whole experiment on a local 2-CPU Ray cluster, as `sdft experiment --executor ray` runs it
    p = write_cfg(tmp_path, tiny_model_dir, executor={"num_cpus": 2})
    logs: list[str] = []
    report = api.run_experiment(p, executor="ray", log=logs.append)
    out = Path(load_experiment(p).out)
    assert report.exists() and any("ray: local cluster: 2 CPUs" in m for m in logs)
    assert _scores(out) == _scores(local_run)  # greedy decoding: the same scores per eval stage
    recs = _records(out)
    assert len(recs) == 9
    # independent stages ran side by side: the seed model's eval next to the distillation, the two arms' training
    assert _overlap(recs["eval seed model"], recs["distill seed=1"])
    assert _overlap(recs["train vanilla seed=1"], recs["train sdft seed=1"])
    assert len({r["pid"] for r in recs.values()}) == 2  # two workers (2 CPUs, 1 per stage)

    # 2. a worker killed mid-distillation: Ray retries the task, which resumes the stage's rows
    _faulty_workers(monkeypatch)
    from stage_faults import run_stage_killing_once

    (tmp_path / "kill").mkdir()
    p2 = write_cfg(tmp_path / "kill", tiny_model_dir, distill={"max_new_tokens": 4, "decoding": "greedy",
                                                               "backend": "hf", "chunk_size": 1})
    cfg = load_experiment(p2)
    root = Path(cfg.out)
    stages = plan(cfg)
    ran, cached = make_executor({"kind": "ray", "num_cpus": 2}).run(
        stages, root, run_stage_killing_once, by_key={s.key: s for s in stages}, log=logs.append, progress=False)
    assert (ran, cached) == (9, 0)
    _assert_resumed_after_the_kill(root)
    seed_eval = _records(root)["eval seed model"]
    logs.clear()
    run_experiment(cfg, progress=False, log=logs.append)  # the re-run: every stage cached, the report written
    assert "0 stage(s) ran, 9 cached" in logs[-1]
    assert _records(root)["eval seed model"] == seed_eval
    assert _scores(root) == _scores(local_run)


def test_slurm_executor_through_submitit_local(tmp_path, tiny_model_dir, local_run, monkeypatch):
    pytest.importorskip("submitit")
    from test_experiment import write_cfg

    _faulty_workers(monkeypatch)
    from stage_faults import run_stage_killing_once

    spec = {"kind": "slurm", "cluster": "local", "poll_s": 0.5, "max_parallel": 2, "time_min": 20}
    p = write_cfg(tmp_path, tiny_model_dir, executor=spec,
                  distill={"max_new_tokens": 4, "decoding": "greedy", "backend": "hf", "chunk_size": 1})
    cfg = load_experiment(p)
    root = Path(cfg.out)
    stages = plan(cfg)
    logs: list[str] = []
    ran, cached = make_executor(cfg.executor).run(stages, root, run_stage_killing_once,
                                                  by_key={s.key: s for s in stages}, log=logs.append, progress=False)
    assert (ran, cached) == (9, 0)
    assert any("ended without a result; resubmitting" in m for m in logs)
    _assert_resumed_after_the_kill(root)
    assert (root / "submitit").is_dir()
    logs.clear()
    run_experiment(cfg, progress=False, log=logs.append)
    assert "0 stage(s) ran, 9 cached" in logs[-1]
    assert _scores(root) == _scores(local_run)
