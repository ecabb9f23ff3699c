"""Pairwise judge: verdict parsing, both-order aggregation, ties, unparseable verdicts, intervals, length control,
model_outputs.json, the alpacaeval task hook and the judge check -- with scripted fake backends (no model)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from sdft.evaluation.benchmarks import EvalTask, Sample
from sdft.evaluation.benchmarks import alpacaeval
from sdft.generation import Completion
from sdft.evaluation.judge import (PROMPT_FILE, Judge, JudgePrompt, judge_pairs, length_controlled,
                        model_preference, pair_score, parse_verdict, summarize_pairs, write_model_outputs)
from sdft.evaluation.judge_check import agreement, build_probes, judge_check, truncate_words
from sdft.stats import bootstrap_interval, wilson_interval

# ------------------------------------------------------------------------------------------------ parsing
MESSY = [
    ("Output (a)", "a"), ("Output (b)", "b"), ("(a)", "a"), ("(b)", "b"), ("A", "a"), ("B", "b"), ("b.", "b"),
    ("The better answer is B.", "b"), ("**Output (a)**", "a"), ("  \n**Output (b)**\n", "b"),
    ("Output (B)", "b"), ("Output(a)", "a"), ("### Output (b):", "b"), ("A better answer is B", "b"),
    ("Answer: A", "a"), ("Sure! The best output is Output (a).", "a"), ("I would choose Output (b).", "b"),
    ("Both are fine, but I prefer Output (b).", "b"), ("Response A is more helpful.", "a"),
    ("Output (a) is better than Output (b).", "a"), ("Output (a) is not better; Output (b) is better.", "b"),
    ("Output (b)\n\nHere the answer is Output (b) because it is accurate. In contrast, output (a) is a joke.", "b"),
    ("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]", "b"),
    ("[{'model': 'model_2', 'rank': 2}, {'model': 'model_1', 'rank': 1}]", "a"),
    ("It's a tie: both are equally good.", "tie"), ("The answer is output (b)", "b"),
]
UNPARSEABLE = [("", "empty"), ("   \n", "empty"), ("Output (a) or Output (b)?", "ambiguous"),
               ("Output (a) and Output (b) are both good", "ambiguous"), ("I like cats.", "no_label"),
               ("The best answer is a detailed explanation.", "no_label"), ("I will answer a question", "no_label")]


@pytest.mark.parametrize("text,label", MESSY)
def test_parse_verdict_messy(text, label):
    assert parse_verdict(text)[0] == label


@pytest.mark.parametrize("text,how", UNPARSEABLE)
def test_parse_verdict_unparseable(text, how):
    assert parse_verdict(text) == (None, how)


# ------------------------------------------------------------------------------------------------ prompt
def test_default_prompt_is_alpacaeval_pairwise_with_header():
    p = JudgePrompt.load()
    raw = PROMPT_FILE.read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in raw and "alpaca_eval 0.6.6" in raw
    assert p.text.startswith("Select the output (a) or (b)") and "<!--" not in p.text
    assert p.text.endswith("### Which is best, Output (a) or Output (b)?")
    assert len(p.sha256) == 64 and p.path == str(PROMPT_FILE)
    filled = p.fill("Do {output_1}", "ans {instruction}", "ref")
    assert "### Instruction:\nDo {output_1}\n\n### Output (a):\nans {instruction}\n\n### Output (b):\nref" in filled


def test_custom_prompt_needs_all_fields(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Which is better? {output_1} {output_2}")
    with pytest.raises(ValueError, match=r"\{instruction\}"):
        JudgePrompt.load(bad)
    with pytest.raises(ValueError, match="not found"):
        JudgePrompt.load(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------- fake backends
SIMPLE_PROMPT = "<!-- test prompt -->\nI:{instruction}\n[A]{output_1}[/A]\n[B]{output_2}[/B]\nVerdict:"


class ScriptedBackend:
    """Answers each judge prompt with ``script(instruction, output_1, output_2)``; records the prompts."""

    name = "scripted"

    def __init__(self, script):
        self.script, self.prompts = script, []

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            self.prompts.append(p)
            m = re.search(r"I:(.*)\n\[A\](.*)\[/A\]\n\[B\](.*)\[/B\]", p, re.S)
            out.append(Completion(self.script(*m.groups()), "stop"))
        return out

    def close(self):
        pass


def make_judge(tmp_path, script, **kw):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(SIMPLE_PROMPT)
    return Judge(ScriptedBackend(script), "scripted-judge", JudgePrompt.load(prompt), **kw)


def prefers(word):
    """A judge that picks the answer containing ``word`` (else says something unparseable)."""
    return lambda ins, a, b: "Output (a)" if word in a else "Output (b)" if word in b else "no idea"


def test_both_orders_cancel_position(tmp_path):
    pairs = [{"index": i, "instruction": f"q{i}", "model": m, "reference": "REF"}
             for i, m in enumerate(["GOOD answer", "bad", "GOOD too"])]
    judge = make_judge(tmp_path, prefers("GOOD"))
    recs = judge_pairs(judge, pairs)
    assert [r["preferences"] for r in recs] == [[1.0, 1.0], [None, None], [1.0, 1.0]]
    # each pair was shown both ways: model as Output (a), then as Output (b)
    assert "[A]GOOD answer[/A]" in judge.backend.prompts[0] and "[B]GOOD answer[/B]" in judge.backend.prompts[1]
    # an always-first judge: every pair is an order disagreement -> 0.5
    biased = judge_pairs(make_judge(tmp_path, lambda *a: "Output (a)"), pairs)
    assert all(r["preferences"] == [1.0, 0.0] for r in biased)
    for r in biased:
        r.update(model_chars=10, reference_chars=10)
    s = summarize_pairs(biased)
    assert s["score"] == 0.5 and s["ties"] == 3 and s["order_disagreements"] == 3 and s["first_position_rate"] == 1.0
    assert s["warnings"] == []  # too few verdicts (6) to call it
    many = summarize_pairs([{"preferences": [1.0, 0.0], "model_chars": 1, "reference_chars": 1} for _ in range(5)])
    assert "first answer in 100% of its verdicts" in many["warnings"][0]


def test_tie_and_pair_rules():
    assert model_preference("a", "model_first") == 1.0 and model_preference("b", "model_first") == 0.0
    assert model_preference("a", "reference_first") == 0.0 and model_preference("b", "reference_first") == 1.0
    assert model_preference("tie", "model_first") == 0.5 and model_preference(None, "model_first") is None
    assert pair_score([1.0, 1.0]) == 1.0 and pair_score([0.0, 0.0]) == 0.0
    assert pair_score([1.0, 0.0]) == 0.5 and pair_score([0.5, 0.5]) == 0.5 and pair_score([1.0, 0.5]) == 0.75
    assert pair_score([None, 1.0]) is None and pair_score([None, 1.0], "tie") == 0.75
    assert pair_score([None, None], "tie") == 0.5
    with pytest.raises(ValueError, match="unparseable"):
        pair_score([1.0, 1.0], "drop")


def _rec(prefs, m=100, r=100):
    return {"preferences": prefs, "model_chars": m, "reference_chars": r}


def test_summary_counts_and_unparseable_policies():
    recs = [_rec([1.0, 1.0]), _rec([0.0, 0.0]), _rec([1.0, 0.0]), _rec([None, 1.0]), _rec([None, None])]
    s = summarize_pairs([dict(r) for r in recs])
    assert (s["n"], s["pairs"], s["wins"], s["losses"], s["ties"]) == (3, 5, 1, 1, 1)
    assert s["score"] == pytest.approx(1.5 / 3) and s["correct"] == 1.5
    assert (s["unparseable_pairs"], s["unparseable_judgements"], s["unparseable_policy"]) == (2, 3, "exclude")
    t = summarize_pairs([dict(r) for r in recs], unparseable="tie")
    assert t["n"] == 5 and t["score"] == pytest.approx((1 + 0 + 0.5 + 0.75 + 0.5) / 5)


def test_interval_is_wilson_on_half_points():
    recs = [_rec([1.0, 1.0])] * 10 + [_rec([1.0, 0.0])] * 6 + [_rec([0.0, 0.0])] * 4
    s = summarize_pairs([dict(r) for r in recs])
    assert s["correct"] == 13.0 and s["n"] == 20
    assert s["ci95"] == pytest.approx(list(wilson_interval(13.0, 20)))
    lo, hi = wilson_interval(10, 20)
    assert (round(lo, 4), round(hi, 4)) == (0.2993, 0.7007)
    # all wins: Wilson stays a real interval; the percentile bootstrap collapses to a point
    assert wilson_interval(20, 20)[0] < 0.9 and bootstrap_interval([1.0] * 20) == [1.0, 1.0]
    b = bootstrap_interval([1.0] * 10 + [0.5] * 6 + [0.0] * 4)
    assert b[0] < 0.65 < b[1] and b == bootstrap_interval([1.0] * 10 + [0.5] * 6 + [0.0] * 4)  # seeded


def test_length_controlled_recovers_known_intercept():
    rng = np.random.default_rng(0)
    n = 4000
    ref = rng.integers(200, 800, n).astype(float)
    model = ref + rng.normal(300, 400, n)  # the model writes longer answers
    diff = model - ref
    x = np.tanh(diff / diff.std(ddof=1))
    b0, b1 = -0.4, 2.0
    y = (rng.random(n) < 1 / (1 + np.exp(-(b0 + b1 * x)))).astype(float)
    lc = length_controlled(y, model, ref)
    assert lc["intercept"] == pytest.approx(b0, abs=0.12) and lc["slope"] == pytest.approx(b1, abs=0.2)
    assert lc["win_rate"] == pytest.approx(1 / (1 + math.exp(-b0)), abs=0.03)
    assert y.mean() > lc["win_rate"] + 0.15  # raw win rate is inflated by length; LC removes it
    # equal lengths: LC equals the raw rate (up to the weak L2 penalty's shrinkage on 4 pairs)
    flat = length_controlled([1.0, 0.0, 0.5, 1.0], [5, 5, 5, 5], [5, 5, 5, 5])
    assert flat["win_rate"] == pytest.approx(0.625, abs=3e-3) and flat["slope"] == pytest.approx(0, abs=1e-6)
    assert length_controlled([1.0] * 20, range(20), [10] * 20)["win_rate"] > 0.99  # finite when all win
    assert length_controlled([], [], [])["win_rate"] is None


def test_backend_error_is_recorded_not_raised(tmp_path):
    class Failing(ScriptedBackend):
        def generate(self, prompts, params):
            if any("LONG" in p for p in prompts):
                if len(prompts) > 1:
                    raise ValueError("batch failed")
                raise ValueError("prompt too long for the context")
            return super().generate(prompts, params)

    judge = make_judge(tmp_path, prefers("GOOD"))
    judge.backend = Failing(prefers("GOOD"))
    recs = judge_pairs(judge, [{"index": 0, "instruction": "q", "model": "GOOD", "reference": "r"},
                               {"index": 1, "instruction": "q", "model": "LONG", "reference": "r"}])
    assert recs[0]["preferences"] == [1.0, 1.0] and recs[1]["preferences"] == [None, None]
    assert recs[1]["judgements"]["model_first"]["how"] == "error"


def test_judgements_resume_from_file(tmp_path):
    pairs = [{"index": i, "instruction": f"q{i}", "model": "GOOD", "reference": "r"} for i in range(3)]
    path = tmp_path / "j" / "judgements.jsonl"
    first = judge_pairs(make_judge(tmp_path, prefers("GOOD"), chunk_size=2), pairs[:2], path)
    assert len(path.read_text().splitlines()) == 4

    def boom(*a):
        raise AssertionError("must not be called for judged pairs")

    again = judge_pairs(make_judge(tmp_path, boom), pairs[:2], path)
    assert [r["preferences"] for r in again] == [r["preferences"] for r in first]
    more = make_judge(tmp_path, prefers("GOOD"))
    judge_pairs(more, pairs, path)
    assert len(more.backend.prompts) == 2 and len(path.read_text().splitlines()) == 6


def test_identity_and_fingerprint(tmp_path):
    j = make_judge(tmp_path, prefers("x"))
    ident = j.identity()
    assert ident["model"] == "scripted-judge" and ident["backend"] == "scripted"
    assert len(ident["prompt_sha256"]) == 64 and ident["decoding"]["temperature"] == 0.0
    other = make_judge(tmp_path, prefers("x"))
    assert other.fingerprint() == j.fingerprint()
    other.name = "another"
    assert other.fingerprint() != j.fingerprint()


def test_model_outputs_json_format(tmp_path):
    path = tmp_path / "model_outputs.json"
    write_model_outputs(path, [{"instruction": "Say hi", "output": "Hi!", "dataset": "oasst"},
                               {"instruction": "Count", "output": "1 2 3"}], "my-model")
    data = json.loads(path.read_text())
    assert data == [{"instruction": "Say hi", "output": "Hi!", "generator": "my-model", "dataset": "oasst"},
                    {"instruction": "Count", "output": "1 2 3", "generator": "my-model"}]


# -------------------------------------------------------------------------------------------- the task
def test_alpacaeval_task_shape():
    (task,) = alpacaeval.TASKS
    assert isinstance(task, EvalTask) and task.name == "alpacaeval" and task.metric == "win rate"
    assert task.aggregate is alpacaeval.aggregate
    samples = task.load()
    assert len(samples) == 805 and samples[0].gold.startswith("Some famous actors")
    p = task.prompt(samples[0])
    assert p.startswith("Below is an instruction") and p.endswith(f"{samples[0].instruction}\n\n### Response:\n")
    with pytest.raises(alpacaeval.JudgeRequired, match="--judge"):
        task.score("anything", samples[0])


def test_alpacaeval_shared_copy_has_dataset():
    from conftest import shared

    samples = alpacaeval.load(shared("alpaca_eval/alpaca_eval_v1_text_davinci_003.json"))
    assert len(samples) == 805 and samples[0].meta["dataset"] == "helpful_base"
    assert [s.gold for s in samples[:50]] == [s.gold for s in alpacaeval.load()[:50]]


def test_alpacaeval_aggregate_writes_results(tmp_path):
    samples = [Sample(i, f"instruction {i}", f"reference {i}", meta={"dataset": "oasst"}) for i in range(6)]
    outputs = ["GOOD long answer", "meh", "GOOD", "meh", "GOOD", "x"]
    records = [{"index": i, "prompt": f"p{i}", "output": o + "\n"} for i, o in enumerate(outputs)]
    def script(ins, a, b):
        if "GOOD" in a or "GOOD" in b:
            return "Output (a)" if "GOOD" in a else "Output (b)"
        if "x" in (a, b):
            return "???"
        return "Output (a)" if a.startswith("reference") else "**Output (b)**"

    judge = make_judge(tmp_path, script)
    res = alpacaeval.aggregate(records, samples, judge, tmp_path / "out", generator="tiny", model="m")
    # GOOD answers win both orders (3); "meh" loses both (2); "x" gets unparseable verdicts -> left out, counted
    assert (res["wins"], res["losses"], res["n"], res["pairs"]) == (3, 2, 5, 6)
    assert (res["unparseable_pairs"], res["unparseable_judgements"], res["score"]) == (1, 2, 0.6)
    assert res["task"] == "alpacaeval" and res["metric"] == "win rate" and res["judge"]["model"] == "scripted-judge"
    assert res["model"] == "m" and res["mean_model_chars"] == pytest.approx(sum(map(len, outputs)) / 6, abs=0.1)
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["score"] == res["score"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["judgements"]["model_first"]["raw"] == "Output (a)"
    mo = json.loads((out / "model_outputs.json").read_text())
    assert mo[0] == {"instruction": "instruction 0", "output": "GOOD long answer", "generator": "tiny",
                     "dataset": "oasst"}
    assert list(out.glob("judge-*/judgements.jsonl")) and "win rate" in (out / "results.md").read_text()


# -------------------------------------------------------------------------------------------- judge check
def _check_judge(tmp_path, samples, mode):
    gold = {s.instruction: s.gold for s in samples}

    def script(ins, a, b):
        if mode == "first":
            return "Output (a)"
        if mode == "garbage":
            return "hmm"
        return "Output (a)" if a == gold[ins] else "Output (b)"

    return make_judge(tmp_path, script)


def test_probes_are_built_as_documented():
    samples = alpacaeval.load()
    pairs = build_probes(samples, n=5, seed=1)
    assert len(pairs) == 20 and {p["probe"] for p in pairs} == {"truncated", "empty", "offtopic", "self"}
    by = {p["index"]: p for p in pairs}
    some = next(p for p in pairs if p["probe"] == "truncated")
    row = some["index"].split(":")[1]
    assert by[f"self:{row}"]["model"] == by[f"self:{row}"]["reference"]
    assert by[f"empty:{row}"]["model"] == "" and by[f"offtopic:{row}"]["model"] != some["reference"]
    assert some["reference"].startswith(some["model"]) and len(some["model"]) < len(some["reference"])
    assert truncate_words("a b c d e f g h i j k l m n o p q r s t") == "a b c"
    assert agreement([None, 0.0], "reference") is None and agreement([0.5, 0.5], "tie") == 1.0
    with pytest.raises(ValueError, match="unknown probe"):
        build_probes(samples, probes=["nope"])


def test_judge_check_perfect_biased_and_garbage_judges(tmp_path):
    samples = alpacaeval.load()[:40]
    perfect = judge_check(_check_judge(tmp_path, samples, "perfect"), samples, n=8, out_dir=tmp_path / "c",
                          log=lambda m: None)
    assert all(p["accuracy"] == 1.0 and p["n"] == 8 for p in perfect["probes"].values())
    assert perfect["overall"]["accuracy"] == 1.0 and perfect["overall"]["n"] == 32
    saved = json.loads((tmp_path / "c" / "judge_check.json").read_text())
    assert saved["modes"]["generate"]["overall"]["accuracy"] == 1.0 and saved["passed"] is True
    biased = judge_check(_check_judge(tmp_path, samples, "first"), samples, n=8, log=lambda m: None)
    for probe in ("truncated", "empty", "offtopic"):
        assert biased["probes"][probe]["accuracy"] == 0.5 and biased["probes"][probe]["strict"] == 0.0
    assert biased["probes"]["self"]["accuracy"] == 1.0 and biased["first_position_rate"] == 1.0
    assert perfect["warnings"] == [] and len(biased["warnings"]) == 2 and "do not trust" in biased["warnings"][1]
    garbage = judge_check(_check_judge(tmp_path, samples, "garbage"), samples, n=8, log=lambda m: None)
    assert garbage["overall"]["n"] == 0 and garbage["overall"]["unparseable_pairs"] == 32
    assert garbage["overall"]["accuracy"] is None and "no parseable verdict" in garbage["warnings"][-1]


def test_make_judge_on_tiny_model_runs_end_to_end(tiny_model_dir):
    """A real (random) model behind the hf backend: verdicts are nonsense but recorded, never a crash."""
    from sdft.evaluation.judge import make_judge as build

    judge = build(str(tiny_model_dir), "hf", log=lambda m: None)
    judge.params = type(judge.params)(max_new_tokens=4, temperature=0.0)
    recs = judge_pairs(judge, [{"index": 0, "instruction": "Say hi", "model": "Hi", "reference": "Hello"}])
    assert judge.identity()["backend"] == "hf" and judge.prompt_format == "chat"
    assert set(recs[0]["judgements"]) == {"model_first", "reference_first"}
    assert all(isinstance(j["raw"], str) for j in recs[0]["judgements"].values())
