"""Benchmark tasks for evaluation: data, prompt, answer extraction and scoring, without any model.

One file per benchmark; each defines ``TASKS`` (one or more :class:`EvalTask`). Lookup is by name in
:data:`EVAL_TASKS`, never by an if-chain. Every function is pure (HumanEval's ``score`` runs the program in
:mod:`sdft.evaluation.sandbox`, a separate process):

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

from sdft.evaluation.benchmarks.base import EvalTask, Sample, load_alpaca_rows, read_text, resolve_data

__all__ = ["EVAL_TASKS", "EvalTask", "Sample", "get_eval_task", "load_alpaca_rows", "read_text", "resolve_data"]


def _registry() -> dict[str, EvalTask]:
    from sdft.evaluation.benchmarks import advbench, alpacaeval, gsm8k, humaneval, multiarith, openfunctions

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
