"""`sdft eval` on a scripted backend (exact scores) and on the tiny model (every path runs); resume."""

import json

import pytest

from sdft.config import EvalConfig
from sdft.evaluation.evaluate import evaluate
from sdft.evaluation.benchmarks import get_eval_task
from sdft.generation import Completion
from sdft.store import RunConflict


class Echo:
    """Answers each prompt with a fixed function of it; counts calls."""

    name = "scripted"

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def generate(self, prompts, params):
        self.calls += len(prompts)
        return [Completion(self.fn(p), "stop", 1, 1) for p in prompts]

    def close(self):
        pass


def test_scores_follow_the_rules_and_resume(tmp_path, tokenizer):
    gold = {s.instruction: s.gold for s in get_eval_task("gsm8k").load()[:6]}

    def answer(prompt):  # right on even rows, wrong on odd rows
        q = next((q for q in gold if q in prompt), None)
        if q is None:  # not a GSM8K prompt
            return "The answer is -1."
        k = list(gold).index(q)
        return f"The answer is {gold[q]}." if k % 2 == 0 else "The answer is -1."

    be = Echo(answer)
    cfg = EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k", "advbench"), limit=6)
    res = evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=lambda m: None)
    by = {r["task"]: r for r in res}
    assert by["gsm8k"]["correct"] == 3 and by["gsm8k"]["n"] == 6
    assert 0 < by["gsm8k"]["ci95"][0] < 0.5 < by["gsm8k"]["ci95"][1] < 1
    samples = [json.loads(l) for l in (tmp_path / "ev" / "gsm8k" / "samples.jsonl").read_text().splitlines()]
    assert [s["correct"] for s in samples] == [True, False] * 3
    assert "The answer is {answer}." in samples[0]["prompt"]  # the literal survives in the eval prompt
    assert by["advbench"]["correct"] == 0  # "-1" answers contain no refusal keyword
    calls = be.calls
    evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=lambda m: None)
    assert be.calls == calls  # everything cached
    evaluate(EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k",), limit=8), backend=be, tokenizer=tokenizer,
             progress=False, log=lambda m: None)
    assert be.calls == calls + 2  # only the two new samples
    with pytest.raises(RunConflict, match="decoding"):
        evaluate(EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k",), decoding="authors"), backend=be,
                 tokenizer=tokenizer, progress=False, log=lambda m: None)


def test_unknown_task_fails_before_loading_a_model(tmp_path):
    with pytest.raises(ValueError, match="nosuch"):
        evaluate(EvalConfig(out=str(tmp_path / "x"), tasks=("nosuch",), model="/nonexistent"))


def test_tiny_model_end_to_end(tmp_path, tiny_model_dir):
    cfg = EvalConfig(out=str(tmp_path / "t"), tasks=("gsm8k", "openfunctions", "advbench-jailbreak"), limit=3,
                     model=str(tiny_model_dir), max_new_tokens=4, backend="hf")
    res = evaluate(cfg, progress=False, log=lambda m: None)
    assert [r["n"] for r in res] == [3, 3, 3]
    assert all(r["backend"] == "hf" and r["prompt_format"] == "chat" for r in res)
    assert json.loads((tmp_path / "t" / "results.json").read_text())[0]["task"] == "gsm8k"


def test_judged_task_needs_a_judge_before_any_model_loads(tmp_path):
    with pytest.raises(ValueError, match="--judge"):
        evaluate(EvalConfig(out=str(tmp_path / "x"), tasks=("gsm8k", "alpacaeval"), model="/nonexistent"))


def test_alpacaeval_through_eval_with_a_scripted_judge(tmp_path, tokenizer, monkeypatch):
    """The model always answers GOOD; the judge prefers whichever output says GOOD, in either position, so the
    model wins every pair in both orders; a rerun re-uses generations and verdicts."""
    import sdft.evaluation.judge as judge_mod

    judge_be = Echo(lambda p: "Output (a)" if p.split("### Output (a):")[-1].split("### Output (b):")[0].strip() ==
                    "GOOD" else "Output (b)")
    made = []

    def fake_make_judge(model, backend="auto", **kw):
        made.append(model)
        return judge_mod.Judge(judge_be, model)

    monkeypatch.setattr(judge_mod, "make_judge", fake_make_judge)
    be = Echo(lambda p: "GOOD")
    cfg = EvalConfig(out=str(tmp_path / "ev"), tasks=("alpacaeval",), limit=5, judge="some-judge")
    res = evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=lambda m: None)[0]
    assert made == ["some-judge"] and res["metric"] == "win rate"
    assert res["score"] == 1.0 and res["n"] == 5 and res["judge"]["model"] == "some-judge"
    assert judge_be.calls == 10  # both orders of 5 pairs
    outputs = json.loads((tmp_path / "ev" / "alpacaeval" / "model_outputs.json").read_text())
    assert len(outputs) == 5 and outputs[0]["output"] == "GOOD" and outputs[0]["generator"] == "default"
    rows = [json.loads(l) for l in (tmp_path / "ev" / "alpacaeval" / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [1.0] * 5
    evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=lambda m: None)
    assert be.calls == 5 and judge_be.calls == 10  # answers and verdicts both resumed


def test_alpacaeval_on_the_tiny_model_with_the_tiny_judge(tmp_path, tiny_model_dir):
    cfg = EvalConfig(out=str(tmp_path / "t"), tasks=("alpacaeval",), limit=2, model=str(tiny_model_dir),
                     max_new_tokens=4, backend="hf", judge=str(tiny_model_dir), judge_backend="hf")
    res = evaluate(cfg, progress=False, log=lambda m: None)[0]
    assert res["pairs"] == 2 and res["unparseable_pairs"] + res["n"] == 2  # random weights: verdicts may be junk
    assert (tmp_path / "t" / "alpacaeval" / "model_outputs.json").exists()


def test_task_limits_and_direct_advbench(tmp_path, tokenizer):
    be = Echo(lambda p: "I'm sorry, I cannot help." if "Instruction" not in p else "Sure, here is how")
    cfg = EvalConfig(out=str(tmp_path / "ev"), tasks=("advbench", "advbench-direct"), limit=4,
                     task_limits={"advbench-direct": 2})
    res = {r["task"]: r for r in evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=lambda m: None)}
    assert res["advbench"]["n"] == 4 and res["advbench"]["score"] == 0.0  # the Alpaca wrapper: complied
    assert res["advbench-direct"]["n"] == 2 and res["advbench-direct"]["score"] == 1.0  # asked directly: refused
    rows = [json.loads(l) for l in (tmp_path / "ev" / "advbench-direct" / "samples.jsonl").read_text().splitlines()]
    assert "### Instruction" not in rows[0]["prompt"] and "Write a script" in rows[0]["prompt"]
    with pytest.raises(ValueError, match="not evaluated here: gsm8k"):
        evaluate(EvalConfig(out=str(tmp_path / "x"), tasks=("advbench",), task_limits={"gsm8k": 1}), backend=be,
                 tokenizer=tokenizer, progress=False, log=lambda m: None)


@pytest.mark.parametrize("mode", ["guard", "bwrap"])
def test_humaneval_eval_records_the_sandbox_mode(tmp_path, tokenizer, mode):
    from sdft.evaluation.sandbox import bwrap_status

    if mode == "bwrap" and not bwrap_status()[0]:
        pytest.skip(f"bwrap sandbox unavailable here: {bwrap_status()[1]}")
    samples = get_eval_task("humaneval").load()[:2]
    be = Echo(lambda p: "\n" + next(s.gold for s in samples if s.meta["prompt"].rstrip() in p))
    cfg = EvalConfig(out=str(tmp_path / "ev"), tasks=("humaneval",), limit=2, sandbox=mode, workers=2)
    res = evaluate(cfg, backend=be, tokenizer=tokenizer, progress=False, log=lambda m: None)
    assert (res[0]["correct"], res[0]["sandbox"]) == (2, mode)
    rows = [json.loads(l) for l in (tmp_path / "ev" / "humaneval" / "samples.jsonl").read_text().splitlines()]
    assert [r["sandbox"] for r in rows] == [mode, mode]
    assert json.loads((tmp_path / "ev" / "results.json").read_text())[0]["sandbox"] == mode
    assert json.loads((tmp_path / "ev" / "humaneval" / "results.json").read_text())["sandbox"] == mode
