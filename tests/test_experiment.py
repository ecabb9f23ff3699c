"""`sdft experiment` on the tiny model: the DAG runs, caches, re-runs only what a changed knob touches, and
writes a report (markdown + self-contained HTML)."""

import json
from pathlib import Path

import pytest
import yaml

from sdft.options import ConfigError
from sdft.experiment import load_experiment, plan, run_experiment
from sdft.reporting.report import forgetting_table
from sdft.stats import mcnemar_exact


def write_cfg(tmp_path, tiny_model_dir, **extra):
    data = tmp_path / "gsm.json"
    data.write_text(json.dumps([{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is {2 * i}."}
                                for i in range(1, 9)]))
    cfg = {"name": "tiny", "out": str(tmp_path / "exp"), "model": str(tiny_model_dir), "data": str(data),
           "task": "gsm8k", "methods": ["seed", "vanilla", "sdft"], "seeds": [1],
           "distill": {"max_new_tokens": 4, "decoding": "greedy", "backend": "hf"},
           "train": {"max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1},
           "eval": {"tasks": ["gsm8k", "advbench"], "limit": 3, "backend": "hf", "max_new_tokens": 4},
           "shift_task": "advbench", **extra}
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_experiment_runs_caches_and_reruns_only_what_changed(tmp_path, tiny_model_dir):
    p = write_cfg(tmp_path, tiny_model_dir)
    cfg = load_experiment(p)
    stages = plan(cfg)
    assert [s.kind for s in stages] == ["eval", "distill", "gap", "train", "eval", "train", "eval", "shift", "shift"]
    logs = []
    report = run_experiment(cfg, progress=False, log=logs.append)
    assert report.exists() and (report.parent / "report.md").exists()
    html = report.read_text()
    assert "<table>" in html and "Scores by arm" in html
    md = (report.parent / "report.md").read_text()
    assert "vanilla → sdft" in md and "Seed model → each fine-tuned arm" in md and "McNemar" in md and "Drift from the seed" in md and "Distribution gap" in md
    assert (report.parent / "report" / "shift-cosine.png").exists() and "data:image/png;base64" in html
    assert all(s.done(Path(cfg.out)) for s in stages)
    logs.clear()
    run_experiment(cfg, progress=False, log=logs.append)
    assert "0 stage(s) ran, 9 cached" in logs[-1]
    # changing an eval knob re-runs the three evals only
    p2 = write_cfg(tmp_path, tiny_model_dir, eval={"tasks": ["gsm8k", "advbench"], "limit": 4, "backend": "hf",
                                                   "max_new_tokens": 4})
    logs.clear()
    run_experiment(load_experiment(p2), progress=False, log=logs.append)
    assert "5 stage(s) ran, 4 cached" in logs[-1]
    # dry run prints the plan with cached/pending
    logs.clear()
    run_experiment(load_experiment(p2), dry_run=True, log=logs.append)
    assert all("cached" in l for l in logs)


def test_unknown_keys_fail_with_the_section(tmp_path, tiny_model_dir):
    p = write_cfg(tmp_path, tiny_model_dir, train={"learning_rat": 1})
    with pytest.raises(ConfigError, match=r"\[train\].*learning_rat"):
        load_experiment(p)
    p = write_cfg(tmp_path, tiny_model_dir, methods=["seed", "nope"])
    with pytest.raises(ConfigError, match="nope"):
        load_experiment(p)


def test_sweeps_expand_and_nest(tmp_path, tiny_model_dir):
    cfg = load_experiment(write_cfg(tmp_path, tiny_model_dir, num_samples=[2, 4], mix_ratios=[0.5], seeds=[1, 2]))
    st = plan(cfg)
    assert sum(s.kind == "distill" for s in st) == 2  # one per seed
    assert sum(s.kind == "train" for s in st) == 2 * 2 * 3  # seeds × sizes × (vanilla, sdft, sdft-mix0.5)
    assert len({s.key for s in st}) == len(st)


def test_mcnemar():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) < 0.01
    assert mcnemar_exact(2, 3) == pytest.approx(1.0)


def test_forgetting_table_pairs_each_arm_with_the_seed_model(tmp_path):
    """Seed → arm on the same items: Δ, the discordant counts and McNemar's p, for every fine-tuned arm."""
    def ev(arm, correct):
        folder = tmp_path / arm
        (folder / "advbench").mkdir(parents=True)
        (folder / "advbench" / "samples.jsonl").write_text(
            "".join(json.dumps({"index": i, "correct": c}) + "\n" for i, c in enumerate(correct)))
        return {"meta": {"arm": arm, "seed": 1}, "folder": str(folder),
                "results": {"advbench": {"score": sum(correct) / len(correct), "n": len(correct)}}}

    seed = [True] * 10
    data = {"datasets": [{}], "evals": [ev("seed", seed), ev("vanilla", [False] * 8 + [True] * 2),
                                         ev("sdft", [True] * 9 + [False])]}
    header, rows = forgetting_table(data)
    assert header[0] == "arm" and "McNemar p" in header
    by_arm = {r[0]: r for r in rows}
    assert set(by_arm) == {"vanilla", "sdft"} and [r[0] for r in rows] == ["vanilla", "sdft"]
    assert by_arm["vanilla"][4] == "100.0 → 20.0 (-80.0)" and by_arm["vanilla"][5] == "8 / 0"
    assert by_arm["vanilla"][6] == f"{mcnemar_exact(8, 0):.3g}" and float(by_arm["vanilla"][6]) < 0.01
    assert by_arm["sdft"][5] == "1 / 0" and float(by_arm["sdft"][6]) == pytest.approx(1.0)
    assert forgetting_table({"datasets": [{}], "evals": data["evals"][1:]}) == ([], [])  # no seed model evaluated


def test_several_datasets_plan_run_and_report_side_by_side(tmp_path, tiny_model_dir):
    other = tmp_path / "gsm-b.json"
    other.write_text(json.dumps([{"question": f"What is {i} times 2?", "answer": f"{i}*2={2 * i}\nThe answer is {2 * i}."}
                                 for i in range(1, 7)]))
    p = write_cfg(tmp_path, tiny_model_dir, mix_ratios=[0.5], datasets=[
        {"name": "plus", "data": str(tmp_path / "gsm.json"), "task": "gsm8k"},
        {"name": "times", "data": str(other), "task": "gsm8k", "train": {"max_steps": 1}}])
    cfg = load_experiment(p)
    stages = plan(cfg)
    assert sum(s.kind == "distill" for s in stages) == 2 and sum(s.kind == "train" for s in stages) == 6
    assert sum(s.kind == "eval" for s in stages) == 7  # one seed eval shared by both training sets
    trains = {s.meta["dataset"]: s.config for s in stages if s.kind == "train" and s.meta["arm"] == "vanilla"}
    assert trains["plus"].max_steps == 2 and trains["times"].max_steps == 1  # per-dataset train refines the shared
    assert len({s.key for s in stages}) == len(stages)
    # the single-dataset form keeps its stage keys (existing runs stay cached)
    single = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir)))
    one = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, datasets=[
        {"name": "gsm8k", "data": str(tmp_path / "gsm.json"), "task": "gsm8k"}])))
    assert [s.key for s in single] == [s.key for s in one]

    report = run_experiment(cfg, progress=False, log=lambda m: None)  # (write_cfg above rewrote the file)
    md = (report.parent / "report.md").read_text()
    assert "trained on" in md and "| plus |" in md and "| times |" in md
    assert "times: vanilla" in md  # drift rows name their training set
    assert (report.parent / "report" / "mix-gsm8k.png").exists()  # 0 / 0.5 / 1 per training set


@pytest.mark.parametrize("bad, match", [
    ([{"name": "a", "data": "x.json"}], r"\[datasets\]\[0\]: missing task"),
    ([{"name": "a", "data": "x", "task": "gsm8k", "epochs": 3}], r"\[datasets\]\[0\]: unknown key\(s\) epochs"),
    ([{"name": "a", "data": "x", "task": "gsm8k", "train": {"lr": 1}}], r"\[datasets\]\[0\] \[train\]: unknown key"),
    ([{"name": "a", "data": "x", "task": "gsm8k"}, {"name": "a", "data": "y", "task": "gsm8k"}], "duplicate name"),
])
def test_bad_dataset_entries_name_the_entry(tmp_path, tiny_model_dir, bad, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(write_cfg(tmp_path, tiny_model_dir, datasets=bad))
