"""The cost plan (`sdft experiment CONFIG --dry-run --estimate`): token counts per stage from the data, measured
lengths once a stage has rows, throughput profiles, and the DAG schedule on N GPUs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sdft.options import ConfigError
from sdft.estimate import Counter, StageCost, estimate_plan, parse_throughput, profiles, schedule
from sdft.experiment import load_experiment, run_experiment


def test_throughput_profiles_and_overrides():
    table = profiles()
    assert {"gpu-reference", "cpu"} <= set(table)
    assert all(p["gen"] > 0 and p["train"] > 0 and p["gen_source"] and p["train_source"] for p in table.values())
    assert "not measured here" in table["gpu-reference"]["status"] and "measured here" in table["cpu"]["status"]
    assert parse_throughput(None).gen == table["gpu-reference"]["gen"]
    assert parse_throughput("cpu").train == table["cpu"]["train"]
    tp = parse_throughput("gen=2500,train=3000")
    assert (tp.gen, tp.train, tp.score) == (2500, 3000, 9000) and "given" in tp.source
    assert parse_throughput("gen=100").train == table["gpu-reference"]["train"]
    for bad in ("gen=fast", "speed=3", "gen=-1", "nonsense"):
        with pytest.raises(ConfigError):
            parse_throughput(bad)


def test_schedule_is_list_scheduling_over_the_dag():
    st = [StageCost("distill", "d", "d", [], seconds=10), StageCost("eval", "e0", "e0", [], seconds=5),
          StageCost("train", "t1", "t1", ["d"], seconds=4), StageCost("train", "t2", "t2", ["d"], seconds=4),
          StageCost("train", "t3", "t3", ["d"], seconds=4), StageCost("shift", "s", "s", ["t1", "e0"], seconds=0)]
    assert schedule(st, 1) == 27  # everything in a row
    assert schedule(st, 2) == 18  # d | e0, then t1 | t2 once d is done, then t3
    assert schedule(st, 64) == 14  # the critical path d -> t


def test_counter_falls_back_to_characters(tmp_path):
    c = Counter(str(tmp_path / "no-such-model"), None)
    assert c.method.startswith("characters / 4") and c.mean(["abcd" * 10]) == 10


def test_tiny_experiment_estimate_counts_from_the_data_then_measures(tmp_path, tiny_model_dir):
    from test_experiment import write_cfg

    cfg = load_experiment(write_cfg(tmp_path, tiny_model_dir))
    plan = estimate_plan(cfg, gpus=2, throughput="gen=10,train=100")
    by = {s.label: s for s in plan.stages}
    assert "tokenizer" in plan.counting
    assert by["distill seed=1"].gen == 8 * 4 and "upper bound" in by["distill seed=1"].basis[0]
    assert by["eval seed model"].gen == (3 + 3) * 4  # two tasks, limit 3, max_new_tokens 4
    tr = by["train sdft seed=1"]
    assert tr.train > 0 and "2 steps x 2 rows" in tr.basis[0]
    assert by["gap seed=1"].score > 0 and by["shift sdft seed=1"].seconds == 0
    t = plan.totals()
    assert plan.wall_hours(1) == pytest.approx(plan.gpu_hours) and t["critical_hours"] <= t["wall_hours"]
    md = plan.markdown()
    assert "| 2 | distill seed=1 | 32 |" in md and "gen=10" in md
    run_experiment(cfg, progress=False, log=lambda m: None)
    measured = {s.label: s for s in estimate_plan(cfg, throughput="cpu").stages}["distill seed=1"]
    assert "mean of 8 done" in measured.basis[0] and measured.gen <= 8 * 4


def test_cli_estimate_prints_the_plan(tmp_path, tiny_model_dir):
    from test_experiment import write_cfg

    from sdft.cli import app

    res = CliRunner().invoke(app, ["experiment", str(write_cfg(tmp_path, tiny_model_dir)), "--dry-run",
                                   "--estimate", "--gpus", "4", "--throughput", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "Cost plan: tiny on 4 GPU(s)" in res.output and "GPU-hours" in res.output
    assert not (tmp_path / "exp").exists()  # a dry run writes nothing
