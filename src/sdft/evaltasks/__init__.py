"""Benchmark tasks for evaluation: data, prompt, answer extraction and scoring, without any model.

One file per benchmark; each defines ``TASKS`` (one or more :class:`EvalTask`). Lookup is by name in
:data:`EVAL_TASKS`, never by an if-chain. Every function is pure (HumanEval's ``score`` runs the program in
:mod:`sdft.sandbox`, a separate process):

- ``load(path=None) -> list[Sample]``: the shipped copy of the benchmark, or a user file (plain or ``.gz``);
- ``prompt(sample, *, prompt_format, tokenizer, layout) -> str``: the full text a backend continues
  (``sdft.templates.render``);
- ``extract(output) -> str | None``: what the scorer looks at (the final number, the refusal keyword, the code);
- ``score(output, sample) -> bool``: the paper's rule for one output.

>>> task = get_eval_task("gsm8k")
>>> sample = task.load()[0]
>>> task.score("... so she makes 18 dollars. The answer is 18.", sample)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..data import DataError, Example, Source, _existing, _read_text, builtin_data_dir, load_examples


@dataclass(frozen=True)
class Sample:
    """One benchmark item. ``index`` is its 0-based row in the data file (the key of a predictions file)."""

    index: int
    instruction: str  # the text placed in the template's {instruction}
    gold: Optional[str] = None  # the reference the scorer compares with, as shown in reports
    input: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # whatever else score needs (label, tests, ...)


@dataclass(frozen=True)
class EvalTask:
    name: str
    description: str
    metric: str  # what the score means: "accuracy", "safe rate", "pass@1"
    load: Callable[..., list[Sample]]
    prompt: Callable[..., str]
    extract: Callable[[str], Optional[str]]
    score: Callable[[str, Sample], bool]
    data_file: str  # the shipped copy, relative to sdft.data.builtin_data_dir()
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()  # stop strings for the backend (the output is cut before them)
    release_decoding: str = "sampling"  # how the authors decoded: "sampling" (LLaMA-Factory defaults) or "greedy"
    judge: Optional[Callable[[str, Sample], dict]] = None  # optional per-sample details (e.g. sandbox status)
    executes_code: bool = False  # score runs a program: worth parallel workers


def resolve_data(path: str | Path | None, default: str) -> Path:
    """A user path (plain or .gz), else the shipped copy; a clear error when neither exists."""
    p = Path(path).expanduser() if path is not None else builtin_data_dir() / default
    found = _existing(p)
    if found is None:
        raise DataError(f"{p}: data file not found")
    return found


def read_text(path: Path) -> str:
    """The whole (optionally gzip-compressed) text file, with read errors as :class:`DataError`."""
    try:
        return _read_text(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read: {e}") from None


def load_alpaca_rows(path: Path, columns: Mapping[str, str] | None = None) -> list[Example]:
    """Alpaca-style rows (``instruction``/``question``, ``output``/``answer``) of a JSON/JSONL file."""
    return load_examples(Source(path, "alpaca", dict(columns or {})))


def _registry() -> dict[str, EvalTask]:
    from . import advbench, alpacaeval, gsm8k, humaneval, multiarith, openfunctions

    tasks: dict[str, EvalTask] = {}
    for module in (gsm8k, multiarith, openfunctions, advbench, humaneval, alpacaeval):
        for task in module.TASKS:
            if task.name in tasks:
                raise RuntimeError(f"evaluation task '{task.name}' registered twice")
            tasks[task.name] = task
    return tasks


EVAL_TASKS: dict[str, EvalTask] = _registry()


def get_eval_task(name: str) -> EvalTask:
    """The registered task of this name.

    >>> get_eval_task("advbench-jailbreak").metric
    'safe rate'
    """
    try:
        return EVAL_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation task '{name}'; available: {', '.join(sorted(EVAL_TASKS))}") from None
