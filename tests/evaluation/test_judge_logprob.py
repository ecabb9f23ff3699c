"""Log-probability judging: verdicts on the tiny model equal a hand computation from the backend's log-probs in
both orders; judge-check in both modes; the failed-check flag in results.json, results.md and the report."""

from __future__ import annotations

import json
import math
import re

import pytest

from sdft.evaluation.benchmarks import alpacaeval
from sdft.evaluation.judge import Judge, JudgePrompt, judge_pairs, summarize_pairs
from sdft.evaluation.judge_check import judge_check, judge_check_modes
from sdft.evaluation.judge_logprob import JudgeError, LogprobJudge, p_first, verdict_format, with_mode
from sdft.evaluation.judge_trust import find_check
from sdft.evaluation.tables import UNTRUSTED_MARK, results_markdown
from sdft.generation import Completion

PAIRS = [{"index": 0, "instruction": "Say hi", "model": "Hi", "reference": "Hello there, friend"},
         {"index": 1, "instruction": "Name a colour", "model": "Blue, the colour of the sky.", "reference": "Red"}]


def test_tiny_model_logprob_verdicts_equal_a_hand_computation(tiny_model_dir, tokenizer):
    import torch

    from sdft.evaluation.judge import make_judge

    base = make_judge(str(tiny_model_dir), "hf", log=lambda m: None)
    judge = with_mode(base, "logprob")
    assert judge.fmt.prefix == "Output (" and judge.identity()["mode"] == "logprob"
    assert judge.fingerprint() != base.fingerprint()
    recs = judge_pairs(judge, PAIRS)
    ids = {c: tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "ab"}
    model = base.backend.model
    for pair, rec in zip(PAIRS, recs):
        prefs = []
        for order, (x, y) in (("model_first", (pair["model"], pair["reference"])),
                              ("reference_first", (pair["reference"], pair["model"]))):
            text = base.render(base.prompt.fill(pair["instruction"], x, y)) + "Output ("
            assert text.endswith("<|im_start|>assistant\nOutput (")  # the judge's own turn, pre-filled
            enc = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            with torch.inference_mode():
                lp = torch.log_softmax(model(enc).logits[0, -1].float(), -1)
            pa, pb = math.exp(float(lp[ids["a"]])), math.exp(float(lp[ids["b"]]))
            first = pa / (pa + pb)  # probability that Output (a) is better, over the two verdict tokens
            assert rec["judgements"][order]["p_first"] == pytest.approx(first, abs=1e-4)
            prefs.append(first if order == "model_first" else 1 - first)
        assert rec["preferences"] == pytest.approx(prefs, abs=1e-4)
    for r in recs:
        r.update(model_chars=5, reference_chars=5)
    stats = summarize_pairs(recs)
    assert stats["score"] == pytest.approx(sum(sum(r["preferences"]) / 2 for r in recs) / 2)
    base.backend.close()


def test_p_first_and_position_bias_cancels():
    assert p_first({"a": 0.0, "b": 0.0}, ("a", "b")) == 0.5
    # a judge adding log-odds b to the first position: equal answers still score exactly 0.5 over both orders
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for bias in (0.5, 3.0):
        assert (sig(0 + bias) + (1 - sig(0 + bias))) / 2 == pytest.approx(0.5)
        assert (sig(1 + bias) + 1 - sig(-1 + bias)) / 2 > 0.5  # the better answer stays ahead


class NoLogprobs:
    name = "textonly"

    def generate(self, prompts, params):
        return [Completion("Output (a)", "stop") for _ in prompts]


def test_backend_without_logprobs_and_prompt_without_verdict_tokens_are_refused(tmp_path):
    with pytest.raises(JudgeError, match="backend textonly returns no token log-probabilities; use --judge-mode "
                                         "generate"):
        with_mode(Judge(NoLogprobs(), "j"), "logprob")
    other = tmp_path / "p.txt"
    other.write_text("Rank them as model_1 / model_2: {instruction} {output_1} {output_2}")
    with pytest.raises(JudgeError, match="Output \\(a\\)"):
        verdict_format(JudgePrompt.load(other))
    with pytest.raises(ValueError, match="judge mode"):
        with_mode(Judge(NoLogprobs(), "j"), "sample")


GOLD = {s.instruction: s.gold for s in alpacaeval.load()[:40]}


class Scripted:
    """A judge backend for both modes: it prefers the reference answer (else the longer one) with probability
    ``sharp`` (logprob mode) and names it (generate mode); ``first`` makes it always pick the first position."""

    name = "scripted"

    def __init__(self, first: bool = False, sharp: float = 0.9):
        self.first, self.sharp = first, sharp

    def _first_better(self, prompt):
        task = prompt.split("## Task:")[-1]  # after the prompt's worked example
        m = re.search(r"### Instruction:\n(.*)\n\n### Output \(a\):\n(.*)\n\n### Output \(b\):\n(.*)\n\n### Which",
                      task, re.S)
        ins, a, b = m.groups()
        if self.first:
            return True
        if a == b:
            return None
        gold = GOLD.get(ins)
        return a == gold if gold in (a, b) else len(a) > len(b)

    def generate(self, prompts, params):
        return [Completion("Output (a)" if self._first_better(p) in (True, None) else "Output (b)", "stop")
                for p in prompts]

    def next_token_logprobs(self, prompts, candidates):
        out = []
        for p in prompts:
            better = self._first_better(p)
            pa = 0.5 if better is None else self.sharp if better else 1 - self.sharp
            out.append({"a": math.log(pa), "b": math.log(1 - pa)})
        return out


def test_judge_check_reports_both_modes(tmp_path):
    samples = alpacaeval.load()[:40]
    base = Judge(Scripted(), "scripted", checks_dir=tmp_path / "checks")
    rep = judge_check_modes({"generate": base, "logprob": with_mode(base, "logprob")}, samples, n=8,
                            out_dir=tmp_path / "c", log=lambda m: None)
    saved = json.loads((tmp_path / "c" / "judge_check.json").read_text())
    assert set(saved["modes"]) == {"generate", "logprob"} and saved["passed"] is True
    gen, lp = saved["modes"]["generate"], saved["modes"]["logprob"]
    assert gen["probes"]["empty"]["accuracy"] == 1.0 and gen["probes"]["empty"]["n"] == 8
    assert lp["probes"]["empty"]["accuracy"] == pytest.approx(0.9)  # the probability given to the right answer
    assert lp["probes"]["empty"]["strict"] == 1.0 and lp["probes"]["self"]["accuracy"] == 1.0
    for r in (gen, lp):
        for p in r["probes"].values():
            lo, hi = p["ci95"]
            assert 0 <= lo <= (p["accuracy"] or 0) <= hi <= 1
    assert lp["first_position_rate"] == pytest.approx(0.5, abs=0.2) and lp["mode"] == "logprob"
    assert saved["mode_agreement"]["n"] > 0 and saved["mode_agreement"]["rate"] == 1.0
    entry = find_check(tmp_path / "checks", lp["fingerprint"])
    assert entry["passed"] is True and entry["mode"] == "logprob" and entry["file"].endswith("judge_check.json")
    assert rep["modes"]["generate"]["fingerprint"] == base.fingerprint()


def _aggregate(tmp_path, judge, n=12):
    samples = alpacaeval.load()[:n]
    records = [{"output": "ok", "prompt": "p"} for _ in samples]
    return alpacaeval.aggregate(records, samples, judge, tmp_path / "ae")


def test_a_failed_check_flags_the_win_rate_in_results_and_report(tmp_path):
    checks = tmp_path / "checks"
    biased = Judge(Scripted(first=True), "first-picker", checks_dir=checks)
    judge_check(biased, alpacaeval.load()[:30], n=8, out_dir=tmp_path / "c", log=lambda m: None)
    res = _aggregate(tmp_path, biased)
    assert res["judge_trusted"] is False and res["judge_check"]["passed"] is False
    assert res["judge_check"]["file"].endswith("judge_check.json")
    assert any("failed `sdft judge-check`" in r for r in res["judge_untrusted_reasons"])
    assert any("position bias" in r for r in res["judge_untrusted_reasons"])
    saved = json.loads((tmp_path / "ae" / "results.json").read_text())
    assert saved["judge_trusted"] is False and saved["judge_check"]["passed"] is False
    assert UNTRUSTED_MARK in (tmp_path / "ae" / "results.md").read_text()
    assert UNTRUSTED_MARK in results_markdown([saved])

    from sdft.reporting.report import score_table

    data = {"evals": [{"meta": {"arm": "seed"}, "results": {"alpacaeval": saved}}], "datasets": []}
    assert UNTRUSTED_MARK in score_table(data)[1][0][-1]


def test_an_unchecked_unbiased_judge_is_trusted_and_logprob_mode_aggregates(tmp_path):
    fair = with_mode(Judge(Scripted(sharp=0.8), "fair", checks_dir=tmp_path / "checks"), "logprob")
    res = _aggregate(tmp_path, fair)
    assert res["judge_trusted"] is True and res["judge_check"] is None and res["judge"]["mode"] == "logprob"
    assert 0 < res["score"] < 1 and UNTRUSTED_MARK not in (tmp_path / "ae" / "results.md").read_text()


def test_logprob_judge_records_backend_errors_per_prompt():
    class Flaky(Scripted):
        def next_token_logprobs(self, prompts, candidates):
            if any("BOOM" in p for p in prompts):
                raise RuntimeError("too long")
            return super().next_token_logprobs(prompts, candidates)

    judge = LogprobJudge(Judge(Flaky(), "flaky"), verdict_format(JudgePrompt.load()))
    out = judge.judge([("q", "BOOM", "x"), ("q", "long answer", "x")])
    assert out[0]["how"] == "error" and "too long" in out[0]["error"] and out[0]["p_first"] is None
    assert out[1]["how"] == "logprob" and out[1]["p_first"] == pytest.approx(0.9)
