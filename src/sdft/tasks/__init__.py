"""Task registry: what distillation (and later evaluation) needs to know about each task.

One file per task; each defines ``TASK``. Lookup is by name, never by an if-chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    distill_template: str  # default distillation template (sdft.templates)
    train_template: str  # template the fine-tuning prompts use
    checks: tuple[str, ...] = ()  # task checks after the banned-phrase filter (sdft.checks)
    normalize_output: Optional[Callable[[str], str]] = None  # applied to original responses when loading
    columns: dict[str, str] = field(default_factory=dict)  # default column names in its data


def _registry() -> dict[str, Task]:
    from . import alpaca, gsm8k, magicoder, openfunctions

    tasks = {m.TASK.name: m.TASK for m in (alpaca, gsm8k, openfunctions, magicoder)}
    tasks["general"] = tasks["alpaca"]
    tasks["code"] = tasks["magicoder"]
    return tasks


TASKS: dict[str, Task] = _registry()


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}'; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]
