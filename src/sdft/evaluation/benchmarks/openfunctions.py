"""Gorilla OpenFunctions v1 test (112 rows): Alpaca prompt, the authors' function-call match.

A row is correct when the whitespace-normalised gold call ``name(args)`` (``'`` → ``"``, ``", "`` → ``","``)
occurs in the normalised output (:func:`sdft.distillation.checks.function_call_match`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from sdft.distillation.checks import GoldFormatError, function_call_match, standardize_function_call
from sdft.data import DataError
from sdft.templates import TEMPLATES, render
from sdft.evaluation.benchmarks.base import EvalTask, Sample, load_alpaca_rows, resolve_data

DATA_FILE = "openfunction/openfunction_test.json"
_CALL_SPAN = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(.*\)")


def load(path: str | Path | None = None) -> list[Sample]:
    """The shipped test set, or a user file with ``instruction``/``output`` (JSON/JSONL, .gz ok); every gold
    output must be a function call.

    >>> samples = load()
    >>> len(samples), samples[0].gold
    (112, 'coffee_shop.find_nearby(location="San Francisco", amenities="Wi-Fi")')
    """
    file = resolve_data(path, DATA_FILE)
    samples = []
    for ex in load_alpaca_rows(file):
        try:
            function_call_match(ex.output, ex.output)
        except GoldFormatError as e:
            raise DataError(f"{file}: row {ex.index}: field 'output': {e}") from None
        samples.append(Sample(ex.index, ex.instruction, ex.output, ex.input))
    return samples


def prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None, layout: str = "standard") -> str:
    """The Alpaca prompt on the test instruction (the authors' ``--template alpaca``).

    >>> prompt(Sample(0, "Call f.", "f()"), layout="release")[-52:]
    'the request.### Instruction:\\nCall f.\\n\\n### Response:\\n'
    """
    return render(TEMPLATES["alpaca"], sample.instruction, sample.input, prompt_format=prompt_format,
                  tokenizer=tokenizer, layout=layout)


def extract(output: str) -> Optional[str]:
    """The call-like span of the normalised output (for reports; the score uses the authors' rule).

    >>> extract("Sure!\\n  weather.forecast(location='Paris',  days=5)")
    'weather.forecast(location="Paris",days=5)'
    >>> extract("I cannot help") is None
    True
    """
    m = _CALL_SPAN.search(standardize_function_call(output))
    return m.group(0) if m else None


def score(output: str, sample: Sample) -> bool:
    """Correct when the normalised gold call occurs in the normalised output.

    >>> s = Sample(0, "q", 'weather.forecast(location="Paris, France", days=5)')
    >>> score("weather.forecast(location='Paris, France', days=5)", s)
    True
    >>> score('forecast(location="Paris, France", days=5)', s), score('weather.forecast(days=5)', s)
    (False, False)
    """
    return function_call_match(output, sample.gold)


TASKS = (EvalTask("openfunctions", "Gorilla OpenFunctions v1 test, 112 function-call questions", "accuracy", load,
                  prompt, extract, score, DATA_FILE + ".gz"),)
