"""``sdft export-lm-eval``: the exported tasks load in lm-eval from their folder alone, utils.py is self-contained,
and lm-eval's per-item scores equal ``sdft score``'s on the same outputs (fixed outputs through the tasks'
process_results, and a real ``lm_eval.simple_evaluate`` run on the tiny model with log_samples)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from sdft.evaluation.lm_eval_export import export_lm_eval, utils_source
from sdft.evaluation.scoring import score_predictions

OUTPUTS = {  # per task, outputs that hit and miss the rules (a fraction, a comma number, wrong calls, keywords)
    "gsm8k": ["She makes 9 * 2 = $18 every day. The answer is 18.", "The answer is 18.5", "1,000 then 3",
              "no number here", "It is 2 bolts.\nThe answer is 3"],
    "openfunctions": ["{gold}", "Sure: {gold}", "nothing", "{gold_no_args}", "{gold_single_quotes}"],
    "advbench": ["I'm sorry, I cannot help.", "Sure, here is how", "That is illegal.", "i'm sorry", "OpenAI says no"],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "export"
    export_lm_eval(out, tasks=("gsm8k", "openfunctions", "advbench"), limit=5, max_new_tokens=8, log=lambda m: None)
    moved = out.parent / "moved"  # the folder is self-contained: it works from anywhere
    shutil.move(str(out), str(moved))
    return moved


def _docs(folder: Path, task: str) -> list[dict]:
    return [json.loads(x) for x in (folder / f"sdft_{task}.jsonl").read_text().splitlines()]


def _outputs(task: str, docs: list[dict]) -> list[str]:
    out = []
    for text, doc in zip(OUTPUTS[task], docs):
        gold = doc["gold"]
        out.append(text.format(gold=gold, gold_no_args=gold.split("(")[0] + "()",
                               gold_single_quotes=gold.replace('"', "'")))
    return out


def _sdft_scores(tmp_path: Path, task: str, outputs: list[str], indices: list[int]) -> list[float]:
    p = tmp_path / f"{task}.jsonl"
    p.write_text("".join(json.dumps({"index": i, "output": o}) + "\n" for i, o in zip(indices, outputs)))
    score_predictions(task, p, tmp_path / f"scored-{task}")
    rows = [json.loads(x) for x in (tmp_path / f"scored-{task}" / "samples.jsonl").read_text().splitlines()]
    by_index = {r["index"]: float(r["correct"]) for r in rows}
    return [by_index[i] for i in indices]


def test_utils_is_self_contained_python():
    tree = ast.parse(utils_source())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "sdft" not in imported and imported <= {"json", "re", "pathlib", "typing", "datasets"}


def test_exported_files(exported):
    names = sorted(p.name for p in exported.iterdir())
    assert "utils.py" in names and "README.md" in names
    assert {"sdft_gsm8k.yaml", "sdft_gsm8k.jsonl", "sdft_advbench.yaml", "sdft_openfunctions.jsonl"} <= set(names)
    doc = _docs(exported, "gsm8k")[0]
    assert doc["prompt"].endswith("formatted as: The answer is {answer}.\n\n" + doc["prompt"].split("\n\n")[-1])
    assert doc["gold"] == "18" and "until: []" in (exported / "sdft_gsm8k.yaml").read_text()


def test_fixed_outputs_through_lm_eval_equal_sdft_score(exported, tmp_path):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(exported), include_defaults=False)
    tasks = tm.load(["sdft_gsm8k", "sdft_openfunctions", "sdft_advbench"])["tasks"]
    for name in ("gsm8k", "openfunctions", "advbench"):
        task = tasks[f"sdft_{name}"]
        docs = list(task.test_docs())
        assert [d["prompt"] for d in docs] == [d["prompt"] for d in _docs(exported, name)]
        outputs = _outputs(name, docs)
        lm = [task.process_results(doc, [o])["acc"] for doc, o in zip(docs, outputs)]
        ours = _sdft_scores(tmp_path, name, outputs, [d["index"] for d in docs])
        assert lm == ours, name
        assert 0 < sum(ours) < len(ours), name  # the outputs exercise both verdicts


def test_simple_evaluate_on_the_tiny_model_matches_sdft_score_per_item(exported, tiny_model_dir, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_model_dir},device=cpu",
                                  tasks=["sdft_gsm8k"], limit=3, batch_size=3, log_samples=True, bootstrap_iters=0,
                                  task_manager=TaskManager(include_path=str(exported), include_defaults=False))
    samples = sorted(res["samples"]["sdft_gsm8k"], key=lambda s: s["doc"]["index"])
    outputs = [s["filtered_resps"][0] for s in samples]
    ours = _sdft_scores(tmp_path, "gsm8k", outputs, [s["doc"]["index"] for s in samples])
    assert [float(s["acc"]) for s in samples] == ours and len(ours) == 3
    assert res["results"]["sdft_gsm8k"]["acc,none"] == pytest.approx(sum(ours) / 3)


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot export humaneval"):
        export_lm_eval(tmp_path, tasks=("humaneval",))
