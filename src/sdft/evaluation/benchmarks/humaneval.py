"""HumanEval (HumanEvalPack python split, 164 problems): pass@1, the tests executed in :mod:`sdft.evaluation.sandbox`.

Two tasks:

``humaneval`` (paper mode) -- what the authors ran: bigcode-evaluation-harness ``humanevalsynthesize-python
--prompt octocoder``, greedy. That harness builds its prompt from the row's full ``prompt`` field (signature
*and* docstring, ``with_docs=True``), not from ``declaration`` alone, and strips the result::

    ("Question: " + instruction.strip() + "\\n\\nAnswer:\\n" + prompt).strip()

It is raw text for every model (``prompt_format`` is ignored; a tokenizer only contributes its BOS text). The
output is the raw continuation (do not strip it). It is cut at the harness's Python stop words (from
CodeGeeX / MultiPL-E: ``\\nclass``, ``\\ndef``, ``\\n#``, ``\\n@``, ``\\nprint``, ``\\nif``, ``\\nassert``, plus
``<|endoftext|>``) and then at the first non-indented line (its ``remove_last_block``). The program run is::

    IMPORT_HELPER + "\\n" + prompt.rstrip() + completion + "\\n\\n" + test

(``test`` already ends with ``check(entry_point)``; it is appended only for files whose test lacks it.)
``IMPORT_HELPER`` is the harness's import block (math, re, ..., ``from typing import *``). Its
``import numpy`` / ``import numpy as np`` are added only when the program mentions ``np`` or ``numpy`` (and
only if numpy is installed): the same result, without paying the numpy import (~0.15 s) for every program.
One more difference: a completion not starting with a newline gets one (a stripped output would otherwise be
glued to the closing ``\"\"\"``).

``humaneval-chat`` -- for chat models: the row's ``instruction`` as the user turn of the chat template
(raw format: the Alpaca prompt). The code is the first fenced ```` ```python ```` block (else the first
untagged fenced block, else the whole output). If it defines the entry point, the row's ``prompt`` (helpers,
signature, docstring) plus ``pass`` is put before it, so that helpers such as ``poly`` exist (the model's own
definition then replaces the stub); otherwise the code is taken as the function body and put after
``declaration``. The same imports and tests follow as in paper mode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from sdft.data import DataError, load_records
from sdft.evaluation.sandbox import run_python
from sdft.templates import TEMPLATES, Template, bos_prefix, render
from sdft.evaluation.benchmarks.base import EvalTask, Sample, resolve_data

DATA_FILE = "humaneval/humanevalpack_python.jsonl"
STOP_WORDS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert", "<|endoftext|>")
IMPORT_HELPER = "\n".join([
    "import math", "import re", "import sys", "import copy", "import datetime", "import itertools",
    "import collections", "import heapq", "import statistics", "import functools", "import hashlib",
    "import string", "from typing import *", "from collections import *",
])
NUMPY_HELPER = "try:\n    import numpy\n    import numpy as np\nexcept ImportError:\n    pass"
_NUMPY_NAME = re.compile(r"\b(?:np|numpy)\b")
TIMEOUT, MEMORY_MB = 10.0, 1024  # the harness's Python timeout
SANDBOX_MODE: Optional[str] = None  # "bwrap" | "guard" (sdft.evaluation.sandbox.resolve_mode); None: its default
FIELDS = ("instruction", "prompt", "declaration", "test", "entry_point")
CHAT_TEMPLATE = Template("humaneval-chat", "", "{instruction}")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def load(path: str | Path | None = None) -> list[Sample]:
    """HumanEvalPack rows (JSONL, plain or .gz) with instruction, prompt, declaration, test, entry_point.

    >>> samples = load()
    >>> len(samples), samples[0].meta["entry_point"]
    (164, 'has_close_elements')
    """
    file = resolve_data(path, DATA_FILE)
    samples = []
    for i, row in enumerate(load_records(file)):
        if not isinstance(row, dict):
            raise DataError(f"{file}: row {i}: expected an object, got {type(row).__name__}")
        for key in FIELDS:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{file}: row {i}: field '{key}': missing, empty or not a string "
                                "(expected the HumanEvalPack format)")
        meta = {key: row[key] for key in FIELDS}
        meta["task_id"] = str(row.get("task_id", i))
        samples.append(Sample(i, row["instruction"].strip(), row.get("canonical_solution"), meta=meta))
    if not samples:
        raise DataError(f"{file}: no rows")
    return samples


def prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None, layout: str = "standard") -> str:
    """Paper mode: the harness's octocoder prompt (raw text whatever ``prompt_format`` says).

    >>> s = Sample(0, "Write f. ", None, meta={"prompt": "\\n\\ndef f(x):\\n    # Add one to x.\\n"})
    >>> prompt(s)
    'Question: Write f.\\n\\nAnswer:\\n\\n\\ndef f(x):\\n    # Add one to x.'
    """
    text = f"Question: {sample.instruction.strip()}\n\nAnswer:\n{sample.meta['prompt']}".strip()
    return bos_prefix(tokenizer) + text


def clean_completion(output: str) -> str:
    """The harness's post-processing: cut at the first stop word, then before the first non-indented line.

    >>> clean_completion("\\n    return 1\\n\\n\\ndef g():\\n    pass\\nprint(f())")
    '\\n    return 1\\n\\n'
    """
    code = output.rstrip()
    for word in STOP_WORDS:
        if word in code:
            code = code[:code.find(word)]
    lines = code.split("\n")
    for i, line in enumerate(lines):
        if line.strip() and line[0] not in " \t":
            return "\n".join(lines[:i])
    return code


def extract(output: str) -> Optional[str]:
    """Paper mode: the completion that is run (see :func:`clean_completion`).

    >>> extract("\\n    return x + 1\\nprint(1)")
    '\\n    return x + 1'
    """
    return clean_completion(output)


def _test_code(sample: Sample) -> str:
    test, entry = sample.meta["test"], sample.meta["entry_point"]
    return test + ("" if f"check({entry})" in test else f"\ncheck({entry})\n")


def _with_tests(body: str, sample: Sample) -> str:
    imports = IMPORT_HELPER + ("\n" + NUMPY_HELPER if _NUMPY_NAME.search(body + sample.meta["test"]) else "")
    return f"{imports}\n{body}\n\n{_test_code(sample)}"


def paper_program(output: str, sample: Sample) -> str:
    """The program run for a paper-mode output: imports, the row's prompt, the completion, the tests.

    >>> s = Sample(0, "i", None, meta={"prompt": "def f(x):\\n", "test": "def check(c):\\n    assert c(1) == 2",
    ...                                "entry_point": "f"})
    >>> print(paper_program("    return x + 1\\nprint(f(1))", s).split("from collections import *\\n")[1])
    def f(x):
        return x + 1
    <BLANKLINE>
    def check(c):
        assert c(1) == 2
    check(f)
    <BLANKLINE>
    """
    completion = clean_completion(output)
    if not completion.startswith("\n"):
        completion = "\n" + completion
    return _with_tests(sample.meta["prompt"].rstrip() + completion, sample)


def _verdict(program: str, sample: Sample) -> dict:
    """Run the program; its tests (the end of the program) are compiled and run on their own after the code, so
    that they run as written whatever the code is: passed means they ran and returned."""
    test = _test_code(sample)
    split = bool(test) and program.endswith(test)
    r = run_python(program[:-len(test)] if split else program, timeout=TIMEOUT, memory_mb=MEMORY_MB,
                   test=test if split else None, mode=SANDBOX_MODE)
    return {"correct": r.passed, "status": r.status, "stderr": r.stderr[-500:], "sandbox": r.mode}


def judge(output: str, sample: Sample) -> dict:
    """Paper mode: run the program; ``correct``, the sandbox ``status``, its mode (``sandbox``) and the end of
    stderr."""
    return _verdict(paper_program(output, sample), sample)


def score(output: str, sample: Sample) -> bool:
    """Paper mode: the program passes its tests in the sandbox.

    >>> s = Sample(0, "Add one.", None, meta={"prompt": "def f(x):\\n", "declaration": "def f(x):\\n",
    ...     "entry_point": "f", "test": "def check(c):\\n    assert c(1) == 2\\ncheck(f)"})
    >>> score("    return x + 1\\n", s), score("    return x\\n", s)
    (True, False)
    """
    return judge(output, sample)["correct"]


# --- chat mode ---------------------------------------------------------------------------------------------
def chat_prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None,
                layout: str = "standard") -> str:
    """Chat mode: the instruction as the user turn (raw format: the Alpaca prompt).

    >>> chat_prompt(Sample(0, "Write f.", None))[-41:]
    '### Instruction:\\nWrite f.\\n\\n### Response:\\n'
    """
    template = CHAT_TEMPLATE if prompt_format == "chat" else TEMPLATES["alpaca"]
    return render(template, sample.instruction, prompt_format=prompt_format, tokenizer=tokenizer, layout=layout)


def extract_code(output: str) -> Optional[str]:
    """Chat mode: the first ```python block, else the first untagged fenced block, else the whole output.

    >>> extract_code("Here:\\n```\\nx = 0\\n```\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_code("def f(): return 2")
    'def f(): return 2'
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(output)]
    for wanted in (("python", "py", "python3"), ("",)):
        for lang, body in blocks:
            if lang in wanted:
                return body
    return output


def chat_program(output: str, sample: Sample) -> str:
    """The program run for a chat-mode output (see the module docstring).

    >>> s = Sample(0, "i", None, meta={"prompt": "def f(x):\\n", "declaration": "def f(x):\\n",
    ...                                "test": "check(f)", "entry_point": "f"})
    >>> print(chat_program("```python\\ndef f(x):\\n    return x\\n```", s).split("import *\\n")[-1])
    def f(x):
        pass
    <BLANKLINE>
    <BLANKLINE>
    def f(x):
        return x
    <BLANKLINE>
    <BLANKLINE>
    check(f)
    >>> chat_program("    return x", s).split("import *\\n")[-1]
    'def f(x):\\n    return x\\n\\ncheck(f)'
    """
    code = extract_code(output) or ""
    entry = re.escape(sample.meta["entry_point"])
    if re.search(rf"^\s*def\s+{entry}\s*\(", code, re.M):
        body = sample.meta["prompt"].rstrip() + "\n    pass\n\n\n" + code
    else:
        body = sample.meta["declaration"] + code
    return _with_tests(body, sample)


def chat_judge(output: str, sample: Sample) -> dict:
    return _verdict(chat_program(output, sample), sample)


def chat_score(output: str, sample: Sample) -> bool:
    """Chat mode: the extracted code passes the tests.

    >>> s = Sample(0, "Add one.", None, meta={"prompt": "def f(x):\\n", "declaration": "def f(x):\\n",
    ...     "entry_point": "f", "test": "def check(c):\\n    assert c(1) == 2\\ncheck(f)"})
    >>> chat_score("Sure:\\n```python\\ndef f(x):\\n    return x + 1\\n```", s), chat_score("no code", s)
    (True, False)
    """
    return chat_judge(output, sample)["correct"]


TASKS = (
    EvalTask("humaneval", "HumanEval (HumanEvalPack python), octocoder prompt, completion mode", "pass@1", load,
             prompt, extract, score, DATA_FILE + ".gz", stop=STOP_WORDS, release_decoding="greedy", judge=judge,
             executes_code=True),
    EvalTask("humaneval-chat", "HumanEval (HumanEvalPack python), instruction in the chat template", "pass@1",
             load, chat_prompt, extract_code, chat_score, DATA_FILE + ".gz", release_decoding="greedy",
             judge=chat_judge, executes_code=True),
)
