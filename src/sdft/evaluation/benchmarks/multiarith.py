"""MultiArith (the 180-problem test split the authors used): GSM8K's prompt and scoring rule.

Its labels read "The answer is N"; the prompt, extraction and score are :mod:`sdft.evaluation.benchmarks.gsm8k`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sdft.evaluation.benchmarks.base import EvalTask, Sample
from sdft.evaluation.benchmarks import gsm8k

DATA_FILE = "multiarith_test.json"


def load(path: str | Path | None = None) -> list[Sample]:
    """The shipped MultiArith test split, or a user file with ``instruction``/``output`` (JSON/JSONL, .gz ok).

    >>> samples = load()
    >>> len(samples), samples[0].gold
    (180, '10')
    """
    return gsm8k.load_math(path, DATA_FILE, "output")


def prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None, layout: str = "standard") -> str:
    """The math eval prompt (as GSM8K).

    >>> prompt(Sample(0, "How many?", "3", meta={"label": "The answer is 3"}), layout="release")[-24:]
    '[INST] How many? [/INST]'
    """
    return gsm8k.prompt(sample, prompt_format=prompt_format, tokenizer=tokenizer, layout=layout)


def extract(output: str) -> Optional[str]:
    """The final integer of an output (as GSM8K).

    >>> extract("8 + 2 = 10 songs"), extract("none")
    ('10', None)
    """
    return gsm8k.extract(output)


def score(output: str, sample: Sample) -> bool:
    """The authors' last-number rule (as GSM8K).

    >>> score("She has 10 songs.", Sample(0, "q", "10", meta={"label": "The answer is 10"}))
    True
    """
    return gsm8k.score(output, sample)


TASKS = (EvalTask("multiarith", "MultiArith, 180 arithmetic word problems", "accuracy", load, prompt, extract, score,
                  DATA_FILE + ".gz"),)
