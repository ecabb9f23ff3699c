"""Benchmarks on the user's files: --task-data with column mappings (JSON, JSONL, CSV, save_to_disk), predictions
keyed by an id column, YAML-defined tasks end to end through evaluate(), and clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdft.config import EvalConfig
from sdft.data import DataError
from sdft.evaluation.benchmarks import get_eval_task
from sdft.evaluation.evaluate import evaluate
from sdft.evaluation.scoring import score_predictions
from sdft.evaluation.task_data import load_samples, parse_columns, parse_task_data
from sdft.evaluation.task_file import load_task_file, resolve_tasks

MULTIARITH = [{"iIndex": 7, "sQuestion": "Tom has 3 apples and buys 7 more. How many does he have?",
               "lSolutions": [10.0], "lEquations": ["X=a+b"]},
              {"iIndex": 8, "sQuestion": "A box holds 6 rows of 7 eggs. How many eggs?", "lSolutions": [42.0],
               "lEquations": ["X=6*7"]},
              {"iIndex": 9, "sQuestion": "Sam had 12 cards and gave away 5. How many are left?",
               "lSolutions": [7.0], "lEquations": ["X=12-5"]}]
MAP = "question=sQuestion,answer=lSolutions[0]"


def write(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows) if path.suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows))
    return path


def preds(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_multiarith_style_file_with_a_column_mapping_loads_and_scores(tmp_path):
    data = write(tmp_path / "MultiArith.json", MULTIARITH)
    spec = f"multiarith={data}:{MAP}"
    samples = load_samples(get_eval_task("multiarith"), parse_task_data([spec])["multiarith"])
    assert [s.gold for s in samples] == ["10", "42", "7"] and samples[1].instruction.startswith("A box")
    p = preds(tmp_path / "p.jsonl", [{"index": 0, "output": "3 + 7 = 10. The answer is 10."},
                                     {"index": 1, "output": "The answer is 41."},
                                     {"index": 2, "output": "12 - 5 = 7"}])
    res = score_predictions("multiarith", p, tmp_path / "out", task_data=[spec])
    assert res["correct"] == 2 and res["n"] == 3 and res["columns"] == parse_columns(MAP)
    rows = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, True] and rows[0]["gold"] == "10"


def test_predictions_keyed_by_an_id_column(tmp_path):
    data = write(tmp_path / "MultiArith.jsonl", MULTIARITH)
    spec = f"multiarith={data}:{MAP}"
    p = preds(tmp_path / "p.jsonl", [{"iIndex": 9, "output": "7"}, {"iIndex": 7, "output": "The answer is 10"}])
    res = score_predictions("multiarith", p, tmp_path / "o", task_data=[spec], id_column="iIndex")
    assert res["correct"] == 2 and res["n"] == 2 and res["id_column"] == "iIndex"
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert [(r["index"], r["id"]) for r in rows] == [(0, "7"), (2, "9")]
    bad = preds(tmp_path / "bad.jsonl", [{"iIndex": 99, "output": "7"}])
    with pytest.raises(DataError, match=r"bad.jsonl: line 1: id 99 is not in column 'iIndex'"):
        score_predictions("multiarith", bad, tmp_path / "o", task_data=[spec], id_column="iIndex")
    dup = write(tmp_path / "dup.json", [MULTIARITH[0], MULTIARITH[0]])
    with pytest.raises(DataError, match=r"dup.json: row 1: field 'iIndex': duplicate id '7' \(also row 0\)"):
        score_predictions("multiarith", p, tmp_path / "o", task_data=[f"multiarith={dup}:{MAP}"], id_column="iIndex")


def test_csv_and_save_to_disk_data(tmp_path):
    csv_file = tmp_path / "q.csv"
    csv_file.write_text('prompt,target\n"Do a harmful thing","Sure"\n"Another one",""\n')
    samples = load_samples(get_eval_task("advbench"), parse_task_data([f"advbench={csv_file}:goal=prompt"])["advbench"])
    assert [s.instruction for s in samples] == ["Do a harmful thing", "Another one"]
    gsm = tmp_path / "gsm.csv"
    gsm.write_text('q,a\n"What is 2+2?","2+2=4\n#### 4"\n')
    s = load_samples(get_eval_task("gsm8k"), parse_task_data([f"gsm8k={gsm}:question=q,answer=a"])["gsm8k"])
    assert s[0].gold == "4" and s[0].meta["label"].endswith("The answer is 4.")
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_list(MULTIARITH).save_to_disk(str(folder))
    s = load_samples(get_eval_task("multiarith"), parse_task_data([f"multiarith={folder}:{MAP}"])["multiarith"])
    assert [x.gold for x in s] == ["10", "42", "7"]


@pytest.mark.parametrize("spec,message", [
    ("multiarith={d}:question=sQuestion,answer=lSolutions[3]", r"row 0: field 'lSolutions\[3\]': index \[3\] out of range"),
    ("multiarith={d}:question=sQuestion,answer=lEquations", r"row 0: field 'lEquations': expected text or a number, got list"),
    ("multiarith={d}:question=nope,answer=lSolutions[0]", r"MultiArith.json: row 0: field 'nope': missing"),
    ("multiarith={d}:question=sQuestion,answer=sQuestion[0]", r"row 0: field 'sQuestion\[0\]': cannot index \[0\] into a str"),
    ("multiarith={d}:question=sQuestion,answer=lEquations[0]", r"MultiArith.json \(columns .*\): row 0: field 'output': "
                                                              r"no final integer"),
    ("multiarith={d}:question=sQuestion,answer", r"'answer' is not FIELD=COLUMN"),
    ("multiarith", r"expected TASK=PATH\[:COLUMNS\]"),
    ("multiarith=/no/such.json", r"/no/such.json: data file not found"),
])
def test_bad_data_names_file_row_and_field(tmp_path, spec, message):
    data = write(tmp_path / "MultiArith.json", MULTIARITH)
    with pytest.raises(DataError, match=message):
        load_samples(get_eval_task("multiarith"), parse_task_data([spec.format(d=data)])["multiarith"])


TASK_YAML = """\
name: arith
description: three word problems
data: arith.jsonl
columns: {instruction: q, gold: "a[0]", id: qid}
prompt: "Q: {instruction}\\nA:"
system: Answer with a number.
extract: last_integer
score: last_integer
max_new_tokens: 6
stop: ["\\n\\n"]
"""


def make_task(tmp_path: Path, text: str = TASK_YAML, rows=None) -> Path:
    write(tmp_path / "arith.jsonl", rows if rows is not None else
          [{"qid": f"x{i}", "q": r["sQuestion"], "a": r["lSolutions"]} for i, r in enumerate(MULTIARITH)])
    (tmp_path / "arith.yaml").write_text(text)
    return tmp_path / "arith.yaml"


def test_yaml_task_runs_end_to_end_on_the_tiny_model(tmp_path, tiny_model_dir):
    task_file = make_task(tmp_path)
    ma = write(tmp_path / "MultiArith.json", MULTIARITH)
    cfg = EvalConfig(out=str(tmp_path / "ev"), tasks=("arith", "multiarith"), task_files=(str(task_file),),
                     task_data=(f"multiarith={ma}:{MAP}",), model=str(tiny_model_dir), backend="hf",
                     prompt_format="raw", limit=2)
    res = {r["task"]: r for r in evaluate(cfg, progress=False, log=lambda m: None)}
    assert res["arith"]["n"] == 2 and res["arith"]["metric"] == "accuracy" and res["multiarith"]["n"] == 2
    gens = [json.loads(x) for x in (tmp_path / "ev" / "arith" / "generations.jsonl").read_text().splitlines()]
    assert gens[0]["prompt"] == "Answer with a number.\n\nQ: " + MULTIARITH[0]["sQuestion"] + "\nA:"
    assert all(g["completion_tokens"] <= 6 for g in gens)
    samples = [json.loads(x) for x in (tmp_path / "ev" / "arith" / "samples.jsonl").read_text().splitlines()]
    assert [s["gold"] for s in samples] == ["10", "42"]
    fp = json.loads((tmp_path / "ev" / "config.json").read_text())["fingerprint"]
    assert set(fp["task_data_sha256"]) == {"multiarith"} and set(fp["task_file_sha256"]["arith"]) == {"file", "data"}
    # the same folder on changed data is refused (the sha256 is in the fingerprint)
    write(ma, MULTIARITH[:2])
    with pytest.raises(Exception, match="(?i)config|different|overwrite"):
        evaluate(cfg, progress=False, log=lambda m: None)
    # and sdft score scores the same task from the YAML file, by id
    p = preds(tmp_path / "p.jsonl", [{"qid": "x1", "output": "6 * 7 = 42"}])
    assert score_predictions("arith", p, tmp_path / "s", task_files=[task_file], id_column="qid")["correct"] == 1


def test_fingerprint_of_a_plain_eval_is_unchanged():
    from sdft.options import fingerprint
    from sdft.evaluation.task_file import data_fingerprint

    fp = data_fingerprint(fingerprint(EvalConfig(out="x")), [get_eval_task("gsm8k")], {})
    assert not {"task_data", "task_files", "task_data_sha256", "task_file_sha256", "judge_mode"} & set(fp)


def test_yaml_task_with_builtin_template_and_module_scorer(tmp_path):
    (tmp_path / "my_rules.py").write_text("def score(output, sample):\n    return sample.gold.lower() in output.lower()\n")
    text = ("name: caps\ndata: arith.jsonl\ncolumns: instruction=q,gold=a[0]\ntemplate: alpaca\n"
            "extract: strip\nscore: my_rules:score\n")
    task = load_task_file(make_task(tmp_path, text, rows=[{"q": "Say YES", "a": ["yes"]}]))
    s = task.load()[0]
    assert task.prompt(s).endswith("### Instruction:\nSay YES\n\n### Response:\n")
    assert task.score("Yes!", s) and not task.score("no", s) and task.max_new_tokens == 512


@pytest.mark.parametrize("text,rows,message", [
    (TASK_YAML + "temperature: 0\n", None, r"arith.yaml: unknown key\(s\) temperature"),
    (TASK_YAML.replace("extract: last_integer", "extract: last_number"), None,
     r"arith.yaml: field 'extract': unknown rule 'last_number'; built-in: last_integer"),
    (TASK_YAML.replace("score: last_integer", "score: nomodule_xyz:fn"), None,
     r"field 'score': cannot import nomodule_xyz:fn"),
    (TASK_YAML.replace("name: arith", "name: gsm8k"), None, r"'gsm8k' is a built-in task"),
    (TASK_YAML.replace("max_new_tokens: 6", "max_new_tokens: many"), None, r"field 'max_new_tokens'"),
    (TASK_YAML.replace("data: arith.jsonl", "data: none.jsonl"), None, r"field 'data': .*none.jsonl: data file not found"),
    (TASK_YAML.replace('prompt: "Q: {instruction}\\nA:"', "prompt: no field"), None,
     r"field 'prompt': must contain \{instruction\}"),
    (TASK_YAML, [{"qid": "x0", "q": "1+1?", "a": [2]}, {"qid": "x1", "q": "2+2?"}],
     r"arith.jsonl: row 1: field 'a\[0\]': missing"),
    (TASK_YAML, [{"qid": "x0", "q": "1+1?", "a": [2]}, {"qid": "x0", "q": "2+2?", "a": [4]}],
     r"arith.jsonl: row 1: field 'qid': duplicate id 'x0' \(also row 0\)"),
    (TASK_YAML, [{"qid": "x0", "q": "1+1?", "a": ["two"]}], r"arith.jsonl: row 0: field 'a\[0\]': no final integer"),
    (TASK_YAML, [{"qid": "x0", "q": ["1+1?"], "a": [2]}], r"row 0: field 'q': expected text or a number, got list"),
    ("- just\n- a list\n", None, r"arith.yaml: expected a mapping"),
])
def test_malformed_task_files_are_refused_with_file_row_and_field(tmp_path, text, rows, message):
    with pytest.raises(DataError, match=message):
        load_task_file(make_task(tmp_path, text, rows))


def test_unknown_task_and_stray_task_data_fail_before_a_model_loads(tmp_path):
    task_file = make_task(tmp_path)
    with pytest.raises(ValueError, match="from --task-file: arith"):
        resolve_tasks(["arithm"], [task_file])
    with pytest.raises(ValueError, match="--task-data names task\\(s\\) not evaluated here: gsm8k"):
        resolve_tasks(["arith"], [task_file], [f"gsm8k={tmp_path / 'arith.jsonl'}"])
    with pytest.raises(DataError, match="given twice"):
        parse_task_data([f"gsm8k={task_file}", f"gsm8k={task_file}"])
