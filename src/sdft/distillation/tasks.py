"""The distillation tasks, one table: what distillation (and training) needs to know about each task.

GSM8K: the authors' file is OpenAI's with ``<<...>>`` calculator notes removed and ``#### N`` replaced by
``The answer is N.``; ``normalize_answer`` does the same to answers in the original form.

>>> normalize_answer("48/2 = <<48/2=24>>24 clips.\\n#### 24")
'48/2 = 24 clips.\\nThe answer is 24.'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    distill_template: str  # default distillation template (sdft.templates)
    train_template: str  # template the fine-tuning prompts use
    checks: tuple[str, ...] = ()  # task checks after the banned-phrase filter (sdft.distillation.checks)
    normalize_output: Optional[Callable[[str], str]] = None  # applied to original responses when loading
    columns: dict[str, str] = field(default_factory=dict)  # default column names in its data


_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?#### *(.+?)\s*$")


def normalize_answer(answer: str) -> str:
    if "####" not in answer:
        return answer
    answer = _CALC.sub("", answer)
    return _FINAL.sub(lambda m: f"\nThe answer is {m.group(1)}.", answer)


_TABLE = (
    # general instruction data (Alpaca, Dolly, LIMA, your own): "Using" template, banned-phrase filter only
    Task("alpaca", "general instructions (Alpaca, Dolly, LIMA, user data)", "using", "alpaca"),
    # GSM8K: math templates in the model's chat format, pre-filled "Great! Let's think step by step. ";
    # the rewrite's last number must equal the gold answer
    Task("gsm8k", "grade-school math (GSM8K)", "math-distill", "math-train", ("gsm8k",), normalize_answer,
         {"instruction": "question", "output": "answer"}),
    # Gorilla OpenFunctions: the normalised gold call must occur in the rewrite (the authors used "Refer")
    Task("openfunctions", "function calling (Gorilla OpenFunctions v1)", "refer", "alpaca", ("openfunctions",)),
    # MagiCoder-style code data: a ```python block and an "I have / Here is / I implemented" start ("Refer")
    Task("magicoder", "code instructions (MagiCoder; bring your own data)", "refer", "alpaca", ("code",)),
)
ALIASES = {"general": "alpaca", "code": "magicoder"}
TASKS: dict[str, Task] = {t.name: t for t in _TABLE} | {a: next(t for t in _TABLE if t.name == n)
                                                         for a, n in ALIASES.items()}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]
