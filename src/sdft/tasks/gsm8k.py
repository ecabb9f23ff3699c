"""GSM8K: math templates in the model's chat format, pre-filled "Great! Let's think step by step. ";
the rewrite's last number must equal the gold answer.

The authors' GSM8K file is OpenAI's with ``<<...>>`` calculator notes removed and ``#### N`` replaced by
``The answer is N.``; ``normalize_answer`` does the same to answers in the original form.

>>> normalize_answer("48/2 = <<48/2=24>>24 clips.\\n#### 24")
'48/2 = 24 clips.\\nThe answer is 24.'
"""

import re

from . import Task

_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?#### *(.+?)\s*$")


def normalize_answer(answer: str) -> str:
    if "####" not in answer:
        return answer
    answer = _CALC.sub("", answer)
    return _FINAL.sub(lambda m: f"\nThe answer is {m.group(1)}.", answer)


TASK = Task("gsm8k", "grade-school math (GSM8K)", "math-distill", "math-train", ("gsm8k",), normalize_answer,
            {"instruction": "question", "output": "answer"})
