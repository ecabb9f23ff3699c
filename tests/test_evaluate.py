"""`sdft eval` on a scripted backend (exact scores) and on the tiny model (every path runs); resume."""

import json

import pytest

from sdft.config import EvalConfig
from sdft.evaluate import evaluate
from sdft.evaltasks import get_eval_task
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
