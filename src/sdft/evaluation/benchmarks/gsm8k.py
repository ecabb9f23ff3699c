"""GSM8K test (1,319 problems): the math eval prompt, accuracy by the authors' last-number rule.

The prompt is ``TEMPLATES["math-eval"]`` (its literal ``{answer}`` stays) in the model's chat format, or raw
(``standard``: system + "\\n\\n" + question; ``release``: the authors' Llama-2 string). The score is
:func:`sdft.distillation.checks.math_match` -- the last number of the output equals the gold number, as in the release.
Gold answers in OpenAI's ``#### N`` form are normalised on load, so the original ``test.jsonl`` works too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sdft.distillation.checks import INVALID, find_last_integer, math_match
from sdft.data import DataError
from sdft.distillation.tasks import normalize_answer
from sdft.templates import TEMPLATES, render
from sdft.evaluation.benchmarks.base import EvalTask, Sample, load_alpaca_rows, resolve_data

DATA_FILE = "gsm8k/gsm8k_test.json"


def load_math(path: str | Path | None, default: str, answer_field: str) -> list[Sample]:
    """Rows with a question and a labelled answer; every label must hold a final integer."""
    file = resolve_data(path, default)
    samples = []
    for ex in load_alpaca_rows(file):
        label = normalize_answer(ex.output)
        gold = find_last_integer(label)
        if gold == INVALID or not math_match(label, label):
            raise DataError(f"{file}: row {ex.index}: field '{answer_field}': no final integer in {label[-60:]!r}")
        samples.append(Sample(ex.index, ex.instruction, gold, ex.input, {"label": label}))
    return samples


def load(path: str | Path | None = None) -> list[Sample]:
    """The shipped GSM8K test set, or a user file (JSON/JSONL, plain or .gz, ``question``/``answer``).

    >>> samples = load()
    >>> len(samples), samples[0].gold
    (1319, '18')
    """
    return load_math(path, DATA_FILE, "answer")


def prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None, layout: str = "standard") -> str:
    """The math eval prompt for one question.

    >>> s = Sample(0, "What is 2 + 3?", "5", meta={"label": "The answer is 5."})
    >>> prompt(s).endswith("formatted as: The answer is {answer}.\\n\\nWhat is 2 + 3?")
    True
    """
    return render(TEMPLATES["math-eval"], sample.instruction, sample.input, prompt_format=prompt_format,
                  tokenizer=tokenizer, layout=layout)


def extract(output: str) -> Optional[str]:
    """The integer the authors' rule reads from an output, or None (no number, a non-zero fraction, or
    digits split by a newline/tab).

    >>> extract("She pays $1,234.00 in total. The answer is 1,234.")
    '1234'
    >>> extract("It is 2.5 apples") is None, extract("no number") is None, extract("-7 degrees")
    (True, True, '-7')
    """
    number = find_last_integer(output.strip())
    if number == INVALID:
        return None
    try:
        return str(int(number))
    except ValueError:
        return None


def score(output: str, sample: Sample) -> bool:
    """Correct when the output's last number equals the gold answer (:func:`sdft.distillation.checks.math_match`).

    >>> s = Sample(0, "q", "18", meta={"label": "... $18 every day.\\nThe answer is 18."})
    >>> score("So she makes 18.00 dollars.", s), score("The answer is 18. Check: 9 * 2", s)
    (True, False)
    """
    return math_match(output, sample.meta["label"])


TASKS = (EvalTask("gsm8k", "GSM8K test, 1,319 grade-school math problems", "accuracy", load, prompt, extract, score,
                  DATA_FILE + ".gz"),)
