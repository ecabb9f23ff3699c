"""Each check on hand-made and real rows of ../shared/data (the authors' own distilled sets)."""

import json

import pytest

from conftest import shared
from sdft.distillation.checks import (banned_phrases, code_block, find_last_integer, gsm8k_answer, math_match,
                         openfunctions_call, resolve_check, strip_chatter)
from sdft.distillation.tasks import normalize_answer


@pytest.mark.parametrize("text,reason", [
    ("Using the Reference Answer as a guide, ...", "banned_phrase"),
    ("Here is MY RESPONSE:", "banned_phrase"),
    ("Now it's your turn to try.", "banned_phrase"),
    ("Your turn: 42", "your_turn"),
    ("your turn: 42", None),  # "Your turn" is case-sensitive, as in the release
    ("The answer is 42.", None),
])
def test_banned_phrases(text, reason):
    assert banned_phrases(text, "") == reason


@pytest.mark.parametrize("s,expected", [
    ("The answer is 1,234.", "1234"), ("costs 1 234 dollars", "1234"), ("-5 degrees", "-5"),
    ("18.00", "18"), ("2.5 apples", "-999999999"), ("no number", "-999999999"), ("a 3 b 4", "4"),
])
def test_find_last_integer(s, expected):
    assert find_last_integer(s) == expected


def test_math_match_rules():
    assert math_match("so 72 clips", "The answer is 72.")
    assert math_match("total: 1,234", "#### 1234")
    assert not math_match("12\n34", "1234")  # digits split by a newline fail int(): wrong, as in the release
    assert not math_match("about 2.5", "The answer is 2.")
    assert not math_match("nothing", "The answer is 7.")


def test_gsm8k_gold_in_both_forms():
    orig = [json.loads(l) for l in shared("gsm8k/train.jsonl").read_text().splitlines()]
    sd = json.loads(shared("sdft/gsm8k/gsm8k_train.json").read_text())
    assert len(orig) == len(sd) == 7473
    for a, b in zip(orig, sd):  # our normaliser rebuilds the authors' file exactly
        assert normalize_answer(a["answer"]) == b["answer"]
        assert gsm8k_answer(b["answer"], a["answer"]) is None


def _replaced(original_file, distilled_file, answer_key="output"):
    orig = json.loads(shared(original_file).read_text())
    dist = json.loads(shared(distilled_file).read_text())
    assert len(orig) == len(dist)
    return [(o, d) for o, d in zip(orig, dist) if o[answer_key].strip() != d[answer_key].strip()]


def test_openfunctions_check_on_authors_distilled_set():
    pairs = _replaced("sdft/openfunction/openfunction_train.json", "sdft/openfunction/distilled_openfunction.json")
    assert 100 < len(pairs) < 500  # ~10% of 2211 replaced
    for o, d in pairs:  # every rewrite the authors kept passes both of their checks
        assert banned_phrases(d["output"], o["output"]) is None
        assert openfunctions_call(d["output"], o["output"]) is None
    # and a wrong call is rejected
    o = pairs[0][0]
    assert openfunctions_call("I would call nothing.", o["output"]) == "call_mismatch"


def test_openfunctions_normalisation():
    gold = "pyarrow.Timestamp(unit='s', metadata={})"
    assert openfunctions_call('Call it: pyarrow.Timestamp(unit="s",  metadata={}) now', gold) is None
    assert openfunctions_call("Timestamp(unit='s', metadata={})", gold) == "call_mismatch"


def test_banned_filter_on_authors_distilled_alpaca():
    pairs = _replaced("sdft/alpaca/alpaca_train.json", "sdft/alpaca/distilled_alpaca.json")
    assert len(pairs) > 1500  # ~82% of 2000 replaced
    assert all(banned_phrases(d["output"].strip(), "") is None for _, d in pairs)


def test_code_check():
    assert code_block("Here is the code:\n```python\nprint(1)\n```", "") is None
    assert code_block("Sure! ```python\nx\n```", "") == "bad_start"
    assert code_block("I have written it in Java.", "") == "no_python_block"


def test_user_checks(tmp_path, monkeypatch):
    assert resolve_check("regex:^The answer")("The answer is 3", "") is None
    assert resolve_check("regex:^The answer")("It is 3", "") == "regex_mismatch"
    (tmp_path / "mychecks.py").write_text("def short(text, original):\n    return len(text) < 10 or 'too_long'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    chk = resolve_check("mychecks:short")
    assert chk("tiny", "") is None and chk("x" * 20, "") == "too_long"
    with pytest.raises(ValueError, match="unknown check"):
        resolve_check("nosuch")


def test_strip_chatter():
    assert strip_chatter("### Response:\nSure! Here is my rewrite:\nThe sky is blue.") == "The sky is blue."
    assert strip_chatter("  The sky is blue. ") == "The sky is blue."
