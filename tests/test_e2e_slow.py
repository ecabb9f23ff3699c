"""End to end on the embedded SmolLM2-135M (the real model): `sdft distill` on GSM8K rows through the CLI."""

import json
import os
import subprocess
import sys

import pytest

from sdft.distillation.checks import math_match

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["llamacpp"])
def test_distill_gsm8k_on_embedded_model(tmp_path, backend):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "sdft", "distill", "--data", "gsm8k_train", "--task", "gsm8k", "--limit", "12",
           "--model", "smollm2-135m", "--backend", backend, "--max-new-tokens", "256", "--out", str(out),
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "accepted" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"]["rows"] == 12
    assert m["model"]["name"] == "smollm2-135m" and m["prompt_format"] == "chat"
    assert m["this_session"]["tokens_per_s"] > 0
    rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(12))
    accepted = [r for r in rows if r["accepted"]]
    assert accepted, "a 135M model passes the GSM8K check on ~half the rows; none passing means a broken prompt"
    for r in rows:  # every decision is re-derivable from the record
        assert r["accepted"] == (r["output"] == r["distilled"].strip())
        if r["accepted"]:
            assert math_match(r["output"], r["original"])
        assert not r["distilled"].startswith("Great! Let's think step by step.")


def test_quick_experiment_end_to_end(tmp_path):
    """configs/demo-quick.yaml on SmolLM2: distill → gap → train (vanilla, SDFT, on-policy) → eval → shift →
    report, through the CLI."""
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "demo-quick.yaml"
    out = tmp_path / "quick"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "sdft", "experiment", str(cfg), "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in r.stdout
    md = (out / "report.md").read_text()
    for section in ("Scores by arm", "Vanilla → SDFT", "Drift from the seed", "Distribution gap", "Training",
                    "Vanilla → on-policy self-distillation (TRL)", "SDFT → on-policy self-distillation (TRL)"):
        assert section in md
    arms = {line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")}
    assert {"seed", "vanilla", "sdft", "onpolicy"} <= arms  # all four methods side by side
    stages = json.loads((out / "experiment.json").read_text())["stages"]
    assert all((Path(s["folder"]) / "STAGE.json").exists() for s in stages)


def test_eval_every_task_on_embedded_model(tmp_path):
    """`sdft eval` on 20 rows of every task with SmolLM2 (llama.cpp), the win rate judged by SmolLM2 itself:
    every task produces 20 scored samples, a results table, and resumes without regenerating."""
    from sdft.evaluation.benchmarks import EVAL_TASKS

    out = tmp_path / "ev"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tasks = sorted(EVAL_TASKS)
    cmd = [sys.executable, "-m", "sdft", "eval", "--model", "smollm2-135m", "--tasks", ",".join(tasks), "--limit",
           "20", "--max-new-tokens", "48", "--judge", "smollm2-135m", "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    res = {x["task"]: x for x in json.loads((out / "results.json").read_text())}
    assert set(res) == set(tasks)
    for t, x in res.items():
        assert x["backend"] == "llamacpp" and x["prompt_format"] == "chat"
        rows = [json.loads(l) for l in (out / t / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 20 and all(row["output"] is not None for row in rows)
        if t != "alpacaeval":
            assert x["n"] == 20 and 0.0 <= x["score"] <= 1.0 and x["correct"] == sum(row["correct"] for row in rows)
    assert res["alpacaeval"]["pairs"] == 20 and res["alpacaeval"]["judge"]["model"] == "smollm2-135m"
    assert (out / "alpacaeval" / "model_outputs.json").exists()
    assert "| gsm8k | accuracy |" in (out / "results.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    again_res = {x["task"]: x["score"] for x in json.loads((out / "results.json").read_text())}
    assert again_res == {t: x["score"] for t, x in res.items()}
    for t in tasks:  # nothing generated twice
        assert len((out / t / "generations.jsonl").read_text().splitlines()) == 20
