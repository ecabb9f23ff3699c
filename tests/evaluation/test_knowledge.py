"""The lm-eval bridge, offline: MMLU from the shipped zip on the tiny random model, a user-data task on a
synthetic ARC file, and the OpenLLM tasks on real user data when present (skipped with the reason otherwise)."""

from __future__ import annotations

import doctest
import importlib
import json
import os
from pathlib import Path

import pytest

from conftest import SHARED
from sdft.data import DataError

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval)")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from sdft.evaluation.knowledge import (evaluate_knowledge, lm_eval_tasks_dir, mmlu_subjects, prepare_mmlu,  # noqa: E402
                            write_local_task, write_mmlu_tasks)

SUBJECTS = ["abstract_algebra", "anatomy", "astronomy"]


@pytest.mark.parametrize("name", ["sdft.evaluation.knowledge", "sdft.evaluation.judge", "sdft.evaluation.judge_check", "sdft.evaluation.benchmarks.alpacaeval"])
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture(scope="module")
def mmlu_data(tmp_path_factory):
    return prepare_mmlu(root=tmp_path_factory.mktemp("lm_eval_data"))


def test_mmlu_conversion_matches_cais_schema(mmlu_data):
    subjects = mmlu_subjects()
    assert len(subjects) == 57 and sorted(p.name for p in mmlu_data.iterdir()) == subjects
    rows = [json.loads(x) for x in (mmlu_data / "anatomy" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 135  # as cais/mmlu's anatomy test split
    assert set(rows[0]) == {"question", "choices", "answer", "subject"} and rows[0]["subject"] == "anatomy"
    assert len(rows[0]["choices"]) == 4 and rows[0]["answer"] in range(4)
    assert rows[0]["question"].startswith("A lesion causing compression of the facial nerve")
    assert len((mmlu_data / "anatomy" / "dev.jsonl").read_text().splitlines()) == 5
    total = sum((mmlu_data / s / "test.jsonl").read_text(encoding="utf-8").count("\n") for s in subjects)
    assert total == 14042  # the MMLU test set (count "\n": two questions hold a U+2028 that splitlines() splits on)
    assert prepare_mmlu(root=mmlu_data.parent) == mmlu_data  # cached by the zip's sha256


def test_mmlu_task_config_is_lm_evals_own(mmlu_data, tmp_path):
    """Our subject YAML resolves to lm-eval's mmlu_<subject> config except where the data come from."""
    from lm_eval.tasks._yaml_loader import load_yaml

    (name,) = write_mmlu_tasks(mmlu_data, tmp_path, ["high_school_biology"])
    ours = load_yaml(tmp_path / f"{name}.yaml", resolve_func=False)
    theirs = load_yaml(lm_eval_tasks_dir() / "mmlu/default/mmlu_high_school_biology.yaml", resolve_func=False)
    differ = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    assert differ == {"task", "tag", "dataset_path", "dataset_name", "dataset_kwargs"}
    assert ours["doc_to_text"] == ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}"
                                   "\nD. {{choices[3]}}\nAnswer:")
    assert ours["doc_to_choice"] == ["A", "B", "C", "D"] and ours["fewshot_split"] == "dev"
    assert "num_fewshot" not in ours  # lm-eval's default: 0-shot
    with pytest.raises(DataError, match="not found"):
        write_mmlu_tasks(mmlu_data, tmp_path, ["no_such_subject"])


def test_mmlu_on_tiny_model_offline(tiny_model_dir, tmp_path):
    out = tmp_path / "knowledge"
    (res,) = evaluate_knowledge(str(tiny_model_dir), ["mmlu"], subjects=SUBJECTS, limit=5, batch_size=16,
                                out_dir=out, log=lambda m: None)
    assert res["task"] == "mmlu" and res["n"] == 15 and set(res["subjects"]) == set(SUBJECTS)
    assert all(s["n"] == 5 for s in res["subjects"].values())
    assert res["correct"] == sum(s["correct"] for s in res["subjects"].values())
    assert res["score"] == pytest.approx(res["correct"] / 15)
    assert res["macro"] == pytest.approx(sum(s["score"] for s in res["subjects"].values()) / 3)
    assert res["ci95"][0] <= res["score"] <= res["ci95"][1]
    assert res["num_fewshot"] is None and res["lm_eval_version"] and res["apply_chat_template"] is False
    assert json.loads((out / "knowledge.json").read_text())[0]["score"] == res["score"]
    assert "| mmlu |" in (out / "knowledge.md").read_text()
    assert list((out / "lm_eval_cache").iterdir())  # responses cached: a re-run resumes from them


def _write_arc(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True)
    rows = [{"id": f"q{i}", "question": f"Which number is {i}?",
             "choices": {"text": [str(i), str(i + 1), str(i + 2)], "label": ["A", "B", "C"]}, "answerKey": "A"}
            for i in range(n)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_user_data_bridge_on_synthetic_arc(tiny_model_dir, tmp_path):
    data = tmp_path / "arc"
    _write_arc(data)
    (res,) = evaluate_knowledge(str(tiny_model_dir), ["arc_easy"], data={"arc_easy": data}, limit=3,
                                log=lambda m: None)
    assert res["task"] == "arc_easy" and res["n"] == 3 and res["data"] == str(data)
    # the generated YAML includes lm-eval's own config; splits without a file are switched off
    from lm_eval.tasks._yaml_loader import load_yaml

    name = write_local_task("arc_easy", data, tmp_path / "tasks")
    cfg = load_yaml(tmp_path / "tasks" / f"{name}.yaml", resolve_func=False)
    assert cfg["doc_to_text"] == "Question: {{question}}\nAnswer:" and cfg["dataset_path"] == "json"
    assert cfg["training_split"] is None and cfg["validation_split"] is None and cfg["test_split"] == "test"


def test_user_data_errors(tiny_model_dir, tmp_path):
    with pytest.raises(DataError, match="only MMLU's data ships"):
        evaluate_knowledge(str(tiny_model_dir), ["hellaswag"], log=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"validation\*"):
        write_local_task("hellaswag", tmp_path / "empty", tmp_path / "tasks")
    with pytest.raises(DataError, match="not found"):
        write_local_task("arc_challenge", tmp_path / "missing", tmp_path / "tasks")


def _user_data(task: str) -> Path:
    root = os.environ.get("SDFT_KNOWLEDGE_DATA")
    for base in ([Path(root)] if root else []) + [SHARED]:
        if (base / task).is_dir():
            return base / task
    pytest.skip(f"no local data for lm-eval task '{task}': lm-eval loads it from the HF hub, which is offline here, "
                f"and only MMLU ships with sdft; put its split files (test*/validation*/train*, parquet/jsonl/csv) "
                f"in $SDFT_KNOWLEDGE_DATA/{task}/ or ../shared/data/{task}/ to run this test")


@pytest.mark.parametrize("task", ["arc_challenge", "hellaswag", "winogrande", "truthfulqa_mc2"])
def test_openllm_tasks_on_user_data(task, tiny_model_dir):
    data = _user_data(task)
    (res,) = evaluate_knowledge(str(tiny_model_dir), [task], data={task: data}, limit=4, log=lambda m: None)
    assert res["task"] == task and res["n"] == 4 and 0.0 <= res["score"] <= 1.0


def test_knowledge_cli(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from sdft.cli import app

    out = tmp_path / "k"
    r = CliRunner().invoke(app, ["knowledge", "--out", str(out), "--model", str(tiny_model_dir), "--subjects",
                                 SUBJECTS[0], "--limit", "2"])
    assert r.exit_code == 0, r.output
    assert "| mmlu |" in r.output and json.loads((out / "knowledge.json").read_text())[0]["n"] == 2
    bad = CliRunner().invoke(app, ["knowledge", "--out", str(out), "--model", str(tiny_model_dir), "--data", "arc"])
    assert bad.exit_code != 0 and "TASK=FOLDER" in bad.output
