"""Scoring a predictions file: records, results.json / results.md, the Wilson interval, and clear errors."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import pytest

import sdft.evaluation.scoring as scoring
from sdft.data import DataError
from sdft.evaluation.benchmarks import get_eval_task
from sdft.evaluation.scoring import read_predictions, score_predictions
from sdft.stats import wilson_interval


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_doctests():
    from sdft import stats
    from sdft.evaluation import tables

    for module in (stats, tables):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module


@pytest.mark.parametrize("k,n,lo,hi", [
    (50, 100, 0.403832, 0.596168), (0, 10, 0.0, 0.277533), (10, 10, 0.722467, 1.0), (1, 3, 0.061492, 0.792341),
    (294, 1000, 0.266594, 0.322983),
])
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-6)


def test_wilson_interval_properties():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in (1, 7, 100, 1319):
        for k in range(0, n + 1, max(1, n // 7)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            lo2, hi2 = wilson_interval(n - k, n)
            assert math.isclose(lo, 1 - hi2, abs_tol=1e-12) and math.isclose(hi, 1 - lo2, abs_tol=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_score_gsm8k_predictions(tmp_path):
    task = get_eval_task("gsm8k")
    samples = task.load()
    preds = write_jsonl(tmp_path / "preds.jsonl", [
        {"index": 2, "output": "so the answer is 12,000 dollars... " + samples[2].meta["label"], "finish": "stop"},
        {"index": 0, "output": "Janet makes 9 * 2 = $18.00 every day."},
        {"index": 1, "output": "It takes 2.5 bolts.", "prompt": "MY PROMPT"},
    ])
    results = score_predictions("gsm8k", preds, tmp_path / "out")
    assert results["task"] == "gsm8k" and results["metric"] == "accuracy"
    assert (results["n"], results["correct"]) == (3, 2) and results["score"] == pytest.approx(2 / 3)
    assert results["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]  # in index order
    assert set(records[0]) == {"index", "prompt", "output", "extracted", "gold", "correct"}
    assert records[0]["prompt"] == task.prompt(samples[0], prompt_format="raw", tokenizer=None, layout="standard")
    assert records[1]["prompt"] == "MY PROMPT"
    assert [(r["extracted"], r["gold"], r["correct"]) for r in records] == [
        ("18", "18", True), (None, "3", False), (samples[2].gold, samples[2].gold, True)]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| gsm8k | accuracy | 66.67% |" in md and "| 2 / 3 |" in md


def test_score_every_openfunctions_gold_is_perfect(tmp_path):
    samples = get_eval_task("openfunctions").load()
    preds = write_jsonl(tmp_path / "p.jsonl", [{"index": s.index, "output": s.gold} for s in samples])
    results = score_predictions("openfunctions", preds, tmp_path / "out")
    assert (results["score"], results["n"]) == (1.0, 112)


def test_score_advbench_jailbreak(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"index": 0, "output": "I cannot help with that."},
                                               {"index": 519, "output": "Sure, here is how to do it"},
                                               {"index": 7, "output": "i'm sorry"}])
    results = score_predictions("advbench-jailbreak", preds, tmp_path / "out")
    assert (results["correct"], results["n"], results["metric"]) == (1, 3, "safe rate")
    records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert records[0]["extracted"] == "I cannot" and records[0]["gold"] is None
    assert "describing." in records[0]["prompt"]  # the suffixed goal


def test_score_humaneval_records_sandbox_status(tmp_path, monkeypatch):
    samples = get_eval_task("humaneval").load()
    preds = write_jsonl(tmp_path / "p.jsonl", [{"index": 0, "output": "\n" + samples[0].gold},
                                               {"index": 1, "output": "\n    return []\n"},
                                               {"index": 2, "output": "\n    while True:\n        pass\n"}])
    monkeypatch.setattr("sdft.evaluation.benchmarks.humaneval.TIMEOUT", 2.0)  # the endless loop ends sooner
    results = score_predictions("humaneval", preds, tmp_path / "out", workers=2)
    records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["status"]) for r in records] == [(True, "passed"), (False, "failed"),
                                                              (False, "timeout")]
    assert results["metric"] == "pass@1" and results["correct"] == 1


def test_score_with_user_data(tmp_path):
    data = tmp_path / "mini.json"
    data.write_text(json.dumps([{"instruction": "1+1?", "output": "The answer is 2"},
                                {"instruction": "2+2?", "output": "The answer is 4"}]))
    preds = write_jsonl(tmp_path / "p.jsonl", [{"index": 0, "output": "2"}, {"index": 1, "output": "5"}])
    results = score_predictions("multiarith", preds, tmp_path / "out", data_path=data)
    assert (results["correct"], results["n"], results["data"]) == (1, 2, str(data))
    with pytest.raises(DataError, match=r"p.jsonl: line 1: index 5 is not a row of .*mini.json \(2 rows"):
        score_predictions("multiarith", write_jsonl(tmp_path / "p.jsonl", [{"index": 5, "output": "2"}]),
                          tmp_path / "out2", data_path=data)


@pytest.mark.parametrize("lines,message", [
    (['{"index": 0, "output": "a"}', "{oops"], r"p.jsonl: line 2: invalid JSON"),
    (['{"index": 0, "output": "a"}', "", '{"index": 0, "output": "b"}'],
     r"p.jsonl: line 3: index 0 is a duplicate \(already on line 1\)"),
    (['{"index": 1319, "output": "a"}'], r"p.jsonl: line 1: index 1319 is not a row of .* \(1319 rows"),
    (['{"index": -1, "output": "a"}'], r"p.jsonl: line 1: index -1 is not a row"),
    (['{"index": "3", "output": "a"}'], r"p.jsonl: line 1: field 'index': expected an integer"),
    (['{"index": true, "output": "a"}'], r"p.jsonl: line 1: field 'index'"),
    (['{"output": "a"}'], r"p.jsonl: line 1: field 'index'"),
    (['{"index": 0, "output": 5}'], r"p.jsonl: line 1: field 'output': expected a string, got int"),
    (['{"index": 0}'], r"p.jsonl: line 1: field 'output'"),
    (['[0, "a"]'], r"p.jsonl: line 1: expected an object"),
    ([""], r"p.jsonl: no predictions"),
])
def test_bad_predictions_name_file_and_line(tmp_path, lines, message):
    preds = write_jsonl(tmp_path / "p.jsonl", lines)
    with pytest.raises(DataError, match=message):
        score_predictions("gsm8k", preds, tmp_path / "out")
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_predictions_file_and_unknown_task(tmp_path):
    with pytest.raises(DataError, match="predictions file not found"):
        read_predictions(tmp_path / "none.jsonl", 10)
    with pytest.raises(ValueError, match="unknown evaluation task"):
        score_predictions("gsm9k", tmp_path / "none.jsonl", tmp_path / "out")


@pytest.mark.parametrize("mode", ["guard", "bwrap"])
def test_score_humaneval_records_the_sandbox_mode(tmp_path, mode):
    """``--sandbox`` (CLI), ``sandbox=`` (api.score, score_predictions): each sample and results.json record it."""
    from typer.testing import CliRunner

    from sdft import api
    from sdft.cli import app
    from sdft.evaluation.sandbox import bwrap_status

    if mode == "bwrap" and not bwrap_status()[0]:
        pytest.skip(f"bwrap sandbox unavailable here: {bwrap_status()[1]}")
    samples = get_eval_task("humaneval").load()
    preds = write_jsonl(tmp_path / "p.jsonl", [{"index": 0, "output": "\n" + samples[0].gold},
                                               {"index": 1, "output": "\n    return []\n"}])
    results = api.score("humaneval", preds, tmp_path / "api", sandbox=mode)
    records = [json.loads(line) for line in (tmp_path / "api" / "samples.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["sandbox"]) for r in records] == [(True, mode), (False, mode)]
    assert results["sandbox"] == mode == json.loads((tmp_path / "api" / "results.json").read_text())["sandbox"]
    r = CliRunner().invoke(app, ["score", "--task", "humaneval", "--predictions", str(preds), "--out",
                                 str(tmp_path / "cli"), "--sandbox", mode])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["sandbox"] == mode
    assert "sandbox" not in score_predictions("gsm8k", write_jsonl(tmp_path / "g.jsonl", [{"index": 0, "output": "1"}]),
                                              tmp_path / "gsm8k", sandbox=mode)  # no programs, no mode
